// Package serve runs the benchmark servers (bare, capture): listen, say
// where, serve until SIGINT or SIGTERM, then shut down within a bound.
package serve

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Listen listens on addr (IPv4) and, when addrFile is not empty, writes the
// bound address there, which is how run.sh learns a 127.0.0.1:0 port.
func Listen(addr, addrFile string) (net.Listener, error) {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return nil, err
	}
	if addrFile != "" {
		if err := os.WriteFile(addrFile, []byte(ln.Addr().String()), 0o644); err != nil {
			ln.Close()
			return nil, err
		}
	}
	return ln, nil
}

// UntilSignal serves srv on ln until SIGINT or SIGTERM, then calls
// onSignal (if not nil) and shuts srv down. It returns the process's exit
// code: 0, or 1 when serving or the shutdown failed.
func UntilSignal(srv *fasthttp.Server, ln net.Listener, log *slog.Logger, onSignal func(os.Signal)) int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case s := <-sig:
		if onSignal != nil {
			onSignal(s)
		}
		// Bound the graceful shutdown: a client's keep-alive connections
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
