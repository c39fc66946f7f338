package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"

	"github.com/hookrouter/hookrouter/router/admin"
	"github.com/hookrouter/hookrouter/router/dispatch"
	"github.com/hookrouter/hookrouter/router/journal"
)

// adminRoutes is the admin listener's route table: every endpoint, with the
// access rule it answers under. To add an endpoint, add a line here (see
// package admin for the rules); admin.Handler refuses a line without one.
func (r *Router) adminRoutes() []admin.Route {
	op := admin.Operator
	return append(r.journalRoutes(), []admin.Route{
		{Pattern: "GET /health", Access: op, Handler: http.HandlerFunc(r.serveHealth)},
		{Pattern: "GET /metrics", Access: op, Handler: promhttp.HandlerFor(r.metrics.Registry, promhttp.HandlerOpts{})},
		{Pattern: "POST /-/reload", Access: op, Handler: http.HandlerFunc(r.serveReload)},
		{Pattern: "POST /-/replay", Access: op, Handler: http.HandlerFunc(r.serveReplay)},

		// Go's profiles, for `go tool pprof http://ADMIN/debug/pprof/heap`.
		{Pattern: "GET /debug/pprof/", Access: op, Handler: http.HandlerFunc(pprof.Index)},
		{Pattern: "GET /debug/pprof/cmdline", Access: op, Handler: http.HandlerFunc(pprof.Cmdline)},
		{Pattern: "GET /debug/pprof/profile", Access: op, Handler: http.HandlerFunc(pprof.Profile)},
		{Pattern: "GET /debug/pprof/symbol", Access: op, Handler: http.HandlerFunc(pprof.Symbol)},
		{Pattern: "POST /debug/pprof/symbol", Access: op, Handler: http.HandlerFunc(pprof.Symbol)},
		{Pattern: "GET /debug/pprof/trace", Access: op, Handler: http.HandlerFunc(pprof.Trace)},
	}...)
}

// adminGuard checks admin.token as the config in force sets it, so a reload
// that changes the token applies to the next request.
func (r *Router) adminGuard() *admin.Guard {
	return admin.NewGuard(func() string { return r.rt.Load().File.Admin.Token })
}

// adminHandler builds the admin listener's handler from the route table
// and the console's routes (package console); a browser refused a console
// page is sent to the console's login form.
func (r *Router) adminHandler() (http.Handler, error) {
	routes := append(r.adminRoutes(), r.console.Routes()...)
	return admin.Handler(routes, r.adminGuard(), admin.Options{Unauthorized: http.HandlerFunc(r.console.Unauthorized)})
}

// adminServer is the admin listener's server. It has no WriteTimeout: a
// profile or an event stream may take long to write. ReadHeaderTimeout
// bounds a client that never finishes its request.
func adminServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// Health is the admin listener's /health document. status and
// processed_events are the names the platform's own examples use; the rest
// is for operators.
type Health struct {
	Status          string `json:"status"`
	ProcessedEvents int64  `json:"processed_events"`
	// Reason says why status is not "healthy".
	Reason           string                         `json:"reason,omitempty"`
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
	// Journal is the event journal's counters (dropped: records lost
	// because its writer fell behind); absent when journal.enabled is false.
	Journal *journal.Stats `json:"journal,omitempty"`
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
	if r.journal != nil {
		js := r.journal.Stats()
		h.Journal = &js
	}
	if !st.lastAttempt.IsZero() {
		t := st.lastAttempt
		h.LastReloadAt = &t
	}
	if r.draining.Load() {
		h.Status, h.Reason = "shutting_down", "shutting down"
	} else if reason := r.degraded(); reason != "" {
		// Still 200: the router accepts again once the cause clears.
		h.Status, h.Reason = "degraded", reason
	}
	return h
}

// healthStatus is the HTTP status of a /health answer: 503 while shutting
// down, so that a load balancer stops sending; 200 otherwise, degraded
// included (the router accepts again once the cause clears).
func healthStatus(h Health) int {
	if h.Status == "shutting_down" {
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

func (r *Router) serveHealth(w http.ResponseWriter, _ *http.Request) {
	h := r.Health()
	b, _ := json.Marshal(h)
	admin.JSON(w, healthStatus(h), b)
}

// ingressHealth is the ingress listener's /health: only what the platform's
// docs name and why the router is not healthy. The rest (config, sinks,
// their errors) is for operators, on the admin listener.
type ingressHealth struct {
	Status          string `json:"status"`
	ProcessedEvents int64  `json:"processed_events"`
	Reason          string `json:"reason,omitempty"`
}

func (r *Router) serveIngressHealth(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		jsonAnswer(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
		return
	}
	h := r.Health()
	b, _ := json.Marshal(ingressHealth{Status: h.Status, ProcessedEvents: h.ProcessedEvents, Reason: h.Reason})
	jsonAnswer(ctx, healthStatus(h), b)
}

func jsonAnswer(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

func (r *Router) serveReload(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := r.Reload("api"); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintln(w, err.Error())
		return
	}
	fmt.Fprintf(w, "ok: generation %d\n", r.rt.Load().Generation)
}

// maxReplayBytes bounds a POST /-/replay body: a dead-letter file, which can
// be large but is not unbounded.
const maxReplayBytes = 256 << 20

// ReplayResult is the answer of POST /-/replay.
type ReplayResult struct {
	Requeued int      `json:"requeued"`
	Skipped  int      `json:"skipped"`
	Errors   []string `json:"errors,omitempty"`
}

// serveReplay re-queues dead-letter records (the body, in the dead-letter
// file's format) to their sinks, keeping each event's id so that receivers
// can recognise a replay of something they already have.
func (r *Router) serveReplay(w http.ResponseWriter, req *http.Request) {
	recs, err := dispatch.ReadDeadLetters(http.MaxBytesReader(w, req.Body, maxReplayBytes))
	if err != nil {
		status := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			status = http.StatusRequestEntityTooLarge
		}
		admin.JSON(w, status, fmt.Appendf(nil, `{"error":"Invalid dead-letter file","detail":%q}`, err.Error()))
		return
	}
	// Not the request's context: a client that goes away must not leave a
	// replay half done.
	res := r.Replay(context.Background(), recs)
	b, _ := json.Marshal(res)
	admin.JSON(w, http.StatusOK, b)
}

// Replay re-queues dead-letter records to their sinks. A record whose sink
// is not in the config in force is skipped and reported.
func (r *Router) Replay(ctx context.Context, recs []dispatch.Record) ReplayResult {
	var res ReplayResult
	r.replayMu.Lock()
	defer r.replayMu.Unlock()
	r.flushForReplay(ctx)
	rt := r.rt.Load()
	// A delivery is re-queued once per call, however many of its records
	// the file holds.
	sent := map[string]int{}
	for i, rec := range recs {
		if _, ok := rt.Sinks[rec.Sink]; !ok {
			res.Skipped++
			res.Errors = append(res.Errors, fmt.Sprintf("record %d: sink %q is not in the config", i+1, rec.Sink))
			continue
		}
		delivery := rec.Event().ID + " " + rec.Sink
		if n, ok := sent[delivery]; ok {
			res.Skipped++
			res.Errors = append(res.Errors, fmt.Sprintf("record %d: event %s to sink %q is re-queued by record %d already", i+1, rec.Event().ID, rec.Sink, n))
			continue
		}
		if at, done := r.deadLetterReplayed(ctx, &rec); done {
			res.Skipped++
			res.Errors = append(res.Errors, fmt.Sprintf("record %d: already replayed at %s (event %s to sink %q), as the journal shows", i+1, at.Format(time.RFC3339), rec.Event().ID, rec.Sink))
			continue
		}
		ran, err := r.replayed.Once(rec.ID(), func() error {
			// Journaled before the Put: the delivery may finish first.
			r.journalReplayed(rec.EventID, rec.Sink, "replay of a dead letter")
			err := r.queue.Put(ctx, rec.Event(), []string{rec.Sink})
			if err != nil {
				r.journalReplayFailed(rec.EventID, rec.Sink, nil, err)
			}
			return err
		})
		switch {
		case !ran:
			res.Skipped++
			res.Errors = append(res.Errors, fmt.Sprintf("record %d: already replayed (event %s to sink %q)", i+1, rec.Event().ID, rec.Sink))
		case err != nil:
			res.Skipped++
			res.Errors = append(res.Errors, fmt.Sprintf("record %d: %v", i+1, err))
		default:
			res.Requeued++
			sent[delivery] = i + 1
		}
	}
	if err := r.replayed.Sync(); err != nil {
		res.Errors = append(res.Errors, err.Error())
	}
	return res
}
