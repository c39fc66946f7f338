// Command bare is the throughput ceiling for hookrouter's ingress: a fasthttp
// server that does only what any webhook receiver must (check the path, the
// method and the shared secret, read the body, answer 200 "OK") with the
// server settings a router would use. Comparing hookrouter against it on the
// same machine in the same run shows what routing, dedup and queuing cost.
package main

import (
	"crypto/subtle"
	"flag"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/hookrouter/hookrouter/benchmarks/internal/serve"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:3000", "listen address (127.0.0.1:0 picks a free port)")
	secret := fs.String("secret", "", "expected raw Authorization header value")
	path := fs.String("path", "/webhook", "source path")
	addrFile := fs.String("addr-file", "", "write the bound address here once listening")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	ln, err := serve.Listen(*addr, *addrFile)
	if err != nil {
		log.Error("listen failed", "err", err)
		return 1
	}
	log.Info("listening", "addr", ln.Addr().String())
	return serve.UntilSignal(newServer(*secret, *path), ln, log, func(s os.Signal) {
		log.Info("shutting down", "signal", s.String())
	})
}

// newServer returns the reference server. Its settings are the ones a
// production receiver would pick (timeouts, a 1 MiB body limit, no Server
// header) and nothing that makes it faster than a router could be.
func newServer(secret, path string) *fasthttp.Server {
	want := []byte(secret)
	return &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Path()) != path {
				ctx.Error("not found", fasthttp.StatusNotFound)
				return
			}
			if !ctx.IsPost() {
				ctx.Response.Header.Set("Allow", "POST")
				ctx.Error("method not allowed", fasthttp.StatusMethodNotAllowed)
				return
			}
			got := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
			if subtle.ConstantTimeCompare(got, want) != 1 {
				ctx.SetContentType("application/json")
				ctx.SetStatusCode(fasthttp.StatusUnauthorized)
				ctx.SetBodyString(`{"error":"Unauthorized"}`)
				return
			}
			if len(ctx.PostBody()) == 0 {
				ctx.SetContentType("application/json")
				ctx.SetStatusCode(fasthttp.StatusBadRequest)
				ctx.SetBodyString(`{"error":"Invalid payload"}`)
				return
			}
			ctx.SetContentType("text/plain; charset=utf-8")
			ctx.SetBodyString("OK")
		},
		Name:                  "bare",
		NoDefaultServerHeader: true,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           2 * time.Minute,
		MaxRequestBodySize:    1 << 20,
	}
}
