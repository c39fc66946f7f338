package router

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/hookrouter/hookrouter/router/config"
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
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	st := r.reload
	if st.loadedAt.IsZero() {
		st.loadedAt = r.startedAt
	}
	return st
}

// Reload reads the config file again and, if it is valid, puts it in force.
// The new file is fully validated and built first; an invalid file changes
// nothing: its problems are logged one per line, counted, shown in /health
// and returned. A file whose bytes did not change is a no-op.
//
// Settings that only a restart can change (listen, admin_listen, data_dir,
// queue, dedup store) keep their running values; the rest of the file is
// applied, and /health lists what waits for a restart.
func (r *Router) Reload(trigger string) error {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	cur := r.rt.Load()
	r.reload.lastAttempt = time.Now()

	f, err := config.Load(r.opts.ConfigPath)
	if err == nil && f.Hash == cur.File.Hash {
		r.metrics.ConfigReloads.WithLabelValues("unchanged").Inc()
		return nil
	}
	var rt *Runtime
	if err == nil {
		var problems config.Problems
		rt, problems = Build(f, cur, r.log, r.opts.Version)
		if problems != nil {
			err = problems
		}
	}
	if err != nil {
		r.metrics.ConfigReloads.WithLabelValues("failure").Inc()
		r.reload.lastError = err.Error()
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

	pending := restartOnly(cur.File, f)
	for _, p := range pending {
		r.log.Warn("config change needs a restart; running value kept", "setting", p)
	}
	keepRestartOnly(f, cur.File)
	rt.Generation = cur.Generation + 1
	r.install(rt)
	// Routing switches first, then lanes: a delivery queued under the new
	// rules for a new sink may wait a moment for its lane, never the reverse.
	r.dispatcher.Apply(rt.targets())
	r.metrics.ConfigReloads.WithLabelValues("success").Inc()
	r.reload.lastError = ""
	r.reload.loadedAt = time.Now()
	r.reload.pendingRestart = pending
	r.log.Info("config reloaded", "trigger", trigger, "generation", rt.Generation,
		"rules", len(rt.Rules.Rules), "sinks", len(rt.Sinks))
	return nil
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
	check("data_dir", old.DataDir, new.DataDir)
	check("queue", old.Queue, new.Queue)
	check("dedup", old.Dedup, new.Dedup)
	check("log", old.Log, new.Log)
	return out
}

// keepRestartOnly copies the running values of restart-only settings into f,
// so that the runtime in force describes what the process really does.
func keepRestartOnly(f, running *config.File) {
	f.Listen, f.AdminListen, f.DataDir = running.Listen, running.AdminListen, running.DataDir
	f.Queue, f.Dedup, f.Log = running.Queue, running.Dedup, running.Log
}

// debounce groups the events of one save (editors write, chmod and rename
// in quick succession) into one reload.
const debounce = 100 * time.Millisecond

// Watch reloads the config when its file changes. It watches the file's
// directory, not the file: editors save by writing a new file and renaming
// it over the old one, and Kubernetes swaps a ConfigMap by replacing a
// symlink, and both would leave a watch on the old file deaf.
func (r *Router) Watch() error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	dir := filepath.Dir(r.opts.ConfigPath)
	if err := w.Add(dir); err != nil {
		w.Close()
		return fmt.Errorf("watch config directory %q: %w", dir, err)
	}
	r.reloadMu.Lock()
	r.reload.watcher, r.reload.stop, r.reload.done = w, make(chan struct{}), make(chan struct{})
	stop, done := r.reload.stop, r.reload.done
	r.reloadMu.Unlock()

	go func() {
		defer close(done)
		var timer <-chan time.Time
		for {
			select {
			case <-stop:
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Op == fsnotify.Chmod && !r.isConfig(ev.Name) {
					continue
				}
				timer = time.After(debounce)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				r.log.Warn("config watch error", "error", err)
			case <-timer:
				timer = nil
				if _, err := os.Stat(r.opts.ConfigPath); err != nil {
					// Mid-swap, or deleted: wait for the next event.
					continue
				}
				_ = r.Reload("file")
			}
		}
	}()
	return nil
}

func (r *Router) isConfig(name string) bool {
	return filepath.Clean(name) == filepath.Clean(r.opts.ConfigPath)
}

func (r *Router) stopWatching() {
	r.reloadMu.Lock()
	w, stop, done := r.reload.watcher, r.reload.stop, r.reload.done
	r.reload.watcher = nil
	r.reloadMu.Unlock()
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
	for name, s := range r.rt.Load().Sinks {
		if ro, ok := s.Sink.(interface{ Reopen() error }); ok {
			if err := ro.Reopen(); err != nil {
				r.log.Error("reopen failed", "sink", name, "error", err)
			}
		}
	}
}
