package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/hookrouter/hookrouter/router/admin"
	"github.com/hookrouter/hookrouter/router/dispatch"
	"github.com/hookrouter/hookrouter/router/journal"
	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

// Errors of ReplayEvent, which the admin API maps to statuses.
var (
	ErrJournalOff  = errors.New("the journal is off (journal.enabled: false)")
	ErrNoPayload   = errors.New("the journal did not keep this event's payload (journal.bodies: false, or not accepted)")
	ErrNotItsSink  = errors.New("the event was not routed to that sink")
	ErrNothingToDo = errors.New("nothing to replay")
)

// EventReplay is the answer of POST /-/events/{id}/replay.
type EventReplay struct {
	ID       string   `json:"id"`
	Requeued []string `json:"requeued"`
	// Skipped names the sinks left alone, with why.
	Skipped map[string]string `json:"skipped,omitempty"`
}

// ReplayEvent re-queues the journaled event id (same id, same payload) to
// the sinks its rules chose, or to sink alone, and records the replay in its
// journey. A delivery still under way (queued, retrying, replayed) is
// skipped unless force, so that a double click does not send it twice. via
// ("api", "console") is what the journey says the replay came from.
func (r *Router) ReplayEvent(ctx context.Context, id, sink string, force bool, via string) (EventReplay, error) {
	res := EventReplay{ID: id, Requeued: []string{}}
	if r.journal == nil {
		return res, ErrJournalOff
	}
	r.replayMu.Lock()
	defer r.replayMu.Unlock()
	r.flushForReplay(ctx)
	ev, err := r.journal.Get(ctx, id)
	if err != nil {
		return res, err
	}
	if ev.Verdict != journal.Accepted || ev.Payload == nil {
		return res, ErrNoPayload
	}
	targets := ev.Sinks
	if sink != "" {
		if !slices.Contains(ev.Sinks, sink) {
			return res, fmt.Errorf("%w: %q (its sinks: %v)", ErrNotItsSink, sink, ev.Sinks)
		}
		targets = []string{sink}
	}
	rt := r.rt.Load()
	var to []string
	for _, s := range targets {
		var d journal.Delivery
		for _, x := range ev.Deliveries {
			if x.Sink == s {
				d = x
			}
		}
		rep, replayed := d.DeadLetterReplayed()
		switch {
		case rt.Sinks[s] == nil:
			res.skip(s, "not in the config in force")
		case !force && (d.State == journal.Queued || d.State == journal.Retrying || d.State == journal.Replayed):
			res.skip(s, "still "+d.State+" (force=true replays it anyway)")
		case !force && replayed:
			res.skip(s, "its dead letter was already replayed at "+rep.At.Format(time.RFC3339)+", now "+d.State+" (force=true replays it again)")
		default:
			to = append(to, s)
		}
	}
	if len(to) == 0 {
		return res, ErrNothingToDo
	}
	// Recorded before the Put: a delivery may finish before Put returns,
	// and its journey must read replayed, then delivered.
	for _, s := range to {
		r.journalReplayed(ev.ID, s, "replay via "+via)
	}
	body := []byte(ev.Payload)
	if err := r.queue.Put(ctx, &sinks.Event{ID: ev.ID, Source: ev.Source, ReceivedAt: ev.ReceivedAt, Body: body}, to); err != nil {
		for _, s := range to {
			r.journalReplayFailed(ev.ID, s, ev.Deliveries, err)
		}
		return res, fmt.Errorf("queue: %w", err)
	}
	res.Requeued = to
	return res, nil
}

func (res *EventReplay) skip(sink, why string) {
	if res.Skipped == nil {
		res.Skipped = map[string]string{}
	}
	res.Skipped[sink] = why
}

// journalReplayed records that a delivery was re-queued.
func (r *Router) journalReplayed(id, sink, note string) {
	if r.journal != nil {
		r.journal.RecordStep(journal.Step{EventID: id, Sink: sink, State: journal.Replayed, At: time.Now(), Note: note})
	}
}

// journalReplayFailed records that the replay journalReplayed announced did
// not happen: the delivery is back in the state it had.
func (r *Router) journalReplayFailed(id, sink string, was []journal.Delivery, err error) {
	if r.journal == nil {
		return
	}
	state := journal.DeadLetter
	for _, d := range was {
		if d.Sink == sink {
			state = d.State
		}
	}
	r.journal.RecordStep(journal.Step{EventID: id, Sink: sink, State: state, At: time.Now(), Note: "replay failed: " + err.Error()})
}

// flushForReplay waits (a little) for the journal to write what was
// recorded before a replay, such as the replayed step of the one before it,
// so that the replay reads the journey as it is. The admin path, never
// ingress.
func (r *Router) flushForReplay(ctx context.Context) {
	if r.journal == nil {
		return
	}
	c, cancel := context.WithTimeout(ctx, replayFlushWait)
	defer cancel()
	if err := r.journal.Flush(c); err != nil {
		r.log.Warn("replay: the journal is behind; it may not show a replay just made", "error", err)
	}
}

// replayFlushWait bounds flushForReplay.
const replayFlushWait = 5 * time.Second

// deadLetterReplayed reports, from the journal, whether the dead letter rec
// was replayed since it failed (through the API, or from another copy of the
// file), and when. A record the journal knows nothing of is not refused.
func (r *Router) deadLetterReplayed(ctx context.Context, rec *dispatch.Record) (time.Time, bool) {
	if r.journal == nil {
		return time.Time{}, false
	}
	at, done, err := r.journal.ReplayedSince(ctx, rec.Event().ID, rec.Sink, rec.FailedAt)
	if err != nil {
		r.log.Warn("replay: journal lookup failed; the record is replayed", "event_id", rec.Event().ID, "sink", rec.Sink, "error", err)
		return time.Time{}, false
	}
	return at, done
}

// journalRoutes are the journal's admin endpoints. With the journal off they
// answer 404 saying so.
func (r *Router) journalRoutes() []admin.Route {
	op := admin.Operator
	h := func(get func(*journal.Journal) http.Handler) http.Handler {
		if r.journal == nil {
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				answerJSON(w, http.StatusNotFound, map[string]string{"error": "Not found", "detail": ErrJournalOff.Error()})
			})
		}
		return get(r.journal)
	}
	return []admin.Route{
		{Pattern: "GET /-/events", Access: op, Handler: h((*journal.Journal).ListHandler)},
		{Pattern: "GET /-/events/stream", Access: op, Handler: h((*journal.Journal).StreamHandler)},
		{Pattern: "GET /-/events/{id}", Access: op, Handler: h((*journal.Journal).GetHandler)},
		{Pattern: "POST /-/events/{id}/replay", Access: op, Handler: http.HandlerFunc(r.serveEventReplay)},
		{Pattern: "GET /-/dead-letters", Access: op, Handler: h((*journal.Journal).DeadLettersHandler)},
	}
}

// serveEventReplay is POST /-/events/{id}/replay[?sink=NAME][&force=true].
func (r *Router) serveEventReplay(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	force := q.Get("force") == "true" || q.Get("force") == "1"
	res, err := r.ReplayEvent(req.Context(), req.PathValue("id"), q.Get("sink"), force, "api")
	status := http.StatusOK
	switch {
	case err == nil:
		answerJSON(w, status, res)
		return
	case errors.Is(err, ErrJournalOff), errors.Is(err, journal.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrNotItsSink):
		status = http.StatusBadRequest
	case errors.Is(err, ErrNoPayload), errors.Is(err, ErrNothingToDo):
		status = http.StatusConflict
	case errors.Is(err, queue.ErrFull), errors.Is(err, queue.ErrClosed):
		w.Header().Set("Retry-After", retryAfterSeconds)
		status = http.StatusServiceUnavailable
	default:
		status = http.StatusInternalServerError
	}
	answerJSON(w, status, map[string]any{"error": http.StatusText(status), "detail": err.Error(), "skipped": res.Skipped})
}

func answerJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	admin.JSON(w, status, append(b, '\n'))
}
