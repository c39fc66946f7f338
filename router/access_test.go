package router

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"
)

// clientFrom is an HTTP client whose connections come from the loopback
// address ip (any of 127.0.0.0/8 is this host), as a distinct client would.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// TestAllowIPsAndTrustedProxies: with a real reverse proxy in front, the
// client the proxy saw decides; a forged X-Forwarded-For or X-Real-IP
// from a peer that is not a trusted proxy is ignored.
func TestAllowIPsAndTrustedProxies(t *testing.T) {
	cfg := strings.Replace(baseConfig("{backend: memory}", "  crm: {type: stdout}", `  - {name: all, when: "true", to: [crm]}`),
		"    auth:", "    allow_ips: [127.0.0.2/32]\n    auth:", 1)
	cfg = strings.Replace(cfg, "data_dir:", "trusted_proxies: [127.0.0.1]\ndata_dir:", 1)
	s := startServer(t, cfg)
	target, _ := url.Parse(s.url)
	proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
	defer proxy.Close()

	n := 0
	send := func(from, base string, hdr ...string) int {
		t.Helper()
		n++
		req, _ := http.NewRequest("POST", base+"/webhook", strings.NewReader(`{"event":"x","message":{"id":"m`+strings.Repeat("x", n)+`"}}`))
		req.Header.Set("Authorization", testSecret)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1]) // a name given twice is sent as two lines
		}
		resp, err := clientFrom(from).Do(req)
		if err != nil {
			t.Fatalf("from %s: %v", from, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name, from, via string
		hdr             []string
		want            int
	}{
		{"allowed client through the trusted proxy", "127.0.0.2", proxy.URL, nil, 200},
		{"other client through the proxy, forging X-Forwarded-For", "127.0.0.3", proxy.URL, []string{"X-Forwarded-For", "127.0.0.2"}, 403},
		{"allowed client directly", "127.0.0.2", s.url, nil, 200},
		{"untrusted peer forging X-Forwarded-For", "127.0.0.3", s.url, []string{"X-Forwarded-For", "127.0.0.2"}, 403},
		{"untrusted peer forging X-Real-IP", "127.0.0.3", s.url, []string{"X-Real-IP", "127.0.0.2"}, 403},
		{"the proxy's own address, no header", "127.0.0.1", s.url, nil, 403},
		// A proxy that adds its own X-Forwarded-For line (HAProxy) after
		// the one the client forged: the proxy's line is the last word.
		{"trusted proxy's line after a forged one", "127.0.0.1", s.url, []string{"X-Forwarded-For", "127.0.0.2", "X-Forwarded-For", "127.0.0.3"}, 403},
		{"trusted proxy's line naming the allowed client", "127.0.0.1", s.url, []string{"X-Forwarded-For", "127.0.0.3", "X-Forwarded-For", "127.0.0.2"}, 200},
		{"two X-Real-IP lines", "127.0.0.1", s.url, []string{"X-Real-IP", "127.0.0.2", "X-Real-IP", "127.0.0.3"}, 403},
	} {
		if got := send(tc.from, tc.via, tc.hdr...); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	if m := s.metric(`hookrouter_events_rejected_total{reason="forbidden",source="platform"}`); !strings.HasSuffix(m, " 6") {
		t.Errorf("forbidden count: %q, want 6", m)
	}
}

// TestSourceRateLimit: beyond the source's rate_limit, 429 with Retry-After;
// refused strangers do not spend the bucket.
func TestSourceRateLimit(t *testing.T) {
	cfg := strings.Replace(baseConfig("{backend: memory}", "  crm: {type: stdout}", `  - {name: all, when: "true", to: [crm]}`),
		"    auth:", "    rate_limit: {rate: 1/m, burst: 2}\n    auth:", 1)
	s := startServer(t, cfg)
	for i := range 5 {
		if a := s.post("/webhook", []byte(`{"event":"x"}`), "Authorization", "wrong"); a.status != 401 {
			t.Fatalf("stranger %d: %d", i, a.status)
		}
	}
	for i, want := range []int{200, 200, 429, 429} {
		a := s.post("/webhook", []byte(`{"event":"x","n":`+string(rune('0'+i))+`}`))
		if a.status != want {
			t.Errorf("request %d: %d %s, want %d", i, a.status, a.body, want)
		}
		if want == 429 && (a.header.Get("Retry-After") == "" || a.header.Get("Retry-After") == "0" || a.body != `{"error":"Too many requests"}`) {
			t.Errorf("429 Retry-After %q body %q", a.header.Get("Retry-After"), a.body)
		}
	}
	if m := s.metric(`hookrouter_events_rejected_total{reason="rate_limited",source="platform"}`); !strings.HasSuffix(m, " 2") {
		t.Errorf("rate_limited count: %q, want 2", m)
	}
}
