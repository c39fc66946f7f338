package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults, as the spec gives them.
const (
	defaultListen        = ":3000"
	defaultAdminListen   = "127.0.0.1:3001"
	defaultDataDir       = "./data"
	defaultMaxKeys       = 1_000_000
	defaultQueueBytes    = Size(1 << 30)
	defaultMaxBodyBytes  = Size(1 << 20)
	defaultDedupTTL      = Duration(24 * time.Hour)
	defaultTolerance     = Duration(5 * time.Minute)
	defaultTimeout       = Duration(5 * time.Second)
	defaultFlush         = Duration(200 * time.Millisecond)
	defaultMaxAttempts   = 8
	defaultInitBackoff   = Duration(500 * time.Millisecond)
	defaultMaxBackoff    = Duration(time.Minute)
	defaultFailures      = 5
	defaultOpenFor       = Duration(30 * time.Second)
	defaultWorkers       = 4
	defaultFileWorkers   = 16
	maxWorkers           = 256
	defaultMethod        = "POST"
	defaultFormat        = "payload"
	defaultHeaderAuth    = "Authorization"
	defaultHMACHeader    = "X-Signature"
	defaultLogLevel      = "info"
	defaultLogFormat     = "json"
	defaultDedupStore    = "memory"
	defaultQueueBackend  = "disk"
	reservedPathPrefix   = "/-/"
	nameCharsDescription = `letters, digits, "-" and "_"`
)

// sinkTypes returns the sink types the router can build.
func sinkTypes() []string { return []string{"http", "slack", "file", "stdout"} }

// sinkFields returns the fields that sinks of type typ use, beyond the
// common ones, or nil for an unknown type.
func sinkFields(typ string) []string {
	switch typ {
	case "http":
		return []string{"url", "method", "headers", "body", "timeout", "sign"}
	case "slack":
		return []string{"webhook_url", "text"}
	case "file":
		return []string{"path", "format", "flush_interval"}
	case "stdout":
		return []string{"format"}
	}
	return nil
}

// sinkCommonFields returns the fields every sink takes.
func sinkCommonFields() []string { return []string{"type", "retry", "breaker", "workers"} }

// check fills in defaults and reports every schema problem of d.f. Paths
// already refused while decoding are skipped, so a mistake is reported once.
func (d *decoder) check() {
	f := d.f
	if d.bad[""] {
		return // the top level is not a mapping: nothing else can be checked
	}
	d.checkListen()
	defaultString(&f.DataDir, defaultDataDir)
	d.checkSources()
	d.checkDedup()
	d.checkQueue()
	d.checkSinks()
	d.checkRules()
	defaultString(&f.Log.Level, defaultLogLevel)
	d.oneOf("log.level", f.Log.Level, "log level", "debug", "info", "warn", "error")
	defaultString(&f.Log.Format, defaultLogFormat)
	d.oneOf("log.format", f.Log.Format, "log format", "json", "text")
}

func (d *decoder) checkListen() {
	f := d.f
	defaultString(&f.Listen, defaultListen)
	listenOK := d.address("listen", f.Listen)
	if port, ok := d.env("PORT"); ok && port != "" {
		n, err := strconv.Atoi(port)
		switch {
		case err != nil || n < 1 || n > 65535:
			d.problemf("listen", "the PORT environment variable is %q, which is not a port number from 1 to 65535", port)
		case listenOK:
			host, _, _ := net.SplitHostPort(f.Listen)
			f.Listen = net.JoinHostPort(host, strconv.Itoa(n))
		}
	}
	// Absent means the default; an explicit "" turns the admin listener
	// off. PORT does not move it: it is the ingress port the platform's
	// docs mean.
	if !d.set["admin_listen"] && !d.isBad("admin_listen") {
		f.AdminListen = defaultAdminListen
	}
	// Port 0 picks a free port for each, so two ":0" do not collide.
	if f.AdminListen != "" && d.address("admin_listen", f.AdminListen) && f.AdminListen == f.Listen && !strings.HasSuffix(f.Listen, ":0") {
		d.problemf("admin_listen", `%q is also the listen address: the admin listener needs a port of its own (or "" to turn it off)`, f.AdminListen)
	}
}

// address checks that addr is host:port.
func (d *decoder) address(path, addr string) bool {
	if d.isBad(path) {
		return false
	}
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		if n, perr := strconv.Atoi(port); perr != nil || n < 0 || n > 65535 {
			err = errors.New("bad port")
		}
	}
	if err != nil {
		d.problemf(path, `invalid address %q (use host:port, such as ":3000" or "127.0.0.1:3000")`, addr)
		return false
	}
	return true
}

func (d *decoder) checkSources() {
	f := d.f
	if len(f.Sources) == 0 && !d.isBad("sources") {
		d.problemf("sources", "no sources: at least one is required, such as {name: platform, path: /webhook, auth: {type: header, secret: ${WEBHOOK_SECRET_KEY}}}")
	}
	names := map[string]int{}
	paths := map[string]int{}
	for i := range f.Sources {
		s := &f.Sources[i]
		p := indexPath("sources", i)
		if d.isBad(p) {
			continue
		}
		if d.name(p+".name", s.Name, "source") {
			if j, dup := names[s.Name]; dup {
				d.problemf(p+".name", "source name %q is already used by sources[%d]", s.Name, j)
			} else {
				names[s.Name] = i
			}
		}
		if d.sourcePath(p+".path", s.Path) {
			if j, dup := paths[s.Path]; dup {
				d.problemf(p+".path", "path %q is already used by sources[%d]", s.Path, j)
			} else {
				paths[s.Path] = i
			}
		}
		defaultValue(&s.MaxBodyBytes, defaultMaxBodyBytes)
		defaultValue(&s.Dedup.TTL, defaultDedupTTL)
		d.checkAuth(p+".auth", &s.Auth)
	}
}

// name checks a source's or sink's name, which labels metrics and, for a
// sink, names its queue on disk or in NATS: it must be safe in all of them.
func (d *decoder) name(path, name, what string) bool {
	if d.isBad(path) {
		return false
	}
	if name == "" {
		d.required(path, name, fmt.Sprintf("required: every %s needs a name", what))
		return false
	}
	for _, c := range name {
		if !(c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			d.problemf(path, "%s name %q may only contain %s", what, name, nameCharsDescription)
			return false
		}
	}
	return true
}

// sourcePath checks a source's URL path.
func (d *decoder) sourcePath(path, p string) bool {
	if d.isBad(path) {
		return false
	}
	switch {
	case p == "":
		return d.required(path, p, "required: the URL path the source receives on, such as /webhook")
	case !strings.HasPrefix(p, "/"):
		d.problemf(path, `path %q must start with "/", such as /webhook`, p)
	case strings.ContainsAny(p, "?# \t\r\n"):
		d.problemf(path, "path %q must be a plain URL path, without spaces, query or fragment", p)
	case p == "/health" || p == "/metrics" || strings.HasPrefix(p, reservedPathPrefix):
		d.problemf(path, "path %q is reserved for hookrouter itself (/health, /metrics and paths under %s)", p, reservedPathPrefix)
	default:
		return true
	}
	return false
}

func (d *decoder) checkAuth(path string, a *Auth) {
	tp := path + ".type"
	if d.isBad(tp) {
		return
	}
	if a.Type == "" {
		d.required(tp, a.Type, "required: how the source authenticates its sender, one of header, bearer, hmac-sha256, standard-webhooks, none")
		return
	}
	if !d.oneOf(tp, a.Type, "auth type", "header", "bearer", "hmac-sha256", "standard-webhooks", "none") {
		return
	}
	switch a.Type {
	case "header":
		defaultString(&a.Header, defaultHeaderAuth)
	case "hmac-sha256":
		defaultString(&a.Header, defaultHMACHeader)
	default:
		d.notFor(path+".header", "auth type", a.Type, "only header and hmac-sha256 auth read a header of your choice")
	}
	if a.Type == "standard-webhooks" {
		defaultValue(&a.Tolerance, defaultTolerance)
	} else {
		d.notFor(path+".tolerance", "auth type", a.Type, "only standard-webhooks auth checks a timestamp")
	}
	if a.Header != "" && !d.isBad(path+".header") && !isToken(a.Header) {
		d.problemf(path+".header", "%q is not a valid HTTP header name", a.Header)
	}
	if a.Type == "none" {
		if a.Secret != "" {
			d.problemf(path+".secret", "auth type none takes no secret: remove it, or choose the auth type that uses it")
		}
		return
	}
	d.required(path+".secret", a.Secret, fmt.Sprintf("required: %s auth needs a secret", a.Type))
}

// notFor reports path if it is set, saying why it does not apply to kind.
func (d *decoder) notFor(path, what, kind, why string) {
	if d.set[path] && !d.isBad(path) {
		d.problemf(path, "does not apply to %s %s (%s)", what, kind, why)
	}
}

func (d *decoder) checkDedup() {
	dd := &d.f.Dedup
	defaultString(&dd.Store, defaultDedupStore)
	if d.oneOf("dedup.store", dd.Store, "dedup store", "memory", "redis") && dd.Store == "redis" &&
		d.required("dedup.redis_url", dd.RedisURL, "required: dedup.store redis needs a redis_url, such as redis://127.0.0.1:6379/0") {
		d.serviceURL("dedup.redis_url", dd.RedisURL, "redis", "rediss", "unix")
	}
	if !d.set["dedup.max_keys"] {
		dd.MaxKeys = defaultMaxKeys
	} else if dd.MaxKeys <= 0 && !d.isBad("dedup.max_keys") {
		d.problemf("dedup.max_keys", "must be greater than zero, got %d", dd.MaxKeys)
	}
}

func (d *decoder) checkQueue() {
	q := &d.f.Queue
	defaultString(&q.Backend, defaultQueueBackend)
	if d.oneOf("queue.backend", q.Backend, "queue backend", "disk", "memory", "nats") && q.Backend == "nats" &&
		d.required("queue.nats_url", q.NatsURL, "required: queue.backend nats needs a nats_url, such as nats://127.0.0.1:4222") {
		// nats.go takes a comma-separated list of servers.
		for u := range strings.SplitSeq(q.NatsURL, ",") {
			if !d.serviceURL("queue.nats_url", strings.TrimSpace(u), "nats", "tls", "ws", "wss") {
				break
			}
		}
	}
	defaultValue(&q.MaxBytes, defaultQueueBytes)
}

// serviceURL checks that raw is a URL with one of schemes. The URL may hold
// a password, so messages never quote it.
func (d *decoder) serviceURL(path, raw string, schemes ...string) bool {
	if d.isBad(path) {
		return false
	}
	u, err := url.Parse(raw)
	if err != nil {
		d.problemf(path, "not a valid URL: %s", urlError(err))
		return false
	}
	if !slices.Contains(schemes, u.Scheme) {
		d.problemf(path, "must be a URL starting with %s://", strings.Join(schemes, ":// or "))
		return false
	}
	return true
}

// urlError returns the reason inside a url.Parse error, without the URL,
// which may carry credentials.
func urlError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return "cannot be parsed"
}

// httpURL checks that raw is an http:// or https:// URL with a host.
func (d *decoder) httpURL(path, raw string) {
	if !d.serviceURL(path, raw, "http", "https") {
		return
	}
	if u, _ := url.Parse(raw); u.Host == "" {
		d.problemf(path, "must name a host, such as https://example.com/hook")
	}
}

func (d *decoder) checkSinks() {
	f := d.f
	for _, name := range f.SinkNames() {
		p := keyPath("sinks", name)
		if s := f.Sinks[name]; s == nil {
			f.Sinks[name] = &Sink{} // "name:" alone: a sink with no settings
		}
		if d.isBad(p) {
			continue
		}
		d.name(p, name, "sink")
		s := f.Sinks[name]
		if d.sinkType(p+".type", s.Type) {
			d.checkSinkFields(p, s)
		}
		r := &s.Retry
		d.positiveInt(p+".retry.max_attempts", &r.MaxAttempts, defaultMaxAttempts, "at least 1")
		defaultValue(&r.InitialBackoff, defaultInitBackoff)
		defaultValue(&r.MaxBackoff, defaultMaxBackoff)
		if r.MaxBackoff < r.InitialBackoff && !d.isBad(p+".retry.max_backoff") && !d.isBad(p+".retry.initial_backoff") {
			d.problemf(p+".retry.max_backoff", "max_backoff %s is shorter than initial_backoff %s", r.MaxBackoff.Std(), r.InitialBackoff.Std())
		}
		d.positiveInt(p+".breaker.failures", &s.Breaker.Failures, defaultFailures, "at least 1")
		defaultValue(&s.Breaker.OpenFor, defaultOpenFor)
		workers := defaultWorkers
		if s.Type == "file" || s.Type == "stdout" {
			// Local writes protect no remote from load, and several
			// workers let one write batches while others gather the next.
			workers = defaultFileWorkers
		}
		d.positiveInt(p+".workers", &s.Workers, workers, fmt.Sprintf("from 1 to %d", maxWorkers))
		if s.Workers > maxWorkers && !d.isBad(p+".workers") {
			d.problemf(p+".workers", "must be from 1 to %d, got %d", maxWorkers, s.Workers)
		}
	}
}

// sinkType checks a sink's type and reports whether it is known.
func (d *decoder) sinkType(path, typ string) bool {
	if d.isBad(path) {
		return false
	}
	if typ == "" {
		d.problemf(path, "required: one of %s", strings.Join(sinkTypes(), ", "))
		return false
	}
	return d.oneOf(path, typ, "sink type", sinkTypes()...)
}

// checkSinkFields checks the fields specific to s's type, which is known.
func (d *decoder) checkSinkFields(path string, s *Sink) {
	takes := sinkFields(s.Type)
	seen := map[string]bool{}
	for _, typ := range sinkTypes() {
		for _, field := range sinkFields(typ) {
			fp := path + "." + field
			if seen[field] || slices.Contains(takes, field) || !d.set[fp] || d.isBad(fp) {
				continue
			}
			seen[field] = true
			d.bad[fp] = true
			d.problemf(fp, "%s does not apply to %s sinks, which take %s",
				field, s.Type, strings.Join(append(takes, "retry", "breaker", "workers"), ", "))
		}
	}
	switch s.Type {
	case "http":
		if d.required(path+".url", s.URL, "required: the URL http sinks deliver to") {
			d.httpURL(path+".url", s.URL)
		}
		defaultString(&s.Method, defaultMethod)
		if m := strings.ToUpper(s.Method); slices.Contains([]string{"POST", "PUT", "PATCH"}, m) {
			s.Method = m
		} else if !d.isBad(path + ".method") {
			d.problemf(path+".method", "method %q is not supported (use POST, PUT or PATCH)", s.Method)
		}
		d.checkHeaders(path+".headers", s.Headers)
		defaultValue(&s.Timeout, defaultTimeout)
		if s.Sign != nil {
			d.required(path+".sign.secret", s.Sign.Secret, "required: signing needs a secret")
		}
	case "slack":
		if d.required(path+".webhook_url", s.WebhookURL, "required: the Slack incoming-webhook URL") {
			d.httpURL(path+".webhook_url", s.WebhookURL)
		}
		d.required(path+".text", s.Text, `required: the message template, such as "{{ .event }}"`)
	case "file":
		d.required(path+".path", s.Path, "required: the file that events are appended to")
		defaultValue(&s.FlushInterval, defaultFlush)
		fallthrough
	case "stdout":
		defaultString(&s.Format, defaultFormat)
		d.oneOf(path+".format", s.Format, "format", "payload", "envelope")
	}
}

// checkHeaders checks an http sink's header names; values are templates,
// which the router parses.
func (d *decoder) checkHeaders(path string, headers map[string]string) {
	names := make([]string, 0, len(headers))
	for name := range headers {
		names = append(names, name)
	}
	slices.Sort(names)
	seen := map[string]string{}
	for _, name := range names {
		hp := keyPath(path, name)
		if !isToken(name) {
			d.problemf(hp, "%q is not a valid HTTP header name", name)
			continue
		}
		canon := strings.ToLower(name)
		if other, dup := seen[canon]; dup {
			d.problemf(hp, "header %q is also given as %q (header names ignore case)", name, other)
			continue
		}
		seen[canon] = name
	}
}

func (d *decoder) checkRules() {
	names := map[string]int{}
	for i, r := range d.f.Rules {
		p := indexPath("rules", i)
		if d.isBad(p) {
			continue
		}
		if d.required(p+".name", r.Name, "required: every rule needs a name, which labels its metrics and logs") {
			if j, dup := names[r.Name]; dup {
				d.problemf(p+".name", "rule name %q is already used by rules[%d]", r.Name, j)
			} else {
				names[r.Name] = i
			}
		}
		d.required(p+".when", r.When, `required: the expression an event must match, such as event == "channel.message_in", or "true"`)
		if r.To == nil && !d.isBad(p+".to") {
			d.problemf(p+".to", "rule has no `to`: list the sinks it delivers to, or write `to: []` for a rule that only stops")
		}
	}
}

// isBad reports whether path, or a node that holds it, was refused while
// decoding: checking it again would report the same mistake twice.
func (d *decoder) isBad(path string) bool {
	for p := path; ; p = parentPath(p) {
		if d.bad[p] {
			return true
		}
		if p == "" {
			return false
		}
	}
}

// required reports path if value is blank and was not refused already. When
// the value came from variables, the message shows what was substituted.
func (d *decoder) required(path, value, msg string) bool {
	if strings.TrimSpace(value) != "" {
		return true
	}
	if d.isBad(path) {
		return false
	}
	if raw := d.origin[path]; raw != "" {
		msg += fmt.Sprintf(" (it is %q, which is empty in this environment)", raw)
	}
	d.problemf(path, "%s", msg)
	return false
}

// oneOf reports path unless value is one of allowed.
func (d *decoder) oneOf(path, value, what string, allowed ...string) bool {
	if slices.Contains(allowed, value) {
		return true
	}
	if d.isBad(path) {
		return false
	}
	msg := fmt.Sprintf("unknown %s %q (use one of %s", what, value, strings.Join(allowed, ", "))
	if s := Suggest(value, allowed); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	d.problemf(path, "%s)", msg)
	return false
}

// positiveInt defaults *v when path is absent, and else checks it is >= 1.
func (d *decoder) positiveInt(path string, v *int, def int, want string) {
	switch {
	case !d.set[path]:
		*v = def
	case *v < 1 && !d.isBad(path):
		d.problemf(path, "must be %s, got %d", want, *v)
	}
}

// defaultString sets an empty *s to def: an empty string means "the default".
func defaultString(s *string, def string) {
	if *s == "" {
		*s = def
	}
}

// defaultValue sets a zero *v to def. Durations and sizes refuse an explicit
// zero while decoding, so zero here means absent.
func defaultValue[T Duration | Size](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// isToken reports whether s is an HTTP token, as header names must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
