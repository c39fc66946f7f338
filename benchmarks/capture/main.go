// Command capture is a counting sink for benchmarks and soak tests: point a
// hookrouter http sink at it and it counts what arrives, how many distinct
// events (by X-Hookrouter-Event-Id) it acknowledged and how many were
// re-deliveries. It can also play a slow or flaky sink.
//
// GET /stats answers {"received","unique","duplicates","invalid","failed",
// "last_at"}; POST /reset zeroes the counters; any other request is captured.
package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
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

	ln, err := net.Listen("tcp4", *addr)
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
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(ln.Addr().String()), 0o644); err != nil {
			log.Error("write addr file failed", "err", err)
			return 1
		}
	}
	log.Info("listening", "addr", ln.Addr().String(), "status", o.status, "delay", o.delay, "fail_ratio", o.failRatio)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case s := <-sig:
		st := c.snapshot()
		log.Info("shutting down", "signal", s.String(), "received", st.Received, "unique", st.Unique,
			"duplicates", st.Duplicates, "invalid", st.Invalid, "failed", st.Failed)
		// Bound the graceful shutdown: a sender's keep-alive connections
		// must not hold the process forever.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.ShutdownWithContext(ctx); err != nil {
			log.Error("shutdown failed", "err", err)
			return 1
		}
		return 0
	case err := <-errc:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			log.Error("serve failed", "err", err)
			return 1
		}
		return 0
	}
}
