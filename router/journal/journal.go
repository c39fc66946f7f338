// Package journal keeps every event's journey — how its request was
// answered, what each rule decided, where it was sent, and every delivery
// attempt — in an embedded SQLite database (modernc.org/sqlite, pure Go) in
// data_dir, and answers queries about it: a filtered list, one journey, and a
// live tail.
//
// The journal is observability, not the delivery guarantee, and it never
// costs an event: Record* calls only put a record on a bounded channel and
// return, and a single background writer inserts what it finds there in
// batches, one transaction each, in WAL mode without fsync on commit. When the
// writer falls behind and the channel is full, records are dropped and counted
// (Stats.Dropped, hookrouter_journal_dropped_total); the request or delivery
// that produced them goes on as if the journal were not there.
//
// The tables (see schema in store.go) are meant to be read with the sqlite3
// shell too; the README documents them.
package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/hookrouter/hookrouter/router/rules/explain"
)

// Request verdicts: how ingress answered a request.
const (
	Accepted  = "accepted"
	Duplicate = "duplicate"
	Rejected  = "rejected"
)

// Delivery states: where a delivery to one sink stands.
const (
	Queued     = "queued"
	Retrying   = "retrying"
	Delivered  = "delivered"
	DeadLetter = "dead_letter"
	Replayed   = "replayed"
)

// Rule verdicts; a rule that failed at run time has "error: " and the error.
const (
	Matched = "matched"
	No      = "no"
	Shadow  = "shadow"
)

// Attempt outcomes, as in hookrouter_delivery_attempts_total.
const (
	OK        = "ok"
	Retryable = "retryable"
	Permanent = "permanent"
)

// ErrNotFound is returned by Get for an id the journal does not hold.
var ErrNotFound = errors.New("journal: no such event")

// Event is one request's journey, as GET /-/events/{id} returns it. List
// returns the same shape with Deliveries' attempts left out and no payload.
type Event struct {
	// Seq orders records in the journal (events and delivery steps share
	// one sequence); it is the SSE id and the base of cursors.
	Seq        int64     `json:"seq"`
	ID         string    `json:"id"`
	ReceivedAt time.Time `json:"received_at"`
	Source     string    `json:"source"`
	// Event is the payload's top-level "event" field, "" if none.
	Event    string `json:"event"`
	DedupKey string `json:"dedup_key"`
	// Verdict is accepted, duplicate or rejected; Status the HTTP status
	// answered; Reason, for a rejection, why (unauthorized, invalid_payload:
	// detail, queue_full, …).
	Verdict string `json:"verdict"`
	Status  int    `json:"status"`
	Reason  string `json:"reason,omitempty"`
	// DuplicateOf is, for a duplicate, the id of the event it duplicates
	// when the journal knows it.
	DuplicateOf string `json:"duplicate_of,omitempty"`
	// Rules holds each rule's verdict, in config order (accepted events only).
	Rules []RuleVerdict `json:"rules,omitempty"`
	// Sinks are the sinks the rules chose, each once.
	Sinks      []string   `json:"sinks"`
	Deliveries []Delivery `json:"deliveries"`
	// Payload is the body as received, when journal.bodies is on; never for
	// a rejected request.
	Payload json.RawMessage `json:"payload,omitempty"`

	// ruleNames and hits are the compact form ingress gives (SetRules); the
	// writer expands them into Rules, off the request path.
	ruleNames []string
	hits      []hit
	// explain explains a failed rule (ExplainErrors); nil: not explained.
	explain func(rule int) []explain.Part
}

// RuleVerdict is one rule's decision about an event: matched, no, shadow
// (a shadow rule that matched) or "error: …".
type RuleVerdict struct {
	Rule    string `json:"rule"`
	Verdict string `json:"verdict"`
	// Explain is, for a rule that failed, the value of each part of its
	// `when` for the event (router/rules/explain): which part failed and
	// what the others were, as `hookrouter test -explain` shows them. It
	// shows payload values, so it is kept only when journal.bodies is on.
	Explain []explain.Part `json:"explain,omitempty"`
}

// Delivery is an event's delivery to one sink: its latest state and its
// history.
type Delivery struct {
	Sink      string    `json:"sink"`
	State     string    `json:"state"`
	UpdatedAt time.Time `json:"updated_at"`
	// Attempts are the sends, oldest first.
	Attempts []Attempt `json:"attempts"`
	// Steps are every change of state (attempts included), oldest first.
	Steps []Step `json:"steps,omitempty"`
}

// Attempt is one send of a delivery.
type Attempt struct {
	At         time.Time `json:"at"`
	DurationMS float64   `json:"duration_ms"`
	// Outcome is ok, retryable or permanent.
	Outcome string `json:"outcome"`
	// Status is the destination's answer: the HTTP status for HTTP sinks,
	// 0 when there was none (a connection error, a sink without codes).
	Status int `json:"status,omitempty"`
	// Error is the failure, credentials scrubbed.
	Error string `json:"error,omitempty"`
}

// Step is one change to a delivery: an attempt (Outcome set) and the state
// it left the delivery in, or a state change without a send (replayed).
type Step struct {
	Seq     int64     `json:"seq"`
	EventID string    `json:"event_id"`
	Sink    string    `json:"sink"`
	State   string    `json:"state"`
	At      time.Time `json:"at"`
	// Attempt fields, empty for a change without a send.
	DurationMS float64 `json:"duration_ms,omitempty"`
	Outcome    string  `json:"outcome,omitempty"`
	Status     int     `json:"status,omitempty"`
	Error      string  `json:"error,omitempty"`
	// Note says why a change without a send happened ("replay via api").
	Note string `json:"note,omitempty"`
}

// Record is one entry of the live tail (Subscribe, GET /-/events/stream):
// a new event (Kind "event", Event set, without payload) or a delivery step
// (Kind "step", Step set). Source and EventType name the event either way,
// for filtering.
type Record struct {
	Seq       int64  `json:"seq"`
	Kind      string `json:"kind"`
	EventID   string `json:"event_id"`
	Source    string `json:"source"`
	EventType string `json:"event_type"`
	Event     *Event `json:"event,omitempty"`
	Step      *Step  `json:"step,omitempty"`
}

// Record kinds.
const (
	KindEvent = "event"
	KindStep  = "step"
)

type hit struct {
	rule    int
	verdict string
	failed  bool
}

// SetRules gives ev its rule verdicts in compact form: names are every rule
// in force, in order (a slice shared between events and not modified), and
// matched, shadow and errs the indexes that matched, matched as shadow, or
// failed; every other rule's verdict is "no". The writer expands them.
func (ev *Event) SetRules(names []string, matched, shadow []int, errs map[int]string) {
	ev.ruleNames = names
	ev.hits = ev.hits[:0]
	for _, i := range matched {
		ev.hits = append(ev.hits, hit{rule: i, verdict: Matched})
	}
	for _, i := range shadow {
		ev.hits = append(ev.hits, hit{rule: i, verdict: Shadow})
	}
	for i, e := range errs {
		ev.hits = append(ev.hits, hit{rule: i, verdict: "error: " + e, failed: true})
	}
}

// ExplainErrors gives ev the way to explain the rules that failed for it:
// fn returns the parts of rule i's `when` with their values. The writer
// calls it, off the request path, once per failed rule; fn must not use
// anything of the request that may change once it is answered.
func (ev *Event) ExplainErrors(fn func(rule int) []explain.Part) { ev.explain = fn }

// expandRules turns the compact verdicts into Rules.
func (ev *Event) expandRules() {
	if ev.ruleNames == nil {
		return
	}
	ev.Rules = make([]RuleVerdict, len(ev.ruleNames))
	for i, n := range ev.ruleNames {
		ev.Rules[i] = RuleVerdict{Rule: n, Verdict: No}
	}
	for _, h := range ev.hits {
		if h.rule >= 0 && h.rule < len(ev.Rules) {
			ev.Rules[h.rule].Verdict = h.verdict
			if h.failed && ev.explain != nil {
				ev.Rules[h.rule].Explain = ev.explain(h.rule)
			}
		}
	}
	ev.ruleNames, ev.hits, ev.explain = nil, nil, nil
}

// Config is the journal's part of the config file (`journal:`).
type Config struct {
	// Enabled turns the journal on (the default).
	Enabled bool
	// Retention is how long records are kept. Default 168h.
	Retention time.Duration
	// MaxBytes bounds the database: beyond it the oldest events go first.
	// Default 1GiB.
	MaxBytes int64
	// Bodies keeps payloads (the default); false keeps journeys without them.
	Bodies bool
}

// Defaults of Config, as the spec gives them.
const (
	DefaultRetention = 168 * time.Hour
	DefaultMaxBytes  = 1 << 30
)

// DefaultConfig is the journal of a config file without `journal:`.
func DefaultConfig() Config {
	return Config{Enabled: true, Retention: DefaultRetention, MaxBytes: DefaultMaxBytes, Bodies: true}
}

// minMaxBytes is the smallest max_bytes accepted: below it the schema and
// one batch would not fit.
const minMaxBytes = 1 << 20

// Validate reports what is wrong with c, one message per field.
func (c Config) Validate() []FieldError {
	var out []FieldError
	if c.Retention <= 0 {
		out = append(out, FieldError{"retention", "must be a positive duration, such as 168h"})
	}
	if c.MaxBytes < minMaxBytes {
		out = append(out, FieldError{"max_bytes", "must be at least 1MiB"})
	}
	return out
}

// FieldError is a problem with one field of Config.
type FieldError struct {
	Field string
	Msg   string
}

func (e FieldError) Error() string { return fmt.Sprintf("journal.%s: %s", e.Field, e.Msg) }

// scrubbers hide credentials that an error text may carry despite the sink
// contract (errors never carry secrets): a URL's user:password, its query,
// and Authorization-like values.
var scrubbers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@`), "${1}REDACTED@"},
	{regexp.MustCompile(`(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+`), "${1} REDACTED"},
	{regexp.MustCompile(`(?i)((?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)\s*[=:]\s*)(?:[^\s&,;"':]|:[^\s&,;"'])+`), "${1}REDACTED"},
	// A query ends at a space or quote, or at ": " (an error text's
	// separator, as in "POST https://h/p?k=v: http status 503").
	{regexp.MustCompile(`(https?://[^\s?"']+)\?(?:[^\s"':]|:[^\s"'])+`), "${1}?REDACTED"},
}

// Scrub returns s with credentials hidden; the journal applies it to every
// attempt error before storing it.
func Scrub(s string) string {
	if s == "" {
		return s
	}
	for _, sc := range scrubbers {
		s = sc.re.ReplaceAllString(s, sc.with)
	}
	return s
}
