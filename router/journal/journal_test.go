package journal

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router/rules/explain"
)

func open(t *testing.T, dir string, cfg Config, opts Options) *Journal {
	t.Helper()
	j, err := Open(dir, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close(context.Background()) })
	return j
}

func flush(t *testing.T, j *Journal) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := j.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func accepted(id string, at time.Time, event string, sinks ...string) *Event {
	ev := &Event{
		ID: id, ReceivedAt: at, Source: "platform", Event: event, DedupKey: event + "_" + id,
		Verdict: Accepted, Status: 200, Sinks: sinks,
		Payload: json.RawMessage(fmt.Sprintf(`{"event":%q,"message":{"id":%q,"text":"hello %s"}}`, event, id, id)),
	}
	ev.SetRules([]string{"archive", "wa", "vip"}, []int{0}, []int{2}, map[int]string{1: "cannot fetch engine"})
	return ev
}

// TestDuplicateOriginalFromJournal: a duplicate recorded without the id of
// its original (ingress no longer remembered it) has it filled in when its
// journey is read: the latest accepted event of its source and dedup key
// before it, not one of another source, not a later one.
func TestDuplicateOriginalFromJournal(t *testing.T) {
	j := open(t, t.TempDir(), DefaultConfig(), Options{})
	dup := func(id string, at time.Time, source, key string) *Event {
		return &Event{ID: id, ReceivedAt: at, Source: source, Verdict: Duplicate, Status: 200, DedupKey: key}
	}
	other := accepted("o1", t0.Add(time.Second), "x")
	other.Source, other.DedupKey = "other", "k"
	first, second := accepted("a1", t0, "x"), accepted("a2", t0.Add(2*time.Second), "x")
	first.DedupKey, second.DedupKey = "k", "k"
	later := accepted("a3", t0.Add(5*time.Second), "x")
	later.DedupKey = "k"
	for _, ev := range []*Event{first, other, second, dup("d1", t0.Add(3*time.Second), "platform", "k"),
		dup("d2", t0.Add(4*time.Second), "platform", "none"), later, dup("d3", t0.Add(6*time.Second), "platform", "k")} {
		j.RecordEvent(ev)
	}
	known := dup("d4", t0.Add(7*time.Second), "platform", "k")
	known.DuplicateOf = "a1" // what ingress named stays as it is
	j.RecordEvent(known)
	flush(t, j)
	for id, want := range map[string]string{"d1": "a2", "d2": "", "d3": "a3", "d4": "a1"} {
		ev, err := j.Get(t.Context(), id)
		if err != nil {
			t.Fatalf("Get(%s): %v", id, err)
		}
		if ev.DuplicateOf != want {
			t.Errorf("Get(%s).DuplicateOf = %q, want %q", id, ev.DuplicateOf, want)
		}
	}
}

func TestJourneyAndQueries(t *testing.T) {
	j := open(t, t.TempDir(), DefaultConfig(), Options{})
	j.RecordEvent(accepted("e1", t0, "channel.message_in", "crm", "archive"))
	j.RecordStep(Step{EventID: "e1", Sink: "crm", State: Retrying, At: t0.Add(time.Second), DurationMS: 12.5, Outcome: Retryable, Status: 503,
		Error: `http status 503: upstream down (POST https://user:hunter2@crm.example/hook?key=abc)`})
	j.RecordStep(Step{EventID: "e1", Sink: "crm", State: Delivered, At: t0.Add(2 * time.Second), DurationMS: 3, Outcome: OK, Status: 200})
	j.RecordStep(Step{EventID: "e1", Sink: "archive", State: Delivered, At: t0.Add(time.Second), DurationMS: 0.2, Outcome: OK})
	j.RecordEvent(accepted("e2", t0.Add(time.Minute), "device.connected"))
	j.RecordEvent(&Event{ID: "e3", ReceivedAt: t0.Add(2 * time.Minute), Source: "platform", Verdict: Duplicate, Status: 200,
		DedupKey: "channel.message_in_e1", DuplicateOf: "e1", Payload: json.RawMessage(`{"event":"channel.message_in"}`)})
	j.RecordEvent(&Event{ID: "e4", ReceivedAt: t0.Add(3 * time.Minute), Source: "other", Verdict: Rejected, Status: 401,
		Reason: "unauthorized", Payload: json.RawMessage(`{"secret":"body"}`)})
	flush(t, j)

	ev, err := j.Get(t.Context(), "e1")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Verdict != Accepted || ev.Event != "channel.message_in" || ev.DedupKey != "channel.message_in_e1" || !ev.ReceivedAt.Equal(t0) {
		t.Errorf("journey head: %+v", ev)
	}
	wantRules := []RuleVerdict{{Rule: "archive", Verdict: Matched}, {Rule: "wa", Verdict: "error: cannot fetch engine"}, {Rule: "vip", Verdict: Shadow}}
	if fmt.Sprint(ev.Rules) != fmt.Sprint(wantRules) {
		t.Errorf("rules = %v, want %v", ev.Rules, wantRules)
	}
	if len(ev.Deliveries) != 2 || ev.Deliveries[0].Sink != "crm" || ev.Deliveries[1].Sink != "archive" {
		t.Fatalf("deliveries = %+v", ev.Deliveries)
	}
	crm := ev.Deliveries[0]
	if crm.State != Delivered || len(crm.Attempts) != 2 || crm.Attempts[0].Status != 503 || crm.Attempts[0].Outcome != Retryable ||
		crm.Attempts[1].Outcome != OK || crm.Attempts[0].DurationMS != 12.5 {
		t.Errorf("crm delivery = %+v", crm)
	}
	if e := crm.Attempts[0].Error; strings.Contains(e, "hunter2") || strings.Contains(e, "key=abc") || !strings.Contains(e, "upstream down") {
		t.Errorf("attempt error not scrubbed or lost: %q", e)
	}
	if string(ev.Payload) != `{"event":"channel.message_in","message":{"id":"e1","text":"hello e1"}}` {
		t.Errorf("payload = %s", ev.Payload)
	}
	if rej, err := j.Get(t.Context(), "e4"); err != nil || rej.Payload != nil || rej.Status != 401 || rej.Reason != "unauthorized" {
		t.Errorf("rejected = %+v, %v", rej, err)
	}
	if _, err := j.Get(t.Context(), "nope"); err != ErrNotFound {
		t.Errorf("Get(nope) = %v, want ErrNotFound", err)
	}

	// The whole JSON shape, as the API and the console see it.
	b, _ := json.Marshal(ev)
	for _, k := range []string{`"received_at":`, `"source":"platform"`, `"verdict":"accepted"`, `"status":200`, `"dedup_key":`,
		`"rules":[{"rule":"archive","verdict":"matched"}`, `"sinks":["crm","archive"]`, `"state":"delivered"`,
		`"attempts":[{"at":`, `"duration_ms":12.5`, `"outcome":"retryable"`, `"payload":{`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("JSON lacks %s: %s", k, b)
		}
	}

	ids := func(f Filter) string {
		t.Helper()
		p, err := j.List(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, e := range p.Events {
			s = append(s, e.ID)
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		name string
		f    Filter
		want string
	}{
		{"all newest first", Filter{}, "e4,e3,e2,e1"},
		{"source", Filter{Source: "other"}, "e4"},
		{"event", Filter{Event: "device.connected"}, "e2"},
		{"sink", Filter{Sink: "crm"}, "e1"},
		{"state delivered", Filter{State: Delivered}, "e1"},
		{"sink and state", Filter{Sink: "archive", State: Retrying}, ""},
		{"verdict", Filter{State: Duplicate}, "e3"},
		{"rejected", Filter{State: Rejected}, "e4"},
		{"unrouted", Filter{State: "unrouted"}, "e2"},
		{"since", Filter{Since: t0.Add(time.Minute)}, "e4,e3,e2"},
		{"until", Filter{Until: t0.Add(time.Minute)}, "e1"},
		{"q id", Filter{Q: "e2"}, "e2"},
		{"q dedup key", Filter{Q: "message_in_e1"}, "e3,e1"},
		{"q payload text", Filter{Q: "hello e2"}, "e2"},
		{"q nothing", Filter{Q: "zzz"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ids(tc.f); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}

	// Cursor pagination walks everything once.
	var seen []string
	f := Filter{Limit: 3}
	for range 10 {
		p, err := j.List(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Events {
			seen = append(seen, e.ID)
		}
		if p.NextCursor == "" {
			break
		}
		f.Cursor = p.NextCursor
	}
	if got := strings.Join(seen, ","); got != "e4,e3,e2,e1" {
		t.Errorf("paged = %s", got)
	}
	// List gives delivery states without attempts.
	p, _ := j.List(t.Context(), Filter{Sink: "crm"})
	if len(p.Events) != 1 || len(p.Events[0].Deliveries) != 2 || p.Events[0].Deliveries[0].State != Delivered || len(p.Events[0].Deliveries[0].Attempts) != 0 {
		t.Errorf("list deliveries = %+v", p.Events)
	}
}

func TestParseFilter(t *testing.T) {
	now := t0
	f, err := ParseFilter(url.Values{"source": {"s"}, "since": {"1h"}, "until": {"2026-12-01T09:30:00Z"}, "limit": {"7"}, "state": {"dead_letter"}}, now)
	if err != nil || f.Source != "s" || !f.Since.Equal(now.Add(-time.Hour)) || f.Until.Minute() != 30 || f.Limit != 7 || f.State != DeadLetter {
		t.Errorf("ParseFilter = %+v, %v", f, err)
	}
	back, err := ParseFilter(f.Values(), now)
	if err != nil || back.Source != f.Source || !back.Since.Equal(f.Since) || back.Limit != 7 {
		t.Errorf("round trip = %+v, %v", back, err)
	}
	for _, bad := range []url.Values{{"state": {"lost"}}, {"since": {"yesterday"}}, {"limit": {"0"}}, {"cursor": {"abc"}}} {
		if _, err := ParseFilter(bad, now); err == nil {
			t.Errorf("ParseFilter(%v) accepted", bad)
		}
	}
}

func TestSubscribeLiveAndResume(t *testing.T) {
	j := open(t, t.TempDir(), DefaultConfig(), Options{})
	j.RecordEvent(accepted("old", t0, "x", "crm"))
	flush(t, j)

	ctx, cancel := context.WithCancel(t.Context())
	ch := j.Subscribe(ctx, Filter{Sink: "crm"}, -1)
	j.RecordEvent(accepted("a", t0, "x", "crm"))
	j.RecordEvent(accepted("b", t0, "x", "other")) // filtered out
	j.RecordStep(Step{EventID: "a", Sink: "crm", State: Delivered, At: t0, Outcome: OK, Status: 200})
	got := recv(t, ch, 2)
	if got[0].Kind != KindEvent || got[0].EventID != "a" || got[1].Kind != KindStep || got[1].Step.State != Delivered {
		t.Fatalf("live records = %+v", got)
	}
	last := got[1].Seq
	cancel()
	for range ch {
	}

	// Records written while no one listened arrive on resubscribe after the
	// last seq seen (what SSE's Last-Event-ID gives).
	j.RecordEvent(accepted("c", t0, "x", "crm"))
	j.RecordStep(Step{EventID: "c", Sink: "crm", State: DeadLetter, At: t0, Outcome: Permanent, Status: 400, Error: "http status 400"})
	flush(t, j)
	ch = j.Subscribe(t.Context(), Filter{Sink: "crm"}, last)
	got = recv(t, ch, 2)
	if got[0].EventID != "c" || got[1].Step == nil || got[1].Step.State != DeadLetter || got[0].Source != "platform" || got[1].EventType != "x" {
		t.Fatalf("resumed records = %+v", got)
	}
	select {
	case r := <-ch:
		t.Fatalf("unexpected record %+v", r)
	default:
	}
}

// TestSubscribeStepBeforeEvent: the ingress journals an event after
// queueing it, so a fast delivery's step can be written first. The event's
// record then carries that delivery's state, for a reader (the console's
// live mode) that drops steps of events it has not shown yet.
func TestSubscribeStepBeforeEvent(t *testing.T) {
	j := open(t, t.TempDir(), DefaultConfig(), Options{})
	ch := j.Subscribe(t.Context(), Filter{}, -1)
	j.RecordStep(Step{EventID: "fast", Sink: "crm", State: Delivered, At: t0, Outcome: OK, Status: 200})
	flush(t, j)
	j.RecordEvent(accepted("fast", t0, "x", "crm", "archive"))
	got := recv(t, ch, 2)
	if got[0].Kind != KindStep || got[1].Kind != KindEvent {
		t.Fatalf("records = %+v", got)
	}
	ds := got[1].Event.Deliveries
	if len(ds) != 2 || ds[0].Sink != "crm" || ds[0].State != Delivered || ds[1].Sink != "archive" || ds[1].State != Queued {
		t.Fatalf("event record's deliveries = %+v", ds)
	}
}

// TestEventsFirstInBatch: of records that reach the writer together, an
// event is numbered before the steps recorded ahead of it, and each kind
// keeps its order, so a tail shows the event, then its deliveries.
func TestEventsFirstInBatch(t *testing.T) {
	st := func(id, state string) item { return item{st: &Step{EventID: id, State: state}} }
	ev := func(id string) item { return item{ev: &Event{ID: id}} }
	batch := []item{st("a", Delivered), ev("a"), st("b", Retrying), st("b", Delivered), ev("b"), st("a", "x")}
	eventsFirst(batch)
	var got []string
	for _, it := range batch {
		if it.ev != nil {
			got = append(got, "event "+it.ev.ID)
		} else {
			got = append(got, it.st.EventID+" "+it.st.State)
		}
	}
	if want := "event a,event b,a delivered,b retrying,b delivered,a x"; strings.Join(got, ",") != want {
		t.Errorf("order = %s, want %s", strings.Join(got, ","), want)
	}

	// Through the writer: a slow writer gathers both into one batch.
	j := open(t, t.TempDir(), DefaultConfig(), Options{WriteDelay: 200 * time.Millisecond})
	ch := j.Subscribe(t.Context(), Filter{}, -1)
	j.RecordStep(Step{EventID: "fast", Sink: "crm", State: Delivered, At: t0, Outcome: OK, Status: 200})
	j.RecordEvent(accepted("fast", t0, "x", "crm"))
	if got := recv(t, ch, 2); got[0].Kind != KindEvent || got[1].Kind != KindStep {
		t.Errorf("records = %+v, want the event first", got)
	}
}

func recv(t *testing.T, ch <-chan Record, n int) []Record {
	t.Helper()
	var out []Record
	timeout := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case r, ok := <-ch:
			if !ok {
				t.Fatalf("tail closed after %d records", len(out))
			}
			out = append(out, r)
		case <-timeout:
			t.Fatalf("got %d records of %d", len(out), n)
		}
	}
	return out
}

func TestRetentionByAge(t *testing.T) {
	now := t0.Add(10 * 24 * time.Hour)
	cfg := DefaultConfig()
	j := open(t, t.TempDir(), cfg, Options{Now: func() time.Time { return now }})
	j.RecordEvent(accepted("old", now.Add(-8*24*time.Hour), "x", "crm"))
	j.RecordStep(Step{EventID: "old", Sink: "crm", State: Delivered, At: now.Add(-8 * 24 * time.Hour), Outcome: OK})
	j.RecordEvent(accepted("new", now.Add(-time.Hour), "x", "crm"))
	flush(t, j)
	j.retain()
	if _, err := j.Get(t.Context(), "old"); err != ErrNotFound {
		t.Errorf("old event kept: %v", err)
	}
	if _, err := j.Get(t.Context(), "new"); err != nil {
		t.Errorf("new event lost: %v", err)
	}
	var n int
	j.db.QueryRow(`SELECT count(*) FROM steps WHERE event_id = 'old'`).Scan(&n)
	var d int
	j.db.QueryRow(`SELECT count(*) FROM deliveries WHERE event_id = 'old'`).Scan(&d)
	if n != 0 || d != 0 {
		t.Errorf("old steps/deliveries kept: %d %d", n, d)
	}
}

func TestRetentionByMaxBytes(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.MaxBytes = 1 << 20
	j := open(t, dir, cfg, Options{})
	pad := strings.Repeat("x", 4000)
	for i := range 1000 { // about 4 MB of payloads
		ev := accepted(fmt.Sprintf("e%04d", i), t0.Add(time.Duration(i)*time.Second), "x", "crm")
		ev.Payload = json.RawMessage(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad))
		j.RecordEvent(ev)
	}
	flush(t, j)
	j.retain()
	st := j.Stats()
	if st.Bytes > cfg.MaxBytes {
		t.Errorf("in use %d bytes > max_bytes %d", st.Bytes, cfg.MaxBytes)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil || fi.Size() > cfg.MaxBytes*11/10 {
		t.Errorf("file is %d bytes (max_bytes %d): freed pages not given back (%v)", fi.Size(), cfg.MaxBytes, err)
	}
	// The newest survive, the oldest went first.
	if _, err := j.Get(t.Context(), "e0999"); err != nil {
		t.Errorf("newest event lost: %v", err)
	}
	if _, err := j.Get(t.Context(), "e0000"); err != ErrNotFound {
		t.Errorf("oldest event kept: %v", err)
	}
}

func TestSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, DefaultConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	j.RecordEvent(accepted("e1", t0, "x", "crm"))
	j.RecordStep(Step{EventID: "e1", Sink: "crm", State: Delivered, At: t0, Outcome: OK, Status: 204})
	// Close writes what is pending.
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("journal file mode: %v %v", fi.Mode(), err)
	}
	j = open(t, dir, DefaultConfig(), Options{})
	ev, err := j.Get(t.Context(), "e1")
	if err != nil || len(ev.Deliveries) != 1 || ev.Deliveries[0].Attempts[0].Status != 204 {
		t.Fatalf("after restart: %+v, %v", ev, err)
	}
	// Numbering goes on after the last record, so cursors stay valid.
	before := j.LastSeq()
	j.RecordEvent(accepted("e2", t0, "x"))
	flush(t, j)
	if ev, _ := j.Get(t.Context(), "e2"); ev == nil || ev.Seq <= before {
		t.Errorf("seq after restart: %+v (last before %d)", ev, before)
	}
}

// TestDropsWhenBehind: a writer made slow on purpose drops and counts, and
// Record never blocks.
func TestDropsWhenBehind(t *testing.T) {
	j := open(t, t.TempDir(), DefaultConfig(), Options{QueueSize: 8, BatchSize: 4, WriteDelay: 50 * time.Millisecond})
	start := time.Now()
	for i := range 1000 {
		j.RecordEvent(accepted(fmt.Sprint(i), t0, "x"))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("1000 records took %v: Record blocked", d)
	}
	flush(t, j)
	st := j.Stats()
	if st.Dropped == 0 || st.Written+st.Dropped != 1000 {
		t.Errorf("stats = %+v, want drops and written+dropped = 1000", st)
	}
}

func TestRejectedSampled(t *testing.T) {
	j := open(t, t.TempDir(), DefaultConfig(), Options{})
	for i := range 1000 {
		j.RecordEvent(&Event{ID: fmt.Sprint(i), ReceivedAt: t0, Source: "s", Verdict: Rejected, Status: 401, Reason: "unauthorized"})
	}
	flush(t, j)
	st := j.Stats()
	if st.Unsampled == 0 || st.Written == 0 || st.Written+st.Unsampled != 1000 {
		t.Errorf("stats = %+v, want some journaled, the rest counted", st)
	}
}

// TestExplainErrors: a failed rule is kept with its explanation, which the
// writer makes, only when bodies are kept: it shows payload values.
func TestExplainErrors(t *testing.T) {
	for _, bodies := range []bool{true, false} {
		cfg := DefaultConfig()
		cfg.Bodies = bodies
		j := open(t, t.TempDir(), cfg, Options{})
		ev := accepted("e1", t0, "x")
		calls := 0
		ev.ExplainErrors(func(rule int) []explain.Part {
			calls++
			return []explain.Part{{Expr: "message.channel.engine == \"wa\"", Error: "cannot fetch engine", Text: fmt.Sprint("rule ", rule)}}
		})
		j.RecordEvent(ev)
		flush(t, j)
		got, err := j.Get(t.Context(), "e1")
		if err != nil {
			t.Fatal(err)
		}
		ex := got.Rules[1].Explain
		switch {
		case bodies && (calls != 1 || len(ex) != 1 || ex[0].Text != "rule 1" || ex[0].Error != "cannot fetch engine" || got.Rules[0].Explain != nil):
			t.Errorf("bodies on: %d calls, rules %+v; want rule 1 (failed) explained once", calls, got.Rules)
		case !bodies && (calls != 0 || ex != nil || got.Payload != nil):
			t.Errorf("bodies off: %d calls, explanation %+v, payload %s; want none", calls, ex, got.Payload)
		}
	}
}

func TestScrub(t *testing.T) {
	for in, want := range map[string]string{
		"dial tcp: nats://alice:s3cr3t@127.0.0.1:4222 refused": "dial tcp: nats://REDACTED@127.0.0.1:4222 refused",
		"Authorization: Bearer abc.def":                        "Authorization: Bearer REDACTED",
		"POST https://h/x?token=abc: timeout":                  "POST https://h/x?REDACTED: timeout",
		"POST https://h/x?a=b:c&d=e: boom":                     "POST https://h/x?REDACTED: boom",
		"GET https://h/x?a=1":                                  "GET https://h/x?REDACTED",
		// A sink's own redaction (sinks.RedactURL) stays as it was.
		"POST http://REDACTED@127.0.0.1:9/events?REDACTED: http status 503: ok": "POST http://REDACTED@127.0.0.1:9/events?REDACTED: http status 503: ok",
		"password=hunter2 rejected": "password=REDACTED rejected",
		"http status 500: boom":     "http status 500: boom",
	} {
		if got := Scrub(in); got != want {
			t.Errorf("Scrub(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if errs := DefaultConfig().Validate(); errs != nil {
		t.Errorf("defaults invalid: %v", errs)
	}
	if errs := (Config{Retention: -1, MaxBytes: 10}).Validate(); len(errs) != 2 {
		t.Errorf("Validate = %v", errs)
	}
}
