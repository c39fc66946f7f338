package admin

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func ok(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }

func TestHandlerRefusesRouteWithoutAccess(t *testing.T) {
	tests := []struct {
		name   string
		routes []Route
		want   string
	}{
		{"no access", []Route{{Pattern: "GET /x", Handler: http.HandlerFunc(ok)}}, `"GET /x" has no access rule`},
		{"no handler", []Route{{Pattern: "GET /x", Access: Operator}}, `"GET /x" has no handler`},
		{"twice", []Route{{Pattern: "GET /x", Access: Operator, Handler: http.HandlerFunc(ok)},
			{Pattern: "GET /x", Access: Public, Handler: http.HandlerFunc(ok)}}, "registered twice"},
		{"bad pattern", []Route{{Pattern: "GET /{", Access: Operator, Handler: http.HandlerFunc(ok)}}, `"GET /{"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Handler(tc.routes, NewGuard(func() string { return "" }), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestGuardKeepsFlusher: a server-sent-events handler behind the guard can
// flush each event as it is written.
func TestGuardKeepsFlusher(t *testing.T) {
	stream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := w.(http.Flusher)
		if !ok {
			http.Error(w, "no flusher", 500)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("data: one\n\n"))
		f.Flush()
		<-r.Context().Done() // the client reads "one" before the handler returns
	})
	h, err := Handler([]Route{
		{Pattern: "GET /stream", Access: Operator, Handler: stream},
		{Pattern: "GET /login", Access: Public, Handler: http.HandlerFunc(ok)},
	}, NewGuard(func() string { return "tok" }), Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	if resp, err := http.Get(srv.URL + "/login"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("public route without a token: %v %v", resp, err)
	}
	if resp, err := http.Get(srv.URL + "/stream"); err != nil || resp.StatusCode != 401 {
		t.Fatalf("operator route without a token: %v %v", resp, err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/stream", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if resp.StatusCode != 200 || line != "data: one\n" {
		t.Fatalf("stream: %d %q %v", resp.StatusCode, line, err)
	}
}

func TestGuard(t *testing.T) {
	tok := "s3cret"
	g := NewGuard(func() string { return tok })
	if !g.TokenMatches("s3cret") || g.TokenMatches("s3cre") || g.TokenMatches("") {
		t.Error("TokenMatches")
	}
	tok = ""
	if g.Enabled() || g.TokenMatches("") || g.SessionValue() != "" {
		t.Error("without a token: enabled, matching or a session value")
	}
	if !g.Allowed(httptest.NewRequest("GET", "/", nil)) {
		t.Error("without a token, a request is refused")
	}
}

// TestRebindingRefused: without a token, a request that reaches the loopback
// listener under another site's name (DNS rebinding) is refused, whatever
// its route; one addressed to an IP or localhost is served. With a token,
// the token decides.
func TestRebindingRefused(t *testing.T) {
	token := ""
	h, err := Handler([]Route{{Pattern: "POST /-/replay", Access: Operator, Handler: http.HandlerFunc(ok)},
		{Pattern: "GET /login", Access: Public, Handler: http.HandlerFunc(ok)}},
		NewGuard(func() string { return token }), Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	_, port, _ := strings.Cut(srv.Listener.Addr().String(), ":")
	send := func(method, path, host string, hdr ...string) int {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		req.Host = host
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST", "app.localhost:" + port, "[::1]:" + port, "10.1.2.3"} {
		if got := send("POST", "/-/replay", host); got != 200 {
			t.Errorf("Host %q: %d, want 200", host, got)
		}
	}
	for _, host := range []string{"rebind.evil.example:" + port, "evil.example", "localhost.evil.example", "127.0.0.1.nip.io:" + port} {
		// The browser sees one origin: same-origin headers do not help.
		if got := send("POST", "/-/replay", host, "Origin", "http://"+host, "Sec-Fetch-Site", "same-origin"); got != http.StatusForbidden {
			t.Errorf("POST, Host %q: %d, want 403", host, got)
		}
		if got := send("GET", "/login", host); got != http.StatusForbidden {
			t.Errorf("GET public route, Host %q: %d, want 403", host, got)
		}
	}
	token = "t0ken"
	if got := send("POST", "/-/replay", "evil.example"); got != http.StatusUnauthorized {
		t.Errorf("with a token, no credentials: %d, want 401", got)
	}
	if got := send("POST", "/-/replay", "admin.example", "Authorization", "Bearer t0ken"); got != 200 {
		t.Errorf("with a token, a name in Host and the token: %d, want 200", got)
	}
}
