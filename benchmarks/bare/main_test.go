package main

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestBareAnswers(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer("s3cret", "/webhook")
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown below
	t.Cleanup(func() { _ = srv.Shutdown() })
	base := "http://" + ln.Addr().String()

	tests := []struct {
		name, method, path, auth, body string
		want                           int
		wantBody                       string
	}{
		{"accepted", "POST", "/webhook", "s3cret", `{"event":"x"}`, 200, "OK"},
		{"wrong secret", "POST", "/webhook", "nope", `{}`, 401, `{"error":"Unauthorized"}`},
		{"no secret", "POST", "/webhook", "", `{}`, 401, `{"error":"Unauthorized"}`},
		{"empty body", "POST", "/webhook", "s3cret", ``, 400, `{"error":"Invalid payload"}`},
		{"other method", "GET", "/webhook", "s3cret", ``, 405, "method not allowed"},
		{"unknown path", "POST", "/other", "s3cret", `{}`, 404, "not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(base + tc.path)
			req.Header.SetMethod(tc.method)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			req.SetBodyString(tc.body)
			if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != tc.want || string(resp.Body()) != tc.wantBody {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode(), resp.Body(), tc.want, tc.wantBody)
			}
		})
	}
}
