package router

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkIngress measures the router's own work per request, from a
// parsed HTTP request to the answer: auth, parse, dedup, match, enqueue. The
// lanes deliver to a file sink meanwhile, as in production. Network I/O is
// not included; benchmarks/run.sh measures the whole server.
func BenchmarkIngress(b *testing.B) {
	for _, backend := range []string{"memory", "disk"} {
		b.Run(backend, func(b *testing.B) {
			s := startServer(b, baseConfig(fmt.Sprintf("{backend: %s, max_bytes: 4GiB}", backend),
				`  archive: {type: file, path: DATA/archive.jsonl}`, `
  - {name: all, when: "true", to: [archive]}
  - {name: drop, when: 'header("X-Load-Test") == "1"', to: [], stop: true}
  - {name: wa, when: 'event == "channel.message_in" && message.channel.engine == "wa"', to: [archive]}
  - {name: human, when: 'event == "channel.message_in" && need_human == 1', to: [archive]}
  - {name: devices, when: 'event in ["device.connected", "device.disconnected"]', to: [archive]}`))
			var worker atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(32) // like many connections: durable backends batch their syncs
			b.RunParallel(func(pb *testing.PB) {
				prefix := strconv.FormatInt(worker.Add(1), 10)
				var ctx fasthttp.RequestCtx
				var req fasthttp.Request
				var body []byte
				for i := 0; pb.Next(); i++ {
					req.Reset()
					req.Header.SetMethod("POST")
					req.SetRequestURI("/webhook")
					req.Header.Set("Authorization", testSecret)
					body = fmt.Appendf(body[:0], `{"event":"channel.message_in","timestamp":1738056000,"need_human":1,"message":{"id":"m%s-%d","sender_name":"Test User","channel":{"id":"c","name":"WhatsApp Business","engine":"wa"},"content":{"type":"text","text":"Halo, saya butuh bantuan"}}}`, prefix, i)
					req.SetBody(body)
					ctx.Init(&req, nil, nil)
					s.r.handle(&ctx)
					if ctx.Response.StatusCode() != 200 {
						b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
					}
				}
			})
		})
	}
}
