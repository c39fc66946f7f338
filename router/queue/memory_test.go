package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

func event(id string, size int) *sinks.Event {
	return &sinks.Event{ID: id, Source: "platform", ReceivedAt: time.Now(), Body: make([]byte, size)}
}

func TestMemoryBound(t *testing.T) {
	const body = 1000
	perEvent := int64(body + 2*DeliveryOverhead) // owed to two sinks
	q := NewMemory(2 * perEvent)
	defer q.Close()
	ctx := t.Context()

	for i := range 2 {
		if err := q.Put(ctx, event(fmt.Sprint(i), body), []string{"a", "b"}); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if got := q.Used(); got != 2*perEvent {
		t.Fatalf("Used = %d, want %d (body counted once per event)", got, 2*perEvent)
	}
	if err := q.Put(ctx, event("full", body), []string{"a"}); !errors.Is(err, ErrFull) {
		t.Fatalf("put over the bound = %v, want ErrFull", err)
	}
	if got := q.Depth("a"); got != 2 {
		t.Fatalf("ErrFull recorded something: Depth(a) = %d", got)
	}

	// Done for one sink releases only its overhead: the body is still owed to b.
	da, _ := q.Take(ctx, "a")
	if err := q.Done(da); err != nil {
		t.Fatal(err)
	}
	if got := q.Used(); got != 2*perEvent-DeliveryOverhead {
		t.Fatalf("Used after one Done = %d, want %d", got, 2*perEvent-DeliveryOverhead)
	}
	if err := q.Put(ctx, event("still-full", body), []string{"a"}); !errors.Is(err, ErrFull) {
		t.Fatalf("put = %v, want ErrFull while the body is owed to b", err)
	}
	db, _ := q.Take(ctx, "b")
	if db.Event != da.Event {
		t.Fatal("the deliveries of one event must share the event")
	}
	if err := q.Done(db); err != nil {
		t.Fatal(err)
	}
	if got := q.Used(); got != perEvent {
		t.Fatalf("Used after both Done = %d, want %d", got, perEvent)
	}
	if err := q.Put(ctx, event("fits", body), []string{"a", "b"}); err != nil {
		t.Fatalf("put after release: %v", err)
	}
	if err := q.Done(db); err == nil {
		t.Fatal("a second Done of the same delivery must fail, not release twice")
	}
	if got := q.Used(); got != 2*perEvent {
		t.Fatalf("Used = %d, want %d", got, 2*perEvent)
	}
}

func TestMemoryPutErrors(t *testing.T) {
	q := NewMemory(1 << 20)
	if err := q.Put(t.Context(), event("x", 1), nil); err == nil {
		t.Fatal("put with no sinks must fail")
	}
	if err := q.Put(t.Context(), event("huge", 2<<20), []string{"a"}); !errors.Is(err, ErrFull) {
		t.Fatalf("put larger than the bound = %v, want ErrFull", err)
	}
	q.Close()
	if err := q.Put(t.Context(), event("x", 1), []string{"a"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("put after Close = %v, want ErrClosed", err)
	}
	if _, err := q.Take(t.Context(), "a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("take after Close = %v, want ErrClosed", err)
	}
}

func TestMemoryRetryOrder(t *testing.T) {
	q := NewMemory(1 << 20)
	defer q.Close()
	ctx := t.Context()
	for _, id := range []string{"1", "2", "3"} {
		if err := q.Put(ctx, event(id, 10), []string{"a"}); err != nil {
			t.Fatal(err)
		}
	}
	d1, _ := q.Take(ctx, "a")
	d1.Attempts++
	start := time.Now()
	if err := q.Retry(d1, 150*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 3 {
		d, err := q.Take(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, d.Event.ID)
		if d.Event.ID == "1" {
			if gap := time.Since(start); gap < 150*time.Millisecond {
				t.Fatalf("retried after %v, want ≥ 150ms", gap)
			}
			if d.Attempts != 1 {
				t.Fatalf("Attempts = %d, want 1", d.Attempts)
			}
		}
		if err := q.Done(d); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(got) != "[2 3 1]" {
		t.Fatalf("order = %v, want [2 3 1]", got)
	}
	if q.Used() != 0 || q.Depth("a") != 0 || len(q.Pending()) != 0 {
		t.Fatalf("queue not empty: used %d depth %d pending %v", q.Used(), q.Depth("a"), q.Pending())
	}
}

func TestMemoryTakeUnblocks(t *testing.T) {
	tests := []struct {
		name string
		stop func(q *Memory, cancel context.CancelFunc)
		want error
	}{
		{"ctx cancel", func(_ *Memory, cancel context.CancelFunc) { cancel() }, context.Canceled},
		{"close", func(q *Memory, _ context.CancelFunc) { q.Close() }, ErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := NewMemory(1 << 20)
			defer q.Close()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, err := q.Take(ctx, "a")
				errc <- err
			}()
			time.Sleep(20 * time.Millisecond)
			tc.stop(q, cancel)
			select {
			case err := <-errc:
				if !errors.Is(err, tc.want) {
					t.Fatalf("Take = %v, want %v", err, tc.want)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Take did not unblock")
			}
		})
	}
}

func TestMemoryRemaining(t *testing.T) {
	q := NewMemory(1 << 20)
	ctx := t.Context()
	for _, id := range []string{"1", "2", "3"} {
		if err := q.Put(ctx, event(id, 10), []string{"a", "b"}); err != nil {
			t.Fatal(err)
		}
	}
	d, _ := q.Take(ctx, "a")
	q.Done(d)
	d, _ = q.Take(ctx, "a")
	q.Retry(d, time.Hour)
	q.Close()
	var got []string
	for _, r := range q.Remaining() {
		got = append(got, r.Sink+r.Event.ID)
	}
	if fmt.Sprint(got) != "[b1 a2 b2 a3 b3]" {
		t.Fatalf("Remaining = %v", got)
	}
}

// TestMemoryConcurrent puts from several goroutines while workers take,
// retry once and finish; every delivery is done exactly once and the bound
// is fully released at the end.
func TestMemoryConcurrent(t *testing.T) {
	q := NewMemory(64 << 10)
	defer q.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	const producers, perProducer = 4, 300
	sinkNames := []string{"a", "b", "c"}
	var done sync.Map
	var total atomic.Int64
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := 0; i < perProducer; {
				err := q.Put(ctx, event(fmt.Sprint(p, "-", i), 100), sinkNames)
				if errors.Is(err, ErrFull) {
					time.Sleep(time.Millisecond) // the bound pushes back; workers drain
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				i++
			}
		})
	}
	want := int64(producers * perProducer * len(sinkNames))
	var workers sync.WaitGroup
	wctx, stop := context.WithCancel(ctx)
	for _, sink := range sinkNames {
		for range 3 {
			workers.Go(func() {
				for {
					d, err := q.Take(wctx, sink)
					if err != nil {
						return
					}
					if d.Attempts == 0 && d.Event.ID[len(d.Event.ID)-1] == '7' {
						d.Attempts++
						q.Retry(d, time.Millisecond)
						continue
					}
					if _, dup := done.LoadOrStore(sink+"/"+d.Event.ID, true); dup {
						t.Errorf("%s/%s delivered twice", sink, d.Event.ID)
					}
					if err := q.Done(d); err != nil {
						t.Error(err)
					}
					if total.Add(1) == want {
						stop()
					}
				}
			})
		}
	}
	wg.Wait()
	workers.Wait()
	stop()
	if total.Load() != want {
		t.Fatalf("done %d deliveries, want %d", total.Load(), want)
	}
	if q.Used() != 0 || len(q.Pending()) != 0 {
		t.Fatalf("after all done: used %d pending %v", q.Used(), q.Pending())
	}
}
