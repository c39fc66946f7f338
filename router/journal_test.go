package router

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router/dispatch"
	"github.com/hookrouter/hookrouter/router/journal"
)

// journey waits until the journal has event id with every delivery in a
// final-looking state that want accepts, and returns it.
func (s *server) journey(id string, want func(*journal.Event) bool) *journal.Event {
	s.t.Helper()
	var ev *journal.Event
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.r.Journal().Flush(ctx); err != nil {
			s.t.Fatal(err)
		}
		e, err := s.r.Journal().Get(ctx, id)
		cancel()
		if err == nil && want(e) {
			return e
		}
		ev = e
		if time.Now().After(deadline) {
			b, _ := json.Marshal(ev)
			s.t.Fatalf("journey of %s not as wanted after 15s: %s (%v)", id, b, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func deliveryState(ev *journal.Event, sink string) *journal.Delivery {
	for i := range ev.Deliveries {
		if ev.Deliveries[i].Sink == sink {
			return &ev.Deliveries[i]
		}
	}
	return nil
}

func stateIs(sink, state string, attempts int) func(*journal.Event) bool {
	return func(ev *journal.Event) bool {
		d := deliveryState(ev, sink)
		return d != nil && d.State == state && len(d.Attempts) == attempts
	}
}

func msg(id, engine string) []byte {
	return []byte(fmt.Sprintf(`{"event":"channel.message_in","message":{"id":%q,"channel":{"engine":%q},"content":{"text":"hi from %s"}}}`, id, engine, id))
}

func TestJournalRetryThenSuccess(t *testing.T) {
	crm := newCapture(t)
	crm.setStatus(503)
	s := startServer(t, baseConfig("{backend: disk}",
		fmt.Sprintf(`  crm: {type: http, url: %q, retry: {max_attempts: 5, initial_backoff: 20ms, max_backoff: 40ms}}`, crm.URL),
		`  - {name: wa, when: 'message.channel.engine == "wa"', to: [crm]}`))
	a := s.post("/webhook", msg("m1", "wa"))
	id := a.header.Get("X-Hookrouter-Event-Id")
	if a.status != 200 || len(id) != 32 {
		t.Fatalf("answer %d, event id %q", a.status, id)
	}
	waitFor(t, 10*time.Second, "two failed attempts", func() bool { return crm.requestCount() >= 2 })
	crm.setStatus(0)
	ev := s.journey(id, func(ev *journal.Event) bool {
		d := deliveryState(ev, "crm")
		return d != nil && d.State == journal.Delivered
	})
	d := deliveryState(ev, "crm")
	n := len(d.Attempts)
	if n < 3 {
		t.Fatalf("attempts = %+v, want at least 2 failures then a success", d.Attempts)
	}
	for _, at := range d.Attempts[:n-1] {
		if at.Outcome != journal.Retryable || at.Status != 503 || !strings.Contains(at.Error, "503") || at.At.IsZero() {
			t.Errorf("failed attempt = %+v", at)
		}
	}
	if last := d.Attempts[n-1]; last.Outcome != journal.OK || last.Error != "" || last.Status != 200 {
		t.Errorf("last attempt = %+v", last)
	}
	if ev.Verdict != journal.Accepted || ev.Status != 200 || ev.Event != "channel.message_in" || ev.DedupKey != "channel.message_in_m1" ||
		len(ev.Rules) != 1 || ev.Rules[0].Rule != "wa" || ev.Rules[0].Verdict != journal.Matched || ev.Rules[0].Explain != nil || !bytes.Equal(ev.Payload, msg("m1", "wa")) {
		t.Errorf("journey = %+v", ev)
	}
	if h := s.health(); h.Journal == nil || h.Journal.Written == 0 {
		t.Errorf("health journal = %+v", h.Journal)
	}
}

func TestJournalDeadLetterReplayDelivered(t *testing.T) {
	crm := newCapture(t)
	crm.setStatus(400) // permanent: dead-lettered at once
	archive := filepath.Join(t.TempDir(), "archive.jsonl")
	s := startServer(t, baseConfig("{backend: memory}",
		fmt.Sprintf("  crm: {type: http, url: %q}\n  archive: {type: file, path: %q}", crm.URL, archive),
		"  - {name: all, when: 'true', to: [archive, crm]}"))
	id := s.post("/webhook", msg("m2", "wa")).header.Get("X-Hookrouter-Event-Id")
	ev := s.journey(id, func(ev *journal.Event) bool {
		return stateIs("crm", journal.DeadLetter, 1)(ev) && stateIs("archive", journal.Delivered, 1)(ev)
	})
	at := deliveryState(ev, "crm").Attempts[0]
	if at.Outcome != journal.Permanent || at.Status != 400 {
		t.Errorf("dead-letter attempt = %+v", at)
	}
	// A file sink has no status to report.
	if d := deliveryState(ev, "archive"); d.State != journal.Delivered || len(d.Attempts) != 1 || d.Attempts[0].Outcome != journal.OK || d.Attempts[0].Status != 0 {
		t.Errorf("file sink delivery = %+v", d)
	}
	dl, err := s.r.Journal().DeadLetters(t.Context(), "crm", time.Time{}, 0)
	if err != nil || len(dl) != 1 || dl[0].ID != id {
		t.Fatalf("dead letters = %+v, %v", dl, err)
	}

	// The destination is fixed; the replay goes to crm only.
	crm.setStatus(0)
	res, err := s.r.ReplayEvent(t.Context(), id, "crm", false, "api")
	if err != nil || fmt.Sprint(res.Requeued) != "[crm]" {
		t.Fatalf("ReplayEvent = %+v, %v", res, err)
	}
	ev = s.journey(id, stateIs("crm", journal.Delivered, 2))
	d := deliveryState(ev, "crm")
	var states []string
	for _, st := range d.Steps {
		states = append(states, st.State)
	}
	if got := strings.Join(states, ","); got != "dead_letter,replayed,delivered" {
		t.Errorf("crm steps = %s", got)
	}
	if d.Attempts[1].Outcome != journal.OK {
		t.Errorf("attempt after replay = %+v", d.Attempts[1])
	}
	if _, ids := crm.snapshot(); len(ids) != 1 || ids[0] != id {
		t.Errorf("crm received ids %v, want [%s]", ids, id)
	}
	if deliveryState(ev, "archive").State != journal.Delivered || len(deliveryState(ev, "archive").Attempts) != 1 {
		t.Errorf("archive delivered again by a replay to crm: %+v", deliveryState(ev, "archive"))
	}

	// The journal knows the dead letter was replayed: what a replay of the
	// file consults before sending it again.
	raw, err := os.ReadFile(filepath.Join(s.dir, "data", "dead-letter.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := dispatch.ReadDeadLetters(bytes.NewReader(raw))
	if err != nil || len(recs) != 1 {
		t.Fatalf("dead letters file: %v %v", recs, err)
	}
	if _, done := s.r.deadLetterReplayed(t.Context(), &recs[0]); !done {
		t.Errorf("deadLetterReplayed = false after the API's replay")
	}
	// The dead-letter view keeps a dead letter once replayed, with its state.
	dl, err = s.r.Journal().DeadLetters(t.Context(), "crm", time.Time{}, 0)
	if err != nil || len(dl) != 1 || deliveryState(&dl[0], "crm").State != journal.Delivered {
		t.Errorf("dead letters after replay = %+v, %v", dl, err)
	}
}

// TestJournalReplayOnce: one dead letter is sent again once, whichever way
// it is replayed and however often: the API twice, then the file; the file
// twice, then the API. force=true is the way to send it again on purpose.
func TestJournalReplayOnce(t *testing.T) {
	crm := newCapture(t)
	crm.setStatus(400)
	s := startServer(t, baseConfig("{backend: disk}", fmt.Sprintf("  crm: {type: http, url: %q}", crm.URL),
		"  - {name: all, when: 'true', to: [crm]}"))
	viaAPI := s.post("/webhook", msg("once-api", "wa")).header.Get("X-Hookrouter-Event-Id")
	viaFile := s.post("/webhook", msg("once-file", "wa")).header.Get("X-Hookrouter-Event-Id")
	s.journey(viaAPI, stateIs("crm", journal.DeadLetter, 1))
	s.journey(viaFile, stateIs("crm", journal.DeadLetter, 1))
	crm.setStatus(0)
	deadLetters, err := os.ReadFile(filepath.Join(s.dir, "data", "dead-letter.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	recordOf := func(id string) []byte {
		for _, line := range bytes.Split(deadLetters, []byte("\n")) {
			if bytes.Contains(line, []byte(id)) {
				return append(line, '\n')
			}
		}
		t.Fatalf("no dead letter of %s in %s", id, deadLetters)
		return nil
	}

	// The API, twice at once (a double click), then again once delivered.
	answers := make(chan answer, 2)
	for range 2 {
		go func() { answers <- s.adminPost("/-/events/"+viaAPI+"/replay?sink=crm", nil) }()
	}
	a, b := <-answers, <-answers
	if a.status == 409 {
		a, b = b, a
	}
	if a.status != 200 || !strings.Contains(a.body, `"requeued":["crm"]`) || b.status != 409 || !strings.Contains(b.body, "crm") {
		t.Fatalf("two replays at once = %d %s / %d %s, want one 200 and one 409", a.status, a.body, b.status, b.body)
	}
	s.journey(viaAPI, stateIs("crm", journal.Delivered, 2))
	if a := s.adminPost("/-/events/"+viaAPI+"/replay?sink=crm", nil); a.status != 409 || !strings.Contains(a.body, "already replayed") {
		t.Errorf("replay of a replayed dead letter = %d %s, want 409", a.status, a.body)
	}
	if a := s.adminPost("/-/replay", recordOf(viaAPI)); a.status != 200 || !strings.Contains(a.body, `"requeued":0`) || !strings.Contains(a.body, "already replayed") {
		t.Errorf("file replay after the API's = %d %s, want it skipped", a.status, a.body)
	}

	// The file, twice (once with the record twice in it), then the API.
	rec := recordOf(viaFile)
	if a := s.adminPost("/-/replay", append(append([]byte(nil), rec...), rec...)); a.status != 200 || !strings.Contains(a.body, `"requeued":1`) {
		t.Fatalf("file replay = %d %s, want 1 requeued", a.status, a.body)
	}
	s.journey(viaFile, stateIs("crm", journal.Delivered, 2))
	if a := s.adminPost("/-/replay", rec); !strings.Contains(a.body, `"requeued":0`) {
		t.Errorf("second file replay = %d %s, want it skipped", a.status, a.body)
	}
	if a := s.adminPost("/-/events/"+viaFile+"/replay", nil); a.status != 409 || !strings.Contains(a.body, "already replayed") {
		t.Errorf("API replay after the file's = %d %s, want 409", a.status, a.body)
	}
	for _, m := range []string{"once-api", "once-file"} {
		if n := crm.deliveries(m); n != 1 {
			t.Errorf("crm got %s %d times, want once", m, n)
		}
	}

	// On purpose: force.
	if a := s.adminPost("/-/events/"+viaAPI+"/replay?sink=crm&force=true", nil); a.status != 200 {
		t.Errorf("forced replay = %d %s", a.status, a.body)
	}
	waitFor(t, 10*time.Second, "the forced replay's delivery", func() bool { return crm.deliveries("once-api") == 2 })
}

func TestJournalRecordsFileReplay(t *testing.T) {
	crm := newCapture(t)
	crm.setStatus(422)
	s := startServer(t, baseConfig("{backend: memory}", fmt.Sprintf("  crm: {type: http, url: %q}", crm.URL),
		"  - {name: all, when: 'true', to: [crm]}"))
	id := s.post("/webhook", msg("m9", "wa")).header.Get("X-Hookrouter-Event-Id")
	s.journey(id, stateIs("crm", journal.DeadLetter, 1))
	crm.setStatus(0)
	raw, err := os.ReadFile(filepath.Join(s.dir, "data", "dead-letter.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	a := s.adminPost("/-/replay", raw)
	if a.status != 200 || !strings.Contains(a.body, `"requeued":1`) {
		t.Fatalf("/-/replay = %d %s", a.status, a.body)
	}
	ev := s.journey(id, stateIs("crm", journal.Delivered, 2))
	if steps := deliveryState(ev, "crm").Steps; len(steps) != 3 || steps[1].State != journal.Replayed || steps[1].Note != "replay of a dead letter" {
		t.Errorf("steps = %+v", steps)
	}
}

func TestJournalDuplicateAndRejected(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.jsonl")
	s := startServer(t, baseConfig("{backend: memory}", fmt.Sprintf("  out: {type: file, path: %q}", out),
		"  - {name: all, when: 'true', to: [out]}"))
	first := s.post("/webhook", msg("m3", "wa"))
	dup := s.post("/webhook", msg("m3", "wa"))
	id := first.header.Get("X-Hookrouter-Event-Id")
	if dup.header.Get("X-Hookrouter-Duplicate") != "true" || dup.header.Get("X-Hookrouter-Event-Id") != id {
		t.Fatalf("duplicate answer headers %v, want the first's id %s", dup.header, id)
	}
	bad := s.post("/webhook", msg("m4", "wa"), "Authorization", "wrong")
	invalid := s.post("/webhook", []byte(`{"event":`))
	if bad.status != 401 || invalid.status != 400 {
		t.Fatalf("statuses %d %d", bad.status, invalid.status)
	}
	j := s.r.Journal()
	if err := j.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	p, err := j.List(t.Context(), journal.Filter{State: journal.Duplicate})
	if err != nil || len(p.Events) != 1 || p.Events[0].DuplicateOf != id || p.Events[0].DedupKey != "channel.message_in_m3" {
		t.Fatalf("duplicates = %+v, %v", p.Events, err)
	}
	p, err = j.List(t.Context(), journal.Filter{State: journal.Rejected})
	if err != nil || len(p.Events) != 2 {
		t.Fatalf("rejected = %+v, %v", p.Events, err)
	}
	reasons := p.Events[0].Reason + "|" + p.Events[1].Reason
	if !strings.Contains(reasons, "unauthorized") || !strings.Contains(reasons, "invalid_payload: ") {
		t.Errorf("reasons = %s", reasons)
	}
	for _, e := range p.Events {
		full, err := j.Get(t.Context(), e.ID)
		if err != nil || full.Payload != nil || (full.Status != 401 && full.Status != 400) {
			t.Errorf("rejected journey = %+v, %v", full, err)
		}
	}
}

func TestJournalUnroutedRuleVerdicts(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.jsonl")
	s := startServer(t, baseConfig("{backend: memory}", fmt.Sprintf("  out: {type: file, path: %q}", out),
		`  - {name: wa, when: 'message.channel.engine == "wa"', to: [out]}
  - {name: boom, when: 'header("X-Test") == "yes" && message.content.text.nope == 1', to: [out]}
  - {name: shadowed, when: 'event == "channel.message_in"', to: [out], shadow: true}`))
	a := s.post("/webhook", msg("m5", "telegram"), "X-Test", "yes")
	id := a.header.Get("X-Hookrouter-Event-Id")
	if a.status != 200 || id == "" {
		t.Fatalf("unrouted answer %d id %q", a.status, id)
	}
	ev := s.journey(id, func(*journal.Event) bool { return true })
	if len(ev.Sinks) != 0 || len(ev.Deliveries) != 0 {
		t.Errorf("unrouted event has sinks %v / deliveries %v", ev.Sinks, ev.Deliveries)
	}
	got := fmt.Sprint(ev.Rules)
	if len(ev.Rules) != 3 || ev.Rules[0].Verdict != journal.No || !strings.HasPrefix(ev.Rules[1].Verdict, "error: ") || ev.Rules[2].Verdict != journal.Shadow {
		t.Errorf("rule verdicts = %s", got)
	}
	// The rule that failed is explained, as test -explain would, with the
	// request's headers as they were; the others are not.
	if ex := ev.Rules[1].Explain; len(ex) != 2 ||
		ex[0].Text != `header("X-Test") == "yes" → true (header("X-Test") is "yes")` ||
		ex[1].Expr != "message.content.text.nope == 1" || ex[1].Error == "" || ex[1].Text != "message.content.text.nope == 1 → error: "+ex[1].Error {
		t.Errorf("explanation of the failed rule = %+v", ex)
	}
	if ev.Rules[0].Explain != nil || ev.Rules[2].Explain != nil {
		t.Errorf("rules that did not fail explained: %+v", ev.Rules)
	}
	if p, _ := s.r.Journal().List(t.Context(), journal.Filter{State: "unrouted"}); len(p.Events) != 1 || p.Events[0].ID != id {
		t.Errorf("unrouted list = %+v", p.Events)
	}
}

// sseReader reads server-sent events from a live response.
type sseReader struct {
	resp *http.Response
	sc   *bufio.Scanner
}

func openStream(t *testing.T, url, lastID string) *sseReader {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %s %v", resp.Status, resp.Header)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &sseReader{resp: resp, sc: bufio.NewScanner(resp.Body)}
}

type sse struct {
	id, event string
	rec       journal.Record
}

// next returns the next event (skipping retry: and comments); the test's
// deadline bounds it through the request context.
func (r *sseReader) next(t *testing.T) sse {
	t.Helper()
	var e sse
	for r.sc.Scan() {
		line := r.sc.Text()
		switch {
		case line == "" && e.id != "":
			return e
		case strings.HasPrefix(line, "id: "):
			e.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			e.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(line[6:]), &e.rec); err != nil {
				t.Fatalf("data: %v: %s", err, line)
			}
		}
	}
	t.Fatalf("stream ended: %v", r.sc.Err())
	return e
}

func TestJournalAdminAPI(t *testing.T) {
	crm := newCapture(t)
	crm.setStatus(410)
	s := startServer(t, baseConfig("{backend: disk}", fmt.Sprintf("  crm: {type: http, url: %q}", crm.URL),
		`  - {name: wa, when: 'message.channel.engine == "wa"', to: [crm]}`))
	stream := openStream(t, s.admin+"/-/events/stream?sink=crm", "")

	id := s.post("/webhook", msg("a1", "wa")).header.Get("X-Hookrouter-Event-Id")
	s.post("/webhook", msg("a2", "telegram")) // unrouted: not for sink=crm
	// The ingress journals an event after queueing it, so a fast delivery's
	// step can come first; the event's record then carries its state.
	ev, st := stream.next(t), stream.next(t)
	if ev.event == "step" {
		ev, st = st, ev
	}
	if ev.event != "event" || ev.rec.EventID != id || ev.rec.Event == nil || ev.rec.Event.Sinks[0] != "crm" {
		t.Fatalf("event SSE = %+v", ev)
	}
	if st.event != "step" || st.rec.Step.State != journal.DeadLetter || st.rec.Step.Status != 410 {
		t.Fatalf("step SSE = %+v", st)
	}
	if ev.rec.Seq < st.rec.Seq {
		if ds := ev.rec.Event.Deliveries; len(ds) != 1 || ds[0].State != journal.Queued {
			t.Fatalf("event before its step: deliveries %+v", ds)
		}
	} else if ds := ev.rec.Event.Deliveries; len(ds) != 1 || ds[0].State != journal.DeadLetter {
		t.Fatalf("event after its step: deliveries %+v", ds)
	}
	last := st.id
	if ev.rec.Seq > st.rec.Seq {
		last = ev.id
	}
	stream.resp.Body.Close()

	// While no one listens: the replay through the API, and its delivery.
	crm.setStatus(0)
	a := s.adminPost("/-/events/"+id+"/replay?sink=crm", nil)
	if a.status != 200 || !strings.Contains(a.body, `"requeued":["crm"]`) {
		t.Fatalf("replay = %d %s", a.status, a.body)
	}
	s.journey(id, stateIs("crm", journal.Delivered, 2))
	// A reconnect with Last-Event-ID gets what it missed, in order.
	stream = openStream(t, s.admin+"/-/events/stream?sink=crm", last)
	if e := stream.next(t); e.rec.Step == nil || e.rec.Step.State != journal.Replayed {
		t.Fatalf("after reconnect = %+v", e)
	}
	if e := stream.next(t); e.rec.Step == nil || e.rec.Step.State != journal.Delivered || e.rec.Step.Outcome != journal.OK {
		t.Fatalf("after reconnect = %+v", e)
	}
	// A replay of an unknown event is a 404, of a sink it did not go to a 400.
	if a := s.adminPost("/-/events/nope/replay", nil); a.status != 404 {
		t.Errorf("replay unknown = %d %s", a.status, a.body)
	}
	if a := s.adminPost("/-/events/"+id+"/replay?sink=other", nil); a.status != 400 {
		t.Errorf("replay other sink = %d %s", a.status, a.body)
	}

	// The list, with a filter and a cursor.
	a = s.adminGet("/-/events?limit=1")
	var page journal.Page
	if err := json.Unmarshal([]byte(a.body), &page); err != nil || a.status != 200 || len(page.Events) != 1 || page.NextCursor == "" {
		t.Fatalf("list = %d %s", a.status, a.body)
	}
	a = s.adminGet("/-/events?limit=1&cursor=" + page.NextCursor)
	if err := json.Unmarshal([]byte(a.body), &page); err != nil || len(page.Events) != 1 || page.Events[0].ID != id {
		t.Fatalf("second page = %s", a.body)
	}
	if a := s.adminGet("/-/events?sink=crm&state=delivered&q=a1"); !strings.Contains(a.body, id) {
		t.Errorf("filtered list = %s", a.body)
	}
	if a := s.adminGet("/-/events?state=lost"); a.status != 400 || !strings.Contains(a.body, "state") {
		t.Errorf("bad filter = %d %s", a.status, a.body)
	}
	a = s.adminGet("/-/events/" + id)
	var full journal.Event
	if err := json.Unmarshal([]byte(a.body), &full); err != nil || a.status != 200 || len(full.Deliveries[0].Attempts) != 2 {
		t.Fatalf("get = %d %s", a.status, a.body)
	}
	if a := s.adminGet("/-/events/nope"); a.status != 404 {
		t.Errorf("get unknown = %d", a.status)
	}
	a = s.adminGet("/-/dead-letters?sink=crm&since=1h")
	if a.status != 200 || !strings.Contains(a.body, id) {
		t.Errorf("dead letters = %d %s", a.status, a.body)
	}
}
