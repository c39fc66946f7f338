package router

import (
	"context"
	"time"
)

// refusal is why ingress last answered 503 for a reason that says the router
// cannot keep events (queue full, dedup store or queue backend failing), and
// when. An accepted event clears it.
type refusal struct {
	reason string
	at     time.Time
}

// noteRefusal records that ingress refused an event for reason.
func (r *Router) noteRefusal(reason string) {
	r.refused.Store(&refusal{reason: reason, at: time.Now()})
}

// noteAccepted clears the last refusal: ingress accepts events again. The
// load keeps the hot path free of writes to a shared cache line.
func (r *Router) noteAccepted() {
	if r.refused.Load() != nil {
		r.refused.Store(nil)
	}
}

// refusalMemory is how long /health reports a refusal that no accepted event
// has cleared: a sender that stopped retrying must not leave the router
// "degraded" forever, and one that retries refreshes it.
const refusalMemory = 30 * time.Second

// probeTimeout bounds the checks /health makes of the shared services.
const probeTimeout = 300 * time.Millisecond

// refusalReasons say, for /health, what each refusal means.
var refusalReasons = map[string]string{
	"queue_full":    "queue full: events are answered 503",
	"queue_error":   "queue backend failing: events are answered 503",
	"dedup_timeout": "dedup store slower than dedup.timeout: events are answered 503",
	"dedup_error":   "dedup store unreachable: events are answered 503",
}

// pinger is implemented by the stores and queues that depend on a service
// (Redis, NATS): Ping reports whether it answers.
type pinger interface {
	Ping(ctx context.Context) error
}

// degraded says why ingress refuses events now, "" if it does not: a
// dependency that does not answer, or a recent refusal that no accepted
// event has cleared. Both /health documents (ingress and admin) show it
// through Health.
func (r *Router) degraded() string {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	if p, ok := r.dedup.(pinger); ok {
		if err := p.Ping(ctx); err != nil {
			return "dedup store unreachable: events are answered 503"
		}
	}
	if p, ok := r.queue.(pinger); ok {
		if err := p.Ping(ctx); err != nil {
			return "queue backend unreachable: events are answered 503"
		}
	}
	if f := r.refused.Load(); f != nil && time.Since(f.at) < refusalMemory {
		return refusalReasons[f.reason]
	}
	return ""
}
