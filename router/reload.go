package router

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/dispatch"
	"github.com/hookrouter/hookrouter/sinks"
)

// reloadState is what /health and the metrics say about reloads.
type reloadState struct {
	loadedAt       time.Time
	lastAttempt    time.Time
	lastError      string
	pendingRestart []string
	watcher        *fsnotify.Watcher
	stop           chan struct{}
	done           chan struct{}
}

func (r *Router) reloadStatus() reloadState {
	r.statusMu.Lock()
	defer r.statusMu.Unlock()
	st := r.reload
	if st.loadedAt.IsZero() {
		st.loadedAt = r.startedAt
	}
	return st
}

// Reload reads the config file again and, if it is valid, puts it in force.
// The new file is fully validated and built first; an invalid file changes
// nothing: its problems are logged one per line, counted, shown in /health
// and returned. A file whose bytes did not change is a no-op (and clears the
// error of an earlier attempt: the file is the config in force again).
//
// Settings that only a restart can change (listen, admin_listen, turning
// tls on or off, data_dir, queue, dedup, journal, log) keep their running
// values; the rest of the file is applied, and /health lists what waits for
// a restart. The TLS certificate is read again whatever the outcome.
func (r *Router) Reload(trigger string) error {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	// Whatever becomes of the file, the TLS files are read again (SIGHUP
	// and POST /-/reload renew the certificate): those of the config in
	// force, with new paths when the reload applied them.
	defer r.reloadCerts(trigger)
	cur := r.rt.Load()
	r.setStatus(func(st *reloadState) { st.lastAttempt = time.Now() })

	f, err := config.Load(r.opts.ConfigPath)
	if err == nil && f.Hash == cur.File.Hash {
		// The file is back to what is in force: an earlier error is no
		// longer true.
		r.metrics.ConfigReloads.WithLabelValues("unchanged").Inc()
		r.setStatus(func(st *reloadState) { st.lastError = "" })
		return nil
	}
	var rt *Runtime
	var pending []string
	if err == nil {
		// The runtime describes what the process really does: the
		// restart-only settings keep their running values.
		pending = restartOnly(cur.File, f)
		keepRestartOnly(f, cur.File)
		// New and changed sinks open their destinations now: a reload
		// that cannot work is refused, the running config kept.
		var problems config.Problems
		if rt, problems = r.newRuntime(f, cur); problems != nil {
			err = problems
		}
	}
	if err != nil {
		r.metrics.ConfigReloads.WithLabelValues("failure").Inc()
		r.setStatus(func(st *reloadState) { st.lastError = err.Error() })
		var problems config.Problems
		if errors.As(err, &problems) {
			for _, p := range problems {
				r.log.Error("config reload rejected; running config kept", "trigger", trigger, "problem", p.String())
			}
		} else {
			r.log.Error("config reload rejected; running config kept", "trigger", trigger, "error", err)
		}
		return err
	}

	for _, p := range pending {
		r.log.Warn("config change needs a restart; running value kept", "setting", p)
	}
	// The order keeps every delivery owned by a lane, so none is taken for a
	// leftover of an old config and dead-lettered. The new rules' sinks get
	// their lanes before those rules route anything; the sinks only the old
	// rules use stay in force until the requests still matching with the old
	// rules have queued their deliveries, and only then drain and close.
	//
	// Each step is taken under srvMu, unless Shutdown has begun: it then
	// owns the dispatcher, and the reload stops where it is.
	r.srvMu.Lock()
	if r.stopped {
		r.srvMu.Unlock()
		rt.closeNew(cur)
		return errShuttingDown
	}
	r.dispatcher.Apply(mergeTargets(rt.targets(), cur.targets()))
	r.install(rt)
	r.srvMu.Unlock()
	r.awaitRequests(cur)
	r.srvMu.Lock()
	if !r.stopped {
		r.dispatcher.Apply(rt.targets())
	}
	r.srvMu.Unlock()
	r.metrics.ConfigReloads.WithLabelValues("success").Inc()
	r.setStatus(func(st *reloadState) {
		st.lastError = ""
		st.loadedAt = time.Now()
		st.pendingRestart = pending
	})
	r.log.Info("config reloaded", "trigger", trigger, "generation", rt.Generation,
		"rules", len(rt.Rules.Rules), "sinks", len(rt.Sinks))
	return nil
}

// errShuttingDown is Reload's answer once Shutdown has begun.
var errShuttingDown = errors.New("shutting down: reload not applied")

// setStatus changes what /health shows of reloads.
func (r *Router) setStatus(change func(*reloadState)) {
	r.statusMu.Lock()
	defer r.statusMu.Unlock()
	change(&r.reload)
}

// reloadCerts reads the TLS files of the config in force again; a pair
// that does not load leaves the certificate served as it was.
func (r *Router) reloadCerts(trigger string) {
	if r.certs != nil {
		_ = r.certs.Use(r.rt.Load().File.TLS, trigger)
	}
}

// mergeTargets returns the targets of next, and those of prev's sinks that
// next does not have.
func mergeTargets(next, prev map[string]dispatch.Target) map[string]dispatch.Target {
	for name, t := range prev {
		if _, ok := next[name]; !ok {
			next[name] = t
		}
	}
	return next
}

// maxRequestWait bounds how long a reload waits for the requests of the
// config it replaced: a request only waits on the dedup store and the
// queue, whose own timeouts are shorter.
const maxRequestWait = 10 * time.Second

// awaitRequests waits until no request runs with rt, or maxRequestWait, or
// Shutdown begins (the reload then applies nothing more).
func (r *Router) awaitRequests(rt *Runtime) {
	deadline := time.Now().Add(maxRequestWait)
	for n := rt.users.Load(); n > 0 && !r.draining.Load(); n = rt.users.Load() {
		if time.Now().After(deadline) {
			r.log.Warn("requests of the previous config still running; removed sinks drain without them", "requests", n)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// restartOnly lists the settings that differ between the running file and a
// new one but cannot change without a restart.
func restartOnly(old, new *config.File) []string {
	var out []string
	check := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, name)
		}
	}
	check("listen", old.Listen, new.Listen)
	check("admin_listen", old.AdminListen, new.AdminListen)
	// Turning TLS on or off needs a restart; new file paths do not.
	check("tls", old.TLS.Enabled(), new.TLS.Enabled())
	check("max_conns", old.MaxConns, new.MaxConns)
	check("max_conns_per_ip", old.MaxConnsPerIP, new.MaxConnsPerIP)
	check("data_dir", old.DataDir, new.DataDir)
	check("queue", old.Queue, new.Queue)
	check("dedup", old.Dedup, new.Dedup)
	check("journal", old.Journal, new.Journal)
	check("log", old.Log, new.Log)
	return out
}

// keepRestartOnly copies the running values of restart-only settings into f,
// so that the runtime in force describes what the process really does.
func keepRestartOnly(f, running *config.File) {
	f.Listen, f.AdminListen, f.DataDir = running.Listen, running.AdminListen, running.DataDir
	f.MaxConns, f.MaxConnsPerIP = running.MaxConns, running.MaxConnsPerIP
	if f.TLS.Enabled() != running.TLS.Enabled() {
		f.TLS = running.TLS
	}
	f.Queue, f.Dedup, f.Log = running.Queue, running.Dedup, running.Log
	f.Journal = running.Journal
}

// debounce groups the events of one save (editors write, chmod and rename
// in quick succession) into one reload; maxDebounce bounds how long a stream
// of events can put the reload off.
const (
	debounce    = 100 * time.Millisecond
	maxDebounce = 500 * time.Millisecond
)

// Watch reloads the config when its file changes. It watches directories,
// not the file: editors save by writing a new file and renaming it over the
// old one, and Kubernetes swaps a ConfigMap by replacing a symlink, and both
// would leave a watch on the old file deaf. The directories are the config
// path's, and those of every link on the way to the real file, so that a
// config symlinked from elsewhere is watched where it is written.
func (r *Router) Watch() error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	path, err := filepath.Abs(r.opts.ConfigPath)
	if err != nil {
		w.Close()
		return fmt.Errorf("watch config: %w", err)
	}
	cw := &configWatch{path: path, w: w, log: r.log}
	if err := cw.refresh(); err != nil {
		w.Close()
		return err
	}
	r.statusMu.Lock()
	r.reload.watcher, r.reload.stop, r.reload.done = w, make(chan struct{}), make(chan struct{})
	stop, done := r.reload.stop, r.reload.done
	r.statusMu.Unlock()
	go r.watch(cw, stop, done)
	return nil
}

func (r *Router) watch(cw *configWatch, stop, done chan struct{}) {
	defer close(done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var first time.Time // of the events not yet acted on; zero if none
	emptyOnce := false
	for {
		select {
		case <-stop:
			return
		case ev, ok := <-cw.w.Events:
			if !ok {
				return
			}
			// Other files in the directory (a log, a file sink's output)
			// must neither trigger reloads nor, by resetting the timer,
			// postpone one forever.
			if !cw.names[filepath.Clean(ev.Name)] {
				continue
			}
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			emptyOnce = false
			timer.Reset(min(debounce, first.Add(maxDebounce).Sub(now)))
		case err, ok := <-cw.w.Errors:
			if !ok {
				return
			}
			r.log.Warn("config watch error", "error", err)
		case <-timer.C:
			first = time.Time{}
			cw.refresh()
			fi, err := os.Stat(cw.path)
			if err != nil {
				// Mid-swap, or deleted: wait for the next event.
				continue
			}
			if fi.Size() == 0 && !emptyOnce {
				// Truncated for an in-place save whose write has not come
				// yet: give it a moment rather than report an empty file.
				emptyOnce = true
				timer.Reset(maxDebounce)
				continue
			}
			emptyOnce = false
			_ = r.Reload("file")
		}
	}
}

// configWatch knows which paths can change what the config path reads, and
// watches their directories.
type configWatch struct {
	path string // absolute
	w    *fsnotify.Watcher
	log  *slog.Logger
	// names are the config path, every symlink met resolving it and the
	// real file; dirs are the directories watched for them.
	names map[string]bool
	dirs  map[string]bool
}

// refresh recomputes names and watches their directories. Only the config
// path's own directory is required; it is called again before each reload
// because a swap (a ConfigMap update) moves the real file.
func (c *configWatch) refresh() error {
	names := linkChain(c.path)
	own := filepath.Dir(c.path)
	dirs := map[string]bool{}
	for n := range names {
		d := filepath.Dir(n)
		if c.dirs[d] {
			dirs[d] = true
			continue
		}
		if err := c.w.Add(d); err != nil {
			if d == own {
				return fmt.Errorf("watch config directory %q: %w", d, err)
			}
			c.log.Debug("config watch: directory not watched", "dir", d, "error", err)
			continue
		}
		dirs[d] = true
	}
	for d := range c.dirs {
		if !dirs[d] {
			_ = c.w.Remove(d) // gone already if the directory was removed
		}
	}
	c.names, c.dirs = names, dirs
	return nil
}

// maxLinks bounds the symlinks followed, as the kernel does.
const maxLinks = 40

// linkChain returns path, every symlink followed to resolve it (with the
// symlinked directories below each link's own directory, like a
// ConfigMap's ..data) and the real file, when they exist.
func linkChain(path string) map[string]bool {
	names := map[string]bool{path: true}
	p := path
	for range maxLinks {
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			break
		}
		target, err := os.Readlink(p)
		if err != nil {
			break
		}
		base := filepath.Dir(p)
		if !filepath.IsAbs(target) {
			target = filepath.Join(base, target)
		}
		p = filepath.Clean(target)
		names[p] = true
		for d := filepath.Dir(p); strings.HasPrefix(d, base+string(filepath.Separator)); d = filepath.Dir(d) {
			if fi, err := os.Lstat(d); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				names[d] = true
			}
		}
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		names[real] = true
	}
	return names
}

func (r *Router) stopWatching() {
	r.statusMu.Lock()
	w, stop, done := r.reload.watcher, r.reload.stop, r.reload.done
	r.reload.watcher = nil
	r.statusMu.Unlock()
	if w == nil {
		return
	}
	close(stop)
	<-done
	w.Close()
}

// ReopenFiles asks every sink that holds files open to reopen them (SIGHUP,
// after logrotate moved them).
func (r *Router) ReopenFiles() {
	// The dead-letter file too: recreated if it was moved aside or deleted.
	if err := r.deadLetters.Reopen(); err != nil {
		r.log.Error("reopen failed", "file", r.deadLetters.Path(), "error", err)
	}
	for name, s := range r.rt.Load().Sinks {
		if ro, ok := s.Sink.(sinks.Reopener); ok {
			if err := ro.Reopen(); err != nil {
				r.log.Error("reopen failed", "sink", name, "error", err)
			}
		}
	}
}
