package httpsink

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
	"github.com/valyala/fasthttp"
)

const secret = "s3cr3t-MARKER-42"

// recorder is a destination that keeps every request it answers.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	header http.Header
	body   []byte
	method string
	url    string
	user   string
	pass   string
}

func (rec *recorder) keep(r *http.Request) recorded {
	body, _ := io.ReadAll(r.Body)
	user, pass, _ := r.BasicAuth()
	k := recorded{header: r.Header.Clone(), body: body, method: r.Method, url: r.URL.String(), user: user, pass: pass}
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, k)
	rec.mu.Unlock()
	return k
}

func (rec *recorder) all() []recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]recorded(nil), rec.reqs...)
}

func (rec *recorder) bodies() [][]byte {
	var out [][]byte
	for _, r := range rec.all() {
		out = append(out, r.body)
	}
	return out
}

// server starts a destination answering with handle after recording the
// request.
func server(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, k recorded)) (*httptest.Server, *recorder) {
	t.Helper()
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := rec.keep(r)
		if handle != nil {
			handle(w, r, k)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, rec
}

// secretURL puts the marker in the user info and the query of srv's URL.
func secretURL(srv *httptest.Server, path string) string {
	return strings.Replace(srv.URL, "http://", "http://hook:"+secret+"@", 1) + path + "?token=" + secret + "&plain=1"
}

func newSink(t *testing.T, cfg Config) *Sink {
	t.Helper()
	if cfg.Version == "" {
		cfg.Version = "1.2.3"
	}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	return s
}

func secretConfig(url string) Config {
	return Config{
		URL:     url,
		Headers: map[string]string{"X-Api-Key": secret, "X-Event": "{{ .event }}"},
		Sign:    &Sign{Secret: secret},
		Timeout: 2 * time.Second,
	}
}

func status(code int, retryAfter string) func(http.ResponseWriter, *http.Request, recorded) {
	return func(w http.ResponseWriter, r *http.Request, _ recorded) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(code)
	}
}

func TestConformance(t *testing.T) {
	failing := func(handle func(http.ResponseWriter, *http.Request, recorded)) func(t *testing.T) sinks.Sink {
		return func(t *testing.T) sinks.Sink {
			srv, _ := server(t, handle)
			return newSink(t, secretConfig(secretURL(srv, "/hook")))
		}
	}
	sinktest.Run(t, sinktest.Harness{
		Secret: secret,
		Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			srv, rec := server(t, nil)
			return newSink(t, secretConfig(secretURL(srv, "/hook"))), rec.bodies
		},
		Failing: []sinktest.Failing{
			{Name: "500 echoing the request", Permanent: false, New: failing(func(w http.ResponseWriter, r *http.Request, k recorded) {
				w.WriteHeader(500)
				fmt.Fprintf(w, "refused %s %s key=%s pass=%s sig=%s", r.Method, k.url, r.Header.Get("X-Api-Key"), k.pass, r.Header.Get("Webhook-Signature"))
			})},
			{Name: "400 echoing the key", Permanent: true, New: failing(func(w http.ResponseWriter, r *http.Request, k recorded) {
				w.WriteHeader(400)
				fmt.Fprintf(w, "%s bad key %s", strings.Repeat(".", 190), r.Header.Get("X-Api-Key")) // cut across the 200-byte snippet
			})},
			{Name: "503 with Retry-After", RetryAfter: 7 * time.Second, New: failing(status(503, "7"))},
			{Name: "429 with HTTP-date Retry-After", RetryAfter: 30 * time.Second,
				New: failing(func(w http.ResponseWriter, r *http.Request, k recorded) {
					status(429, time.Now().Add(30*time.Second).UTC().Format(http.TimeFormat))(w, r, k)
				})},
			{Name: "404", Permanent: true, New: failing(status(404, ""))},
			{Name: "connection refused", New: func(t *testing.T) sinks.Sink {
				return newSink(t, secretConfig("http://hook:"+secret+"@"+closedAddr(t)+"/hook?token="+secret))
			}},
			{Name: "timeout", New: func(t *testing.T) sinks.Sink {
				srv, _ := server(t, func(w http.ResponseWriter, r *http.Request, _ recorded) {
					select {
					case <-r.Context().Done():
					case <-time.After(5 * time.Second):
					}
				})
				cfg := secretConfig(secretURL(srv, "/hook"))
				cfg.Timeout = 100 * time.Millisecond
				return newSink(t, cfg)
			}},
		},
	})
}

// closedAddr returns a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestStatusClassification(t *testing.T) {
	tests := []struct {
		code       int
		retryAfter string
		wantErr    bool
		permanent  bool
		after      time.Duration
	}{
		{code: 200},
		{code: 201},
		{code: 204},
		{code: 400, wantErr: true, permanent: true},
		{code: 401, wantErr: true, permanent: true},
		{code: 404, wantErr: true, permanent: true},
		{code: 408, wantErr: true},
		{code: 429, retryAfter: "3", wantErr: true, after: 3 * time.Second},
		{code: 429, wantErr: true},
		{code: 500, wantErr: true},
		{code: 503, retryAfter: "120", wantErr: true, after: 2 * time.Minute},
		{code: 302, wantErr: true, permanent: true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d %s", tc.code, tc.retryAfter), func(t *testing.T) {
			srv, rec := server(t, func(w http.ResponseWriter, r *http.Request, _ recorded) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				if tc.code == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tc.code)
				io.WriteString(w, "nope")
			})
			s := newSink(t, Config{URL: srv.URL + "/hook"})
			defer s.Close(t.Context())
			code, err := s.SendStatus(t.Context(), sinktest.Variant(1))
			if (err != nil) != tc.wantErr {
				t.Fatalf("send = %v, want error %v", err, tc.wantErr)
			}
			if code != tc.code {
				t.Errorf("SendStatus code = %d, want %d", code, tc.code)
			}
			if len(rec.all()) != 1 {
				t.Fatalf("%d requests, want 1 (redirects are not followed, nothing is retried)", len(rec.all()))
			}
			if err == nil {
				return
			}
			if sinks.IsPermanent(err) != tc.permanent {
				t.Errorf("IsPermanent(%v) = %v", err, !tc.permanent)
			}
			var se *sinks.StatusError
			if !errors.As(err, &se) || se.Code != tc.code {
				t.Errorf("error %v does not carry status %d", err, tc.code)
			}
			if d, ok := sinks.RetryAfterOf(err); (tc.after != 0) != ok || d != tc.after {
				t.Errorf("RetryAfterOf = %v, %v; want %v", d, ok, tc.after)
			}
			if want := "POST " + srv.URL + "/hook: http status " + strconv.Itoa(tc.code) + ": nope"; err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
		})
	}
}

func TestRequest(t *testing.T) {
	ev := sinktest.Event("ev_42", sinktest.Samples()["escaping.json"])
	tests := []struct {
		name  string
		cfg   Config
		check func(t *testing.T, r recorded)
	}{
		{
			name: "forward unchanged",
			cfg:  Config{Headers: map[string]string{"X-Api-Key": "k-123", "authorization": "Bearer abc"}},
			check: func(t *testing.T, r recorded) {
				if string(r.body) != string(ev.Body) {
					t.Errorf("body altered:\n%s", r.body)
				}
				want := map[string]string{
					"X-Hookrouter-Event-Id": "ev_42",
					"User-Agent":            "hookrouter/1.2.3",
					"Content-Type":          "application/json",
					"X-Api-Key":             "k-123",
					"Authorization":         "Bearer abc",
				}
				for k, v := range want {
					if got := r.header.Get(k); got != v {
						t.Errorf("%s = %q, want %q", k, got, v)
					}
				}
				if r.method != "POST" || r.header.Get("Webhook-Signature") != "" {
					t.Errorf("method %s, signature %q", r.method, r.header.Get("Webhook-Signature"))
				}
			},
		},
		{
			name: "templated headers",
			cfg: Config{Method: "put", Headers: map[string]string{
				"X-Sender":  "{{ .message.sender_name | upper }}",
				"X-Text":    "{{ .message.content.text | truncate 14 }}",
				"X-Missing": "[{{ .device.id }}]",
			}},
			check: func(t *testing.T, r recorded) {
				if r.method != "PUT" {
					t.Errorf("method %s", r.method)
				}
				want := map[string]string{
					"X-Sender":  `O'BRIEN "BOB" <BOB@EXAMPLE.COM>`,
					"X-Text":    `line one line`, // the newline became a space, no header injection
					"X-Missing": "[]",
				}
				for k, v := range want {
					if got := r.header.Get(k); got != v {
						t.Errorf("%s = %q, want %q", k, got, v)
					}
				}
			},
		},
		{
			name: "body expression",
			cfg:  Config{Body: `{"from": message.sender_name, "text": message?.content?.text, "dev": device?.id}`},
			check: func(t *testing.T, r recorded) {
				var got map[string]any
				if err := json.Unmarshal(r.body, &got); err != nil {
					t.Fatalf("body is not JSON: %v\n%s", err, r.body)
				}
				p, _ := ev.Payload()
				msg := p["message"].(map[string]any)
				if got["from"] != msg["sender_name"] || got["text"] != msg["content"].(map[string]any)["text"] || got["dev"] != nil {
					t.Errorf("body %s", r.body)
				}
			},
		},
		{
			name: "basic auth from url",
			cfg:  Config{URL: "user:pa%20ss"},
			check: func(t *testing.T, r recorded) {
				if r.user != "user" || r.pass != "pa ss" {
					t.Errorf("basic auth %q %q", r.user, r.pass)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, rec := server(t, nil)
			cfg := tc.cfg
			if cfg.URL != "" {
				cfg.URL = strings.Replace(srv.URL, "http://", "http://"+cfg.URL+"@", 1)
			} else {
				cfg.URL = srv.URL + "/in"
			}
			s := newSink(t, cfg)
			defer s.Close(t.Context())
			if err := s.Send(t.Context(), ev); err != nil {
				t.Fatalf("send: %v", err)
			}
			reqs := rec.all()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			tc.check(t, reqs[0])
			rendered, err := s.Render(ev)
			if err != nil || string(rendered) != string(reqs[0].body) {
				t.Errorf("Render = %q, %v; sent %q", rendered, err, reqs[0].body)
			}
		})
	}
}

// TestSignature checks the Standard Webhooks signature the way a receiver
// would, from the headers and the raw body alone.
func TestSignature(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	tests := []struct {
		name, secret string
	}{
		{"whsec", "whsec_" + base64.StdEncoding.EncodeToString(key)},
		{"raw", string(key)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, rec := server(t, nil)
			s := newSink(t, Config{URL: srv.URL, Sign: &Sign{Secret: tc.secret}, Body: `{"id": message.id}`})
			defer s.Close(t.Context())
			ev := sinktest.Variant(3)
			if err := s.Send(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
			r := rec.all()[0]
			id, ts, sig := r.header.Get("Webhook-Id"), r.header.Get("Webhook-Timestamp"), r.header.Get("Webhook-Signature")
			if id != ev.ID {
				t.Errorf("webhook-id %q, want %q", id, ev.ID)
			}
			sec, err := strconv.ParseInt(ts, 10, 64)
			if err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Second {
				t.Errorf("webhook-timestamp %q", ts)
			}
			mac := hmac.New(sha256.New, key)
			fmt.Fprintf(mac, "%s.%s.%s", id, ts, r.body)
			want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
			if sig != want {
				t.Errorf("webhook-signature %q, want %q", sig, want)
			}
			if string(r.body) != `{"id":"msg_0003"}` {
				t.Errorf("body %s", r.body)
			}
		})
	}
}

// TestSignatureRotation: with sign.secrets, each request carries one v1
// signature per key, so a receiver that knows any one of them accepts it.
func TestSignatureRotation(t *testing.T) {
	keys := []string{"new-signing-key-0123456789", "old-signing-key-9876543210"}
	srv, rec := server(t, nil)
	s := newSink(t, Config{URL: srv.URL, Sign: &Sign{Secrets: keys}})
	defer s.Close(t.Context())
	if err := s.Send(t.Context(), sinktest.Variant(1)); err != nil {
		t.Fatal(err)
	}
	r := rec.all()[0]
	id, ts, sig := r.header.Get("Webhook-Id"), r.header.Get("Webhook-Timestamp"), r.header.Get("Webhook-Signature")
	var want []string
	for _, k := range keys {
		mac := hmac.New(sha256.New, []byte(k))
		fmt.Fprintf(mac, "%s.%s.%s", id, ts, r.body)
		want = append(want, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	if sig != strings.Join(want, " ") {
		t.Errorf("webhook-signature %q, want %q", sig, strings.Join(want, " "))
	}
	for _, tc := range []struct {
		sign *Sign
		want string
	}{
		{&Sign{Secret: "a", Secrets: []string{"b"}}, "sign.secrets: give sign.secret or sign.secrets, not both"},
		{&Sign{Secrets: []string{"ok", ""}}, "sign.secrets[1]"},
		{&Sign{Secrets: []string{}}, "sign.secrets"},
	} {
		c := Config{URL: srv.URL, Sign: tc.sign}
		c.Default()
		var got []string
		for _, e := range c.Validate() {
			got = append(got, e.Error())
		}
		if !strings.Contains(strings.Join(got, "; "), tc.want) {
			t.Errorf("%+v: problems %q, want %q", tc.sign, got, tc.want)
		}
	}
}

func TestTimeouts(t *testing.T) {
	slow := func(t *testing.T) *httptest.Server {
		srv, _ := server(t, func(w http.ResponseWriter, r *http.Request, _ recorded) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		})
		return srv
	}
	t.Run("sink timeout", func(t *testing.T) {
		s := newSink(t, Config{URL: slow(t).URL, Timeout: 150 * time.Millisecond})
		defer s.Close(t.Context())
		start := time.Now()
		err := s.Send(t.Context(), sinktest.Variant(1))
		elapsed := time.Since(start)
		if err == nil || sinks.IsPermanent(err) {
			t.Fatalf("send = %v, want a retryable error", err)
		}
		if elapsed < 140*time.Millisecond || elapsed > time.Second {
			t.Errorf("returned after %v, want about 150ms", elapsed)
		}
	})
	t.Run("ctx deadline first", func(t *testing.T) {
		s := newSink(t, Config{URL: slow(t).URL, Timeout: 5 * time.Second})
		defer s.Close(t.Context())
		ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := s.Send(ctx, sinktest.Variant(1))
		elapsed := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) || sinks.IsPermanent(err) {
			t.Fatalf("send = %v, want a retryable error wrapping DeadlineExceeded", err)
		}
		if elapsed > time.Second {
			t.Errorf("returned after %v, want about 150ms", elapsed)
		}
	})
}

func TestRenderFailureIsPermanent(t *testing.T) {
	srv, rec := server(t, nil)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"body", Config{URL: srv.URL, Body: `{"x": message.sender_name}`}},
		{"header", Config{URL: srv.URL, Headers: map[string]string{"X-A": `{{ json .nan }}`}}},
	}
	// A device event has no message; the second payload holds a value JSON
	// cannot encode.
	ev := sinktest.Event("ev_dev", []byte(`{"event":"device.connected","device":{"id":"d"},"nan":1e400}`))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSink(t, tc.cfg)
			defer s.Close(t.Context())
			err := s.Send(t.Context(), ev)
			if err == nil || !sinks.IsPermanent(err) {
				t.Fatalf("send = %v, want a permanent error", err)
			}
			if _, err := s.Render(ev); err == nil {
				t.Error("Render succeeded")
			}
		})
	}
	if n := len(rec.all()); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"no url", Config{}, "url: "},
		{"scheme", Config{URL: "ftp://x/y"}, "url: "},
		{"relative", Config{URL: "/events"}, "url: "},
		{"unparsable with secret", Config{URL: "http://u:" + secret + "@host:port/x?token=" + secret}, "url: "},
		{"method", Config{URL: "http://h/", Method: "GET"}, "method: "},
		{"header name", Config{URL: "http://h/", Headers: map[string]string{"Bad Name": "x"}}, "headers.Bad Name: "},
		{"reserved header", Config{URL: "http://h/", Headers: map[string]string{"user-agent": "x"}}, "headers.user-agent: "},
		{"header template", Config{URL: "http://h/", Headers: map[string]string{"X-A": "{{ .a "}}, "headers.X-A: "},
		{"body", Config{URL: "http://h/", Body: `{"a": `}, "body: "},
		{"sign secret", Config{URL: "http://h/", Sign: &Sign{Secret: "whsec_" + secret + "!!"}}, "sign.secret: "},
		{"timeout", Config{URL: "http://h/", Timeout: -time.Second}, "timeout: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nil)
			if err == nil {
				t.Fatal("New succeeded")
			}
			if !strings.HasPrefix(err.Error(), tc.field) {
				t.Errorf("error %q does not start with %q", err, tc.field)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error carries the secret: %v", err)
			}
		})
	}
}

func TestNewDoesNoIO(t *testing.T) {
	// Nothing listens there and the name does not resolve: New must not care.
	s, err := New(Config{URL: "http://unresolvable.invalid:9/x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkSend(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"forward", Config{}},
		{"forward signed", Config{Sign: &Sign{Secret: "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))}}},
		{"body expression", Config{Body: `{"from": message.sender_name, "text": message?.content?.text}`}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
			}))
			defer srv.Close()
			benchSend(b, bc.cfg, srv.URL)
		})
		// Against a fasthttp server, which allocates nothing per request,
		// the figures are the sink's own.
		b.Run(bc.name+" fasthttp server", func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := &fasthttp.Server{Handler: func(*fasthttp.RequestCtx) {}}
			go srv.Serve(ln)
			defer srv.Shutdown()
			benchSend(b, bc.cfg, "http://"+ln.Addr().String())
		})
	}
}

func benchSend(b *testing.B, cfg Config, base string) {
	cfg.URL = base + "/hook"
	cfg.Headers = map[string]string{"X-Api-Key": "k"}
	s, err := New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	ev := sinktest.Event("ev_bench", sinktest.Samples()["channel.message_in.json"])
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Send(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNoCredentialEchoed: a destination that echoes the whole request in its
// error body (the Basic value the client derived from the URL's
// user:password, every header, the URL with its query) leaves none of the
// credentials in the error, in any encoding it could echo them.
func TestNoCredentialEchoed(t *testing.T) {
	const user, pass, key, token = "hookuser", "p@ss w0rd/long", "api-key-value-42", "query token+value"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
		fmt.Fprintf(w, "refused %s %s Authorization=%s X-Api-Key=%s", r.Method, r.URL.String(), r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"))
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/hook")
	u.User = url.UserPassword(user, pass)
	u.RawQuery = url.Values{"token": {token}}.Encode()
	s := newSink(t, Config{URL: u.String(), Headers: map[string]string{"X-Api-Key": key}})
	defer s.Close(t.Context())
	err := s.Send(t.Context(), sinktest.Variant(1))
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, secret := range []string{pass, url.QueryEscape(pass), url.PathEscape(pass), key, token, url.QueryEscape(token),
		base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))} {
		if strings.Contains(msg, secret) {
			t.Errorf("error carries %q: %s", secret, msg)
		}
	}
	if !strings.Contains(msg, "REDACTED") {
		t.Errorf("error %q: the echo was not kept (redacted)", msg)
	}
}

// TestNoCredentialEchoedAsJSON: a destination that echoes, JSON-encoded
// (Go's encoder writes & as \u0026), the token of an Authorization: Bearer
// header on its own, a Basic header's user:password, a query value and a
// signing secret leaves none of them in the error.
func TestNoCredentialEchoedAsJSON(t *testing.T) {
	const token, basicPass, queryVal = "bearer-token-a1b2c3", "basic<pass>word", "q&v<alue>long"
	signSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("sign-key-with/slash?>>"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(401)
		_, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		basic, _ := base64.StdEncoding.DecodeString(cred)
		json.NewEncoder(w).Encode([]string{cred, string(basic), r.URL.Query().Get("k"), signSecret, r.Header.Get("X-Proxy-Auth")})
	}))
	defer srv.Close()
	for _, tc := range []struct{ name, auth, secret string }{
		{"bearer", "Bearer " + token, token},
		{"basic in headers", "Basic " + base64.StdEncoding.EncodeToString([]byte("someone:"+basicPass)), basicPass},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSink(t, Config{URL: srv.URL + "/hook?k=" + url.QueryEscape(queryVal),
				Headers: map[string]string{"Authorization": tc.auth, "X-Proxy-Auth": "Token " + token},
				Sign:    &Sign{Secrets: []string{signSecret}}})
			defer s.Close(t.Context())
			err := s.Send(t.Context(), sinktest.Variant(1))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			_, cred, _ := strings.Cut(tc.auth, " ")
			for _, secret := range []string{cred, tc.secret, queryVal, signSecret} {
				q, _ := json.Marshal(secret)
				for _, form := range []string{secret, string(q[1 : len(q)-1]), strings.ReplaceAll(string(q[1:len(q)-1]), "/", `\/`)} {
					if strings.Contains(msg, form) {
						t.Errorf("error carries %q: %s", form, msg)
					}
				}
			}
			if strings.Contains(msg, "a1b2c3") || !strings.Contains(msg, "REDACTED") {
				t.Errorf("error %q", msg)
			}
		})
	}
}

// TestSecretPathSegments: with SecretPath (Slack), a destination that quotes
// one segment of the path on its own does not put it in the error.
func TestSecretPathSegments(t *testing.T) {
	const tokenSeg = "XXXXsecretTOKENxxxx1234"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(403)
		fmt.Fprintf(w, "invalid_token %s", tokenSeg)
	}))
	defer srv.Close()
	s := newSink(t, Config{URL: srv.URL + "/services/T0001/B0002/" + tokenSeg, SecretPath: true})
	defer s.Close(t.Context())
	err := s.Send(t.Context(), sinktest.Variant(1))
	if err == nil || strings.Contains(err.Error(), tokenSeg) || strings.Contains(err.Error(), "B0002") {
		t.Errorf("error %v", err)
	}
}
