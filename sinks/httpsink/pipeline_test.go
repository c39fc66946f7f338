package httpsink

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
	"github.com/valyala/fasthttp"
)

// pipelined returns cfg with pipelining at depth 8.
func pipelined(cfg Config) Config {
	cfg.Pipeline = 8
	return cfg
}

func TestPipelineConformance(t *testing.T) {
	failing := func(handle func(http.ResponseWriter, *http.Request, recorded)) func(t *testing.T) sinks.Sink {
		return func(t *testing.T) sinks.Sink {
			srv, _ := server(t, handle)
			return newSink(t, pipelined(secretConfig(secretURL(srv, "/hook"))))
		}
	}
	short := func(cfg Config) Config {
		cfg.Timeout = 300 * time.Millisecond
		return cfg
	}
	sinktest.Run(t, sinktest.Harness{
		Secret: secret,
		Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			srv, rec := server(t, nil)
			return newSink(t, pipelined(secretConfig(secretURL(srv, "/hook")))), rec.bodies
		},
		Failing: []sinktest.Failing{
			{Name: "500 echoing the request", Permanent: false, New: failing(func(w http.ResponseWriter, r *http.Request, k recorded) {
				w.WriteHeader(500)
				fmt.Fprintf(w, "refused %s %s key=%s pass=%s sig=%s", r.Method, k.url, r.Header.Get("X-Api-Key"), k.pass, r.Header.Get("Webhook-Signature"))
			})},
			{Name: "503 with Retry-After", RetryAfter: 7 * time.Second, New: failing(status(503, "7"))},
			{Name: "404", Permanent: true, New: failing(status(404, ""))},
			// The pipeline client reports no dial error to its callers:
			// they time out, and the error names the refusal.
			{Name: "connection refused", New: func(t *testing.T) sinks.Sink {
				return newSink(t, short(pipelined(secretConfig("http://hook:"+secret+"@"+closedAddr(t)+"/hook?token="+secret))))
			}},
			{Name: "timeout", New: func(t *testing.T) sinks.Sink {
				srv, _ := server(t, func(w http.ResponseWriter, r *http.Request, _ recorded) {
					select {
					case <-r.Context().Done():
					case <-time.After(5 * time.Second):
					}
				})
				return newSink(t, short(pipelined(secretConfig(secretURL(srv, "/hook")))))
			}},
		},
	})
}

// capture is a fasthttp destination that records what it receives and on
// which connection.
type capture struct {
	mu     sync.Mutex
	bodies map[string][]string // event id -> bodies received
	sigOK  map[string]bool
	conns  map[uint64]bool
	ln     net.Listener
	srv    *fasthttp.Server
}

// newCapture starts a capture server; closeAfter > 0 makes it answer the
// closeAfter-th request of each connection with Connection: close.
func newCapture(t *testing.T, closeAfter int, key []byte) *capture {
	t.Helper()
	c := &capture{bodies: map[string][]string{}, sigOK: map[string]bool{}, conns: map[uint64]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.ln = ln
	c.srv = &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		id := string(ctx.Request.Header.Peek("X-Hookrouter-Event-Id"))
		body := string(ctx.PostBody())
		ok := true
		if key != nil {
			mac := hmac.New(sha256.New, key)
			fmt.Fprintf(mac, "%s.%s.%s", ctx.Request.Header.Peek("Webhook-Id"), ctx.Request.Header.Peek("Webhook-Timestamp"), body)
			ok = string(ctx.Request.Header.Peek("Webhook-Signature")) == "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil))
		}
		c.mu.Lock()
		c.bodies[id] = append(c.bodies[id], body)
		c.sigOK[id] = ok
		c.conns[ctx.ConnID()] = true
		c.mu.Unlock()
		if closeAfter > 0 && ctx.ConnRequestNum()%uint64(closeAfter) == 0 {
			ctx.SetConnectionClose()
		}
	}}
	go c.srv.Serve(ln)
	t.Cleanup(func() { c.srv.Shutdown() })
	return c
}

func (c *capture) url() string { return "http://" + c.ln.Addr().String() + "/hook" }

// sendAll sends events 0..n-1 from workers goroutines. Each retries a
// retryable failure up to attempts times, as the dispatcher would, and
// counts the failures; a permanent failure or running out of attempts fails
// the test.
func sendAll(t *testing.T, s *Sink, n, workers, attempts int) (failures int64) {
	t.Helper()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				ev := sinktest.Variant(i)
				for a := 1; ; a++ {
					err := s.Send(t.Context(), ev)
					if err == nil {
						break
					}
					failed.Add(1)
					if sinks.IsPermanent(err) || a == attempts {
						t.Errorf("event %d, attempt %d: %v", i, a, err)
						break
					}
				}
			}
		})
	}
	wg.Wait()
	return failed.Load()
}

func TestPipelineDeliversEachOnce(t *testing.T) {
	key := []byte("0123456789abcdef")
	c := newCapture(t, 0, key)
	const n, workers = 2000, 64
	s := newSink(t, Config{
		URL:        c.url(),
		Pipeline:   8,
		MaxConns:   workers / 8,
		Headers:    map[string]string{"X-Msg": "{{ .message.id }}"},
		SignSecret: "whsec_" + base64.StdEncoding.EncodeToString(key),
	})
	defer s.Close(t.Context())
	if f := sendAll(t, s, n, workers, 1); f != 0 {
		t.Fatalf("%d sends failed", f)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.bodies) != n {
		t.Errorf("%d distinct events arrived, want %d", len(c.bodies), n)
	}
	for i := range n {
		ev := sinktest.Variant(i)
		got := c.bodies[ev.ID]
		if len(got) != 1 || got[0] != string(ev.Body) {
			t.Fatalf("%s arrived %d times, first body %.60q", ev.ID, len(got), got)
		}
		if !c.sigOK[ev.ID] {
			t.Errorf("%s: bad signature", ev.ID)
		}
	}
	// 64 concurrent senders on at most 8 connections: they shared them.
	if len(c.conns) > workers/8 {
		t.Errorf("%d connections used, want at most %d", len(c.conns), workers/8)
	}
}

// TestPipelineHeaders checks on a net/http server, which handles pipelined
// requests one after the other, that headers and bodies stay with their
// request.
func TestPipelineHeaders(t *testing.T) {
	srv, rec := server(t, nil)
	s := newSink(t, Config{URL: srv.URL + "/in", Pipeline: 4, MaxConns: 2, Headers: map[string]string{"X-Msg": "{{ .message.id }}", "X-Api-Key": "k"}})
	defer s.Close(t.Context())
	if f := sendAll(t, s, 200, 16, 1); f != 0 {
		t.Fatalf("%d sends failed", f)
	}
	reqs := rec.all()
	if len(reqs) != 200 {
		t.Fatalf("%d requests, want 200", len(reqs))
	}
	for _, r := range reqs {
		id := r.header.Get("X-Hookrouter-Event-Id")
		var n int
		fmt.Sscanf(id, "ev_%d", &n)
		ev := sinktest.Variant(n)
		if id != ev.ID || string(r.body) != string(ev.Body) || r.header.Get("X-Msg") != fmt.Sprintf("msg_%04d", n) ||
			r.header.Get("X-Api-Key") != "k" || r.header.Get("User-Agent") != "hookrouter/1.2.3" || r.url != "/in" {
			t.Fatalf("request %s mixed up: X-Msg %q, url %q, body %.40q", id, r.header.Get("X-Msg"), r.url, r.body)
		}
	}
}

// TestPipelineServerCloses sends through servers that close each
// connection after a few answers, failing the requests already written
// behind the last answer. Those must come back as retryable errors (or be
// re-sent by the sink), so that a caller that retries loses nothing.
func TestPipelineServerCloses(t *testing.T) {
	for _, closeAfter := range []int{1, 5, 50} {
		t.Run(fmt.Sprintf("fasthttp closes after %d", closeAfter), func(t *testing.T) {
			c := newCapture(t, closeAfter, nil)
			const n = 600
			s := newSink(t, Config{URL: c.url(), Pipeline: 8, MaxConns: 4, Timeout: 5 * time.Second})
			defer s.Close(t.Context())
			failures := sendAll(t, s, n, 32, 50)
			c.mu.Lock()
			defer c.mu.Unlock()
			dups := 0
			for i := range n {
				ev := sinktest.Variant(i)
				got := c.bodies[ev.ID]
				if len(got) == 0 {
					t.Fatalf("%s never arrived", ev.ID)
				}
				for _, b := range got {
					if b != string(ev.Body) {
						t.Fatalf("%s arrived altered: %.60q", ev.ID, b)
					}
				}
				dups += len(got) - 1
			}
			t.Logf("%d connections, %d failures returned to the caller, %d duplicates", len(c.conns), failures, dups)
			if closeAfter == 50 && failures > n/10 {
				// The sink re-sends what a closed connection dropped; only a
				// second failure reaches the caller.
				t.Errorf("%d failures reached the caller for %d events", failures, n)
			}
		})
	}
	t.Run("net/http Connection: close after 3", func(t *testing.T) {
		var count sync.Map // remote addr -> *atomic.Int64
		srv, rec := server(t, func(w http.ResponseWriter, r *http.Request, _ recorded) {
			v, _ := count.LoadOrStore(r.RemoteAddr, new(atomic.Int64))
			if v.(*atomic.Int64).Add(1)%3 == 0 {
				w.Header().Set("Connection", "close")
			}
		})
		s := newSink(t, Config{URL: srv.URL, Pipeline: 8, MaxConns: 2})
		defer s.Close(t.Context())
		sendAll(t, s, 300, 16, 50)
		seen := map[string]bool{}
		for _, r := range rec.all() {
			seen[r.header.Get("X-Hookrouter-Event-Id")] = true
		}
		if len(seen) != 300 {
			t.Errorf("%d distinct events arrived, want 300", len(seen))
		}
	})
}

// TestConnBrokeKnowsFasthttpErrors provokes the errors fasthttp's pipeline
// client gives requests on a connection that ends after answering the first
// of three: each must be one connBroke recognises (errConnStopped is matched
// by text, so this notices a rewording).
func TestConnBrokeKnowsFasthttpErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		var got []byte
		buf := make([]byte, 4096)
		for strings.Count(string(got), "\r\n\r\n") < 3 {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			got = append(got, buf[:n]...)
		}
		io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		conn.(*net.TCPConn).CloseWrite() // FIN after one answer, no reset
		io.Copy(io.Discard, conn)
	}()
	pc := &fasthttp.PipelineClient{Addr: ln.Addr().String(), MaxPendingRequests: 8, Logger: pipeLogger{log: slog.New(slog.DiscardHandler)}}
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			req.SetRequestURI("http://" + ln.Addr().String() + "/")
			errs <- pc.DoTimeout(req, resp, 2*time.Second)
		}()
	}
	var failed, stopped int
	for range 3 {
		err := <-errs
		if err == nil {
			continue
		}
		failed++
		if !connBroke(err) {
			t.Errorf("connBroke(%q) = false", err)
		}
		if err.Error() == errConnStopped {
			stopped++
		}
	}
	if failed != 2 || stopped != 1 {
		t.Errorf("%d failed, %d with %q; want 2 and 1", failed, stopped, errConnStopped)
	}
}

func TestPipelineTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request, _ recorded) {
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
	})
	s := newSink(t, Config{URL: srv.URL, Pipeline: 8, Timeout: 150 * time.Millisecond})
	defer s.Close(t.Context())
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			start := time.Now()
			err := s.Send(t.Context(), sinktest.Variant(i))
			elapsed := time.Since(start)
			if err == nil || sinks.IsPermanent(err) || !errors.Is(err, fasthttp.ErrTimeout) {
				t.Errorf("send = %v, want a retryable timeout", err)
			}
			if elapsed < 140*time.Millisecond || elapsed > time.Second {
				t.Errorf("returned after %v, want about 150ms", elapsed)
			}
		})
	}
	wg.Wait()

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	s2 := newSink(t, Config{URL: srv.URL, Pipeline: 8, Timeout: 5 * time.Second})
	defer s2.Close(t.Context())
	start := time.Now()
	err := s2.Send(ctx, sinktest.Variant(9))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Errorf("send = %v after %v, want DeadlineExceeded after about 100ms", err, time.Since(start))
	}
}

func TestPipelineRefusedNamesTheCause(t *testing.T) {
	s := newSink(t, Config{URL: "http://" + closedAddr(t) + "/x", Pipeline: 4, Timeout: 200 * time.Millisecond})
	defer s.Close(t.Context())
	err := s.Send(t.Context(), sinktest.Variant(1))
	if err == nil || sinks.IsPermanent(err) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("send = %v, want a retryable error naming the refused connection", err)
	}
}

func TestHTTPS(t *testing.T) {
	for _, depth := range []int{1, 8} {
		t.Run(fmt.Sprintf("pipeline %d", depth), func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.TLS == nil {
					t.Error("request not over TLS")
				}
				mu.Lock()
				got = append(got, r.Header.Get("X-Hookrouter-Event-Id"))
				mu.Unlock()
			}))
			defer srv.Close()
			s := newSink(t, Config{URL: srv.URL + "/hook", Pipeline: depth})
			defer s.Close(t.Context())
			// Trust the test server's certificate.
			tlsCfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
			if s.pipe != nil {
				s.pipe.TLSConfig = tlsCfg
			} else {
				s.client.TLSConfig = tlsCfg
			}
			if f := sendAll(t, s, 100, 16, 1); f != 0 {
				t.Fatalf("%d sends failed", f)
			}
			if len(got) != 100 {
				t.Errorf("%d requests arrived, want 100", len(got))
			}
		})
	}
}

func TestPipelineCloseEndsConnections(t *testing.T) {
	c := newCapture(t, 0, nil)
	s := newSink(t, Config{URL: c.url(), Pipeline: 8, MaxConns: 4})
	if f := sendAll(t, s, 200, 32, 1); f != 0 {
		t.Fatalf("%d sends failed", f)
	}
	if n := c.srv.GetOpenConnectionsCount(); n == 0 {
		t.Fatal("no connection open before Close")
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for c.srv.GetOpenConnectionsCount() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open after Close", c.srv.GetOpenConnectionsCount())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Send(t.Context(), sinktest.Variant(1)); !errors.Is(err, sinks.ErrClosed) {
		t.Errorf("send after close = %v", err)
	}
}

// TestPipelineCloseLetsInFlightFinish closes the sink while requests wait
// for a slow answer: they are answered, then the connections close.
func TestPipelineCloseLetsInFlightFinish(t *testing.T) {
	release := make(chan struct{})
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request, _ recorded) { <-release })
	s := newSink(t, Config{URL: srv.URL, Pipeline: 8, MaxConns: 1})
	errs := make(chan error, 4)
	for i := range 4 {
		go func() { errs <- s.Send(t.Context(), sinktest.Variant(i)) }()
	}
	for s.inflight.Load() < 4 {
		time.Sleep(time.Millisecond)
	}
	s.Close(t.Context())
	close(release)
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("send in flight at Close: %v", err)
		}
	}
	s.conns.mu.Lock()
	defer s.conns.mu.Unlock()
	if !s.conns.shut || len(s.conns.conns) != 0 {
		t.Errorf("after the last send: shut %v, %d connections", s.conns.shut, len(s.conns.conns))
	}
}
