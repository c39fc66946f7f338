package main

import (
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func startCapture(t *testing.T, o options) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: newCapture(o).handle}
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown below
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

func post(t *testing.T, url, id, body string) int {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url + "/events")
	req.Header.SetMethod("POST")
	if id != "" {
		req.Header.Set("X-Hookrouter-Event-Id", id)
	}
	req.SetBodyString(body)
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode()
}

func getStats(t *testing.T, url string) stats {
	t.Helper()
	code, body, err := fasthttp.Get(nil, url+"/stats")
	if err != nil || code != 200 {
		t.Fatalf("GET /stats: %d %v", code, err)
	}
	var s stats
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCaptureCounts(t *testing.T) {
	tests := []struct {
		name   string
		o      options
		status int
		want   stats
	}{
		{"acknowledging, checking JSON", options{check: true, status: 200, failStatus: 500}, 200,
			stats{Received: 5, Unique: 3, Duplicates: 2, Invalid: 2}},
		{"not checking JSON", options{status: 204, failStatus: 500}, 204,
			stats{Received: 5, Unique: 3, Duplicates: 2}},
		{"always failing", options{status: 200, failRatio: 1, failStatus: 503}, 503,
			stats{Received: 5, Failed: 5}},
		{"answering a non-2xx", options{status: 429, failStatus: 500}, 429,
			stats{Received: 5, Failed: 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := startCapture(t, tc.o)
			before := time.Now().UnixNano()
			sends := []struct{ id, body string }{
				{"a", `{"x":1}`}, {"b", `{"x":2}`}, {"a", `{"x":1}`},
				{"", `not json`}, {"", `not json`},
			}
			for _, s := range sends {
				if got := post(t, url, s.id, s.body); got != tc.status {
					t.Fatalf("status %d, want %d", got, tc.status)
				}
			}
			got := getStats(t, url)
			if tc.want.Unique > 0 && (got.LastAt < before || got.LastAt > time.Now().UnixNano()) {
				t.Errorf("last_at %d outside the test's time", got.LastAt)
			}
			got.LastAt = 0
			if got != tc.want {
				t.Errorf("stats %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCaptureReset(t *testing.T) {
	url := startCapture(t, options{status: 200, failStatus: 500})
	post(t, url, "a", "{}")
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI(url + "/reset")
	req.Header.SetMethod("POST")
	if err := fasthttp.Do(req, resp); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("POST /reset: %d %v", resp.StatusCode(), err)
	}
	if s := getStats(t, url); s != (stats{}) {
		t.Fatalf("after reset: %+v", s)
	}
	post(t, url, "a", "{}")
	if s := getStats(t, url); s.Unique != 1 || s.Duplicates != 0 {
		t.Fatalf("id seen before reset still remembered: %+v", s)
	}
}

func TestCaptureDelay(t *testing.T) {
	url := startCapture(t, options{status: 200, failStatus: 500, delay: 100 * time.Millisecond})
	start := time.Now()
	post(t, url, "a", "{}")
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("answered after %v, want at least the 100ms delay", d)
	}
}
