package router

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestHTTPSinkPipeline delivers through an http sink with pipeline: 8 to a
// fasthttp server, then checks that shutting down closes the sink's
// connections. (The pipeline client's goroutines of an idle connection end
// only when its 30s idle timer fires, so this checks the sockets, not
// goroutines.)
func TestHTTPSinkPipeline(t *testing.T) {
	var mu sync.Mutex
	ids := map[string]int{}
	conns := map[uint64]bool{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		ids[string(ctx.Request.Header.Peek("X-Hookrouter-Event-Id"))]++
		conns[ctx.ConnID()] = true
		mu.Unlock()
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })

	s := startServer(t, baseConfig("{backend: memory}",
		fmt.Sprintf("  hook: {type: http, url: %q, workers: 16, pipeline: 8, %s}", "http://"+ln.Addr().String()+"/in", fastRetry),
		"  - {name: all, when: 'true', to: [hook]}"))
	const n = 200
	for i := range n {
		if a := s.post("/webhook", message(fmt.Sprint("m", i))); a.status != 200 {
			t.Fatal(a.status)
		}
	}
	waitFor(t, 10*time.Second, "deliveries", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ids) == n
	})
	mu.Lock()
	for id, k := range ids {
		if k != 1 {
			t.Errorf("%s delivered %d times", id, k)
		}
	}
	if len(conns) > 2 {
		t.Errorf("%d connections, want at most 2 (16 workers / pipeline 8)", len(conns))
	}
	mu.Unlock()
	s.stop()
	waitFor(t, 2*time.Second, "connections closed", func() bool { return srv.GetOpenConnectionsCount() == 0 })
}
