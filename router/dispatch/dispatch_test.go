package dispatch

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

// fast is a policy for tests: short backoffs, a breaker that stays out of
// the way unless a test wants it.
var fast = Settings{MaxAttempts: 5, InitialBackoff: 2 * time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	BreakerFailures: 1000, BreakerOpenFor: time.Second, Workers: 2}

func TestBreakerFlapping(t *testing.T) {
	const openFor = 200 * time.Millisecond
	var down atomic.Bool
	down.Store(true)
	srv := newServer(t, func(*http.Request, int) (int, string) {
		if down.Load() {
			return http.StatusServiceUnavailable, ""
		}
		return http.StatusOK, ""
	})
	h := newHarness(t)
	set := Settings{MaxAttempts: 1000, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		BreakerFailures: 3, BreakerOpenFor: openFor, Workers: 3}
	h.d.Apply(map[string]Target{"crm": {Sink: newPostSink(srv.URL, time.Second), Type: "http", Settings: set}})
	ids := h.put(t, 5, "crm")

	eventually(t, 2*time.Second, "breaker open", func() bool { return h.d.Status()["crm"].Breaker == "open" })
	// Past any request sent before it opened: the first probe comes an
	// open period after it opened.
	openedAt := time.Now().Add(openFor / 2)
	probesSince := func() int {
		n := 0
		for _, r := range srv.requests() {
			if r.at.After(openedAt) {
				n++
			}
		}
		return n
	}
	// Several open periods, each ending in a failed probe.
	eventually(t, 10*time.Second, "4 probes", func() bool { return probesSince() >= 4 })
	upAt := time.Now()
	down.Store(false)
	// A delivery is counted when the sink acknowledges it and leaves the
	// depth a moment later, when the queue forgets it: wait for both.
	eventually(t, 3*time.Second, "all delivered", func() bool {
		st := h.d.Status()["crm"]
		return st.Delivered == int64(len(ids)) && st.Depth == 0
	})

	// While the destination was down and the breaker had opened, it saw at
	// most one request (the half-open probe) per open period.
	var probes []time.Time
	for _, r := range srv.requests() {
		if r.at.After(openedAt) && r.at.Before(upAt) {
			probes = append(probes, r.at)
		}
	}
	if most := int(upAt.Sub(openedAt)/openFor) + 1; len(probes) > most || len(probes) < 4 {
		t.Fatalf("destination saw %d requests in %v of open breaker, want one per %v (4 to %d)", len(probes), upAt.Sub(openedAt), openFor, most)
	}
	for i := 1; i < len(probes); i++ {
		if gap := probes[i].Sub(probes[i-1]); gap < openFor-20*time.Millisecond {
			t.Fatalf("two probes %v apart, want ≥ %v", gap, openFor)
		}
	}
	for id, n := range srv.delivered() {
		if n != 1 {
			t.Fatalf("%s delivered %d times", id, n)
		}
	}

	// closed → open → half-open → open … → half-open → closed, each logged.
	var path []string
	for _, r := range h.logs.find("breaker state changed") {
		if r["sink"] != "crm" || r["level"] != "WARN" {
			t.Fatalf("state change log %v", r)
		}
		if len(path) == 0 {
			path = append(path, r["from"])
		}
		path = append(path, r["to"])
	}
	got := strings.Join(path, ">")
	if !strings.HasPrefix(got, "closed>open>half-open>open>half-open") || !strings.HasSuffix(got, "open>half-open>closed") {
		t.Fatalf("breaker went %s", got)
	}
	if st := h.d.Status()["crm"]; st.Breaker != "closed" || st.Delivered != 5 || st.Depth != 0 || st.LastError != "" {
		t.Fatalf("status after recovery = %+v", st)
	}
	if n := counter(t, h.m.BreakerState.WithLabelValues("crm")); n != 0 {
		t.Fatalf("breaker gauge = %v, want 0", n)
	}
	if recs := h.deadLetters(t); len(recs) != 0 {
		t.Fatalf("dead letters while breaker open: %v", recs)
	}
	// Waiting on an open breaker spends no attempt: 3 failures tripped it,
	// then probes; "delivery failing" is logged once, not per attempt.
	if n := len(h.logs.find("delivery failing")); n != 1 {
		t.Fatalf("failure logged %d times, want once", n)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	srv := newServer(t, func(_ *http.Request, n int) (int, string) {
		if n == 0 {
			return http.StatusServiceUnavailable, "1"
		}
		return http.StatusOK, ""
	})
	h := newHarness(t)
	h.d.Apply(map[string]Target{"crm": {Sink: newPostSink(srv.URL, time.Second), Type: "http", Settings: fast}})
	h.put(t, 1, "crm")
	eventually(t, 3*time.Second, "delivery", func() bool {
		st := h.d.Status()["crm"]
		return st.Delivered == 1 && st.Depth == 0
	})
	reqs := srv.requests()
	if len(reqs) != 2 {
		t.Fatalf("server saw %d requests, want 2", len(reqs))
	}
	if gap := reqs[1].at.Sub(reqs[0].at); gap < time.Second {
		t.Fatalf("retried after %v, Retry-After asked for 1s", gap)
	}
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"attempts ok", counter(t, h.m.Attempts.WithLabelValues("crm", "ok")), 1},
		{"attempts retryable", counter(t, h.m.Attempts.WithLabelValues("crm", "retryable")), 1},
		{"delivered", counter(t, h.m.Deliveries.WithLabelValues("crm", "delivered")), 1},
		{"dead letters", counter(t, h.m.DeadLetters.WithLabelValues("crm")), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if h.q.Depth("crm") != 0 || h.q.Used() != 0 {
		t.Fatalf("queue still holds the event: depth %d used %d", h.q.Depth("crm"), h.q.Used())
	}
}

func TestDeadLettering(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		requests int
		attempts int
		errText  string
	}{
		{"permanent 400 at once", http.StatusBadRequest, 1, 1, "http status 400: answer 400"},
		{"attempts exhausted", http.StatusServiceUnavailable, 3, 3, "http status 503: answer 503"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, always(tc.status))
			h := newHarness(t)
			set := fast
			set.MaxAttempts = 3
			h.d.Apply(map[string]Target{"crm": {Sink: newPostSink(srv.URL, time.Second), Type: "http", Settings: set}})
			ids := h.put(t, 1, "crm")
			eventually(t, 2*time.Second, "dead letter", func() bool { return h.d.Status()["crm"].Failed == 1 })
			// Nothing owed: a wrong extra attempt would have been made.
			eventually(t, 2*time.Second, "nothing owed", func() bool { return h.q.Depth("crm") == 0 })
			if n := len(srv.requests()); n != tc.requests {
				t.Fatalf("server saw %d requests, want %d", n, tc.requests)
			}
			recs := h.deadLetters(t)
			if len(recs) != 1 {
				t.Fatalf("%d dead letters, want 1", len(recs))
			}
			r := recs[0]
			if r.Sink != "crm" || r.EventID != ids[0] || r.Attempts != tc.attempts || r.Error != tc.errText {
				t.Fatalf("record = %+v", r)
			}
			if ev := r.Event(); ev.ID != ids[0] || !strings.Contains(string(ev.Body), ids[0]) {
				t.Fatalf("event = %+v", ev)
			}
			logged := h.logs.find("delivery dead-lettered")
			if len(logged) != 1 || logged[0]["event_id"] != ids[0] || logged[0]["sink"] != "crm" || logged[0]["level"] != "WARN" {
				t.Fatalf("dead letter log = %v", logged)
			}
			if n := counter(t, h.m.Deliveries.WithLabelValues("crm", "dead_letter")); n != 1 {
				t.Fatalf("dead_letter deliveries = %v", n)
			}
			if h.q.Depth("crm") != 0 {
				t.Fatal("dead-lettered delivery still queued")
			}
		})
	}
}

// TestDeadSinkDoesNotSlowOthers sends every event to a hung destination, a
// failing one and a healthy one; the healthy one gets everything at once.
func TestDeadSinkDoesNotSlowOthers(t *testing.T) {
	release := make(chan struct{})
	// The hung server never answers 2xx to a client that gave up: a 200
	// written after the client's timeout would be recorded as delivered.
	var held atomic.Int32 // requests the hung server holds
	hung := newServer(t, func(r *http.Request, _ int) (int, string) {
		held.Add(1)
		defer held.Add(-1)
		select {
		case <-r.Context().Done():
			return http.StatusServiceUnavailable, ""
		case <-release:
			return http.StatusOK, ""
		}
	})
	defer close(release)
	failing := newServer(t, always(http.StatusServiceUnavailable))
	healthy := newServer(t, always(http.StatusOK))
	h := newHarness(t)
	slow := fast
	slow.MaxAttempts = 1000
	slow.BreakerFailures = 3
	h.d.Apply(map[string]Target{
		// The hung sink's sends outlast the test: a healthy lane that
		// waited behind them in any way would never finish.
		"hung":    {Sink: newPostSink(hung.URL, time.Minute), Type: "http", Settings: slow},
		"failing": {Sink: newPostSink(failing.URL, time.Second), Type: "http", Settings: slow},
		"healthy": {Sink: newPostSink(healthy.URL, time.Second), Type: "http", Settings: fast},
	})
	start := time.Now()
	const n = 100
	h.put(t, n, "hung", "failing", "healthy")
	// No bound on the time, which a loaded machine stretches: every worker
	// of the hung sink is stuck in a send that outlasts the test, and the
	// healthy sink gets everything all the same.
	eventually(t, 30*time.Second, "the hung sink's workers held", func() bool { return held.Load() == int32(slow.Workers) })
	eventually(t, 30*time.Second, "healthy deliveries", func() bool { return len(healthy.delivered()) == n })
	took := time.Since(start)
	if answered := len(hung.requests()); answered != 0 {
		t.Errorf("hung server answered %d requests, want all still held", answered)
	}
	if len(hung.delivered()) != 0 || len(failing.delivered()) != 0 {
		t.Fatal("dead sinks delivered something")
	}
	t.Logf("healthy sink: %d events in %v beside a hung and a failing sink", n, took)
}

func TestApplyUnchangedKeepsLane(t *testing.T) {
	srv := newServer(t, always(http.StatusServiceUnavailable))
	h := newHarness(t)
	set := fast
	set.MaxAttempts, set.BreakerFailures, set.BreakerOpenFor = 1000, 2, time.Minute
	sink := newPostSink(srv.URL, time.Second)
	h.d.Apply(map[string]Target{"crm": {Sink: sink, Type: "http", Settings: set}})
	h.put(t, 1, "crm")
	eventually(t, 2*time.Second, "breaker open", func() bool { return h.d.Status()["crm"].Breaker == "open" })
	h.d.mu.Lock()
	before := h.d.lanes["crm"]
	h.d.mu.Unlock()

	other := newServer(t, always(http.StatusOK))
	h.d.Apply(map[string]Target{
		"crm":   {Sink: sink, Type: "http", Settings: set},
		"other": {Sink: newPostSink(other.URL, time.Second), Type: "http", Settings: fast},
	})
	h.d.mu.Lock()
	after := h.d.lanes["crm"]
	h.d.mu.Unlock()
	if after != before {
		t.Fatal("an unchanged sink got a new lane")
	}
	if st := h.d.Status()["crm"]; st.Breaker != "open" {
		t.Fatalf("breaker after reload = %s, want still open", st.Breaker)
	}
	if sink.closed.Load() != 0 {
		t.Fatal("an unchanged sink was closed")
	}
	if len(h.d.Status()) != 2 {
		t.Fatalf("status = %v", h.d.Status())
	}
}

func TestApplyChangedSwaps(t *testing.T) {
	oldSrv := newServer(t, always(http.StatusServiceUnavailable))
	newSrv := newServer(t, always(http.StatusOK))
	h := newHarness(t)
	set := fast
	set.MaxAttempts, set.BreakerFailures, set.BreakerOpenFor = 1000, 2, time.Minute
	oldSink := newPostSink(oldSrv.URL, time.Second)
	h.d.Apply(map[string]Target{"crm": {Sink: oldSink, Type: "http", Settings: set}})
	ids := h.put(t, 3, "crm")
	eventually(t, 2*time.Second, "breaker open", func() bool { return h.d.Status()["crm"].Breaker == "open" })

	// Same sink, new settings: a new lane and breaker, but the sink stays open.
	set2 := set
	set2.Workers = 3
	h.d.mu.Lock()
	lane1 := h.d.lanes["crm"]
	h.d.mu.Unlock()
	h.d.Apply(map[string]Target{"crm": {Sink: oldSink, Type: "http", Settings: set2}})
	h.d.mu.Lock()
	lane2 := h.d.lanes["crm"]
	h.d.mu.Unlock()
	if lane2 == lane1 || lane2.cb == lane1.cb {
		t.Fatal("changed settings kept the old lane or breaker")
	}
	if st := h.d.Status()["crm"]; st.Workers != 3 {
		t.Fatalf("status after settings change = %+v, want 3 workers", st)
	}

	// New sink: the deliveries still owed go to it, and the old one is closed.
	newSink := newPostSink(newSrv.URL, time.Second)
	h.d.Apply(map[string]Target{"crm": {Sink: newSink, Type: "http", Settings: set2}})
	eventually(t, 2*time.Second, "delivery through the new sink", func() bool { return len(newSrv.delivered()) == len(ids) })
	eventually(t, 2*time.Second, "old sink closed", func() bool { return oldSink.closed.Load() == 1 })
	if newSink.closed.Load() != 0 {
		t.Fatal("the new sink was closed")
	}
	for id, n := range newSrv.delivered() {
		if n != 1 {
			t.Fatalf("%s delivered %d times", id, n)
		}
	}
}

func TestApplyRemovedDrainsThenCloses(t *testing.T) {
	release := make(chan struct{})
	srv := newServer(t, func(r *http.Request, _ int) (int, string) {
		select {
		case <-release:
			return http.StatusOK, ""
		case <-r.Context().Done():
			return http.StatusServiceUnavailable, ""
		}
	})
	h := newHarness(t)
	sink := newPostSink(srv.URL, 5*time.Second)
	h.d.Apply(map[string]Target{"gone": {Sink: sink, Type: "http", Settings: fast}})
	ids := h.put(t, 5, "gone")
	eventually(t, time.Second, "sends in flight", func() bool { return len(h.d.Status()) == 1 && h.q.Depth("gone") == 5 })

	h.d.Apply(map[string]Target{})
	if st, ok := h.d.Status()["gone"]; !ok || !st.Draining {
		t.Fatalf("removed sink status = %+v, %v; want draining", st, ok)
	}
	// Several housekeeping passes (which close drained sinks) while owed:
	// nothing signals a close that is (rightly) not made.
	time.Sleep(3 * h.d.every)
	if sink.closed.Load() != 0 {
		t.Fatal("removed sink closed while still owed deliveries")
	}
	close(release)
	eventually(t, 2*time.Second, "drain", func() bool { return len(srv.delivered()) == len(ids) })
	eventually(t, 2*time.Second, "removed sink closed", func() bool { return sink.closed.Load() == 1 })
	if _, ok := h.d.Status()["gone"]; ok {
		t.Fatal("drained sink still in status")
	}
	if recs := h.deadLetters(t); len(recs) != 0 {
		t.Fatalf("dead letters: %v", recs)
	}
}

func TestUnknownSinkDeadLettered(t *testing.T) {
	srv := newServer(t, always(http.StatusOK))
	h := newHarness(t)
	// Owed from before a restart whose config dropped "ghost".
	ids := h.put(t, 2, "ghost", "crm")
	h.d.Apply(map[string]Target{"crm": {Sink: newPostSink(srv.URL, time.Second), Type: "http", Settings: fast}})
	eventually(t, 2*time.Second, "ghost dead-lettered", func() bool { return h.q.Depth("ghost") == 0 })
	eventually(t, 2*time.Second, "crm delivered", func() bool { return len(srv.delivered()) == 2 })
	recs := h.deadLetters(t)
	if len(recs) != 2 {
		t.Fatalf("%d dead letters, want 2", len(recs))
	}
	for i, r := range recs {
		if r.Sink != "ghost" || r.EventID != ids[i] || r.Error != `sink "ghost" is not in the config` {
			t.Fatalf("record %d = %+v", i, r)
		}
	}
	if _, ok := h.d.Status()["ghost"]; ok {
		t.Fatal("unknown sink shown in status")
	}
}

func TestCloseMemoryDeadLettersRest(t *testing.T) {
	srv := newServer(t, func(*http.Request, int) (int, string) { return http.StatusServiceUnavailable, "3600" })
	h := newHarness(t)
	h.d.Apply(map[string]Target{"crm": {Sink: newPostSink(srv.URL, time.Second), Type: "http", Settings: fast}})
	ids := h.put(t, 4, "crm")
	eventually(t, 2*time.Second, "first attempts", func() bool { return len(srv.requests()) == 4 })

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := h.d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	recs := h.deadLetters(t)
	if len(recs) != 4 {
		t.Fatalf("%d dead letters after Close, want 4", len(recs))
	}
	for i, r := range recs {
		if r.EventID != ids[i] || r.Error != shutdownError || r.Attempts != 1 {
			t.Fatalf("record %d = %+v", i, r)
		}
	}
	if len(h.logs.find("deliveries dead-lettered at shutdown")) != 1 {
		t.Fatal("shutdown dead letters not logged")
	}
	h.d.Apply(map[string]Target{"crm": {}}) // ignored after Close
}

// TestCloseCutsHungSends: Close waits for in-flight sends until its deadline,
// then cancels them; the cancelled delivery is dead-lettered, not lost.
func TestCloseCutsHungSends(t *testing.T) {
	arrived := make(chan struct{}, 1)
	srv := newServer(t, func(r *http.Request, _ int) (int, string) {
		arrived <- struct{}{}
		<-r.Context().Done()
		return http.StatusOK, ""
	})
	h := newHarness(t)
	sink := newPostSink(srv.URL, time.Minute)
	h.d.Apply(map[string]Target{"crm": {Sink: sink, Type: "http", Settings: fast}})
	h.put(t, 1, "crm")
	select {
	case <-arrived:
	case <-time.After(2 * time.Second):
		t.Fatal("no request reached the server")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := h.d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Close took %v with a 100ms deadline", took)
	}
	if sink.closed.Load() != 1 {
		t.Fatal("sink not closed")
	}
	recs := h.deadLetters(t)
	if len(recs) != 1 || recs[0].Attempts != 0 || recs[0].Error != shutdownError {
		t.Fatalf("dead letters = %+v; want the cut-short delivery, no attempt spent", recs)
	}
}

func TestBackoff(t *testing.T) {
	s := Settings{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	tests := []struct {
		attempts int
		ceiling  time.Duration
	}{
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{60, time.Second},
	}
	for _, tc := range tests {
		var hi time.Duration
		lo := tc.ceiling
		for range 2000 {
			d := backoff(s, tc.attempts)
			if d < 0 || d > tc.ceiling {
				t.Fatalf("backoff(%d) = %v, outside [0, %v]", tc.attempts, d, tc.ceiling)
			}
			hi, lo = max(hi, d), min(lo, d)
		}
		// Full jitter spreads over the whole range.
		if hi < tc.ceiling*9/10 || lo > tc.ceiling/10 {
			t.Fatalf("backoff(%d) ranged over [%v, %v], want most of [0, %v]", tc.attempts, lo, hi, tc.ceiling)
		}
	}
}

func TestSettingsDefaults(t *testing.T) {
	got := Settings{}.withDefaults()
	want := Settings{MaxAttempts: 8, InitialBackoff: 500 * time.Millisecond, MaxBackoff: time.Minute,
		BreakerFailures: 5, BreakerOpenFor: 30 * time.Second, Workers: 4}
	if got != want {
		t.Fatalf("defaults = %+v", got)
	}
}

// BenchmarkLane measures the hot path: Put, Take, Send to a no-op sink,
// metrics, Done.
func BenchmarkLane(b *testing.B) {
	for _, workers := range []int{1, 4} {
		b.Run("workers="+string(rune('0'+workers)), func(b *testing.B) {
			q := queue.NewMemory(1 << 30)
			defer q.Close()
			d := New(q, nil, nil, nil)
			sink := &noopSink{target: int64(b.N), done: make(chan struct{})}
			set := fast
			set.Workers = workers
			evs := make([]*sinks.Event, 1024)
			for i := range evs {
				evs[i] = &sinks.Event{ID: "e", ReceivedAt: time.Now(), Body: []byte(`{"event":"x"}`)}
			}
			to := []string{"noop"}
			b.ReportAllocs()
			b.ResetTimer()
			d.Apply(map[string]Target{"noop": {Sink: sink, Type: "noop", Settings: set}})
			for i := range b.N {
				for q.Put(context.Background(), evs[i%len(evs)], to) != nil {
				}
			}
			<-sink.done
			b.StopTimer()
			d.Close(context.Background())
		})
	}
}
