package sinktest

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// Outage sends n distinct events (Variant(1000) on) through s from four
// goroutines, each retrying its event as the dispatcher would until it is
// delivered, while the destination goes away and comes back: stop is called
// once a third of the events are delivered (no send starts until it has
// returned), start once a send has failed after that. It fails the test on a permanent error, or if the events are
// not all delivered within three minutes (a RabbitMQ restart alone takes 20
// seconds on a loaded machine), and returns the events sent and the number
// of failed attempts. The caller then reads the destination back and checks
// with Arrived that every event is there.
func Outage(t *testing.T, s sinks.Sink, n int, stop, start func()) ([]*sinks.Event, int) {
	t.Helper()
	evs := make([]*sinks.Event, n)
	for i := range evs {
		evs[i] = Variant(1000 + i)
	}
	next := make(chan *sinks.Event, n)
	for _, ev := range evs {
		next <- ev
	}
	close(next)
	var delivered, failures atomic.Int64
	stopped := make(chan struct{})
	failedDuringOutage := make(chan struct{})
	var stopOnce, failOnce sync.Once
	deadline := time.Now().Add(3 * time.Minute)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for ev := range next {
				if delivered.Load() >= int64(n/3) {
					// No send while stop is in progress: a slow stop
					// (rabbitmqctl) must not let the rest through before
					// the destination is down.
					<-stopped
				}
				for backoff := 10 * time.Millisecond; ; backoff = min(backoff*2, 200*time.Millisecond) {
					err := s.Send(t.Context(), ev)
					if err == nil {
						break
					}
					if sinks.IsPermanent(err) || errors.Is(err, sinks.ErrClosed) {
						errs <- err
						return
					}
					failures.Add(1)
					select {
					case <-stopped:
						failOnce.Do(func() { close(failedDuringOutage) })
					default:
					}
					if time.Now().After(deadline) {
						errs <- errors.New("not delivered within three minutes; last error: " + err.Error())
						return
					}
					time.Sleep(backoff) // the retry backoff, not a synchronisation
				}
				if delivered.Add(1) == int64(n/3) {
					stopOnce.Do(func() {
						stop()
						close(stopped)
					})
				}
			}
		})
	}
	restarted := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(restarted)
		select {
		case <-failedDuringOutage:
			start()
		case <-sent:
		}
	}()
	wg.Wait()
	close(sent)
	close(errs)
	for err := range errs {
		t.Fatalf("outage: %v", err)
	}
	<-restarted
	t.Logf("outage: %d events delivered, %d failed attempts", delivered.Load(), failures.Load())
	if failures.Load() == 0 {
		t.Fatal("outage: no send failed while the destination was stopped")
	}
	return evs, int(failures.Load())
}

// Arrived checks the event ids read back from a destination against the
// events sent: every event arrived, and nothing else did. With once, an
// event arriving twice fails the test too; without (a destination that
// cannot deduplicate, where an acknowledgement lost with the connection
// makes the retry deliver a second copy, which consumers drop by its id)
// the extra copies are only counted. It returns, and logs, that count.
func Arrived(t *testing.T, evs []*sinks.Event, ids []string, once bool) int {
	t.Helper()
	seen := make(map[string]int, len(ids))
	for _, id := range ids {
		seen[id]++
	}
	extra := 0
	for _, ev := range evs {
		switch n := seen[ev.ID]; {
		case n == 0:
			t.Errorf("event %s lost", ev.ID)
		case n > 1 && once:
			t.Errorf("event %s arrived %d times", ev.ID, n)
		case n > 1:
			extra += n - 1
		}
		delete(seen, ev.ID)
	}
	for id, n := range seen {
		t.Errorf("%d message(s) with id %q, which was not sent", n, id)
	}
	t.Logf("%d events arrived, %d extra copies", len(evs), extra)
	return extra
}
