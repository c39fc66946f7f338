// Package sinks defines what every destination of hookrouter shares: the Event
// that travels from ingress to delivery, the Sink contract, and the one
// classification of failures (retryable, permanent, retry-after) that the
// dispatcher's retry loop, its circuit breaker and its metrics all agree on.
//
// Each destination lives in its own sub-package (httpsink, slack, file,
// stdout). A sink never imports the router: it delivers one event when asked
// and reports how that went; retry, backoff and the breaker sit outside it.
package sinks

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// Event is one accepted webhook: the original bytes plus what the router knew
// when it accepted them. An Event is shared, read-only, by every sink it is
// routed to; Payload decodes the body once, on first use.
type Event struct {
	// ID identifies the event across retries, restarts and replays; it is sent
	// as X-Hookrouter-Event-Id and as the Standard Webhooks webhook-id.
	ID string
	// Source is the name of the source (config `sources[].name`) it came in on.
	Source string
	// ReceivedAt is when ingress accepted it.
	ReceivedAt time.Time
	// Body is the payload exactly as received. It must not be modified.
	Body []byte
	// DedupKey and DedupExpires are the event's committed dedup key (source
	// and key, as the dedup store holds it) and when it expires. Ingress sets
	// them so that a durable queue can keep the key across a restart; sinks
	// ignore them.
	DedupKey     string
	DedupExpires time.Time

	once    sync.Once
	payload map[string]any
	err     error
}

// Payload returns the body decoded as a JSON object, with integral numbers as
// int and other numbers as float64 (see DecodePayload). The map is shared by
// all callers and must not be modified.
func (e *Event) Payload() (map[string]any, error) {
	e.once.Do(func() { e.payload, e.err = DecodePayload(e.Body) })
	return e.payload, e.err
}

// Sink delivers events to one destination. Send blocks until the event is
// delivered, has failed, or ctx is done; it is safe for concurrent use and
// never retries: the dispatcher owns retry and the breaker. Errors are
// retryable unless wrapped with Permanent; a RetryAfter error asks for a
// minimum delay. Errors never carry secrets (credentials in URLs, keys).
type Sink interface {
	Send(ctx context.Context, ev *Event) error
	// Close releases the sink's resources; Send must not be called after it.
	Close(ctx context.Context) error
}

// BatchSender is implemented by sinks that deliver several events for less
// than one Send each (the file sink: one write(2) for all their lines). The
// dispatcher uses it when its queue can hand out several due deliveries at
// once. SendBatch blocks like Send until every event is delivered or has
// failed, and never retries. It returns nil when every event was delivered,
// else one error per event, in order (nil for those delivered), classified
// as Send's errors are.
type BatchSender interface {
	SendBatch(ctx context.Context, evs []*Event) []error
}

// StatusSender is implemented by sinks whose destination answers each send
// with a status code (HTTP): SendStatus is Send that also returns the code,
// 0 when there was no answer. The dispatcher uses it so that the journal
// shows a successful attempt's status, not only a failed one's.
type StatusSender interface {
	SendStatus(ctx context.Context, ev *Event) (int, error)
}

// Renderer is implemented by sinks that can show what they would send for an
// event without sending it; `hookrouter test` uses it for its dry run.
type Renderer interface {
	Render(ev *Event) ([]byte, error)
}

// Reopener is implemented by sinks that hold files open; the router calls
// Reopen on SIGHUP so that logrotate can move the files away.
type Reopener interface {
	Reopen() error
}

// Provisioner is implemented by sinks that can open their destination before
// they are put in force: a file created, a connection dialled where that is
// cheap. The router calls Provision on a new or changed sink at start and
// before a reload swaps it in, and refuses the config when it fails, so
// that a destination that cannot work is reported with its line instead of
// failing every delivery. An error about one field is a FieldError.
type Provisioner interface {
	Provision(ctx context.Context) error
}

// DecodePayload decodes a JSON object the way rules, templates and body
// expressions see it: objects as map[string]any, arrays as []any, integral
// numbers that fit in an int as int (so `need_human == 1` and `{{ .timestamp }}`
// behave as users expect), other numbers as float64.
func DecodePayload(body []byte) (map[string]any, error) {
	var m map[string]any
	dec := json.NewDecoder(bytesReader(body))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	for k, v := range m {
		m[k] = NormalizeNumbers(v)
	}
	return m, nil
}

// NormalizeNumbers replaces json.Number values inside v, in place where it
// can, following DecodePayload's convention, and returns the result.
func NormalizeNumbers(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := t.Int64(); err == nil && int64(int(i)) == i {
			return int(i)
		}
		f, _ := t.Float64()
		return f
	case map[string]any:
		for k, x := range t {
			t[k] = NormalizeNumbers(x)
		}
	case []any:
		for i, x := range t {
			t[i] = NormalizeNumbers(x)
		}
	}
	return v
}
