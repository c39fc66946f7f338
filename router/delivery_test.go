package router

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/dispatch"
)

// message is a small channel.message_in payload with its own message id.
func message(id string) []byte {
	return fmt.Appendf(nil, `{"event":"channel.message_in","message":{"id":%q,"content":{"text":"hello"}}}`, id)
}

// deadLetters reads the server's dead-letter file.
func (s *server) deadLetters() []dispatch.Record {
	s.t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "data", "dead-letter.jsonl"))
	if err != nil {
		s.t.Fatal(err)
	}
	recs, err := dispatch.ReadDeadLetters(bytes.NewReader(b))
	if err != nil {
		s.t.Fatal(err)
	}
	return recs
}

// restart stops the router and starts a new one on the same config file and
// data_dir, as a process restart would.
func (s *server) restart() {
	s.t.Helper()
	s.stop()
	f, err := config.Load(s.config)
	if err != nil {
		s.t.Fatalf("config: %v", err)
	}
	r, err := New(f, Options{ConfigPath: s.config, Version: "test", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		s.t.Fatalf("New after restart: %v", err)
	}
	s.serve(r)
}

// metric returns the line of /metrics that starts with prefix, or "".
func (s *server) metric(prefix string) string {
	s.t.Helper()
	for line := range strings.Lines(s.adminGet("/metrics").body) {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

func oneSink(d *capture, settings, queue string) string {
	return baseConfig(queue, fmt.Sprintf("  hook: {type: http, url: %q, %s}", d.URL, settings),
		"  - {name: all, when: 'true', to: [hook]}")
}

// TestBreakerCycle takes a flapping sink through closed → open → half-open
// → closed: while open, the sink sees at most one probe per open_for and the
// deliveries wait; once it heals, every one is delivered.
func TestBreakerCycle(t *testing.T) {
	d := newCapture(t)
	d.setStatus(503)
	s := startServer(t, oneSink(d, `workers: 4, timeout: 5s, retry: {max_attempts: 1000, initial_backoff: 5ms, max_backoff: 10ms},
    breaker: {failures: 3, open_for: 300ms}`, "{backend: memory}"))
	breaker := func() string { return s.health().Sinks["hook"].Breaker }
	if b := breaker(); b != "closed" {
		t.Fatalf("breaker at start: %s", b)
	}
	const n = 10
	for i := range n {
		if a := s.post("/webhook", message(fmt.Sprint("m", i))); a.status != 200 {
			t.Fatalf("post %d: %d %s", i, a.status, a.body)
		}
	}
	waitFor(t, 5*time.Second, "breaker open", func() bool { return breaker() == "open" })
	if m := s.metric(`hookrouter_breaker_state{sink="hook"}`); !strings.HasSuffix(m, " 2") {
		t.Errorf("metric while open: %q", m)
	}
	// While open, only probes, each open_for after the last one failed. A
	// request sent just before it opened may still arrive in the first
	// half of the first open period: count from after it.
	since := time.Now().Add(150 * time.Millisecond)
	probes := func() []arrival {
		return slices.DeleteFunc(d.requests(), func(a arrival) bool { return a.at.Before(since) })
	}
	waitFor(t, 5*time.Second, "3 probes", func() bool { return len(probes()) >= 3 })
	reqs := probes()
	for i := 1; i < len(reqs); i++ {
		if gap := reqs[i].at.Sub(reqs[i-1].at); gap < 250*time.Millisecond {
			t.Errorf("probes %v apart, want about open_for (300ms)", gap)
		}
	}
	if h := s.health().Sinks["hook"]; h.Depth != n || h.Failed != 0 || !strings.Contains(h.LastError, "503") {
		t.Errorf("while open: %+v; want all %d deliveries waiting, none failed, last error 503", h, n)
	}

	// The next probe hangs: the breaker is half-open while it is out.
	sent := len(d.requests())
	d.holdRequests()
	d.setStatus(200)
	waitFor(t, 2*time.Second, "breaker half-open", func() bool { return breaker() == "half-open" })
	// The breaker is half-open as the probe leaves, a moment before it
	// arrives: count from its arrival.
	waitFor(t, 2*time.Second, "probe held", func() bool { return len(d.requests()) > sent })
	if m := s.metric(`hookrouter_breaker_state{sink="hook"}`); !strings.HasSuffix(m, " 1") {
		t.Errorf("metric while half-open: %q", m)
	}
	before := len(d.requests())
	// A window for a wrong request to show up in: nothing signals a request
	// that is (rightly) not sent.
	time.Sleep(100 * time.Millisecond)
	if extra := len(d.requests()) - before; extra != 0 {
		t.Errorf("%d requests sent while the half-open probe was out", extra)
	}
	d.release()
	waitFor(t, 5*time.Second, "all delivered", func() bool { return d.count() >= n })
	s.settle()
	got := d.got()
	ids := map[string]bool{}
	for _, a := range got {
		ids[a.id] = true
	}
	if len(got) != n || len(ids) != n {
		t.Errorf("delivered %d (%d distinct ids), want %d", len(got), len(ids), n)
	}
	if b := breaker(); b != "closed" {
		t.Errorf("breaker after healing: %s", b)
	}
	if m := s.metric(`hookrouter_breaker_state{sink="hook"}`); !strings.HasSuffix(m, " 0") {
		t.Errorf("metric after healing: %q", m)
	}
	if h := s.health().Sinks["hook"]; h.Depth != 0 || h.Delivered != n || h.LastError != "" {
		t.Errorf("after healing: %+v", h)
	}
	if recs := s.deadLetters(); len(recs) != 0 {
		t.Errorf("dead letters: %+v", recs)
	}
}

// TestPermanentErrorDeadLetterAndReplay: a 400 is dead-lettered after one
// request; replaying the file once the sink is fixed delivers the event with
// its original id.
func TestPermanentErrorDeadLetterAndReplay(t *testing.T) {
	d := newCapture(t)
	d.setStatus(400)
	s := startServer(t, oneSink(d, fastRetry, "{backend: memory}"))
	payload := payloadFile(t, "channel.message_in.json")
	if a := s.post("/webhook", payload); a.status != 200 {
		t.Fatalf("post: %d %s", a.status, a.body)
	}
	waitFor(t, 5*time.Second, "dead letter", func() bool { return len(s.deadLetters()) == 1 })
	s.settle()
	if n := len(d.requests()); n != 1 {
		t.Errorf("%d requests for a 400, want 1 (permanent: no retry)", n)
	}
	rec := s.deadLetters()[0]
	if rec.Sink != "hook" || len(rec.EventID) != 32 || rec.Envelope.ID != rec.EventID || rec.Attempts != 1 ||
		!strings.Contains(rec.Error, "400") || rec.Envelope.Source != "platform" || rec.FailedAt.IsZero() {
		t.Errorf("record = %+v", rec)
	}
	if first := d.requests()[0].id; first != rec.EventID {
		t.Errorf("record event_id %q, the request carried %q", rec.EventID, first)
	}
	if !jsonEqual(t, rec.Envelope.Payload, payload) {
		t.Errorf("record payload %s, want %s", rec.Envelope.Payload, payload)
	}
	fi, err := os.Stat(filepath.Join(s.dir, "data", "dead-letter.jsonl"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("dead-letter file mode: %v %v", fi.Mode(), err)
	}
	// The lane counts a dead letter once its record is written: wait for
	// the count as well as the record.
	waitFor(t, 5*time.Second, "dead letter metric", func() bool {
		return strings.HasSuffix(s.metric(`hookrouter_dead_letters_total{sink="hook"}`), " 1")
	})

	d.setStatus(200)
	file, _ := os.ReadFile(filepath.Join(s.dir, "data", "dead-letter.jsonl"))
	a := s.adminPost("/-/replay", file)
	if a.status != 200 || a.body != `{"requeued":1,"skipped":0}` {
		t.Fatalf("replay: %d %s", a.status, a.body)
	}
	waitFor(t, 5*time.Second, "replayed delivery", func() bool { return d.count() == 1 })
	got := d.got()[0]
	if got.id != rec.EventID {
		t.Errorf("replayed with X-Hookrouter-Event-Id %q, want the original %q", got.id, rec.EventID)
	}
	if !jsonEqual(t, got.body, payload) {
		t.Errorf("replayed body %s", got.body)
	}

	// A record for a sink that is not in the config is reported, not lost silently.
	other := bytes.Replace(file, []byte(`"sink":"hook"`), []byte(`"sink":"gone"`), 1)
	if a := s.adminPost("/-/replay", other); a.status != 200 || !strings.Contains(a.body, `"skipped":1`) || !strings.Contains(a.body, `sink \"gone\" is not in the config`) {
		t.Errorf("replay to unknown sink: %d %s", a.status, a.body)
	}
	if a := s.adminPost("/-/replay", []byte("not json\n")); a.status != 400 || !strings.Contains(a.body, "line 1") {
		t.Errorf("replay of garbage: %d %s", a.status, a.body)
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%v: %s", err, a)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return fmt.Sprint(x) == fmt.Sprint(y)
}

// TestRetryExhaustedAndRetryAfter: a sink answering 503 forever is tried
// max_attempts times, then dead-lettered with its last error; a 429's
// Retry-After is waited out even when the backoff is shorter.
func TestRetryExhaustedAndRetryAfter(t *testing.T) {
	down, slow := newCapture(t), newCapture(t)
	down.setStatus(503)
	slow.script, slow.retryAfter = []int{429}, "1"
	settings := `retry: {max_attempts: 3, initial_backoff: 10ms, max_backoff: 20ms}, breaker: {failures: 100}`
	s := startServer(t, baseConfig("{backend: memory}", fmt.Sprintf(`  down: {type: http, url: %q, %s}
  slow: {type: http, url: %q, %s}`, down.URL, settings, slow.URL, settings), `
  - {name: devices, when: 'event == "device.connected"', to: [down]}
  - {name: replies, when: 'event == "agent.message_out"', to: [slow]}`))
	if a := s.post("/webhook", payloadFile(t, "device.connected.json")); a.status != 200 {
		t.Fatal(a.status)
	}
	if a := s.post("/webhook", payloadFile(t, "agent.message_out.json")); a.status != 200 {
		t.Fatal(a.status)
	}
	waitFor(t, 5*time.Second, "dead letter", func() bool { return len(s.deadLetters()) == 1 })
	rec := s.deadLetters()[0]
	if rec.Sink != "down" || rec.Attempts != 3 || !strings.Contains(rec.Error, "503") {
		t.Errorf("record = %+v", rec)
	}
	if n := len(down.requests()); n != 3 {
		t.Errorf("%d requests to the 503 sink, want max_attempts = 3", n)
	}

	waitFor(t, 5*time.Second, "delivery after 429", func() bool { return slow.count() == 1 })
	reqs := slow.requests()
	if len(reqs) != 2 || reqs[0].status != 429 {
		t.Fatalf("requests to the 429 sink: %+v", reqs)
	}
	if gap := reqs[1].at.Sub(reqs[0].at); gap < 950*time.Millisecond {
		t.Errorf("retried %v after a 429 with Retry-After: 1", gap)
	}
	if reqs[0].id != reqs[1].id {
		t.Errorf("event id changed across a retry: %q then %q", reqs[0].id, reqs[1].id)
	}
}

// TestQueueFull: when deliveries pile up to the queue's bound, ingress
// answers 503 with Retry-After and releases the dedup key, so the sender's
// retry after the queue drains is accepted and delivered.
func TestQueueFull(t *testing.T) {
	d := newCapture(t)
	d.holdRequests()
	s := startServer(t, oneSink(d, "workers: 1, timeout: 10s", "{backend: memory, max_bytes: 2KiB}"))
	var accepted []string
	refused := ""
	for i := range 30 {
		id := fmt.Sprint("m", i)
		a := s.post("/webhook", message(id))
		if a.status == 200 {
			accepted = append(accepted, id)
			continue
		}
		if a.status != 503 || a.header.Get("Retry-After") == "" || !strings.Contains(a.body, "Service unavailable") {
			t.Fatalf("post %d: %d %q Retry-After %q; want 503 with Retry-After", i, a.status, a.body, a.header.Get("Retry-After"))
		}
		refused = id
		break
	}
	if refused == "" || len(accepted) < 2 {
		t.Fatalf("accepted %d events and refused none: the 2KiB bound is not enforced", len(accepted))
	}
	if m := s.metric(`hookrouter_events_rejected_total{reason="queue_full",source="platform"}`); !strings.HasSuffix(m, " 1") {
		t.Errorf("queue_full metric: %q", m)
	}
	// Still full: the same event is refused again, not taken for a duplicate.
	if a := s.post("/webhook", message(refused)); a.status != 503 {
		t.Errorf("retry while still full: %d %s", a.status, a.header)
	}

	d.release()
	waitFor(t, 5*time.Second, "queue drained", func() bool { return d.count() == len(accepted) })
	a := s.post("/webhook", message(refused))
	if a.status != 200 || a.header.Get("X-Hookrouter-Duplicate") != "" {
		t.Fatalf("sender's retry after the queue drained: %d %s duplicate=%q", a.status, a.body, a.header.Get("X-Hookrouter-Duplicate"))
	}
	waitFor(t, 5*time.Second, "retried event delivered", func() bool { return d.count() == len(accepted)+1 })
	if last := d.got()[len(accepted)]; !bytes.Equal(last.body, message(refused)) {
		t.Errorf("last delivery %s", last.body)
	}
	// The accepted ones stay duplicates.
	if a := s.post("/webhook", message(accepted[0])); a.header.Get("X-Hookrouter-Duplicate") != "true" {
		t.Errorf("accepted event re-sent: %d duplicate=%q", a.status, a.header.Get("X-Hookrouter-Duplicate"))
	}
}

// TestDeadSinkDoesNotSlowHealthy: while one sink hangs on every request,
// another sink of the same events gets them at once.
func TestDeadSinkDoesNotSlowHealthy(t *testing.T) {
	dead, ok := newCapture(t), newCapture(t)
	dead.holdRequests()
	s := startServer(t, baseConfig("{backend: memory}", fmt.Sprintf(`  dead: {type: http, url: %q, timeout: 5s}
  ok: {type: http, url: %q}`, dead.URL, ok.URL), "  - {name: all, when: 'true', to: [dead, ok]}"))
	t.Cleanup(dead.release) // before the server stops, so that shutdown does not wait for the hung sends
	const n = 30
	sent := map[string]time.Time{}
	for i := range n {
		body := message(fmt.Sprint("m", i))
		start := time.Now()
		if a := s.post("/webhook", body); a.status != 200 {
			t.Fatalf("post %d: %d", i, a.status)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("post %d took %v", i, took)
		}
		sent[string(body)] = start
	}
	waitFor(t, 5*time.Second, "healthy deliveries", func() bool { return ok.count() == n })
	var worst time.Duration
	for _, a := range ok.got() {
		worst = max(worst, a.at.Sub(sent[string(a.body)]))
	}
	// The dead sink holds each request 5s: a healthy delivery queued behind
	// it would take that long.
	if worst > time.Second {
		t.Errorf("slowest healthy delivery took %v while the other sink hung", worst)
	}
	t.Logf("slowest healthy delivery: %v", worst)
	if h := s.health().Sinks["dead"]; h.Depth != n {
		t.Errorf("dead sink: %+v, want all %d owed", h, n)
	}
}

// TestShutdownDrainsWorkingSink: with the memory queue, Shutdown delivers
// what is queued for a working sink before it returns.
func TestShutdownDrainsWorkingSink(t *testing.T) {
	d := newCapture(t)
	d.delay = 20 * time.Millisecond
	s := startServer(t, oneSink(d, "workers: 1", "{backend: memory}"))
	const n = 20
	for i := range n {
		if a := s.post("/webhook", message(fmt.Sprint("m", i))); a.status != 200 {
			t.Fatal(a.status)
		}
	}
	if d.count() == n {
		t.Fatal("everything delivered before shutdown: the test shows nothing")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := s.r.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	<-s.done
	s.r = nil
	if got := d.count(); got != n {
		t.Errorf("%d of %d delivered by shutdown", got, n)
	}
	if recs := s.deadLetters(); len(recs) != 0 {
		t.Errorf("%d dead letters after a clean drain", len(recs))
	}
}

// TestShutdownDeadLettersWhatIsLeft: with the memory queue and a sink that
// is down, what is still owed when the deadline passes goes to the
// dead-letter file, from where replay can send it.
func TestShutdownDeadLettersWhatIsLeft(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/hook"
	ln.Close() // connection refused from now on
	// The breaker opens after 3 refusals and stays open past the deadline:
	// the deliveries are still owed, not yet dead-lettered, at shutdown.
	s := startServer(t, baseConfig("{backend: memory}", fmt.Sprintf(`  down: {type: http, url: %q,
    retry: {max_attempts: 100, initial_backoff: 5ms, max_backoff: 10ms}, breaker: {failures: 3, open_for: 1m}}`, down),
		"  - {name: all, when: 'true', to: [down]}"))
	const n = 5
	for i := range n {
		if a := s.post("/webhook", message(fmt.Sprint("m", i))); a.status != 200 {
			t.Fatal(a.status)
		}
	}
	waitFor(t, 5*time.Second, "breaker open", func() bool { return s.health().Sinks["down"].Breaker == "open" })
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	if err := s.r.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("shutdown took %v with a 1s deadline", took)
	}
	<-s.done
	s.r = nil
	recs := s.deadLetters()
	ids := map[string]bool{}
	for _, r := range recs {
		ids[r.EventID] = true
		if r.Sink != "down" || r.Error != "shutdown before delivery" {
			t.Errorf("record %+v", r)
		}
	}
	if len(recs) != n || len(ids) != n {
		t.Errorf("%d dead letters (%d events), want each of the %d events once", len(recs), len(ids), n)
	}
}

// TestShutdownRefusesNewEvents: a request that arrives while the router
// shuts down is answered 503 with Retry-After, and new connections are
// refused once the listener is closed.
func TestShutdownRefusesNewEvents(t *testing.T) {
	d := newCapture(t)
	s := startServer(t, oneSink(d, "", "{backend: memory}"))
	addr := strings.TrimPrefix(s.url, "http://")
	// A request whose body is not all sent yet keeps its connection active,
	// so Shutdown waits for it while the router is already draining.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The connection is accepted (fresh: no byte yet), then its request
	// starts (active): Shutdown waits for it instead of closing it as a
	// silent one.
	waitFor(t, 2*time.Second, "the connection accepted", func() bool { return s.r.freshN.Load() == 1 })
	body := message("late")
	fmt.Fprintf(conn, "POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		testSecret, len(body), body[:10])
	waitFor(t, 2*time.Second, "the request started", func() bool { return s.r.freshN.Load() == 0 })

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopped <- s.r.Shutdown(ctx)
	}()
	waitFor(t, 2*time.Second, "draining", func() bool { return s.r.draining.Load() })
	waitFor(t, 2*time.Second, "listener closed", func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if _, err := conn.Write(body[10:]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "shutting down") {
		t.Errorf("during shutdown: %d Retry-After=%q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	if err := <-stopped; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	<-s.done
	s.r = nil
	if d.count() != 0 || len(d.requests()) != 0 {
		t.Errorf("an event refused during shutdown was delivered")
	}
}

// TestNoGoroutineLeak: after Shutdown, nothing the router started is left
// running but fasthttp's idle cleaners, which stop on their own.
func TestNoGoroutineLeak(t *testing.T) {
	client.CloseIdleConnections()
	ignore := []goleak.Option{
		goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*Client).mCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
		// The server's idle-worker cleaner sleeps MaxIdleWorkerDuration (10s)
		// between rounds and notices the stop only then.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	}
	for _, backend := range []string{"memory", "disk"} {
		t.Run(backend, func(t *testing.T) {
			d, slk := newCapture(t), newCapture(t)
			s := startServer(t, baseConfig("{backend: "+backend+"}", fmt.Sprintf(`  hook: {type: http, url: %q, %s}
  chat: {type: slack, webhook_url: %q, text: "{{ .event }}"}
  archive: {type: file, path: DATA/events.jsonl}
  out: {type: stdout}`, d.URL, fastRetry, slk.URL), `
  - {name: all, when: 'true', to: [hook, chat, archive]}
  - {name: none, when: 'false', to: [out]}`))
			for i := range 5 {
				if a := s.post("/webhook", message(fmt.Sprint("m", i))); a.status != 200 {
					t.Fatal(a.status)
				}
			}
			waitFor(t, 5*time.Second, "deliveries", func() bool { return d.count() == 5 && slk.count() == 5 })
			s.get("/health")
			s.adminGet("/metrics")
			s.stop()
			client.CloseIdleConnections()
			d.Close()
			slk.Close()
			goleak.VerifyNone(t, ignore...)
		})
	}
}

// TestDiskQueueRouting: the sample payloads are routed the same way with
// the durable queue.
func TestDiskQueueRouting(t *testing.T) {
	crm, ops := newCapture(t), newCapture(t)
	s := startServer(t, twoSinkConfig(crm, ops, "{backend: disk}"))
	for _, name := range []string{"channel.message_in.json", "channel.message_in.image.json", "agent.message_out.json",
		"ai.message_generated.json", "device.connected.json", "device.disconnected.json"} {
		if a := s.post("/webhook", payloadFile(t, name)); a.status != 200 {
			t.Fatalf("%s: %d %s", name, a.status, a.body)
		}
	}
	waitFor(t, 5*time.Second, "deliveries", func() bool { return crm.count() == 4 && ops.count() == 3 })
	s.settle()
	if crm.count() != 4 || ops.count() != 3 {
		t.Errorf("crm %d ops %d, want 4 and 3", crm.count(), ops.count())
	}
	if h := s.health(); h.QueueBackend != "disk" || h.Sinks["crm"].Depth != 0 {
		t.Errorf("health: %+v", h)
	}
}

// TestDiskQueueRestart: deliveries owed to a failing sink when the router
// stops are delivered, with their original ids, by the next router on the
// same data_dir once the sink heals; their dedup keys are still known.
func TestDiskQueueRestart(t *testing.T) {
	d := newCapture(t)
	d.setStatus(503)
	s := startServer(t, oneSink(d, "retry: {max_attempts: 100, initial_backoff: 5ms, max_backoff: 10ms}, breaker: {failures: 3, open_for: 100ms}",
		"{backend: disk}"))
	const n = 3
	for i := range n {
		if a := s.post("/webhook", message(fmt.Sprint("m", i))); a.status != 200 {
			t.Fatal(a.status)
		}
	}
	tried := map[string]bool{}
	waitFor(t, 5*time.Second, "an attempt at each event", func() bool {
		for _, a := range d.requests() {
			tried[a.id] = true
		}
		return len(tried) == n
	})
	s.stop() // the deliveries are owed on disk, not dead-lettered
	if recs := s.deadLetters(); len(recs) != 0 {
		t.Fatalf("%d dead letters at shutdown of a disk queue", len(recs))
	}

	d.setStatus(200)
	s.restart()
	// Keys of owed events are re-claimed before the router serves.
	if a := s.post("/webhook", message("m0")); a.header.Get("X-Hookrouter-Duplicate") != "true" {
		t.Errorf("owed event re-sent after restart: %d duplicate=%q", a.status, a.header.Get("X-Hookrouter-Duplicate"))
	}
	waitFor(t, 5*time.Second, "owed deliveries after restart", func() bool { return d.count() == n })
	s.settle()
	got := d.got()
	bodies := map[string]bool{}
	for _, a := range got {
		bodies[string(a.body)] = true
		if !tried[a.id] {
			t.Errorf("delivered with id %q, not the id of the first attempts %v", a.id, tried)
		}
	}
	if len(got) != n || len(bodies) != n {
		t.Errorf("delivered %d (%d distinct), want %d", len(got), len(bodies), n)
	}
}

// TestShutdownSilentConnection: a connection that never sends a request
// (a client's spare one, a load balancer's TCP check) neither holds up
// Shutdown nor eats the time left for deliveries.
func TestShutdownSilentConnection(t *testing.T) {
	d := newCapture(t)
	d.delay = 300 * time.Millisecond
	s := startServer(t, oneSink(d, "workers: 1", "{backend: memory}"))
	if a := s.post("/webhook", message("m1")); a.status != 200 {
		t.Fatal(a.status)
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, 2*time.Second, "the silent connection accepted", func() bool { return s.r.freshN.Load() == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.r.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("shutdown took %v with a silent connection open", took)
	}
	<-s.done
	s.r = nil
	if d.count() != 1 {
		t.Errorf("queued delivery not made before shutdown returned")
	}
	conn.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Errorf("silent connection still open after shutdown")
	}
}
