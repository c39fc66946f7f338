package router

import (
	"context"
	"errors"
	"net"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/hookrouter/hookrouter/router/dedup"
	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

// retryAfterSeconds is what a 503 asks the sender to wait: long enough for a
// queue to drain a little or a restart to finish, short enough not to delay
// events noticeably.
const retryAfterSeconds = "5"

// headerEventID names the event in a 200: its id, or for a duplicate the id
// of the event it duplicates, so a sender's logs lead to hookrouter trace.
const headerEventID = "X-Hookrouter-Event-Id"

var (
	bodyOK           = []byte("OK")
	bodyUnauthorized = []byte(`{"error":"Unauthorized"}`)
	bodyNotFound     = []byte(`{"error":"Not found"}`)
	bodyMethod       = []byte(`{"error":"Method not allowed"}`)
	bodyTooLarge     = []byte(`{"error":"Payload too large"}`)
	bodyUnavailable  = []byte(`{"error":"Service unavailable","detail":"retry later"}`)
	bodyShutdown     = []byte(`{"error":"Service unavailable","detail":"shutting down"}`)
)

// handle is the fasthttp handler of the main listener.
func (r *Router) handle(ctx *fasthttp.RequestCtx) {
	// The body is read before the runtime is acquired: a sender that
	// stalls must not hold a reload up (it waits for the requests of the
	// runtime it replaces).
	pre := r.rt.Load().sources[string(ctx.Path())]
	if pre == nil {
		// Not an event. Nothing else is served here, whoever the client
		// seems to be: admin endpoints are on the admin listener only.
		if string(ctx.Path()) == "/health" {
			r.serveIngressHealth(ctx)
			return
		}
		jsonAnswer(ctx, fasthttp.StatusNotFound, bodyNotFound)
		return
	}
	pre.m.received.Inc()
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST")
		r.reject(ctx, pre, fasthttp.StatusMethodNotAllowed, "method", bodyMethod)
		return
	}
	if r.draining.Load() {
		r.shuttingDown(ctx, pre)
		return
	}
	if !r.allowed(ctx, pre) {
		return
	}
	// Header and bearer auth decide from the headers, before the body is
	// read: a stranger's body is never buffered (the server streams request
	// bodies, and discards or cuts off what a refused one sends).
	if !pre.verifier.ReadsBody() && !pre.verifier.Verify(&ctx.Request.Header, nil) {
		r.reject(ctx, pre, fasthttp.StatusUnauthorized, "unauthorized", bodyUnauthorized)
		return
	}
	if !r.underLimit(ctx, pre) {
		return
	}
	body, release, ok := r.readBody(ctx, pre)
	if !ok {
		return
	}
	defer release()

	rt := r.acquire()
	defer rt.release()
	src := rt.sources[string(ctx.Path())]
	switch {
	case src == nil: // removed by a reload while the body was read
		jsonAnswer(ctx, fasthttp.StatusNotFound, bodyNotFound)
		return
	case r.draining.Load(): // reading the body took until the shutdown
		r.shuttingDown(ctx, src)
		return
	}
	// Body-reading auth is checked now, and header auth again if a reload
	// changed the source meanwhile.
	if (src.verifier.ReadsBody() || src != pre) && !src.verifier.Verify(&ctx.Request.Header, body) {
		r.reject(ctx, src, fasthttp.StatusUnauthorized, "unauthorized", bodyUnauthorized)
		return
	}
	r.accept(ctx, rt, src, body)
}

// acquire returns the runtime in force, counted as in use until release.
// The second load makes the count reliable: once a reload has swapped the
// pointer, a request either counted itself on the old runtime before the
// swap (and the reload waits for it) or takes the new one.
func (r *Router) acquire() *Runtime {
	for {
		rt := r.rt.Load()
		rt.users.Add(1)
		if r.rt.Load() == rt {
			return rt
		}
		rt.users.Add(-1)
	}
}

// release ends a use of rt begun by acquire.
func (rt *Runtime) release() { rt.users.Add(-1) }

// accept runs the pipeline for an authenticated request. The order matters:
// the key is claimed before matching so that two concurrent copies route
// once, and committed only after the event is queued, so that a failed
// enqueue (503) does not turn the sender's retry into a "duplicate".
func (r *Router) accept(ctx *fasthttp.RequestCtx, rt *Runtime, src *source, body []byte) {
	start := time.Now()
	in := rt.Rules.Acquire(src.name, &ctx.Request.Header)
	defer rt.Rules.Release(in)

	if len(body) == 0 {
		r.invalid(ctx, src, "empty body")
		return
	}
	if !utf8.Valid(body) {
		r.invalid(ctx, src, invalidUTF8(body))
		return
	}
	if err := in.Parse(body); err != nil {
		r.invalid(ctx, src, err.Error())
		return
	}
	key, err := in.DedupKey()
	if err != nil {
		r.ruleLog.warn(r.log, "dedup_key", "dedup key expression failed; default key used", "source", src.name, "error", err)
	}
	storeKey := dedupStoreKey(src.name, key)
	ttl := time.Duration(src.ttl)
	// The event id is also the request's claim token: unique per request,
	// so a store call the client library repeats finds its own claim.
	id := newEventID(start)
	claimed, err := r.claim(storeKey, id)
	if err != nil {
		reason := "dedup_error"
		switch {
		case errors.Is(err, dedup.ErrInFlightFailed):
			reason = "in_flight_failed"
		case errors.Is(err, dedup.ErrCopyInFlight):
			reason = "in_flight_timeout"
		case errors.Is(err, context.DeadlineExceeded):
			reason = "dedup_timeout"
			r.metrics.DedupStoreErrors.Inc()
			r.storeLog.warn(r.log, "dedup", "dedup store slower than dedup.timeout; answering 503", "timeout", r.dedupTimeout.String(), "error", err)
		default:
			r.metrics.DedupStoreErrors.Inc()
			r.storeLog.warn(r.log, "dedup", "dedup store failed; answering 503", "error", err)
		}
		if reason == "dedup_timeout" || reason == "dedup_error" {
			r.noteRefusal(reason)
		}
		r.unavailable(ctx, src, reason)
		return
	}
	if !claimed {
		src.m.duplicate.Inc()
		ctx.Response.Header.Set("X-Hookrouter-Duplicate", "true")
		if orig := r.journalDuplicate(src, start, in, key, storeKey, body); orig != "" {
			ctx.Response.Header.Set(headerEventID, orig)
		}
		ok(ctx)
		return
	}

	res := in.Match()
	for _, i := range res.Matched {
		rt.ruleMatch[i].Inc()
	}
	for _, i := range res.Shadow {
		rt.ruleMatch[i].Inc()
	}
	for _, e := range res.Errors {
		name := rt.Rules.Rules[e.Rule].Name
		rt.ruleError[e.Rule].Inc()
		r.ruleLog.warn(r.log, name, "rule failed at run time; counted as no match", "rule", name, "source", src.name, "error", e.Err)
	}

	var to []string
	var kept []byte // the body, as queued: the journal shares it
	if len(res.To) > 0 {
		ev := &sinks.Event{
			ID:         id,
			Source:     src.name,
			ReceivedAt: start,
			Body:       append([]byte(nil), body...),
			// Stored with the event by a KeyKeeper queue (disk), so that
			// the key outlives a restart.
			DedupKey:     storeKey,
			DedupExpires: start.Add(ttl),
		}
		kept = ev.Body
		to = append([]string(nil), res.To...)
		if err := r.queue.Put(context.Background(), ev, to); err != nil {
			r.releaseKey(storeKey, id)
			reason := "queue_full"
			if errors.Is(err, queue.ErrClosed) {
				reason = "shutting_down"
			} else if !errors.Is(err, queue.ErrFull) {
				reason = "queue_error"
				r.storeLog.warn(r.log, "queue", "enqueue failed; answering 503", "error", err)
			}
			r.noteRefusal(reason)
			r.unavailable(ctx, src, reason)
			return
		}
	} else {
		src.m.unrouted.Inc()
		if kk, ok := r.queue.(queue.KeyKeeper); ok {
			if err := kk.KeepKey(storeKey, start.Add(ttl)); err != nil {
				r.storeLog.warn(r.log, "queue", "dedup key of an unrouted event not kept", "error", err)
			}
		}
		to = []string{}
		if r.journal != nil {
			kept = append([]byte(nil), body...)
		}
	}
	// Journaled before the dedup commit (a network round trip with Redis), so
	// that the event's record rarely comes after its first delivery's step.
	r.journalAccepted(rt, src, id, start, in, key, storeKey, res, to, kept, &ctx.Request.Header)
	c, cancel := context.WithTimeout(context.Background(), r.dedupTimeout)
	err = r.dedup.Commit(c, storeKey, id, ttl)
	cancel()
	if err != nil {
		// The event is queued: answer 200. The key stays claimed until the
		// store's claim timeout, so a retry is still recognised meanwhile.
		r.metrics.DedupStoreErrors.Inc()
		r.storeLog.warn(r.log, "dedup", "dedup commit failed", "error", err)
	}
	r.noteAccepted()
	r.processed.Add(1)
	src.m.accepted.Inc()
	src.m.latency.Observe(time.Since(start).Seconds())
	ctx.Response.Header.Set(headerEventID, id)
	ok(ctx)
}

func ok(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBody(bodyOK)
}

func (r *Router) reject(ctx *fasthttp.RequestCtx, src *source, status int, reason string, body []byte) {
	r.metrics.EventsRejected.WithLabelValues(src.name, reason).Inc()
	r.journalRejected(src, status, reason)
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

func (r *Router) shuttingDown(ctx *fasthttp.RequestCtx, src *source) {
	ctx.Response.Header.Set("Retry-After", retryAfterSeconds)
	ctx.SetConnectionClose()
	r.reject(ctx, src, fasthttp.StatusServiceUnavailable, "shutting_down", bodyShutdown)
}

func (r *Router) unavailable(ctx *fasthttp.RequestCtx, src *source, reason string) {
	ctx.Response.Header.Set("Retry-After", retryAfterSeconds)
	r.reject(ctx, src, fasthttp.StatusServiceUnavailable, reason, bodyUnavailable)
}

func (r *Router) invalid(ctx *fasthttp.RequestCtx, src *source, detail string) {
	r.metrics.EventsRejected.WithLabelValues(src.name, "invalid_payload").Inc()
	r.journalRejected(src, fasthttp.StatusBadRequest, "invalid_payload: "+detail)
	ctx.SetStatusCode(fasthttp.StatusBadRequest)
	ctx.SetContentType("application/json")
	b := append(ctx.Response.Body()[:0], `{"error":"Invalid payload","detail":`...)
	b = strconv.AppendQuote(b, detail)
	b = append(b, '}')
	ctx.SetBody(b)
}

// errorHandler answers the requests fasthttp itself refuses (body over the
// limit, malformed request line or headers, timeouts) with the same JSON
// shape as ours.
func (r *Router) errorHandler(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var netErr *net.OpError
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ctx.SetStatusCode(fasthttp.StatusRequestEntityTooLarge)
		ctx.SetBody(bodyTooLarge)
	case errors.As(err, &small):
		ctx.SetStatusCode(fasthttp.StatusRequestHeaderFieldsTooLarge)
		ctx.SetBody([]byte(`{"error":"Request headers too large"}`))
	case errors.Is(err, fasthttp.ErrTimeout) || errors.As(err, &netErr) && netErr.Timeout():
		ctx.SetStatusCode(fasthttp.StatusRequestTimeout)
		ctx.SetBody([]byte(`{"error":"Request timeout"}`))
	default:
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		ctx.SetBody([]byte(`{"error":"Bad request"}`))
	}
	ctx.SetContentType("application/json")
	ctx.SetConnectionClose()
	if src := r.rt.Load().sources[string(ctx.Path())]; src != nil {
		r.journalRejected(src, ctx.Response.StatusCode(), "request refused: "+err.Error())
	}
}
