// Command capture is a counting sink for benchmarks and soak tests: point a
// hookrouter http sink at it and it counts what arrives, how many distinct
// events (by X-Hookrouter-Event-Id) it acknowledged and how many were
// re-deliveries. It can also play a slow or flaky sink.
//
// GET /stats answers {"received","unique","duplicates","invalid","failed",
// "last_at"}; POST /reset zeroes the counters; any other request is captured.
package main

import (
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
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9000", "listen address (127.0.0.1:0 picks a free port)")
	addrFile := fs.String("addr-file", "", "write the bound address here once listening")
	var o options
	fs.BoolVar(&o.check, "check", false, "check every body is valid JSON (counted as invalid otherwise)")
	fs.IntVar(&o.status, "status", 200, "status to answer")
	fs.DurationVar(&o.delay, "delay", 0, "wait this long before answering each request")
	fs.Float64Var(&o.failRatio, "fail-ratio", 0, "fraction of requests answered -fail-status instead")
	fs.IntVar(&o.failStatus, "fail-status", 500, "status of the failed fraction")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := o.validate(); err != nil {
		log.Error("bad flags", "err", err)
		return 2
	}

	ln, err := serve.Listen(*addr, *addrFile)
	if err != nil {
		log.Error("listen failed", "err", err)
		return 1
	}
	c := newCapture(o)
	srv := &fasthttp.Server{
		Handler:               c.handle,
		Name:                  "capture",
		NoDefaultServerHeader: true,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           2 * time.Minute,
		MaxRequestBodySize:    8 << 20,
	}
	log.Info("listening", "addr", ln.Addr().String(), "status", o.status, "delay", o.delay, "fail_ratio", o.failRatio)
	return serve.UntilSignal(srv, ln, log, func(s os.Signal) {
		st := c.snapshot()
		log.Info("shutting down", "signal", s.String(), "received", st.Received, "unique", st.Unique,
			"duplicates", st.Duplicates, "invalid", st.Invalid, "failed", st.Failed)
	})
}
