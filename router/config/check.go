package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/router/auth"
	"github.com/hookrouter/hookrouter/sinks"
)

// Defaults, as the spec gives them. Those of sinks, auth schemes and queue
// backends are in their packages.
const (
	defaultListen        = ":3000"
	defaultMaxConns      = 10000
	defaultAdminListen   = "127.0.0.1:3001"
	defaultDataDir       = "./data"
	defaultMaxKeys       = 1_000_000
	defaultQueueBytes    = Size(1 << 30)
	defaultMaxBodyBytes  = Size(1 << 20)
	defaultDedupTTL      = Duration(24 * time.Hour)
	defaultDedupTimeout  = Duration(2 * time.Second)
	defaultRedisPrefix   = "hookrouter:dedup:"
	defaultMaxAttempts   = 8
	defaultInitBackoff   = Duration(500 * time.Millisecond)
	defaultMaxBackoff    = Duration(time.Minute)
	defaultFailures      = 5
	defaultOpenFor       = Duration(30 * time.Second)
	defaultWorkers       = 4
	maxWorkers           = 256
	defaultLogLevel      = "info"
	defaultLogFormat     = "json"
	defaultDedupStore    = "memory"
	defaultQueueBackend  = "disk"
	reservedPathPrefix   = "/-/"
	nameCharsDescription = `letters, digits, "-" and "_"`
)

// check fills in defaults and reports every schema problem of d.f. Paths
// already refused while decoding are skipped, so a mistake is reported once.
func (d *decoder) check() {
	f := d.f
	if d.bad[""] {
		return // the top level is not a mapping: nothing else can be checked
	}
	d.checkListen()
	d.fieldErrors("tls", f.TLS.Validate())
	defaultString(&f.DataDir, defaultDataDir)
	d.checkSources()
	d.checkDedup()
	d.checkQueue()
	d.checkJournal()
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
		for j, c := range s.AllowIPs {
			d.cidr(fmt.Sprintf("%s.allow_ips[%d]", p, j), c)
		}
		if s.RateLimit != nil {
			d.checkRateLimit(p+".rate_limit", s.RateLimit)
		}
	}
	for j, c := range f.TrustedProxies {
		d.cidr(fmt.Sprintf("trusted_proxies[%d]", j), c)
	}
	if f.MaxConns < 0 {
		d.problemf("max_conns", "must not be negative, got %d", f.MaxConns)
	}
	if f.MaxConnsPerIP < 0 {
		d.problemf("max_conns_per_ip", "must not be negative, got %d", f.MaxConnsPerIP)
	}
	if f.MaxConns == 0 {
		f.MaxConns = defaultMaxConns
	}
}

// cidr checks an address range, written as a CIDR or a single address.
func (d *decoder) cidr(path, c string) {
	if d.isBad(path) {
		return
	}
	if _, err := ParsePrefix(c); err != nil {
		d.problemf(path, "%q is not a CIDR or an IP address (such as 10.0.0.0/8 or 203.0.113.7)", c)
	}
}

// ParsePrefix parses a CIDR, or a single address as the range of just it.
func ParsePrefix(c string) (netip.Prefix, error) {
	if strings.Contains(c, "/") {
		p, err := netip.ParsePrefix(c)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(c)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
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

func (d *decoder) checkAuth(path string, a *auth.Config) {
	a.Default()
	d.fieldErrors(path, a.Validate())
}

// fieldErrors reports a component's problems, placed at path followed by
// each one's field, unless that field was refused while decoding.
func (d *decoder) fieldErrors(path string, errs []sinks.FieldError) {
	for _, e := range errs {
		fp := keyPath(path, e.Field)
		if e.Field == "" {
			fp = path
		}
		if d.isBad(fp) {
			continue
		}
		msg := e.Msg
		if raw := d.origin[fp]; e.Empty && raw != "" {
			msg += fmt.Sprintf(" (it is %q, which is empty in this environment)", raw)
		}
		if s := Suggest(e.Value, e.Allowed); e.Allowed != nil && s != "" {
			msg = strings.TrimSuffix(msg, ")") + fmt.Sprintf("; did you mean %q?)", s)
		}
		d.problemf(fp, "%s", msg)
	}
}

func (d *decoder) checkDedup() {
	dd := &d.f.Dedup
	defaultString(&dd.Store, defaultDedupStore)
	if d.oneOf("dedup.store", dd.Store, "dedup store", "memory", "redis") && dd.Store == "redis" &&
		d.required("dedup.redis_url", dd.RedisURL, "required: dedup.store redis needs a redis_url, such as redis://127.0.0.1:6379/0") {
		d.serviceURL("dedup.redis_url", dd.RedisURL, "redis", "rediss", "unix")
	}
	defaultValue(&dd.Timeout, defaultDedupTimeout)
	if !d.set["dedup.redis_prefix"] {
		dd.RedisPrefix = defaultRedisPrefix
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
	if d.oneOf("queue.backend", q.Backend, "queue backend", "disk", "memory", "nats") && q.Backend == "nats" {
		q.NATS.Default()
		d.fieldErrors("queue", q.NATS.Validate())
	}
	defaultValue(&q.MaxBytes, defaultQueueBytes)
}

// The journal's defaults (journal.DefaultConfig's too).
const (
	defaultJournalRetention = Duration(168 * time.Hour)
	defaultJournalBytes     = Size(1 << 30)
	minJournalBytes         = Size(1 << 20)
)

func (d *decoder) checkJournal() {
	j := &d.f.Journal
	if !d.set["journal.enabled"] {
		j.Enabled = true
	}
	if !d.set["journal.bodies"] {
		j.Bodies = true
	}
	if !d.set["journal.retention"] {
		j.Retention = defaultJournalRetention
	} else if j.Retention <= 0 && !d.isBad("journal.retention") {
		d.problemf("journal.retention", "must be a positive duration, such as 168h")
	}
	if !d.set["journal.max_bytes"] {
		j.MaxBytes = defaultJournalBytes
	} else if j.MaxBytes < minJournalBytes && !d.isBad("journal.max_bytes") {
		d.problemf("journal.max_bytes", "must be at least 1MiB, got %d", j.MaxBytes)
	}
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
			s.Settings.Default()
			d.fieldErrors(p, s.Settings.Validate())
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
		if w, ok := s.Settings.(interface{ DefaultWorkers() int }); ok {
			workers = w.DefaultWorkers() // a sink that writes locally
		}
		d.positiveInt(p+".workers", &s.Workers, workers, fmt.Sprintf("from 1 to %d", maxWorkers))
		if s.Workers > maxWorkers && !d.isBad(p+".workers") {
			d.problemf(p+".workers", "must be from 1 to %d, got %d", maxWorkers, s.Workers)
		}
		d.rateLimit(p+".rate_limit", s)
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

// rateLimit fills a sink's rate_limit: the sink type's default when absent
// (DefaultRateLimit, Slack's), a burst of the rate per second (at least 1)
// when only a rate is given.
func (d *decoder) rateLimit(path string, s *Sink) {
	if s.RateLimit == nil {
		if r, ok := s.Settings.(interface{ DefaultRateLimit() (float64, int) }); ok {
			rate, burst := r.DefaultRateLimit()
			s.RateLimit = &RateLimit{Rate: Rate(rate), Burst: burst}
		}
		return
	}
	d.checkRateLimit(path, s.RateLimit)
}

// checkRateLimit checks a rate_limit and fills in its burst: the rate per
// second (at least 1) when only a rate is given.
func (d *decoder) checkRateLimit(path string, rl *RateLimit) {
	switch {
	case rl.Burst < 0:
		d.problemf(path+".burst", "must not be negative, got %d", rl.Burst)
	case rl.Rate == 0 && rl.Burst > 0 && !d.isBad(path+".rate"):
		d.problemf(path+".rate", "required with a burst: the average rate, such as 10/s (rate 0 means no limit)")
	case rl.Burst == 0 && rl.Rate > 0:
		rl.Burst = max(1, int(math.Ceil(float64(rl.Rate))))
	}
}
