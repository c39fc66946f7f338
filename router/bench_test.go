package router

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/hookrouter/hookrouter/router/journal"
)

// BenchmarkIngress measures the router's own work per request, from a
// parsed HTTP request to the answer: auth, parse, dedup, match, enqueue. The
// lanes deliver to a file sink meanwhile, as in production. Network I/O is
// not included; benchmarks/run.sh measures the whole server.
//
// Each backend runs with the journal off, on (the default), and on with a
// writer made slow on purpose (50ms per batch, 1024 records waiting at most):
// the slow one shows records dropped and counted (dropped/op) while ingress
// keeps its pace.
func BenchmarkIngress(b *testing.B) {
	journals := []struct {
		name string
		yaml string
		opts Options
	}{
		{"journal=off", "journal: {enabled: false}\n", Options{}},
		{"journal=on", "", Options{}},
		{"journal=slow", "", Options{JournalOptions: journal.Options{WriteDelay: 50 * time.Millisecond, QueueSize: 1024}}},
	}
	for _, backend := range []string{"memory", "disk"} {
		for _, jr := range journals {
			b.Run(backend+"/"+jr.name, func(b *testing.B) { benchIngress(b, backend, jr.yaml, jr.opts) })
		}
	}
}

func benchIngress(b *testing.B, backend, journalYAML string, opts Options) {
	s := startServerOpts(b, journalYAML+baseConfig(fmt.Sprintf("{backend: %s, max_bytes: 4GiB}", backend),
		`  archive: {type: file, path: DATA/archive.jsonl}`, `
  - {name: all, when: "true", to: [archive]}
  - {name: drop, when: 'header("X-Load-Test") == "1"', to: [], stop: true}
  - {name: wa, when: 'event == "channel.message_in" && message.channel.engine == "wa"', to: [archive]}
  - {name: human, when: 'event == "channel.message_in" && need_human == 1', to: [archive]}
  - {name: devices, when: 'event in ["device.connected", "device.disconnected"]', to: [archive]}`), opts)
	var worker atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32) // like many connections: durable backends batch their syncs
	b.RunParallel(func(pb *testing.PB) {
		prefix := strconv.FormatInt(worker.Add(1), 10)
		var ctx fasthttp.RequestCtx
		var req fasthttp.Request
		var body []byte
		var rd bytes.Reader
		for i := 0; pb.Next(); i++ {
			req.Reset()
			req.Header.SetMethod("POST")
			req.SetRequestURI("/webhook")
			req.Header.Set("Authorization", testSecret)
			body = fmt.Appendf(body[:0], `{"event":"channel.message_in","timestamp":1738056000,"need_human":1,"message":{"id":"m%s-%d","sender_name":"Test User","channel":{"id":"c","name":"WhatsApp Business","engine":"wa"},"content":{"type":"text","text":"Halo, saya butuh bantuan"}}}`, prefix, i)
			ctx.Init(&req, nil, nil)
			// Ingress reads a body as a stream, as the server gives it.
			rd.Reset(body)
			ctx.Request.SetBodyStream(&rd, len(body))
			s.r.handle(&ctx)
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
		}
	})
	b.StopTimer()
	if j := s.r.Journal(); j != nil {
		// What was recorded is written or dropped before it is counted.
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := j.Flush(c); err != nil {
			b.Fatal(err)
		}
		st := j.Stats()
		b.ReportMetric(float64(st.Dropped)/float64(b.N), "dropped/op")
		b.ReportMetric(float64(st.Written)/float64(b.N), "written/op")
	}
}
