package router

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawPost writes one POST of body on conn and reads the answer.
func rawPost(t *testing.T, conn net.Conn, br *bufio.Reader, body []byte) (*http.Response, string) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(conn, "POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		testSecret, len(body), body); err != nil {
		t.Fatalf("write on a keep-alive connection: %v", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read on a keep-alive connection: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// TestShutdownDrainKeepsListening (issue 12 item 5): during the shutdown
// drain (a delivery still being sent), the ingress listener stays open:
// a new connection's event is answered 503 + Retry-After, /health 503, and a
// keep-alive connection opened before gets the 503, not a broken pipe. The
// listener closes once the drain is over.
func TestShutdownDrainKeepsListening(t *testing.T) {
	d := newCapture(t)
	d.holdRequests()
	s := startServer(t, oneSink(d, "workers: 1, timeout: 30s", "{backend: disk}"))
	addr := strings.TrimPrefix(s.url, "http://")

	keep, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	br := bufio.NewReader(keep)
	if resp, _ := rawPost(t, keep, br, message("before")); resp.StatusCode != 200 {
		t.Fatalf("post before shutdown: %d", resp.StatusCode)
	}
	waitFor(t, 5*time.Second, "the delivery in flight", func() bool { return len(d.requests()) == 1 })

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopped <- s.r.Shutdown(ctx)
	}()
	waitFor(t, 2*time.Second, "draining", func() bool { return s.r.draining.Load() })

	a, err := postEvent(s, message("during"))
	if err != nil {
		t.Fatalf("new connection during the drain: %v (the listener must stay open)", err)
	}
	if a.status != 503 || a.header.Get("Retry-After") == "" {
		t.Errorf("event during the drain: %d Retry-After=%q, want 503 with Retry-After", a.status, a.header.Get("Retry-After"))
	}
	if h := s.get("/health"); h.status != 503 {
		t.Errorf("/health during the drain: %d %s, want 503", h.status, h.body)
	}
	resp, body := rawPost(t, keep, br, message("keep-alive-during"))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "shutting down") {
		t.Errorf("keep-alive connection during the drain: %d Retry-After=%q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) while a delivery was still in flight", err)
	default:
	}

	d.release()
	if err := <-stopped; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	<-s.done
	s.r = nil
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the listener still accepts after the drain")
	}
}
