package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// batchSink is a sinks.BatchSender whose answer per event the test sets; it
// records every call, single or batch, as the list of event ids it got.
type batchSink struct {
	answer func(ctx context.Context, ev *sinks.Event) error

	mu    sync.Mutex
	calls [][]string
}

func (s *batchSink) Send(ctx context.Context, ev *sinks.Event) error {
	s.record([]*sinks.Event{ev})
	return s.answer(ctx, ev)
}

func (s *batchSink) SendBatch(ctx context.Context, evs []*sinks.Event) []error {
	s.record(evs)
	var errs []error
	for i, ev := range evs {
		if err := s.answer(ctx, ev); err != nil {
			if errs == nil {
				errs = make([]error, len(evs))
			}
			errs[i] = err
		}
	}
	return errs
}

func (s *batchSink) Close(context.Context) error { return nil }

func (s *batchSink) record(evs []*sinks.Event) {
	var ids []string
	for _, ev := range evs {
		ids = append(ids, ev.ID)
	}
	s.mu.Lock()
	s.calls = append(s.calls, ids)
	s.mu.Unlock()
}

func (s *batchSink) callList() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]string(nil), s.calls...)
}

// TestBatchOutcomes: in one batch, each delivery gets its own outcome, as
// if sent alone — done, retried with backoff, or dead-lettered — and its
// own metrics.
func TestBatchOutcomes(t *testing.T) {
	h := newHarness(t)
	ids := h.put(t, 6, "archive") // queued before the lane starts: one batch
	permanent, flaky := ids[1], ids[4]
	var flakyTries sync.Map
	sink := &batchSink{answer: func(_ context.Context, ev *sinks.Event) error {
		switch ev.ID {
		case permanent:
			return sinks.Permanent(errors.New("rejected"))
		case flaky:
			if _, again := flakyTries.LoadOrStore(ev.ID, true); !again {
				return errors.New("disk hiccup")
			}
		}
		return nil
	}}
	set := fast
	set.Workers = 1
	h.d.Apply(map[string]Target{"archive": {Sink: sink, Type: "file", Settings: set}})
	eventually(t, 2*time.Second, "all outcomes", func() bool { return h.q.Depth("archive") == 0 })

	calls := sink.callList()
	if fmt.Sprint(calls[0]) != fmt.Sprint(ids) {
		t.Errorf("first call = %v, want the whole batch %v", calls[0], ids)
	}
	if len(calls) != 2 || fmt.Sprint(calls[1]) != fmt.Sprint([]string{flaky}) {
		t.Errorf("calls = %v, want the batch then the flaky event's retry alone", calls)
	}
	recs := h.deadLetters(t)
	if len(recs) != 1 || recs[0].EventID != permanent || recs[0].Attempts != 1 || !strings.Contains(recs[0].Error, "rejected") {
		t.Errorf("dead letters = %+v, want only %s, after one attempt", recs, permanent)
	}
	l := h.d.lanes["archive"]
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"ok attempts", counter(t, l.mOK), 5},
		{"retryable attempts", counter(t, l.mRetryable), 1},
		{"permanent attempts", counter(t, l.mPermanent), 1},
		{"delivered", counter(t, l.mDelivered), 5},
		{"dead-lettered", counter(t, l.mDeadLetter), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestBatchBreaker: the breaker counts a batch as one call, failed if any
// delivery in it failed retryably (a permanent failure alone does not
// count); once open, no batch is sent and no attempt spent.
func TestBatchBreaker(t *testing.T) {
	tests := []struct {
		name     string
		fail     func(i int) error // for the i-th event of the batch
		wantOpen bool
	}{
		{name: "one retryable failure trips it", fail: func(i int) error {
			if i == 2 {
				return errors.New("unavailable")
			}
			return nil
		}, wantOpen: true},
		{name: "permanent failures do not", fail: func(i int) error {
			if i%2 == 0 {
				return sinks.Permanent(errors.New("bad payload"))
			}
			return nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ids := h.put(t, 4, "archive")
			index := map[string]int{}
			for i, id := range ids {
				index[id] = i
			}
			sink := &batchSink{answer: func(_ context.Context, ev *sinks.Event) error { return tc.fail(index[ev.ID]) }}
			set := fast
			set.Workers, set.BreakerFailures, set.BreakerOpenFor = 1, 1, time.Minute
			h.d.Apply(map[string]Target{"archive": {Sink: sink, Type: "file", Settings: set}})
			eventually(t, 2*time.Second, "the batch", func() bool { return len(sink.callList()) > 0 })
			if tc.wantOpen {
				// A window for the retry (backoff ≤ 10ms) to be wrongly sent
				// while open: nothing signals a send that is not made.
				time.Sleep(50 * time.Millisecond)
			} else {
				eventually(t, 2*time.Second, "all outcomes", func() bool { return h.q.Depth("archive") == 0 })
			}
			l := h.d.lanes["archive"]
			if got := l.cb.State().String(); (got == "open") != tc.wantOpen {
				t.Fatalf("breaker %s, want open %v", got, tc.wantOpen)
			}
			if tc.wantOpen {
				if calls := sink.callList(); len(calls) != 1 {
					t.Errorf("calls = %v, want only the first batch while open", calls)
				}
				if n := h.q.Depth("archive"); n != 1 {
					t.Errorf("depth %d, want the failed delivery still owed", n)
				}
			}
		})
	}
}

// TestBatchCancelledByClose: a batch send cut short by Close's deadline is
// not the destination's fault: its deliveries spend no attempt and, with a
// memory queue, are dead-lettered as undelivered at shutdown.
func TestBatchCancelledByClose(t *testing.T) {
	h := newHarness(t)
	ids := h.put(t, 3, "archive")
	arrived := make(chan struct{})
	var once sync.Once
	sink := &batchSink{answer: func(ctx context.Context, _ *sinks.Event) error {
		once.Do(func() { close(arrived) })
		<-ctx.Done()
		return ctx.Err()
	}}
	set := fast
	set.Workers = 1
	h.d.Apply(map[string]Target{"archive": {Sink: sink, Type: "file", Settings: set}})
	select {
	case <-arrived:
	case <-time.After(2 * time.Second):
		t.Fatal("no batch reached the sink")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := h.d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if calls := sink.callList(); len(calls) != 1 || len(calls[0]) != 3 {
		t.Errorf("calls = %v, want one batch of the 3", calls)
	}
	recs := h.deadLetters(t)
	if len(recs) != 3 {
		t.Fatalf("%d dead letters, want 3", len(recs))
	}
	for i, r := range recs {
		if r.EventID != ids[i] || r.Attempts != 0 || r.Error != shutdownError {
			t.Errorf("record %d = %+v; want %s, no attempt spent, %q", i, r, ids[i], shutdownError)
		}
	}
}
