package dispatch

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// timedSink records when each event was sent, alone or in a batch.
type timedSink struct {
	batch bool
	mu    sync.Mutex
	at    []time.Time
	ids   map[string]int
	sizes []int
}

func (s *timedSink) record(evs []*sinks.Event) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]int{}
	}
	for _, ev := range evs {
		s.at = append(s.at, now)
		s.ids[ev.ID]++
	}
	s.sizes = append(s.sizes, len(evs))
}

func (s *timedSink) Send(_ context.Context, ev *sinks.Event) error {
	s.record([]*sinks.Event{ev})
	return nil
}

func (s *timedSink) Close(context.Context) error { return nil }

// batchTimedSink is a timedSink that also takes batches.
type batchTimedSink struct{ timedSink }

func (s *batchTimedSink) SendBatch(_ context.Context, evs []*sinks.Event) []error {
	s.record(evs)
	return nil
}

func (s *timedSink) snapshot() ([]time.Time, map[string]int, []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := map[string]int{}
	for k, v := range s.ids {
		ids[k] = v
	}
	return append([]time.Time(nil), s.at...), ids, append([]int(nil), s.sizes...)
}

// TestRateLimit measures the delivered rate of a rate-limited sink: with a
// backlog of n deliveries, a bucket of rate r and burst b sends b at once and
// the rest at r per second, so the last is sent no sooner than (n-b)/r after
// the first; deliveries beyond the limit wait in the queue (its depth shows
// them), none is dropped, retried or dead-lettered.
func TestRateLimit(t *testing.T) {
	const n, rate, burst = 45, 20.0, 5
	for _, name := range []string{"send", "batch"} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			var ts *timedSink
			var s sinks.Sink
			if name == "batch" {
				b := &batchTimedSink{}
				ts, s = &b.timedSink, b
			} else {
				ts = &timedSink{}
				s = ts
			}
			ids := h.put(t, n, "limited")
			set := fast
			set.Rate, set.Burst = rate, burst
			start := time.Now()
			h.d.Apply(map[string]Target{"limited": {Sink: s, Type: "http", Settings: set}})
			eventually(t, 5*time.Second, "the burst", func() bool { at, _, _ := ts.snapshot(); return len(at) >= burst })
			if d := h.q.Depth("limited"); d < n-2*burst {
				t.Errorf("depth %d just after the burst: the deliveries beyond the limit should wait in the queue", d)
			}
			eventually(t, 20*time.Second, "every delivery", func() bool { return h.q.Depth("limited") == 0 })
			elapsed := time.Since(start)
			at, got, sizes := ts.snapshot()
			for _, id := range ids {
				if got[id] != 1 {
					t.Errorf("event %s sent %d times", id, got[id])
				}
			}
			span := at[len(at)-1].Sub(at[0])
			min := time.Duration(float64(n-burst) / rate * float64(time.Second))
			t.Logf("%d deliveries in %v (first to last %v): %.1f/s with rate %v/s, burst %d; batch sizes %v",
				n, elapsed.Round(time.Millisecond), span.Round(time.Millisecond), float64(n-burst)/span.Seconds(), rate, burst, sizes)
			// The token bucket cannot be beaten; a loaded machine only makes it slower.
			if span < min-50*time.Millisecond {
				t.Errorf("first to last delivery took %v, want at least %v", span, min)
			}
			if span > 3*min {
				t.Errorf("first to last delivery took %v, more than three times the %v the limit allows", span, min)
			}
			// In any second, at most rate + burst deliveries. A time is taken
			// when the sink is called, a moment after the limiter let the
			// delivery go; on a loaded machine the first of a window can be
			// late by that moment (26 in a second was seen at load 20): allow
			// it 100ms, as the bound on the span allows 50ms.
			most := burst + int(rate*1.1)
			for i := range at {
				j := i
				for j < len(at) && at[j].Sub(at[i]) < time.Second {
					j++
				}
				if j-i > most {
					t.Fatalf("%d deliveries within one second from delivery %d, want at most %d (rate %v/s, burst %d, 100ms for the clock)", j-i, i, most, rate, burst)
				}
			}
			for _, sz := range sizes {
				if sz > burst {
					t.Errorf("a batch of %d, larger than the burst %d", sz, burst)
				}
			}
			l := h.d.lanes["limited"]
			if r, f, dl := counter(t, l.mRetryable), l.failed.Load(), len(h.deadLetters(t)); r != 0 || f != 0 || dl != 0 {
				t.Errorf("retryable %v, failed %d, dead letters %d: waiting for the limit is no failure", r, f, dl)
			}
		})
	}
}
