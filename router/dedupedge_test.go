package router

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sentEvent is one request of a load test and its answer.
type sentEvent struct {
	msgID     string
	status    int
	duplicate bool
	took      time.Duration
	err       error
}

// dedupTimeoutTest is the dedup.timeout of the stalled-store tests: shorter
// than the 2s default so that the test is quick; the bound on every answer
// is this plus answerMargin (a loaded 2-core machine under -race).
const (
	dedupTimeoutTest = time.Second
	answerMargin     = 1500 * time.Millisecond
)

// TestStalledRedisNeverTurnsNewIntoDuplicate (issue 12 items 1 and 2): 16
// senders post unique events while the Redis dedup store is paused with
// SIGSTOP for 8s (as measured in the issue: longer than go-redis's own read timeout and retry). Every event answered 200 must be delivered, no new event
// may be answered as a duplicate, every answer must come within
// dedup.timeout plus a margin, and an event refused with 503 during the
// stall must be accepted as new when the sender retries it afterwards.
func TestStalledRedisNeverTurnsNewIntoDuplicate(t *testing.T) {
	rd := startOwnRedis(t)
	dest := newCapture(t)
	cfg := baseConfig("{backend: memory}",
		fmt.Sprintf("  crm: {type: http, url: %q, workers: 8, retry: {max_attempts: 100, initial_backoff: 10ms, max_backoff: 100ms}}", dest.URL),
		"  - {name: all, when: 'true', to: [crm]}") +
		fmt.Sprintf("dedup: {store: redis, redis_url: %s/0, timeout: %s}\n", rd.url("redis"), dedupTimeoutTest)
	s := startServer(t, cfg)

	const senders, perSender = 16, 150
	var (
		mu      sync.Mutex
		answers []sentEvent
		sent    atomic.Int64
	)
	send := func(id string) sentEvent {
		start := time.Now()
		a, err := postEvent(s, message(id))
		return sentEvent{msgID: id, status: a.status, duplicate: isDuplicate(a), took: time.Since(start), err: err}
	}
	stalled := make(chan struct{})
	var wg sync.WaitGroup
	for w := range senders {
		wg.Go(func() {
			for i := range perSender {
				if i == perSender/3 && w == 0 {
					close(stalled)
				}
				ans := send(fmt.Sprintf("stall-%d-%d", w, i))
				sent.Add(1)
				mu.Lock()
				answers = append(answers, ans)
				mu.Unlock()
			}
		})
	}
	<-stalled
	rd.pause()
	time.Sleep(8 * time.Second) // the stall being tested, not a synchronisation
	rd.resume()
	wg.Wait()

	var refused []string
	statuses := map[int]int{}
	var slowest time.Duration
	for _, a := range answers {
		if a.err != nil {
			t.Errorf("%s: %v", a.msgID, a.err)
			continue
		}
		statuses[a.status]++
		slowest = max(slowest, a.took)
		if a.took > dedupTimeoutTest+answerMargin {
			t.Errorf("%s answered %d after %v, beyond dedup.timeout %v + %v", a.msgID, a.status, a.took, dedupTimeoutTest, answerMargin)
		}
		switch {
		case a.status == 200 && a.duplicate:
			t.Errorf("new event %s answered 200 as a duplicate", a.msgID)
		case a.status == 503:
			refused = append(refused, a.msgID)
		case a.status != 200:
			t.Errorf("%s answered %d", a.msgID, a.status)
		}
	}
	t.Logf("%d requests: statuses %v, slowest answer %v", len(answers), statuses, slowest)
	if statuses[503] == 0 {
		t.Errorf("no request was answered 503 during an 8s stall with dedup.timeout %v", dedupTimeoutTest)
	}

	// The platform retries what got a 503: each retry is a new event, not a
	// duplicate of the refused attempt (its claim was released).
	for _, id := range refused {
		var a sentEvent
		for try := 0; try < 20; try++ {
			if a = send(id); a.err == nil && a.status != 503 {
				break
			}
			time.Sleep(100 * time.Millisecond) // the sender's backoff
		}
		if a.status != 200 || a.duplicate {
			t.Errorf("retry of refused %s: %d duplicate=%v %v, want 200 new", id, a.status, a.duplicate, a.err)
		}
	}

	want := 0
	for _, a := range answers {
		if a.status == 200 && !a.duplicate {
			want++
		}
	}
	want += len(refused)
	waitFor(t, 20*time.Second, "every accepted event delivered", func() bool { return dest.count() >= want })
	got := dest.messages()
	for _, a := range answers {
		if a.status == 200 && got[a.msgID] == 0 {
			t.Errorf("%s answered 200 but never delivered", a.msgID)
		}
	}
	for _, id := range refused {
		if got[id] != 1 {
			t.Errorf("%s (refused, then retried) delivered %d times, want 1", id, got[id])
		}
	}
}

// postCopies posts n copies of one event at once and returns the answers.
func postCopies(s *server, id string, n int) []sentEvent {
	var wg sync.WaitGroup
	results := make([]sentEvent, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			a, err := postEvent(s, message(id))
			results[i] = sentEvent{msgID: id, status: a.status, duplicate: isDuplicate(a), err: err}
		})
	}
	close(start)
	wg.Wait()
	return results
}

// TestConcurrentCopiesWaitForFirst (issue 12 item 2): copies of one event
// that arrive while the first is in flight are not answered before it is
// queued. With the queue full, the first copy fails (503) and so must every
// copy: none may be answered 200, as a duplicate of an event that was not
// kept. Once there is room, N concurrent copies route exactly once.
func TestConcurrentCopiesWaitForFirst(t *testing.T) {
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			dest := newCapture(t)
			dest.holdRequests()
			dedupCfg := "dedup: {store: memory, timeout: 1s}\n"
			if store == "redis" {
				rd := startOwnRedis(t)
				dedupCfg = fmt.Sprintf("dedup: {store: redis, redis_url: %s/0, timeout: 1s}\n", rd.url("redis"))
			}
			s := startServer(t, oneSink(dest, "workers: 1, timeout: 10s", "{backend: memory, max_bytes: 2KiB}")+dedupCfg)

			// Fill the queue.
			filled := 0
			for i := 0; ; i++ {
				a := s.post("/webhook", message(fmt.Sprint("fill-", i)))
				if a.status == 503 {
					break
				}
				if filled++; filled > 100 {
					t.Fatal("the 2KiB queue never filled")
				}
			}
			const copies = 24
			for round := range 5 {
				for _, r := range postCopies(s, fmt.Sprint("refused-", round), copies) {
					if r.err != nil || r.status != 503 {
						t.Errorf("copy of %s with the queue full: %d duplicate=%v %v, want 503", r.msgID, r.status, r.duplicate, r.err)
					}
				}
			}

			dest.release()
			waitFor(t, 10*time.Second, "queue drained", func() bool { return dest.count() == filled })
			for round := range 5 {
				id := fmt.Sprint("refused-", round)
				fresh, dups := 0, 0
				for _, r := range postCopies(s, id, copies) {
					switch {
					case r.err != nil || r.status != 200:
						t.Errorf("copy of %s: %d %v", id, r.status, r.err)
					case r.duplicate:
						dups++
					default:
						fresh++
					}
				}
				if fresh != 1 || dups != copies-1 {
					t.Errorf("%s: %d copies routed and %d duplicates, want 1 and %d", id, fresh, dups, copies-1)
				}
			}
			waitFor(t, 10*time.Second, "5 more deliveries", func() bool { return dest.count() >= filled+5 })
			seen := map[string]int{}
			for _, a := range dest.got() {
				seen[string(a.body)]++
			}
			for b, n := range seen {
				if n != 1 {
					t.Errorf("%s delivered %d times", b, n)
				}
			}
		})
	}
}

// TestDedupKeysSurviveRestart (issue 12 item 3, with i19's disk queue
// keeping the keys): after a restart of hookrouter with the disk queue and
// the memory dedup store, an event re-sent is still a duplicate, whether it
// was delivered, unrouted or still owed; a new event is not.
func TestDedupKeysSurviveRestart(t *testing.T) {
	d := newCapture(t)
	cfg := baseConfig("{backend: disk}",
		fmt.Sprintf("  hook: {type: http, url: %q, retry: {max_attempts: 1000, initial_backoff: 5ms, max_backoff: 10ms}, breaker: {failures: 3, open_for: 100ms}}", d.URL),
		"  - {name: routed, when: 'message?.id != \"unrouted\"', to: [hook]}")
	s := startServer(t, cfg)
	for _, id := range []string{"delivered-1", "delivered-2", "unrouted"} {
		if a := s.post("/webhook", message(id)); a.status != 200 || isDuplicate(a) {
			t.Fatalf("post %s: %d duplicate=%v", id, a.status, isDuplicate(a))
		}
	}
	waitFor(t, 5*time.Second, "2 deliveries", func() bool { return d.count() == 2 })
	d.setStatus(503)
	if a := s.post("/webhook", message("owed")); a.status != 200 {
		t.Fatalf("post owed: %d", a.status)
	}
	waitFor(t, 5*time.Second, "an attempt at the owed event", func() bool { return len(d.requests()) >= 3 })

	s.restart()
	for _, id := range []string{"delivered-1", "delivered-2", "unrouted", "owed"} {
		if a := s.post("/webhook", message(id)); a.status != 200 || !isDuplicate(a) {
			t.Errorf("%s re-sent after a restart: %d duplicate=%v, want a duplicate", id, a.status, isDuplicate(a))
		}
	}
	if a := s.post("/webhook", message("new-after-restart")); a.status != 200 || isDuplicate(a) {
		t.Errorf("new event after restart: %d duplicate=%v", a.status, isDuplicate(a))
	}
	d.setStatus(200)
	waitFor(t, 5*time.Second, "owed and new delivered", func() bool { return d.count() == 4 })
}
