package router

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router/admin"
	"github.com/hookrouter/hookrouter/router/config"
)

// adminPaths are requests for every admin endpoint and the profiler, as an
// attacker would try them.
var adminPaths = []struct{ method, path string }{
	{"POST", "/-/reload"},
	{"POST", "/-/replay"},
	{"GET", "/metrics"},
	{"GET", "/debug/pprof/"},
	{"GET", "/debug/pprof/goroutine?debug=2"},
	{"GET", "/debug/pprof/cmdline"},
	{"GET", "/-/events"},
	{"GET", "/-/dead-letters"},
	{"GET", "/rules"},
}

// TestIngressBehindProxyServesNoAdmin puts a real reverse proxy on the same
// host in front of the ingress, the deployment that makes every client look
// local: no admin endpoint, /metrics or profile answers through it, a
// replayed dead letter delivers nothing, and /health says only what the
// platform's docs name.
func TestIngressBehindProxyServesNoAdmin(t *testing.T) {
	crm := newCapture(t)
	s := startServer(t, baseConfig("{backend: memory}", "  crm: {type: http, url: "+crm.URL+"}",
		`  - {name: all, when: "true", to: [crm]}`))
	target, _ := url.Parse(s.url)
	proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
	defer proxy.Close()

	line := `{"sink":"crm","event_id":"0194abcd000000000000000000000000","attempts":8,"error":"x",` +
		`"event":{"id":"0194abcd000000000000000000000000","source":"platform","payload":{"event":"injected"}}}` + "\n"
	for _, base := range []string{proxy.URL, s.url} {
		for _, p := range adminPaths {
			req, _ := http.NewRequest(p.method, base+p.path, strings.NewReader(line))
			a := do(t, req)
			if a.status != http.StatusNotFound || strings.Contains(a.body, "goroutine") || strings.Contains(a.body, "hookrouter_") {
				t.Errorf("%s %s%s: %d %.80q, want 404", p.method, base, p.path, a.status, a.body)
			}
		}
		req, _ := http.NewRequest("GET", base+"/health", nil)
		a := do(t, req)
		var h map[string]any
		if err := json.Unmarshal([]byte(a.body), &h); err != nil || a.status != 200 {
			t.Fatalf("GET %s/health: %d %s", base, a.status, a.body)
		}
		if len(h) != 2 || h["status"] != "healthy" || h["processed_events"] != float64(0) {
			t.Errorf("ingress /health = %s, want only status and processed_events", a.body)
		}
	}
	if n := crm.requestCount(); n != 0 {
		t.Errorf("crm got %d requests from a replay sent to the ingress", n)
	}
	// The same replay on the admin listener does deliver: the test above
	// could have passed because replay was broken.
	if a := s.adminPost("/-/replay", []byte(line)); a.status != 200 || !strings.Contains(a.body, `"requeued":1`) {
		t.Fatalf("replay on the admin listener: %d %s", a.status, a.body)
	}
	waitFor(t, 5*time.Second, "replayed delivery", func() bool { return crm.count() == 1 })
}

var wildcard = regexp.MustCompile(`\{[^}]*\}`)

// TestAdminToken: with admin.token set, every route of the table answers 401
// without it, with a wrong one or with another scheme, and serves with the
// Bearer token or the console's session cookie.
func TestAdminToken(t *testing.T) {
	const token = "adm1n-t0ken-for-tests"
	cfg := strings.Replace(baseConfig("{backend: memory}", "  crm: {type: stdout}", `  - {name: all, when: "true", to: [crm]}`),
		"data_dir:", "admin: {token: "+token+"}\ndata_dir:", 1)
	s := startServer(t, cfg)
	sess := &http.Cookie{Name: admin.SessionCookie, Value: s.r.adminGuard().SessionValue()}
	if sess.Value == "" || strings.Contains(sess.Value, token) {
		t.Fatalf("session value %q", sess.Value)
	}

	routes := s.r.adminRoutes()
	paths := []string{"GET /no/such/path"}
	for _, rt := range routes {
		if rt.Access != admin.Operator {
			continue // the console's login form: tested with the console
		}
		// A request for the pattern: each {wildcard} becomes a value.
		paths = append(paths, wildcard.ReplaceAllString(strings.TrimSuffix(rt.Pattern, "{$}"), "x"))
	}
	req := func(mp string, set func(*http.Request)) answer {
		method, path, _ := strings.Cut(mp, " ")
		r, _ := http.NewRequest(method, s.admin+path, strings.NewReader(""))
		if set != nil {
			set(r)
		}
		return do(t, r)
	}
	for _, mp := range paths {
		for name, set := range map[string]func(*http.Request){
			"no credentials":   nil,
			"wrong token":      func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token+"x") },
			"token, no scheme": func(r *http.Request) { r.Header.Set("Authorization", token) },
			"basic":            func(r *http.Request) { r.SetBasicAuth("admin", token) },
			"wrong cookie":     func(r *http.Request) { r.AddCookie(&http.Cookie{Name: admin.SessionCookie, Value: token}) },
		} {
			if a := req(mp, set); a.status != http.StatusUnauthorized || a.body != `{"error":"Unauthorized"}` || a.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s, %s: %d %q, want 401", mp, name, a.status, a.body)
			}
		}
		if strings.HasSuffix(mp, "/profile") || strings.HasSuffix(mp, "/trace") {
			continue // they take seconds; the guard has let them through above if it would
		}
		for name, set := range map[string]func(*http.Request){
			"bearer": func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) },
			"cookie": func(r *http.Request) { r.AddCookie(sess) },
		} {
			a := req(mp, set)
			want := a.status != http.StatusUnauthorized
			if mp == "GET /no/such/path" {
				want = a.status == http.StatusNotFound
			}
			if !want {
				t.Errorf("%s, %s: %d %q", mp, name, a.status, a.body)
			}
		}
	}
	if h := s.adminGet("/health", "Authorization", "bearer "+token); h.status != 200 || !strings.Contains(h.body, `"config_generation":1`) {
		t.Errorf("full health with the token: %d %s", h.status, h.body)
	}
	// A cross-site form cannot use the console's cookie to change state.
	r, _ := http.NewRequest("POST", s.admin+"/-/reload", nil)
	r.AddCookie(sess)
	r.Header.Set("Sec-Fetch-Site", "cross-site")
	r.Header.Set("Origin", "https://evil.example")
	if a := do(t, r); a.status != http.StatusForbidden {
		t.Errorf("cross-site POST /-/reload with the cookie: %d %q, want 403", a.status, a.body)
	}

	// A reload that changes the token applies to the next request.
	if err := os.WriteFile(s.config, []byte(strings.Replace(cfg, token, "n3w-token", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if a := s.adminPost("/-/reload", nil, "Authorization", "Bearer "+token); a.status != 200 {
		t.Fatalf("reload: %d %s", a.status, a.body)
	}
	if a := s.adminGet("/metrics", "Authorization", "Bearer "+token); a.status != 401 {
		t.Errorf("old token after reload: %d", a.status)
	}
	if a := s.adminGet("/metrics", "Authorization", "Bearer n3w-token"); a.status != 200 {
		t.Errorf("new token after reload: %d", a.status)
	}
}

// TestAdminWithoutListener: without an admin listener (admin_listen ""),
// the ingress still serves nothing of it.
func TestAdminWithoutListener(t *testing.T) {
	s := startServer(t, baseConfig("{backend: memory}", "  crm: {type: stdout}", `  - {name: all, when: "true", to: [crm]}`))
	s.stop()
	f, err := config.Load(s.config)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(f, Options{ConfigPath: s.config, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.r, s.url, s.admin, s.done = r, "http://"+ln.Addr().String(), "", make(chan error, 1)
	go func() { s.done <- r.Serve(ln, nil) }()
	for _, p := range adminPaths {
		req, _ := http.NewRequest(p.method, s.url+p.path, nil)
		if a := do(t, req); a.status != 404 {
			t.Errorf("%s %s on the ingress without an admin listener: %d", p.method, p.path, a.status)
		}
	}
	if a := s.post("/webhook", []byte(`{"event":"x"}`)); a.status != 200 {
		t.Errorf("event: %d %s", a.status, a.body)
	}
}
