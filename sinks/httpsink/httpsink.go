// Package httpsink delivers events to an HTTP endpoint with fasthttp: the
// original JSON forwarded unchanged, or a body computed by an expr expression,
// optionally signed the Standard Webhooks way.
//
// A Sink makes exactly one attempt per Send (apart from re-sending once on a
// pooled keep-alive connection the server had already closed) and classifies
// the outcome with sinks.CheckStatus; retries, backoff and the circuit breaker
// belong to the dispatcher. Redirects are not followed: a 3xx is permanent.
package httpsink

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
	"github.com/valyala/fasthttp"
)

var (
	_ sinks.Sink     = (*Sink)(nil)
	_ sinks.Renderer = (*Sink)(nil)
)

// Sink posts events to one HTTP endpoint. It is safe for concurrent use.
type Sink struct {
	url     string
	shown   string // the URL as errors may show it
	method  string
	ua      string
	timeout time.Duration
	static  []header
	dynamic []dynamicHeader
	body    *render.Body
	bodyFn  func([]byte, *sinks.Event) ([]byte, error)
	// secrets are scrubbed from response snippets before they reach an
	// error: a receiver may echo back the request it refused.
	secrets []string
	signing bool
	macs    sync.Pool // *signer keyed with the signing secret
	bufs    sync.Pool // *[]byte request bodies
	client  *fasthttp.Client
	closed  atomic.Bool
	log     *slog.Logger
}

type header struct{ name, value string }

type dynamicHeader struct {
	name string
	tmpl *render.Template
}

// New checks cfg and builds the sink. It does no I/O: connections are made by
// the first Send. Errors are sinks.FieldErrors naming the offending field
// (url, method, headers.NAME, body, timeout, sign.secret).
func New(cfg Config, log *slog.Logger) (*Sink, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Default()
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs[0]
	}
	s := &Sink{
		url:     cfg.URL,
		method:  cfg.Method,
		ua:      "hookrouter/" + cfg.Version,
		timeout: cfg.Timeout,
		bodyFn:  cfg.BodyFunc,
		log:     log,
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	u, _ := url.Parse(cfg.URL) // Validate parsed it
	if cfg.SecretPath {
		s.shown = sinks.RedactPath(cfg.URL)
		if u.Path != "" && u.Path != "/" {
			s.secrets = append(s.secrets, u.Path, u.EscapedPath())
			// Each segment but the first on its own too: a Slack error may
			// quote the token segment alone (/services/T…/B…/TOKEN).
			segs := strings.Split(strings.Trim(u.Path, "/"), "/")
			for _, seg := range segs[1:] {
				s.secrets = append(s.secrets, seg, url.PathEscape(seg))
			}
		}
	} else {
		s.shown = sinks.RedactURL(cfg.URL)
	}
	if u.User != nil {
		// The client sends the URL's user:password as Authorization: Basic,
		// whose value a receiver may echo as it is.
		pw, _ := u.User.Password()
		s.secrets = append(s.secrets, u.User.Username(), pw, url.QueryEscape(pw), u.User.String(),
			base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw)))
	}
	if u.RawQuery != "" {
		s.secrets = append(s.secrets, u.RawQuery)
		for _, vs := range u.Query() {
			for _, v := range vs {
				s.secrets = append(s.secrets, v, url.QueryEscape(v))
			}
		}
	}

	// Sorted so that requests and errors do not depend on map order.
	names := make([]string, 0, len(cfg.Headers))
	for name := range cfg.Headers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		field := "headers." + name
		canon := string(fasthttp.AppendNormalizedHeaderKey(nil, name))
		t, err := render.ParseTemplate(field, cfg.Headers[name])
		if err != nil {
			return nil, sinks.Errorf(field, "%v", err)
		}
		if t.Static() {
			v := sanitizeHeaderValue(cfg.Headers[name])
			s.static = append(s.static, header{canon, v})
			s.secrets = append(s.secrets, headerCredentials(v)...)
		} else {
			s.dynamic = append(s.dynamic, dynamicHeader{canon, t})
		}
	}

	if cfg.Body != "" && cfg.BodyFunc == nil {
		b, err := render.CompileBody(cfg.Body)
		if err != nil {
			return nil, sinks.Errorf("body", "%v", err)
		}
		s.body = b
	}

	if cfg.Sign != nil {
		var keys [][]byte
		for _, sec := range cfg.Sign.keys() {
			key, _ := signingKey(sec) // Validate decoded it
			keys = append(keys, key)
			s.secrets = append(s.secrets, sec)
		}
		s.signing = true
		s.macs.New = func() any {
			g := &signer{}
			for _, key := range keys {
				g.macs = append(g.macs, hmac.New(sha256.New, key))
			}
			return g
		}
	}
	// A receiver that echoes the request as JSON escapes what it quotes
	// (Go's encoding/json writes & as \u0026, PHP writes / as \/).
	for _, v := range s.secrets {
		s.secrets = append(s.secrets, jsonEscaped(v)...)
	}
	s.secrets = slices.DeleteFunc(s.secrets, func(v string) bool { return len(v) < 4 })
	// Longest first: a secret that contains another is replaced whole.
	slices.SortFunc(s.secrets, func(a, b string) int {
		if d := len(b) - len(a); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	s.secrets = slices.Compact(s.secrets)
	s.bufs.New = func() any { return new([]byte) }

	s.client = &fasthttp.Client{
		NoDefaultUserAgentHeader: true,
		MaxConnsPerHost:          cfg.MaxConns,
		MaxConnWaitTimeout:       s.timeout,
		ReadTimeout:              s.timeout,
		WriteTimeout:             s.timeout,
		MaxIdleConnDuration:      30 * time.Second,
		ReadBufferSize:           8 << 10,
		DisablePathNormalizing:   true, // send the path exactly as configured
		RetryIfErr:               retryStaleConn,
	}
	return s, nil
}

// retryStaleConn lets fasthttp re-send once when a pooled keep-alive
// connection turns out to have been closed by the server, as net/http does;
// any other failure is reported to the dispatcher, which owns retries.
func retryStaleConn(_ *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	return false, attempts == 1 && (errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed))
}

// Send makes one request for ev. It returns nil on a 2xx answer; otherwise an
// error classified by sinks.CheckStatus (transport failures and timeouts are
// retryable, a body or header that cannot be rendered is permanent). It
// waits at most Timeout, and never past ctx's deadline; a ctx cancelled while
// the request is in flight is noticed when the request ends.
func (s *Sink) Send(ctx context.Context, ev *sinks.Event) error {
	_, err := s.SendStatus(ctx, ev)
	return err
}

// SendStatus is Send that also returns the destination's status code, 0
// when it did not answer (sinks.StatusSender).
func (s *Sink) SendStatus(ctx context.Context, ev *sinks.Event) (int, error) {
	if s.closed.Load() {
		return 0, s.fail(sinks.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return 0, s.fail(err)
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	bp := s.bufs.Get().(*[]byte)
	defer func() {
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		if cap(*bp) <= 256<<10 {
			*bp = (*bp)[:0]
			s.bufs.Put(bp)
		}
	}()

	var err error
	*bp, err = s.build(req, ev, (*bp)[:0])
	if err != nil {
		return 0, s.fail(sinks.Permanent(err))
	}
	deadline := time.Now().Add(s.timeout)
	ctxDeadline := false
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, ctxDeadline = d, true
	}
	if err := s.client.DoDeadline(req, resp, deadline); err != nil {
		cerr := ctx.Err()
		if cerr == nil && ctxDeadline && isTimeout(err) {
			// fasthttp's clock may fire a hair before the context's.
			cerr = context.DeadlineExceeded
		}
		if cerr != nil {
			return 0, s.fail(fmt.Errorf("%w: %w", err, cerr))
		}
		return 0, s.fail(err)
	}
	code := resp.StatusCode()
	if code >= 200 && code < 300 {
		return code, nil
	}
	return code, s.fail(sinks.CheckStatus(code, string(resp.Header.Peek(fasthttp.HeaderRetryAfter)), s.scrub(resp.Body())))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) ||
		errors.Is(err, fasthttp.ErrTLSHandshakeTimeout) || (errors.As(err, &ne) && ne.Timeout())
}

func (s *Sink) fail(err error) error {
	return fmt.Errorf("%s %s: %w", s.method, s.shown, err)
}

// build fills req for ev. The body is appended to buf, which must stay
// untouched until the request is done; the grown buf is returned.
func (s *Sink) build(req *fasthttp.Request, ev *sinks.Event, buf []byte) ([]byte, error) {
	req.SetRequestURI(s.url)
	req.Header.SetMethod(s.method)
	req.Header.SetContentType("application/json")
	req.Header.SetUserAgent(s.ua)
	req.Header.Set("X-Hookrouter-Event-Id", ev.ID)
	for _, h := range s.static {
		req.Header.Set(h.name, h.value)
	}
	if len(s.dynamic) > 0 {
		p, err := ev.Payload()
		if err != nil {
			return buf, fmt.Errorf("payload: %w", err)
		}
		for _, h := range s.dynamic {
			v, err := h.tmpl.Execute(p)
			if err != nil {
				return buf, err // text/template errors name the template: headers.NAME
			}
			req.Header.Set(h.name, sanitizeHeaderValue(v))
		}
	}
	body, buf, err := s.appendBody(buf, ev)
	if err != nil {
		return buf, err
	}
	// SetBodyRaw does not copy: body is ev.Body (never modified) or buf.
	req.SetBodyRaw(body)
	if s.signing {
		s.sign(req, ev.ID, body)
	}
	return buf, nil
}

// appendBody returns the body to send for ev: the original bytes, or a
// rendering appended to buf (returned grown either way).
func (s *Sink) appendBody(buf []byte, ev *sinks.Event) (body, grown []byte, err error) {
	switch {
	case s.bodyFn != nil:
		buf, err = s.bodyFn(buf, ev)
		return buf, buf, err
	case s.body != nil:
		p, err := ev.Payload()
		if err != nil {
			return nil, buf, fmt.Errorf("payload: %w", err)
		}
		buf, err = s.body.AppendRender(buf, p)
		if err != nil {
			return nil, buf, fmt.Errorf("body: %w", err)
		}
		return buf, buf, nil
	default:
		return ev.Body, buf, nil
	}
}

// signer is one pooled set of HMAC states, one per signing key, with
// scratch space, so that signing allocates nothing.
type signer struct {
	macs []hash.Hash
	buf  []byte
	sum  [sha256.Size]byte
	sig  []byte // "v1,<base64>" per key, space-separated
}

// sign adds the Standard Webhooks headers: each signature is the base64
// HMAC-SHA256 of "id.timestamp.body" under one key.
func (s *Sink) sign(req *fasthttp.Request, id string, body []byte) {
	g := s.macs.Get().(*signer)
	g.buf = append(g.buf[:0], id...)
	g.buf = append(g.buf, '.')
	g.buf = strconv.AppendInt(g.buf, time.Now().Unix(), 10)
	stamp := g.buf[len(id)+1:]
	g.buf = append(g.buf, '.')
	g.sig = g.sig[:0]
	for i, m := range g.macs {
		m.Reset()
		m.Write(g.buf)
		m.Write(body)
		if i > 0 {
			g.sig = append(g.sig, ' ')
		}
		g.sig = append(g.sig, "v1,"...)
		g.sig = base64.StdEncoding.AppendEncode(g.sig, m.Sum(g.sum[:0]))
	}
	req.Header.Set("Webhook-Id", id)
	req.Header.SetBytesV("Webhook-Timestamp", stamp)
	req.Header.SetBytesV("Webhook-Signature", g.sig)
	s.macs.Put(g)
}

// Render returns the body Send would post for ev, after checking that every
// header template renders too. It does no I/O.
func (s *Sink) Render(ev *sinks.Event) ([]byte, error) {
	if len(s.dynamic) > 0 {
		p, err := ev.Payload()
		if err != nil {
			return nil, fmt.Errorf("payload: %w", err)
		}
		for _, h := range s.dynamic {
			if _, err := h.tmpl.Execute(p); err != nil {
				return nil, err
			}
		}
	}
	body, _, err := s.appendBody(nil, ev)
	if err != nil {
		return nil, err
	}
	return slices.Clone(body), nil
}

// Close makes later Sends fail with sinks.ErrClosed and closes idle
// connections; requests in flight finish. It is idempotent.
func (s *Sink) Close(ctx context.Context) error {
	if s.closed.Swap(true) {
		return nil
	}
	s.client.CloseIdleConnections()
	s.log.DebugContext(ctx, "http sink closed", "url", s.shown)
	return nil
}

// scrub returns the start of a response body with the sink's secrets
// replaced: a receiver may echo back the request it refused. Replacing before
// CheckStatus cuts the snippet means no cut can leave half a secret.
func (s *Sink) scrub(body []byte) []byte {
	body = bytes.TrimSpace(body)
	if len(body) > 64<<10 {
		body = body[:64<<10] // only the first 200 bytes are kept
	}
	out := string(body)
	for _, v := range s.secrets {
		out = strings.ReplaceAll(out, v, "REDACTED")
	}
	return []byte(out)
}

// headerCredentials returns what a receiver may echo of a header value the
// sink sends: the value, and for "SCHEME CREDENTIAL" (Authorization: Bearer
// TOKEN) the credential alone; for Basic also the user:password it encodes
// and the password.
func headerCredentials(v string) []string {
	out := []string{v}
	scheme, cred, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok {
		return out
	}
	cred = strings.TrimSpace(cred)
	out = append(out, cred)
	if strings.EqualFold(scheme, "Basic") {
		if dec, err := base64.StdEncoding.DecodeString(cred); err == nil {
			_, pw, _ := strings.Cut(string(dec), ":")
			out = append(out, string(dec), pw)
		}
	}
	return out
}

// jsonEscaped returns the forms v takes inside a JSON string when they
// differ from v: Go's (quotes, control characters, <, > and & escaped) and
// with / escaped as well.
func jsonEscaped(v string) []string {
	b, _ := json.Marshal(v)
	q := string(b[1 : len(b)-1])
	var out []string
	if q != v {
		out = append(out, q)
	}
	if strings.Contains(q, "/") {
		out = append(out, strings.ReplaceAll(q, "/", `\/`))
	}
	return out
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// sanitizeHeaderValue turns control characters into spaces, so that a
// newline in a payload field rendered into a header cannot inject headers.
func sanitizeHeaderValue(v string) string {
	if strings.IndexFunc(v, isCtl) < 0 {
		return v
	}
	return strings.Map(func(r rune) rune {
		if isCtl(r) {
			return ' '
		}
		return r
	}, v)
}

func isCtl(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }
