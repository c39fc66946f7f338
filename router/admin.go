package router

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/hookrouter/hookrouter/router/dispatch"
)

// handleOther serves the paths that are not sources: /health everywhere;
// /metrics, POST /-/reload and POST /-/replay on the admin listener, or on
// the main one when there is no admin listener. On the main listener the
// /-/ endpoints answer only loopback clients: they change what the router
// does, and the main port faces the internet.
func (r *Router) handleOther(ctx *fasthttp.RequestCtx, onAdmin bool) {
	path := string(ctx.Path())
	adminHere := onAdmin || r.admin == nil
	switch {
	case path == "/health":
		r.serveHealth(ctx)
		return
	case path == "/metrics" && adminHere:
		r.metricsHandler()(ctx)
		return
	case strings.HasPrefix(path, "/debug/pprof/") && adminHere:
		if !onAdmin && !ctx.RemoteIP().IsLoopback() {
			break
		}
		pprofHandler(ctx)
		return
	case (path == "/-/reload" || path == "/-/replay") && adminHere:
		if !onAdmin && !ctx.RemoteIP().IsLoopback() {
			break
		}
		if !ctx.IsPost() {
			ctx.Response.Header.Set("Allow", "POST")
			jsonAnswer(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
			return
		}
		if path == "/-/reload" {
			r.serveReload(ctx)
		} else {
			r.serveReplay(ctx)
		}
		return
	}
	jsonAnswer(ctx, fasthttp.StatusNotFound, bodyNotFound)
}

// pprofHandler serves Go's profiles (for `go tool pprof`), next to the
// metrics and with the same access rules as the /-/ endpoints.
var pprofHandler = fasthttpadaptor.NewFastHTTPHandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/debug/pprof/profile" {
		pprof.Profile(w, r)
		return
	}
	pprof.Index(w, r)
})

func jsonAnswer(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

func (r *Router) metricsHandler() fasthttp.RequestHandler {
	r.metricsOnce.Do(func() {
		r.promHandler = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(r.metrics.Registry, promhttp.HandlerOpts{}))
	})
	return r.promHandler
}

// Health is the /health document. status, processed_events are the names
// the platform's own examples use; the rest is for operators.
type Health struct {
	Status           string                         `json:"status"`
	ProcessedEvents  int64                          `json:"processed_events"`
	DedupKeys        int                            `json:"dedup_keys"`
	UptimeSeconds    int64                          `json:"uptime_seconds"`
	ConfigFile       string                         `json:"config_file"`
	ConfigGeneration uint64                         `json:"config_generation"`
	ConfigLoadedAt   time.Time                      `json:"config_loaded_at"`
	LastReloadError  string                         `json:"last_reload_error"`
	LastReloadAt     *time.Time                     `json:"last_reload_at,omitempty"`
	PendingRestart   []string                       `json:"pending_restart,omitempty"`
	QueueBackend     string                         `json:"queue_backend"`
	Sinks            map[string]dispatch.LaneStatus `json:"sinks"`
}

// Health reports the router's state.
func (r *Router) Health() Health {
	rt := r.rt.Load()
	st := r.reloadStatus()
	h := Health{
		Status:           "healthy",
		ProcessedEvents:  r.processed.Load(),
		DedupKeys:        r.dedup.Len(),
		UptimeSeconds:    int64(time.Since(r.startedAt).Seconds()),
		ConfigFile:       r.opts.ConfigPath,
		ConfigGeneration: rt.Generation,
		ConfigLoadedAt:   st.loadedAt,
		LastReloadError:  st.lastError,
		PendingRestart:   st.pendingRestart,
		QueueBackend:     rt.File.Queue.Backend,
		Sinks:            r.dispatcher.Status(),
	}
	if !st.lastAttempt.IsZero() {
		t := st.lastAttempt
		h.LastReloadAt = &t
	}
	if r.draining.Load() {
		h.Status = "shutting_down"
	}
	return h
}

func (r *Router) serveHealth(ctx *fasthttp.RequestCtx) {
	h := r.Health()
	b, _ := json.Marshal(h)
	status := fasthttp.StatusOK
	if h.Status != "healthy" {
		status = fasthttp.StatusServiceUnavailable
	}
	jsonAnswer(ctx, status, b)
}

func (r *Router) serveReload(ctx *fasthttp.RequestCtx) {
	if err := r.Reload("api"); err != nil {
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString(err.Error() + "\n")
		return
	}
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(fmt.Sprintf("ok: generation %d\n", r.rt.Load().Generation))
}

// ReplayResult is the answer of POST /-/replay.
type ReplayResult struct {
	Requeued int      `json:"requeued"`
	Skipped  int      `json:"skipped"`
	Errors   []string `json:"errors,omitempty"`
}

// serveReplay re-queues dead-letter records (the body, in the dead-letter
// file's format) to their sinks, keeping each event's id so that receivers
// can recognise a replay of something they already have.
func (r *Router) serveReplay(ctx *fasthttp.RequestCtx) {
	recs, err := dispatch.ReadDeadLetters(bytes.NewReader(ctx.PostBody()))
	if err != nil {
		jsonAnswer(ctx, fasthttp.StatusBadRequest, []byte(fmt.Sprintf(`{"error":"Invalid dead-letter file","detail":%q}`, err.Error())))
		return
	}
	res := r.Replay(context.Background(), recs)
	b, _ := json.Marshal(res)
	jsonAnswer(ctx, fasthttp.StatusOK, b)
}

// Replay re-queues dead-letter records to their sinks. A record whose sink
// is not in the config in force is skipped and reported.
func (r *Router) Replay(ctx context.Context, recs []dispatch.Record) ReplayResult {
	var res ReplayResult
	rt := r.rt.Load()
	for i, rec := range recs {
		if _, ok := rt.Sinks[rec.Sink]; !ok {
			res.Skipped++
			res.Errors = append(res.Errors, fmt.Sprintf("record %d: sink %q is not in the config", i+1, rec.Sink))
			continue
		}
		if err := r.queue.Put(ctx, rec.Event(), []string{rec.Sink}); err != nil {
			res.Skipped++
			res.Errors = append(res.Errors, fmt.Sprintf("record %d: %v", i+1, err))
			continue
		}
		res.Requeued++
	}
	return res
}
