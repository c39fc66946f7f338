package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

func delivery(id, sink string) *Delivery {
	return &Delivery{Event: &sinks.Event{ID: id}, Sink: sink}
}

func takeIDs(t *testing.T, s *Scheduler, sink string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	var ids []string
	for range n {
		d, err := s.Take(ctx, sink)
		if err != nil {
			t.Fatalf("take %d from %s: %v (got %v)", len(ids), sink, err, ids)
		}
		ids = append(ids, d.Event.ID)
	}
	return ids
}

func TestSchedulerOrder(t *testing.T) {
	tests := []struct {
		name string
		run  func(s *Scheduler) // pushes, takes and delays; the sink is "a"
		want []string
	}{
		{
			name: "fifo",
			run: func(s *Scheduler) {
				for i := range 40 {
					s.Push(delivery(fmt.Sprint(i), "a"))
				}
			},
			want: func() []string {
				var w []string
				for i := range 40 {
					w = append(w, fmt.Sprint(i))
				}
				return w
			}(),
		},
		{
			name: "retry due again goes back in acceptance place",
			run: func(s *Scheduler) {
				first := delivery("1", "a")
				s.Push(first)
				d, _ := s.Take(context.Background(), "a")
				s.Push(delivery("2", "a"))
				s.Push(delivery("3", "a"))
				s.Delay(d, 0)
			},
			want: []string{"1", "2", "3"},
		},
		{
			name: "retries given back in any order come back in acceptance order",
			run: func(s *Scheduler) {
				var taken []*Delivery
				for i := range 7 {
					s.Push(delivery(fmt.Sprint(i), "a"))
					d, _ := s.Take(context.Background(), "a")
					taken = append(taken, d)
				}
				s.Push(delivery("7", "a"))
				for _, i := range []int{4, 6, 1, 5, 0, 3, 2} {
					s.Delay(taken[i], 0)
				}
			},
			want: []string{"0", "1", "2", "3", "4", "5", "6", "7"},
		},
		{
			name: "waiting retry lets later ones pass",
			run: func(s *Scheduler) {
				s.Push(delivery("1", "a"))
				d, _ := s.Take(context.Background(), "a")
				s.Delay(d, 80*time.Millisecond)
				s.Push(delivery("2", "a"))
				s.Push(delivery("3", "a"))
			},
			want: []string{"2", "3", "1"},
		},
		{
			name: "shorter delay first",
			run: func(s *Scheduler) {
				s.Push(delivery("1", "a"))
				s.Push(delivery("2", "a"))
				d1, _ := s.Take(context.Background(), "a")
				d2, _ := s.Take(context.Background(), "a")
				s.Delay(d1, 120*time.Millisecond)
				s.Delay(d2, 30*time.Millisecond)
			},
			want: []string{"2", "1"},
		},
		{
			name: "other sinks do not interfere",
			run: func(s *Scheduler) {
				s.Push(delivery("x", "b"))
				s.Push(delivery("1", "a"))
				s.Push(delivery("y", "b"))
				s.Push(delivery("2", "a"))
			},
			want: []string{"1", "2"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewScheduler()
			defer s.Close()
			tc.run(s)
			got := takeIDs(t, s, "a", len(tc.want))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("order = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSchedulerDelayIsHonoured(t *testing.T) {
	s := NewScheduler()
	defer s.Close()
	s.Push(delivery("1", "a"))
	d, _ := s.Take(t.Context(), "a")
	start := time.Now()
	s.Delay(d, 100*time.Millisecond)
	if got := takeIDs(t, s, "a", 1); got[0] != "1" {
		t.Fatalf("got %v", got)
	}
	if gap := time.Since(start); gap < 100*time.Millisecond {
		t.Fatalf("delayed delivery came back after %v, want ≥ 100ms", gap)
	}
}

func TestSchedulerDepthPendingRemaining(t *testing.T) {
	s := NewScheduler()
	defer s.Close()
	for i := range 3 {
		s.Push(delivery(fmt.Sprint(i), "a"))
	}
	s.Push(delivery("b0", "b"))
	d, _ := s.Take(t.Context(), "a") // in flight
	d2, _ := s.Take(t.Context(), "a")
	s.Delay(d2, time.Hour) // waiting
	if got := s.Depth("a"); got != 3 {
		t.Fatalf("Depth(a) = %d, want 3 (due, waiting and in flight)", got)
	}
	if got := fmt.Sprint(s.Pending()); got != "[a b]" {
		t.Fatalf("Pending = %s", got)
	}
	var ids []string
	for _, r := range s.Remaining() {
		ids = append(ids, r.Event.ID)
	}
	if got := fmt.Sprint(ids); got != "[0 1 2 b0]" {
		t.Fatalf("Remaining = %s, want acceptance order", got)
	}
	if !s.Done(d) || s.Done(d) {
		t.Fatal("Done must report true once for an in-flight delivery, then false")
	}
	if got := s.Depth("a"); got != 2 {
		t.Fatalf("Depth(a) after Done = %d, want 2", got)
	}
	if got := s.Depth("nobody"); got != 0 {
		t.Fatalf("Depth(nobody) = %d", got)
	}
}

func TestSchedulerTakeUnblocks(t *testing.T) {
	t.Run("ctx", func(t *testing.T) {
		s := NewScheduler()
		defer s.Close()
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(30*time.Millisecond, cancel)
		if _, err := s.Take(ctx, "a"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Take = %v, want context.Canceled", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		s := NewScheduler()
		time.AfterFunc(30*time.Millisecond, s.Close)
		if _, err := s.Take(t.Context(), "a"); !errors.Is(err, ErrClosed) {
			t.Fatalf("Take = %v, want ErrClosed", err)
		}
		if _, err := s.Take(t.Context(), "a"); !errors.Is(err, ErrClosed) {
			t.Fatalf("Take after Close = %v, want ErrClosed", err)
		}
	})
	t.Run("push wakes a blocked taker", func(t *testing.T) {
		s := NewScheduler()
		defer s.Close()
		time.AfterFunc(30*time.Millisecond, func() { s.Push(delivery("1", "a")) })
		if got := takeIDs(t, s, "a", 1); got[0] != "1" {
			t.Fatalf("got %v", got)
		}
	})
}

// TestSchedulerConcurrent has many takers and pushers per sink; every
// delivery must come out exactly once, with retries in the mix.
func TestSchedulerConcurrent(t *testing.T) {
	s := NewScheduler()
	defer s.Close()
	const sinksN, perSink, takers = 3, 500, 4
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for k := range sinksN {
		sink := fmt.Sprint("s", k)
		wg.Go(func() {
			for i := range perSink {
				s.Push(delivery(fmt.Sprint(sink, "-", i), sink))
			}
		})
		for range takers {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				defer cancel()
				for {
					mu.Lock()
					if seen[sink] == perSink {
						mu.Unlock()
						return
					}
					mu.Unlock()
					tctx, tcancel := context.WithTimeout(ctx, 50*time.Millisecond)
					d, err := s.Take(tctx, sink)
					tcancel()
					if err != nil {
						if ctx.Err() != nil {
							t.Errorf("sink %s: gave up before every delivery came out", sink)
							return
						}
						continue
					}
					if d.Attempts == 0 && len(d.Event.ID)%2 == 0 {
						d.Attempts++
						s.Delay(d, time.Millisecond)
						continue
					}
					s.Done(d)
					mu.Lock()
					seen[sink]++
					seen[d.Event.ID]++
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	for id, n := range seen {
		if len(id) > 2 && n != 1 {
			t.Fatalf("%s delivered %d times", id, n)
		}
	}
	if p := s.Pending(); len(p) != 0 {
		t.Fatalf("Pending after all done = %v", p)
	}
}

func BenchmarkSchedulerPushTake(b *testing.B) {
	s := NewScheduler()
	defer s.Close()
	ds := make([]*Delivery, 1024)
	for i := range ds {
		ds[i] = delivery("x", "a")
	}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d := ds[i%len(ds)]
		d.seq = 0
		s.Push(d)
		got, err := s.Take(ctx, "a")
		if err != nil {
			b.Fatal(err)
		}
		s.Done(got)
	}
}

func TestSchedulerTakeWithDoneCtx(t *testing.T) {
	s := NewScheduler()
	defer s.Close()
	s.Push(delivery("1", "a"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if d, err := s.Take(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Take with a done ctx = %v, %v; want context.Canceled even with a due delivery", d, err)
	}
	if s.Depth("a") != 1 {
		t.Fatal("the due delivery must stay due")
	}
}

func ids(ds []*Delivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Event.ID)
	}
	return out
}

func TestSchedulerTakeBatch(t *testing.T) {
	tests := []struct {
		name  string
		push  []string // in order, for sink "a"
		retry string   // taken, then made due again at once, before the take
		limit int
		want  []string
		rest  []string // what TakeDue then finds
	}{
		{name: "all due", push: []string{"1", "2", "3"}, limit: 10, want: []string{"1", "2", "3"}},
		{name: "up to limit", push: []string{"1", "2", "3"}, limit: 2, want: []string{"1", "2"}, rest: []string{"3"}},
		{name: "limit below one takes one", push: []string{"1", "2"}, limit: 0, want: []string{"1"}, rest: []string{"2"}},
		{name: "retried in acceptance place", push: []string{"1", "2", "3"}, retry: "1", limit: 10, want: []string{"1", "2", "3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewScheduler()
			defer s.Close()
			for _, id := range tc.push {
				s.Push(delivery(id, "a"))
			}
			s.Push(delivery("other", "b"))
			if tc.retry != "" {
				d, err := s.Take(t.Context(), "a")
				if err != nil || d.Event.ID != tc.retry {
					t.Fatalf("take = %v, %v", d, err)
				}
				s.Delay(d, 0)
			}
			got, err := s.TakeBatch(t.Context(), "a", tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(ids(got)) != fmt.Sprint(tc.want) {
				t.Errorf("TakeBatch = %v, want %v", ids(got), tc.want)
			}
			if rest := s.TakeDue("a", 10); fmt.Sprint(ids(rest)) != fmt.Sprint(tc.rest) {
				t.Errorf("TakeDue after = %v, want %v", ids(rest), tc.rest)
			}
			if n := s.Depth("a"); n != len(tc.push) {
				t.Errorf("depth = %d, want %d (all in flight)", n, len(tc.push))
			}
			for _, d := range got {
				if !s.Done(d) {
					t.Errorf("%s not in flight", d.Event.ID)
				}
			}
		})
	}
}

func TestSchedulerTakeBatchBlocks(t *testing.T) {
	t.Run("until the first is due", func(t *testing.T) {
		s := NewScheduler()
		defer s.Close()
		d := delivery("1", "a")
		s.Delay(d, 30*time.Millisecond)
		start := time.Now()
		got, err := s.TakeBatch(t.Context(), "a", 10)
		if err != nil || len(got) != 1 || got[0] != d {
			t.Fatalf("TakeBatch = %v, %v", ids(got), err)
		}
		if waited := time.Since(start); waited < 25*time.Millisecond {
			t.Errorf("returned after %v, before the delay", waited)
		}
	})
	t.Run("ctx", func(t *testing.T) {
		s := NewScheduler()
		defer s.Close()
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(30*time.Millisecond, cancel)
		if _, err := s.TakeBatch(ctx, "a", 10); !errors.Is(err, context.Canceled) {
			t.Fatalf("TakeBatch = %v, want context.Canceled", err)
		}
		s.Push(delivery("1", "a"))
		if got, err := s.TakeBatch(ctx, "a", 10); !errors.Is(err, context.Canceled) {
			t.Fatalf("TakeBatch with done ctx = %v, %v; want context.Canceled", ids(got), err)
		}
	})
	t.Run("close", func(t *testing.T) {
		s := NewScheduler()
		s.Push(delivery("1", "b"))
		time.AfterFunc(30*time.Millisecond, s.Close)
		if _, err := s.TakeBatch(t.Context(), "a", 10); !errors.Is(err, ErrClosed) {
			t.Fatalf("TakeBatch = %v, want ErrClosed", err)
		}
		if got := s.TakeDue("b", 10); got != nil {
			t.Fatalf("TakeDue after Close = %v, want nothing", ids(got))
		}
	})
	t.Run("leftover wakes another taker", func(t *testing.T) {
		s := NewScheduler()
		defer s.Close()
		got := make(chan []string, 2)
		for range 2 {
			go func() {
				ds, _ := s.TakeBatch(t.Context(), "a", 2)
				got <- ids(ds)
			}()
		}
		time.Sleep(20 * time.Millisecond) // both takers wait
		s.mu.Lock()
		// Pushed at once, under the lock, so that the first taker finds all three.
		l := s.lane("a")
		for _, id := range []string{"1", "2", "3"} {
			s.seq++
			d := delivery(id, "a")
			d.seq = s.seq
			l.fresh.push(d)
		}
		l.wake()
		s.mu.Unlock()
		var all []string
		for range 2 {
			select {
			case ids := <-got:
				all = append(all, ids...)
			case <-time.After(2 * time.Second):
				t.Fatalf("a taker stayed blocked with work left; got %v", all)
			}
		}
		if len(all) != 3 {
			t.Errorf("took %v, want 3 deliveries once each", all)
		}
	})
}
