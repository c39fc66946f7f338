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
// once a third of the events are delivered, start once a send has failed
// after that. It fails the test on a permanent error, or if the events are
// not all delivered within a minute, and returns the events sent and the
// number of failed attempts. The caller then checks, on the destination,
// that every event arrived.
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
	deadline := time.Now().Add(time.Minute)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for ev := range next {
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
						errs <- errors.New("not delivered within a minute; last error: " + err.Error())
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
