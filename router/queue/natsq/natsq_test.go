package natsq

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

const natsURL = "nats://127.0.0.1:4222"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testStream is a stream of one test's own, deleted when the test ends.
type testStream struct {
	name, prefix string
	js           jetstream.JetStream
}

// newStream skips the test if no NATS server listens on 127.0.0.1:4222;
// .ci/run starts one.
func newStream(tb testing.TB) *testStream {
	tb.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:4222", time.Second)
	if err != nil {
		tb.Skipf("NATS with JetStream is not running on 127.0.0.1:4222 (.ci/run starts it): %v", err)
	}
	c.Close()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		tb.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	id := fmt.Sprintf("%x", rand.Uint64())
	ts := &testStream{name: "HRTEST_" + id, prefix: "hrtest." + id, js: js}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, ts.name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			tb.Errorf("delete stream %s: %v", ts.name, err)
		}
		nc.Close()
	})
	return ts
}

// open opens a Queue on ts and closes it when the test ends.
func (ts *testStream) open(tb testing.TB, opts ...Option) *Queue {
	tb.Helper()
	q, err := Open(natsURL, nil, append([]Option{WithStream(ts.name, ts.prefix)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { q.Close() })
	return q
}

// msgs is the number of messages the stream holds.
func (ts *testStream) msgs(tb testing.TB) uint64 {
	tb.Helper()
	s, err := ts.js.Stream(context.Background(), ts.name)
	if err != nil {
		tb.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

func event(body string) *sinks.Event {
	return &sinks.Event{
		ID:         fmt.Sprintf("ev-%016x", rand.Uint64()),
		Source:     "platform",
		ReceivedAt: time.Now().Add(-time.Second).Truncate(time.Microsecond),
		Body:       []byte(body),
	}
}

func take(tb testing.TB, q *Queue, sink string, within time.Duration) *queue.Delivery {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), within)
	defer cancel()
	d, err := q.Take(ctx, sink)
	if err != nil {
		tb.Fatalf("take %s: %v", sink, err)
	}
	return d
}

// nothing fails the test if a delivery for sink can be taken within d.
func nothing(tb testing.TB, q *Queue, sink string, d time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), d)
	defer cancel()
	if dv, err := q.Take(ctx, sink); err == nil {
		tb.Fatalf("took %s for %s, want nothing", dv.Event.ID, sink)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		tb.Fatalf("take %s: %v, want deadline exceeded", sink, err)
	}
}

// eventually polls cond, which Depth's caching makes necessary.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPutTakeDone(t *testing.T) {
	t.Parallel()
	ts := newStream(t)
	q := ts.open(t)
	var evs []*sinks.Event
	for i := range 5 {
		ev := event(fmt.Sprintf(`{"event":"channel.message_in","n":%d}`, i))
		evs = append(evs, ev)
		if err := q.Put(t.Context(), ev, []string{"crm", "archive"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := ts.msgs(t); n != 10 {
		t.Fatalf("stream holds %d messages, want 10 (one per sink)", n)
	}
	for _, sink := range []string{"crm", "archive"} {
		for i, want := range evs {
			d := take(t, q, sink, 5*time.Second)
			got := d.Event
			if d.Sink != sink || got.ID != want.ID || got.Source != want.Source ||
				!got.ReceivedAt.Equal(want.ReceivedAt) || string(got.Body) != string(want.Body) || d.Attempts != 0 {
				t.Fatalf("%s #%d: got %+v (sink %s, attempts %d), want %+v", sink, i, got, d.Sink, d.Attempts, want)
			}
			if err := q.Done(d); err != nil {
				t.Fatal(err)
			}
			if err := q.Done(d); err == nil {
				t.Fatal("second Done of the same delivery succeeded")
			}
		}
	}
	// Work-queue retention: acked deliveries are gone from the stream.
	if n := ts.msgs(t); n != 0 {
		t.Fatalf("stream holds %d messages after every Done, want 0", n)
	}
	nothing(t, q, "crm", 200*time.Millisecond)
	if err := q.Put(t.Context(), event("{}"), nil); err == nil {
		t.Fatal("Put with no sinks succeeded")
	}
}

func TestRetry(t *testing.T) {
	t.Parallel()
	ts := newStream(t)
	q := ts.open(t)
	first, second := event(`{"n":1}`), event(`{"n":2}`)
	for _, ev := range []*sinks.Event{first, second} {
		if err := q.Put(t.Context(), ev, []string{"crm"}); err != nil {
			t.Fatal(err)
		}
	}
	d := take(t, q, "crm", 5*time.Second)
	if d.Event.ID != first.ID {
		t.Fatalf("took %s, want %s first", d.Event.ID, first.ID)
	}
	const delay = 400 * time.Millisecond
	d.Attempts++ // as the dispatcher does before Retry
	retried := time.Now()
	if err := q.Retry(d, delay); err != nil {
		t.Fatal(err)
	}
	if err := q.Retry(d, delay); err == nil {
		t.Fatal("second Retry of the same delivery succeeded")
	}
	// The one waiting for its retry lets the later one pass.
	d2 := take(t, q, "crm", 5*time.Second)
	if d2.Event.ID != second.ID {
		t.Fatalf("took %s, want %s while the first waits", d2.Event.ID, second.ID)
	}
	if err := q.Done(d2); err != nil {
		t.Fatal(err)
	}
	d = take(t, q, "crm", 5*time.Second)
	if waited := time.Since(retried); waited < delay-50*time.Millisecond {
		t.Fatalf("retried delivery came back after %v, want ≥ %v", waited, delay)
	}
	if d.Event.ID != first.ID || d.Attempts != 1 {
		t.Fatalf("got %s with %d attempts, want %s with 1", d.Event.ID, d.Attempts, first.ID)
	}
	d.Attempts++
	if err := q.Retry(d, 0); err != nil {
		t.Fatal(err)
	}
	d = take(t, q, "crm", 5*time.Second)
	if d.Attempts != 2 {
		t.Fatalf("attempts %d after two retries, want 2", d.Attempts)
	}
	if err := q.Done(d); err != nil {
		t.Fatal(err)
	}
	if err := q.Done(&queue.Delivery{Event: first, Sink: "crm"}); err == nil {
		t.Fatal("Done of a delivery from elsewhere succeeded")
	}
}

// TestSharedWork: two instances on one stream split the deliveries, each
// taken by exactly one of them, whichever instance accepted it.
func TestSharedWork(t *testing.T) {
	t.Parallel()
	ts := newStream(t)
	qs := []*Queue{ts.open(t), ts.open(t)}
	const n = 300
	want := map[string]bool{}
	for i := range n {
		ev := event(fmt.Sprintf(`{"n":%d}`, i))
		want[ev.ID] = true
		if err := qs[i%2].Put(t.Context(), ev, []string{"crm"}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	taken := map[string]int{}
	perQueue := make([]int, 2)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for i, q := range qs {
		for range 4 {
			wg.Go(func() {
				for {
					d, err := q.Take(ctx, "crm")
					if err != nil {
						return
					}
					if err := q.Done(d); err != nil {
						t.Error(err)
					}
					mu.Lock()
					taken[d.Event.ID]++
					perQueue[i]++
					done := len(taken) == n
					mu.Unlock()
					if done {
						cancel()
					}
					time.Sleep(time.Millisecond) // a send takes time: let the other instance's pulls in
				}
			})
		}
	}
	wg.Wait()
	if len(taken) != n {
		t.Fatalf("took %d distinct deliveries, want %d", len(taken), n)
	}
	for id, k := range taken {
		if !want[id] || k != 1 {
			t.Fatalf("delivery %s taken %d times (known: %v), want once", id, k, want[id])
		}
	}
	if perQueue[0] == 0 || perQueue[1] == 0 {
		t.Fatalf("instances took %v: the work was not shared", perQueue)
	}
	t.Logf("instances took %v", perQueue)
}

// TestCloseRedelivers: a delivery taken by an instance that stops without
// Done goes to another instance once AckWait has passed.
func TestCloseRedelivers(t *testing.T) {
	t.Parallel()
	ts := newStream(t)
	const ackWait = time.Second
	q1, q2 := ts.open(t, WithAckWait(ackWait)), ts.open(t, WithAckWait(ackWait))
	ev := event(`{"event":"device.connected"}`)
	if err := q1.Put(t.Context(), ev, []string{"crm"}); err != nil {
		t.Fatal(err)
	}
	d := take(t, q1, "crm", 5*time.Second)
	closed := time.Now()
	if err := q1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q1.Done(d); err == nil {
		t.Fatal("Done after Close succeeded")
	}
	d2 := take(t, q2, "crm", 5*time.Second)
	if waited := time.Since(closed); waited < ackWait-100*time.Millisecond {
		t.Fatalf("redelivered after %v, want about AckWait (%v)", waited, ackWait)
	}
	if d2.Event.ID != ev.ID || string(d2.Event.Body) != string(ev.Body) {
		t.Fatalf("got %+v, want %+v", d2.Event, ev)
	}
	// NumDelivered - 1: an attempt that never reported counts as one.
	if d2.Attempts != 1 {
		t.Fatalf("attempts %d, want 1", d2.Attempts)
	}
	if err := q2.Done(d2); err != nil {
		t.Fatal(err)
	}
}

// TestHeldDeliveryKeptAlive: a delivery being sent for longer than AckWait
// is not handed to another instance.
func TestHeldDeliveryKeptAlive(t *testing.T) {
	t.Parallel()
	ts := newStream(t)
	// Kept in progress every AckWait/3: long enough to survive a loaded
	// machine (the race detector, other tests), short enough to outlast.
	const ackWait = 1500 * time.Millisecond
	q1, q2 := ts.open(t, WithAckWait(ackWait)), ts.open(t, WithAckWait(ackWait))
	if err := q1.Put(t.Context(), event(`{}`), []string{"slow"}); err != nil {
		t.Fatal(err)
	}
	d := take(t, q1, "slow", 5*time.Second)
	nothing(t, q2, "slow", 3*ackWait)
	if err := q1.Done(d); err != nil {
		t.Fatalf("Done after %v held: %v", 4*ackWait, err)
	}
	nothing(t, q2, "slow", 2*ackWait)
}

func TestErrFull(t *testing.T) {
	t.Parallel()
	ts := newStream(t)
	q := ts.open(t, WithMaxBytes(16<<10))
	body := `{"text":"` + strings.Repeat("x", 1000) + `"}`
	var accepted int
	var err error
	for accepted = 0; accepted < 100; accepted++ {
		if err = q.Put(t.Context(), event(body), []string{"a"}); err != nil {
			break
		}
	}
	if !errors.Is(err, queue.ErrFull) {
		t.Fatalf("after %d puts: %v, want ErrFull", accepted, err)
	}
	if accepted < 10 || accepted > 16 {
		t.Fatalf("accepted %d bodies of 1 KB in 16 KiB", accepted)
	}
	// One delivery done frees room for one message: a Put owed to two sinks
	// gets one stored, one refused, and must record neither.
	d := take(t, q, "a", 5*time.Second)
	if err := q.Done(d); err != nil {
		t.Fatal(err)
	}
	before := ts.msgs(t)
	if err := q.Put(t.Context(), event(body), []string{"a", "b"}); !errors.Is(err, queue.ErrFull) {
		t.Fatalf("put to two sinks with room for one: %v, want ErrFull", err)
	}
	// The stored one is withdrawn, in the background.
	eventually(t, "the refused put's stored message to be withdrawn", func() bool { return ts.msgs(t) == before })
	if err := q.Put(t.Context(), event(body), []string{"b"}); err != nil {
		t.Fatalf("put with room for it: %v", err)
	}
}

func TestDepthAndPending(t *testing.T) {
	t.Parallel()
	ts := newStream(t)
	q := ts.open(t)
	if p := q.Pending(); len(p) != 0 {
		t.Fatalf("pending %v on an empty stream", p)
	}
	if _, ok := q.Oldest("a"); ok {
		t.Fatal("oldest delivery on an empty stream")
	}
	first := event(`{}`)
	first.ReceivedAt = first.ReceivedAt.Add(-time.Minute)
	for _, ev := range []*sinks.Event{first, event(`{}`), event(`{}`)} {
		if err := q.Put(t.Context(), ev, []string{"a"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Put(t.Context(), event(`{}`), []string{"b"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "depths 3 and 1", func() bool { return q.Depth("a") == 3 && q.Depth("b") == 1 })
	// The oldest owed delivery's acceptance, for oldest_undelivered_seconds.
	if at, ok := q.Oldest("a"); !ok || !at.Equal(first.ReceivedAt) {
		t.Fatalf("oldest %v %v, want %v", at, ok, first.ReceivedAt)
	}
	if p := q.Pending(); !slices.Equal(p, []string{"a", "b"}) {
		t.Fatalf("pending %v, want [a b]", p)
	}
	// Another instance sees the same numbers without having taken anything.
	other := ts.open(t)
	if other.Depth("a") != 3 || !slices.Equal(other.Pending(), []string{"a", "b"}) {
		t.Fatalf("other instance: depth %d, pending %v", other.Depth("a"), other.Pending())
	}
	// In flight and waiting for a retry still count.
	d1 := take(t, q, "a", 5*time.Second)
	d2 := take(t, q, "a", 5*time.Second)
	if err := q.Retry(d2, time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(statsEvery)
	if got := q.Depth("a"); got != 3 {
		t.Fatalf("depth %d with one in flight and one waiting, want 3", got)
	}
	if err := q.Done(d1); err != nil {
		t.Fatal(err)
	}
	d := take(t, q, "b", 5*time.Second)
	if err := q.Done(d); err != nil {
		t.Fatal(err)
	}
	eventually(t, "depths 2 and 0", func() bool { return q.Depth("a") == 2 && q.Depth("b") == 0 })
	if _, ok := q.Oldest("b"); ok {
		t.Fatal("oldest delivery for a sink owed nothing")
	}
	if at, ok := q.Oldest("a"); !ok || at.Equal(first.ReceivedAt) {
		t.Fatalf("oldest %v %v after the first was done, want a later one", at, ok)
	}
	if p := q.Pending(); !slices.Equal(p, []string{"a"}) {
		t.Fatalf("pending %v, want [a]", p)
	}
}

func TestCloseAndCancel(t *testing.T) {
	t.Parallel()
	ts := newStream(t)
	q := ts.open(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := q.Take(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("take with a cancelled ctx: %v", err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := q.Take(t.Context(), "a")
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("blocked take after Close: %v, want ErrClosed", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Close took %v", took)
	}
	if err := q.Put(t.Context(), event(`{}`), []string{"a"}); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("put after Close: %v, want ErrClosed", err)
	}
	if _, err := q.Take(t.Context(), "a"); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("take after Close: %v, want ErrClosed", err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	ts := newStream(t)
	ctx := t.Context()
	if _, err := ts.js.CreateStream(ctx, jetstream.StreamConfig{Name: ts.name, Subjects: []string{ts.prefix + ".>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(natsURL, nil, WithStream(ts.name, ts.prefix)); err == nil || !strings.Contains(err.Error(), "work-queue") {
		t.Fatalf("open on a limits stream: %v, want a work-queue error", err)
	}
	if _, err := Open("nats://user:hunter2@127.0.0.1:1", nil); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("open on a closed port: %v, want an error without the password", err)
	}
}

// TestUpdatesBound: an instance started with another queue.max_bytes sets
// the shared stream's bound.
func TestUpdatesBound(t *testing.T) {
	t.Parallel()
	ts := newStream(t)
	ts.open(t, WithMaxBytes(1<<20))
	ts.open(t, WithMaxBytes(2<<20))
	s, err := ts.js.Stream(t.Context(), ts.name)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; cfg.MaxBytes != 2<<20 || cfg.Discard != jetstream.DiscardNew || cfg.Retention != jetstream.WorkQueuePolicy {
		t.Fatalf("stream config %+v", cfg)
	}
}

// BenchmarkPut measures Put from 64 goroutines, each event owed to one or
// two sinks, with a payload from the platform's samples.
func BenchmarkPut(b *testing.B) {
	body, err := os.ReadFile("../../../../shared/payloads/channel.message_in.json")
	if err != nil {
		body = []byte(`{"event":"channel.message_in","message":{"id":"m1","content":{"text":"` + strings.Repeat("x", 600) + `"}}}`)
	}
	for _, to := range [][]string{{"crm"}, {"crm", "archive"}} {
		b.Run(fmt.Sprintf("sinks=%d", len(to)), func(b *testing.B) {
			ts := newStream(b)
			q := ts.open(b)
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					ev := &sinks.Event{ID: fmt.Sprintf("%x", rand.Uint64()), Source: "platform", ReceivedAt: time.Now(), Body: body}
					if err := q.Put(context.Background(), ev, to); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestCloseHandsBackPulled: a message pulled for a taker that gave up is
// handed back at Close, not left to AckWait.
func TestCloseHandsBackPulled(t *testing.T) {
	t.Parallel()
	ts := newStream(t)
	q1, q2 := ts.open(t, WithAckWait(time.Minute)), ts.open(t, WithAckWait(time.Minute))
	nothing(t, q1, "a", 100*time.Millisecond) // leaves q1's pull request open
	ev := event(`{}`)
	if err := q2.Put(t.Context(), ev, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "q1 to pull the message", func() bool {
		q1.heldMu.Lock()
		defer q1.heldMu.Unlock()
		return len(q1.held) == 1
	})
	if err := q1.Close(); err != nil {
		t.Fatal(err)
	}
	d := take(t, q2, "a", 3*time.Second)
	if d.Event.ID != ev.ID {
		t.Fatalf("took %s, want %s", d.Event.ID, ev.ID)
	}
	if err := q2.Done(d); err != nil {
		t.Fatal(err)
	}
}
