package router

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/console"
	"github.com/hookrouter/hookrouter/router/dedup"
	"github.com/hookrouter/hookrouter/router/dispatch"
	"github.com/hookrouter/hookrouter/router/journal"
	"github.com/hookrouter/hookrouter/router/metrics"
	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/router/queue/disk"
	"github.com/hookrouter/hookrouter/router/queue/natsq"
	"github.com/hookrouter/hookrouter/router/tlscert"
	"github.com/hookrouter/hookrouter/sinks"
)

// Options are the process-level settings of a Router.
type Options struct {
	// ConfigPath is the file reloads read again.
	ConfigPath string
	Version    string
	Log        *slog.Logger

	// NatsOptions are passed to natsq.Open after the options the config
	// sets, when queue.backend is nats. The config file has no key for the
	// stream's name or the consumers' AckWait, which every instance of a
	// deployment must agree on; this is for programs that embed the router
	// and for tests (a stream of their own, a short AckWait).
	NatsOptions []natsq.Option
	// DedupOptions are passed to the dedup store after the options the
	// config sets (dedup.redis_prefix), for embedders and tests.
	DedupOptions []dedup.Option
	// ConsoleSampleEvery is how often the console samples the router for
	// its overview's rates and bars (default 10s); tests shorten it.
	ConsoleSampleEvery time.Duration
	// JournalOptions tune the journal (queue size, a writer slowed on
	// purpose); for tests and benchmarks.
	JournalOptions journal.Options
}

// Router is a running hookrouter: ingress, the runtime in force, the queue,
// the dedup store and the dispatcher.
type Router struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics.Metrics

	rt atomic.Pointer[Runtime]
	// bodyMem returns the memory of large request bodies (body.go).
	bodyMem memReturner
	queue   queue.Queue
	dedup   dedup.Store
	// dedupTimeout bounds each dedup call of a request (dedup.timeout).
	dedupTimeout time.Duration
	// bg runs the background releases of claims (releaseLater); quit stops
	// them at shutdown, before the store closes.
	bg          sync.WaitGroup
	quit        chan struct{}
	quitOnce    sync.Once
	dispatcher  *dispatch.Dispatcher
	deadLetters *dispatch.DeadLetters
	// replayed remembers the dead-letter records already replayed.
	replayed *dispatch.Replayed
	// replayMu makes replays (the API's, the file's) one at a time, so that
	// each sees what the one before it recorded in the journal.
	replayMu sync.Mutex
	console  *console.Console
	journal  *journal.Journal // nil when journal.enabled is false
	recent   recentKeys
	// certs holds the ingress's TLS certificate; nil without tls.
	certs *tlscert.Holder

	// srvMu orders Serve and Shutdown, which run on different goroutines:
	// a Shutdown that comes first makes Serve return at once.
	srvMu     sync.Mutex
	server    *fasthttp.Server
	admin     *http.Server
	listeners []net.Listener
	stopped   bool
	// fresh holds the connections that have not sent a byte yet, which
	// fasthttp's shutdown waits for (it counts them idle only after 5s).
	freshMu  sync.Mutex
	fresh    map[net.Conn]struct{}
	freshN   atomic.Int64 // len(fresh), read without the lock
	draining atomic.Bool
	// refused is the last refusal of an event since one was accepted.
	refused   atomic.Pointer[refusal]
	processed atomic.Int64
	startedAt time.Time

	// reloadMu serialises reloads. statusMu guards reload, what /health
	// shows of them, and is only held for a moment: /health and Shutdown
	// never wait for a reload in progress.
	reloadMu sync.Mutex
	statusMu sync.Mutex
	reload   reloadState
	// stopCtx is cancelled when Shutdown begins, ending a reload's
	// provisioning early.
	stopCtx    context.Context
	cancelStop context.CancelFunc
	ruleLog    limitedLog
	storeLog   limitedLog
}

// New opens the queue, the dedup store and the dead-letter file named by f,
// builds f's runtime and starts delivering. Call Serve to accept events and
// Shutdown to stop.
func New(f *config.File, opts Options) (*Router, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	r := &Router{opts: opts, log: opts.Log, metrics: metrics.New(), startedAt: time.Now(), quit: make(chan struct{})}
	r.recent.seed = maphash.MakeSeed()
	if r.opts.JournalOptions.Log == nil {
		r.opts.JournalOptions.Log = r.log
	}
	r.stopCtx, r.cancelStop = context.WithCancel(context.Background())
	rt, problems := r.newRuntime(f, nil)
	if problems != nil {
		return nil, problems
	}
	// What New opened is closed again, last first, when a later step fails.
	var opened []func()
	fail := func(err error) (*Router, error) {
		for i := len(opened) - 1; i >= 0; i-- {
			opened[i]()
		}
		return nil, err
	}
	opened = append(opened, func() {
		if r.dispatcher == nil { // else it closes the sinks
			rt.closeNew(nil)
		}
	})
	if err := os.MkdirAll(f.DataDir, 0o755); err != nil {
		return fail(fmt.Errorf("data_dir %q: %w", f.DataDir, err))
	}
	var err error
	if r.deadLetters, err = dispatch.OpenDeadLetters(filepath.Join(f.DataDir, "dead-letter.jsonl")); err != nil {
		return fail(err)
	}
	opened = append(opened, func() { r.deadLetters.Close() })
	if r.replayed, err = dispatch.OpenReplayed(filepath.Join(f.DataDir, replayedFile)); err != nil {
		return fail(err)
	}
	opened = append(opened, func() { r.replayed.Close() })
	r.dedupTimeout = f.Dedup.Timeout.Std()
	if r.dedup, err = openDedup(f, opts.DedupOptions); err != nil {
		return fail(err)
	}
	opened = append(opened, func() { r.dedup.Close() })
	if err := r.openJournal(f); err != nil {
		return fail(err)
	}
	opened = append(opened, func() { r.closeJournal(context.Background()) })
	if r.queue, err = openQueue(f, r.log, opts.NatsOptions); err != nil {
		return fail(err)
	}
	opened = append(opened, func() { r.queue.Close() })
	if f.TLS.Enabled() {
		if r.certs, err = tlscert.New(f.TLS, r.log); err != nil {
			return fail(err)
		}
		opened = append(opened, r.certs.Close)
	}
	if err := r.seedDedup(); err != nil {
		r.log.Warn("could not load the dedup keys the queue kept", "error", err)
	}
	r.install(rt)
	r.dispatcher = dispatch.New(r.queue, r.deadLetters, r.metrics, r.log)
	if r.journal != nil {
		r.dispatcher.SetJournal(r.journal)
	}
	r.dispatcher.Apply(rt.targets())
	opened = append(opened, func() { r.dispatcher.Close(context.Background()) })
	if r.console, err = r.newConsole(); err != nil {
		return fail(err)
	}
	return r, nil
}

// replayedFile, in data_dir, lists the IDs of the dead-letter records
// already replayed (dispatch.Record.ID), one a line.
const replayedFile = "dead-letter.replayed"

// storeCheckTimeout bounds the check at start that the shared dedup store
// answers: an instance that cannot reach it would answer 503 to every event.
const storeCheckTimeout = 5 * time.Second

func openDedup(f *config.File, opts []dedup.Option) (dedup.Store, error) {
	switch f.Dedup.Store {
	case "redis":
		opts = append([]dedup.Option{dedup.WithPrefix(f.Dedup.RedisPrefix)}, opts...)
		s, err := dedup.NewRedis(f.Dedup.RedisURL, opts...)
		if err != nil {
			return nil, err
		}
		// NewRedis connects lazily: fail here, at start, rather than at
		// the first event.
		ctx, cancel := context.WithTimeout(context.Background(), storeCheckTimeout)
		defer cancel()
		if err := s.Ping(ctx); err != nil {
			s.Close()
			return nil, fmt.Errorf("dedup redis_url %s: %w", sinks.RedactURL(f.Dedup.RedisURL), err)
		}
		return s, nil
	default:
		return dedup.NewMemory(f.Dedup.MaxKeys, opts...)
	}
}

// seedDedup gives the memory dedup store the keys a KeyKeeper queue (disk)
// kept across the restart: those of delivered and unrouted events, and of
// the events still owed, so that an event re-sent after a deploy is still a
// duplicate. A Redis store keeps its own keys.
func (r *Router) seedDedup() error {
	kk, ok := r.queue.(queue.KeyKeeper)
	m, isMem := r.dedup.(*dedup.Memory)
	if !ok || !isMem {
		return nil
	}
	n := 0
	err := kk.Keys(func(key string, expires time.Time) {
		m.Seed(key, expires)
		n++
	})
	r.log.Info("dedup keys loaded from the queue", "keys", n)
	return err
}

func openQueue(f *config.File, log *slog.Logger, natsOpts []natsq.Option) (queue.Queue, error) {
	switch f.Queue.Backend {
	case "memory":
		return queue.NewMemory(int64(f.Queue.MaxBytes)), nil
	case "disk":
		var opts []disk.Option
		if f.Dedup.Store == "memory" {
			// The memory store forgets its keys at a restart: the queue
			// keeps them for it (a redis store keeps its own).
			opts = append(opts, disk.KeepKeys(f.Dedup.MaxKeys))
		}
		return disk.Open(filepath.Join(f.DataDir, "queue"), int64(f.Queue.MaxBytes), log.With("component", "queue"), opts...)
	case "nats":
		stream := f.Queue.NATS.Stream
		opts := append([]natsq.Option{natsq.WithMaxBytes(int64(f.Queue.MaxBytes)),
			natsq.WithStream(stream, natsq.SubjectPrefix(stream))}, natsOpts...)
		return natsq.Open(f.Queue.NATS.URL, log.With("component", "queue"), opts...)
	default:
		return nil, fmt.Errorf("queue backend %q is not available in this build", f.Queue.Backend)
	}
}

// newRuntime builds f's runtime for this router: its metric handles
// resolved, the sinks that prev (nil at start) does not have provisioned.
// The runtime is complete before it is put in force.
func (r *Router) newRuntime(f *config.File, prev *Runtime) (*Runtime, config.Problems) {
	rt, problems := build(f, prev, r.log, r.opts.Version, r.metrics)
	if problems == nil {
		problems = rt.provision(r.stopCtx, prev)
	}
	if problems != nil {
		return nil, problems
	}
	return rt, nil
}

// install puts rt in force.
func (r *Router) install(rt *Runtime) {
	r.metrics.ConfigGeneration.Set(float64(rt.Generation))
	r.metrics.ConfigLastReloadSuccess.SetToCurrentTime()
	r.rt.Store(rt)
	warnWeakSecrets(r.log, rt.File)
}

// Runtime returns the runtime in force.
func (r *Router) Runtime() *Runtime { return r.rt.Load() }

// Serve accepts events on ln, and admin requests on adminLn when it is not
// nil (without it there is no admin listener: ln never serves the admin
// endpoints, whoever the client seems to be). It returns when the
// listeners are closed by Shutdown.
func (r *Router) Serve(ln, adminLn net.Listener) error {
	f := r.rt.Load().File
	server := &fasthttp.Server{
		// Connection limits (restart to change): beyond max_conns fasthttp
		// answers 503; beyond max_conns_per_ip a peer's new connections
		// are refused (429).
		Concurrency:    f.MaxConns,
		MaxConnsPerIP:  f.MaxConnsPerIP,
		Handler:        r.handle,
		ErrorHandler:   r.errorHandler,
		Name:           "hookrouter",
		ReadTimeout:    30 * time.Second,
		WriteTimeout:   30 * time.Second,
		IdleTimeout:    2 * time.Minute,
		ReadBufferSize: 16 << 10, // also the limit on request line + headers (431 beyond)
		// Bodies are streamed: the handler gets a request once its headers
		// and the first byte of its body are in, and reads the rest itself
		// only for a request that may be kept (readBody applies each
		// source's max_body_bytes). With streaming, MaxRequestBodySize only
		// sets how much fasthttp reads ahead: one byte, the least it can.
		// Multipart bodies are not pre-parsed, which would read them whole
		// before the handler could refuse them.
		StreamRequestBody:            true,
		MaxRequestBodySize:           1,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		LazyRequestTime:              true, // the handler reads the clock itself, once
		ConnState:                    r.connState,
		Logger:                       fasthttpLogger{r.log},
	}
	var admin *http.Server
	if adminLn != nil {
		h, err := r.adminHandler()
		if err != nil {
			ln.Close()
			adminLn.Close()
			return err
		}
		admin = adminServer(h)
	}
	if r.certs != nil {
		// TLS 1.2+, the certificate in force at each handshake. The
		// handshake runs in fasthttp's worker on the first read, under
		// the server's ReadTimeout.
		ln = tls.NewListener(ln, r.certs.TLSConfig())
	}
	r.srvMu.Lock()
	if r.stopped {
		r.srvMu.Unlock()
		ln.Close()
		if adminLn != nil {
			adminLn.Close()
		}
		return nil
	}
	r.server, r.admin = server, admin
	// Only the ingress listener: admin's http.Server closes its own, even
	// when its Shutdown comes before its Serve.
	r.listeners = append(r.listeners, ln)
	r.srvMu.Unlock()

	errc := make(chan error, 2)
	if admin != nil {
		go func() {
			err := admin.Serve(adminLn)
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			errc <- err
		}()
	}
	go func() { errc <- server.Serve(ln) }()
	err := <-errc
	if admin != nil {
		if err2 := <-errc; err == nil {
			err = err2
		}
	}
	return err
}

// Shutdown stops the router: new events are answered 503 with Retry-After,
// the listeners close, and queued deliveries get until ctx's deadline to
// finish. What is left stays owed (disk, nats) or is dead-lettered (memory).
// With the memory queue Shutdown waits for the queue to empty, keeping a
// little of ctx's time to cut short the sends still running and write the
// dead letters; with a durable queue it waits only for the sends in flight.
func (r *Router) Shutdown(ctx context.Context) error {
	r.draining.Store(true)
	r.cancelStop()
	// Once stopped is set, no reload applies anything (see Reload).
	r.srvMu.Lock()
	r.stopped = true
	server, admin, listeners := r.server, r.admin, r.listeners
	r.srvMu.Unlock()
	var errs []error
	r.stopWatching()
	// The TLS files are no longer watched; the certificate in force serves
	// until the ingress closes.
	r.certs.Close()
	// The ingress listener stays open through the drain: a new request, on a
	// new or a keep-alive connection, is answered 503 + Retry-After (and its
	// connection closed after the answer), /health 503, so that senders and
	// load balancers are told rather than refused. Requests that got past
	// the draining check finish first: their events are queued before the
	// dispatcher stops.
	r.awaitRequests(r.rt.Load())
	if _, ok := r.queue.(queue.Drainer); ok {
		r.drain(ctx)
	}
	// The admin listener stays up through the drain too, so that an
	// operator can watch it in /health; event streams and profiles do not
	// hold the rest of the shutdown for long.
	if admin != nil {
		actx, cancel := context.WithTimeout(ctx, adminShutdownGrace)
		if err := admin.Shutdown(actx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			errs = append(errs, err)
		}
		cancel()
		admin.Close()
	}
	errs = append(errs, r.dispatcher.Close(ctx))
	// Only now is the ingress closed. Its own bound, not ctx's: the drain
	// may have used all of that.
	stopClosing := r.closeFreshConns()
	if server != nil {
		sctx, cancel := context.WithTimeout(context.Background(), ingressCloseGrace)
		if err := server.ShutdownWithContext(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			errs = append(errs, err)
		}
		cancel()
	}
	stopClosing()
	// A Serve that had not yet handed its listener to fasthttp when
	// ShutdownWithContext ran would otherwise accept forever.
	for _, ln := range listeners {
		ln.Close()
	}
	r.console.Close()
	r.quitOnce.Do(func() { close(r.quit) })
	r.bg.Wait()
	// After the dispatcher, so that the last attempts and the dead letters
	// written at shutdown are journaled.
	errs = append(errs, r.closeJournal(ctx))
	errs = append(errs, r.queue.Close(), r.dedup.Close(), r.deadLetters.Close(), r.replayed.Close())
	return errors.Join(errs...)
}

// ingressCloseGrace bounds the close of the ingress listener after the
// drain: its connections only wait for a 503 to be written.
const ingressCloseGrace = 2 * time.Second

func (r *Router) closeJournal(ctx context.Context) error {
	if r.journal == nil {
		return nil
	}
	// Writing what is pending takes little; never more than a second of
	// the shutdown's time, which belongs to deliveries.
	c, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return r.journal.Close(c)
}

// connState tracks the connections that have not started a request.
// fasthttp calls it twice per request (active, idle): those calls take the
// lock only while some connection is still fresh, and idle, which always
// follows active, is ignored.
func (r *Router) connState(c net.Conn, state fasthttp.ConnState) {
	switch state {
	case fasthttp.StateNew:
		r.freshMu.Lock()
		if r.fresh == nil {
			r.fresh = map[net.Conn]struct{}{}
		}
		r.fresh[c] = struct{}{}
		r.freshN.Store(int64(len(r.fresh)))
		r.freshMu.Unlock()
	case fasthttp.StateIdle:
	default:
		if r.freshN.Load() == 0 {
			return
		}
		r.freshMu.Lock()
		delete(r.fresh, c)
		r.freshN.Store(int64(len(r.fresh)))
		r.freshMu.Unlock()
	}
}

// adminShutdownGrace is how long Shutdown lets admin requests in flight
// finish before it closes their connections.
const adminShutdownGrace = time.Second

// freshConnGrace is how long a connection opened just before shutdown has
// to start its request (which is then answered 503) before it is closed.
const freshConnGrace = 100 * time.Millisecond

// closeFreshConns closes, every freshConnGrace until the returned func is
// called, the connections on which no request has started. fasthttp's
// shutdown closes idle keep-alive connections but waits up to 5s for new
// ones, which a client's spare connection (or a load balancer's TCP check)
// would otherwise take from the time left to deliver queued events.
func (r *Router) closeFreshConns() (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(freshConnGrace)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			r.freshMu.Lock()
			for c := range r.fresh {
				c.Close()
				delete(r.fresh, c)
			}
			r.freshN.Store(0)
			r.freshMu.Unlock()
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// drain waits until the queue owes nothing, or until shortly before ctx's
// deadline: the rest of the time is for dispatch to stop the sends in
// flight and dead-letter what is left. Without a deadline it waits until
// the queue is empty or ctx is done.
func (r *Router) drain(ctx context.Context) {
	if deadline, ok := ctx.Deadline(); ok {
		reserve := min(time.Second, time.Until(deadline)/5)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-reserve))
		defer cancel()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for len(r.queue.Pending()) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// limitedLog logs a repeating failure when it starts and then at most once
// per interval per key, with the count of the ones it held back.
type limitedLog struct {
	mu   sync.Mutex
	last map[string]*limitEntry
}

type limitEntry struct {
	at         time.Time
	suppressed int
}

const logInterval = 10 * time.Second

func (l *limitedLog) warn(log *slog.Logger, key, msg string, args ...any) {
	l.mu.Lock()
	if l.last == nil {
		l.last = map[string]*limitEntry{}
	}
	e := l.last[key]
	now := time.Now()
	if e != nil && now.Sub(e.at) < logInterval {
		e.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := 0
	if e == nil {
		e = &limitEntry{}
		l.last[key] = e
	} else {
		suppressed = e.suppressed
	}
	e.at, e.suppressed = now, 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	log.Warn(msg, args...)
}

// fasthttpLogger routes fasthttp's own messages to slog at debug level:
// they are about misbehaving clients, not about the router.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("http server", "message", fmt.Sprintf(format, args...))
}
