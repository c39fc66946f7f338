package router

import "time"

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
