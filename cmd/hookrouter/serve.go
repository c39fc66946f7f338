package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookrouter/hookrouter/router"
	"github.com/hookrouter/hookrouter/router/config"
)

// shutdownGrace bounds how long SIGTERM waits for queued deliveries; it
// stays under Kubernetes' default 30 s termination grace period.
const shutdownGrace = 25 * time.Second

func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", "config file (default $HOOKROUTER_CONFIG, else rules.yaml, else rules.example.yaml)")
}

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	path := config.Resolve(*cfgPath)
	f, err := config.Load(path)
	if err != nil {
		printProblems(stderr, err)
		return 1
	}
	log := newLogger(stderr, f.Log)
	// go-redis logs through a process-wide logger of its own; route it into
	// ours so that every line on stderr is structured.
	redis.SetLogger(redisLogger{log.With("component", "redis")})
	r, err := router.New(f, router.Options{ConfigPath: path, Version: getVersion(), Log: log})
	if err != nil {
		var problems config.Problems
		if errors.As(err, &problems) {
			printProblems(stderr, err)
		} else {
			log.Error("cannot start", "error", err)
		}
		return 1
	}
	ln, err := net.Listen("tcp", f.Listen)
	if err != nil {
		log.Error("cannot listen", "listen", f.Listen, "error", err)
		_ = r.Shutdown(context.Background())
		return 1
	}
	var adminLn net.Listener
	if f.AdminListen != "" {
		if adminLn, err = net.Listen("tcp", f.AdminListen); err != nil {
			log.Error("cannot listen", "admin_listen", f.AdminListen, "error", err)
			ln.Close()
			_ = r.Shutdown(context.Background())
			return 1
		}
	}
	if adminLn != nil && f.Admin.Token == "" && !isLoopback(adminLn.Addr()) {
		log.Warn("the admin listener is reachable beyond this host and has no token: set admin.token",
			"admin_listen", adminLn.Addr().String())
	}
	if err := r.Watch(); err != nil {
		log.Warn("config file changes will not be noticed; use SIGHUP or POST /-/reload", "error", err)
	}

	attrs := []any{"listen", ln.Addr().String(), "config", path, "version", getVersion(),
		"sources", len(f.Sources), "rules", len(f.Rules), "sinks", len(f.Sinks), "queue", f.Queue.Backend}
	if adminLn != nil {
		attrs = append(attrs, "admin_listen", adminLn.Addr().String())
	}
	log.Info("hookrouter started", attrs...)

	serveErr := make(chan error, 1)
	go func() { serveErr <- r.Serve(ln, adminLn) }()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	hups := make(chan struct{}, 1)
	go func() {
		for range hups {
			r.ReopenFiles()
			_ = r.Reload("sighup")
		}
	}()
	defer close(hups)
	for {
		select {
		case err := <-serveErr:
			log.Error("server stopped", "error", err)
			// Bounded: with the memory queue, Shutdown waits for deliveries.
			ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			_ = r.Shutdown(ctx)
			cancel()
			return 1
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				// On its own goroutine, so that a SIGTERM never waits
				// behind a reload; a SIGHUP during one is coalesced.
				select {
				case hups <- struct{}{}:
				default:
				}
				continue
			}
			log.Info("shutting down", "signal", sig.String(), "grace", shutdownGrace.String())
			ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			err := r.Shutdown(ctx)
			cancel()
			if err != nil {
				log.Error("shutdown", "error", err)
				return 1
			}
			log.Info("stopped")
			return 0
		}
	}
}

// isLoopback reports whether addr is on a loopback interface only.
func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// redisLogger adapts slog to go-redis's logger.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn("redis client", "message", fmt.Sprintf(format, v...))
}

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// printProblems prints a config error one problem per line.
func printProblems(w io.Writer, err error) {
	var problems config.Problems
	if errors.As(err, &problems) {
		for _, p := range problems {
			fmt.Fprintln(w, p.String())
		}
		return
	}
	fmt.Fprintln(w, err)
}
