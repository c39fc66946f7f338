package dispatch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/hookrouter/hookrouter/router/journal"
	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

// lane delivers one sink's deliveries. Its workers share nothing with other
// lanes but the queue: its breaker, counters and metric children are its own.
type lane struct {
	d      *Dispatcher
	name   string
	target Target   // as given to Apply, to recognise an unchanged sink
	set    Settings // target.Settings with defaults
	// orphan lanes only dead-letter: the sink is in no config.
	orphan bool
	cb     *gobreaker.CircuitBreaker[struct{}]
	// batch is set when both the queue and the sink can handle several
	// deliveries at once: workers then take and send up to maxBatch at a time.
	batch sinks.BatchSender
	// statusSender is set when the sink reports its destination's status code
	// (http, slack), for the journal's attempts.
	statusSender sinks.StatusSender
	bq           queue.BatchTaker
	// takeMu lets one worker at a time gather a batch: idle workers then
	// wait here rather than each being woken for a single delivery.
	takeMu sync.Mutex
	// limiter is the sink's rate_limit, nil without one. Workers wait on it
	// after taking a delivery and before each attempt: the delivery stays
	// owed in the queue (and counted in its depth) meanwhile.
	limiter *rate.Limiter
	// maxBatch is maxBatch, or the burst when that is smaller: a batch
	// spends one token per event.
	maxBatch int

	takeCtx context.Context // cancelled to stop taking (reload or Close)
	stop    context.CancelFunc
	workers sync.WaitGroup
	retired atomic.Bool
	// removedAt is when Apply dropped the sink; guarded by d.mu.
	removedAt time.Time

	openedAt atomic.Int64 // unix nanoseconds of the latest transition to open
	stateMu  sync.Mutex
	changed  chan struct{} // closed, then replaced, on every breaker state change

	delivered, failed atomic.Int64

	failing  atomic.Bool // fast check on the success path
	failMu   sync.Mutex
	failKey  string // what the latest failure looked like, to log only changes
	lastFail string

	mDelivered, mDeadLetter     prometheus.Counter
	mOK, mRetryable, mPermanent prometheus.Counter
	mDeadLetters                prometheus.Counter
	mLatency                    prometheus.Observer
	mBreaker                    prometheus.Gauge
}

// maxBatch bounds the deliveries a worker takes and sends at once: enough to
// spread a take, a breaker call and a write(2) over many events, few enough
// that a slow batch holds little back from the lane's other workers.
const maxBatch = 64

// batchLinger is how long a worker that found fewer than maxBatch deliveries
// due waits for more before sending. Without it, idle workers take each
// delivery as it arrives and batches stay at one (a wakeup, a breaker call
// and a write(2) per event); with it, a busy lane makes about one write per
// millisecond, for a millisecond more of delivery latency.
const batchLinger = time.Millisecond

// start creates a lane for name and starts its workers. d.mu is held.
func (d *Dispatcher) start(name string, t Target, orphan bool) *lane {
	m := d.m
	l := &lane{
		d: d, name: name, target: t, set: t.Settings.withDefaults(), orphan: orphan,
		changed:      make(chan struct{}),
		mDelivered:   m.Deliveries.WithLabelValues(name, "delivered"),
		mDeadLetter:  m.Deliveries.WithLabelValues(name, "dead_letter"),
		mOK:          m.Attempts.WithLabelValues(name, "ok"),
		mRetryable:   m.Attempts.WithLabelValues(name, "retryable"),
		mPermanent:   m.Attempts.WithLabelValues(name, "permanent"),
		mDeadLetters: m.DeadLetters.WithLabelValues(name),
		mLatency:     m.DeliverySeconds.WithLabelValues(name),
		mBreaker:     m.BreakerState.WithLabelValues(name),
	}
	l.takeCtx, l.stop = context.WithCancel(context.Background())
	l.maxBatch = maxBatch
	if l.set.Rate > 0 {
		l.limiter = rate.NewLimiter(rate.Limit(l.set.Rate), l.set.Burst)
		l.maxBatch = min(maxBatch, l.set.Burst)
	}
	failures := uint32(l.set.BreakerFailures)
	l.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1,
		Timeout:     l.set.BreakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		// Only the destination's own failures count: a permanent error
		// (a 400 for this payload) says the destination is up.
		IsSuccessful: func(err error) bool { return err == nil || sinks.IsPermanent(err) },
		// A send cut short by shutdown says nothing about the destination.
		IsExcluded:    func(error) bool { return d.sendCtx.Err() != nil },
		OnStateChange: l.onStateChange,
	})
	l.statusSender, _ = t.Sink.(sinks.StatusSender)
	if bs, ok := t.Sink.(sinks.BatchSender); ok && !orphan {
		if bq, ok := d.q.(queue.BatchTaker); ok {
			l.batch, l.bq = bs, bq
		}
	}
	workers := l.set.Workers
	if orphan {
		workers = 1
	} else {
		l.mBreaker.Set(0)
	}
	for range workers {
		l.workers.Add(1)
		d.wg.Add(1)
		go l.work()
	}
	return l
}

// onStateChange runs under the breaker's lock: it must not call the breaker.
func (l *lane) onStateChange(_ string, from, to gobreaker.State) {
	if to == gobreaker.StateOpen {
		l.openedAt.Store(time.Now().UnixNano())
	}
	l.stateMu.Lock()
	close(l.changed)
	l.changed = make(chan struct{})
	l.stateMu.Unlock()
	if l.retired.Load() {
		return // a replaced lane finishing its last send: the gauge is the new lane's
	}
	l.mBreaker.Set(float64(to))
	l.d.log.Warn("breaker state changed", "sink", l.name, "from", from.String(), "to", to.String())
}

func (l *lane) changedCh() <-chan struct{} {
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	return l.changed
}

func (l *lane) work() {
	defer l.d.wg.Done()
	defer l.workers.Done()
	var one [1]*queue.Delivery // take's buffer when the lane sends one at a time
	var evs []*sinks.Event
	for {
		dvs, err := l.take(one[:0])
		if err != nil {
			if l.takeCtx.Err() != nil || errors.Is(err, queue.ErrClosed) {
				return
			}
			l.d.log.Error("taking a delivery failed", "sink", l.name, "error", err)
			if !sleep(l.takeCtx, time.Second) {
				return
			}
			continue
		}
		if l.takeCtx.Err() != nil {
			// Stopped while the queue was handing them over: leave them to
			// the next lane.
			for _, dv := range dvs {
				l.giveBack(dv)
			}
			return
		}
		switch {
		case l.orphan:
			msg := fmt.Sprintf("sink %q is not in the config", l.name)
			for _, dv := range dvs {
				if l.deadLetter(dv, msg) {
					l.d.step(dv, journal.DeadLetter, time.Now(), 0, nil, msg)
				}
			}
		case len(dvs) == 1:
			l.deliver(dvs[0])
		default:
			evs = evs[:0]
			for _, dv := range dvs {
				evs = append(evs, dv.Event)
			}
			l.deliverBatch(dvs, evs)
		}
	}
}

// take waits for the lane's next deliveries: a batch (takeBatch) when the
// queue and the sink handle batches, else one, appended to buf.
func (l *lane) take(buf []*queue.Delivery) ([]*queue.Delivery, error) {
	if l.batch != nil {
		return l.takeBatch()
	}
	dv, err := l.d.q.Take(l.takeCtx, l.name)
	if err != nil {
		return nil, err
	}
	return append(buf, dv), nil
}

// takeBatch waits for a due delivery, then gathers the ones due within
// batchLinger, up to maxBatch. A full batch is sent at once, so that a lane
// with a backlog does not linger at all.
func (l *lane) takeBatch() ([]*queue.Delivery, error) {
	l.takeMu.Lock()
	defer l.takeMu.Unlock()
	dvs, err := l.bq.TakeBatch(l.takeCtx, l.name, l.maxBatch)
	if err != nil || len(dvs) == l.maxBatch {
		return dvs, err
	}
	// Stopped while lingering: the caller sees takeCtx done and gives dvs back.
	sleep(l.takeCtx, batchLinger)
	return append(dvs, l.bq.TakeDue(l.name, l.maxBatch-len(dvs))...), nil
}

// deliver sends dv through the breaker until it has an outcome. While the
// breaker is open the worker keeps dv and waits, spending no attempt.
func (l *lane) deliver(dv *queue.Delivery) {
	for {
		if !l.wait(1) {
			l.giveBack(dv)
			return
		}
		ch := l.changedCh() // before Execute, so that no state change is missed
		start := time.Now()
		status := 0
		_, err := l.cb.Execute(func() (struct{}, error) {
			if l.statusSender != nil {
				var err error
				status, err = l.statusSender.SendStatus(l.d.sendCtx, dv.Event)
				return struct{}{}, err
			}
			return struct{}{}, l.target.Sink.Send(l.d.sendCtx, dv.Event)
		})
		if rejected(err) {
			if !l.awaitBreaker(ch, errors.Is(err, gobreaker.ErrOpenState)) {
				l.giveBack(dv)
				return
			}
			continue
		}
		l.finish(dv, err, start, status)
		return
	}
}

// deliverBatch sends dvs (whose events are evs) with one SendBatch through
// the breaker, which counts the batch as one call: failed if any event
// failed retryably. Each delivery then gets its own outcome, as from deliver.
func (l *lane) deliverBatch(dvs []*queue.Delivery, evs []*sinks.Event) {
	for {
		if !l.wait(len(evs)) {
			for _, dv := range dvs {
				l.giveBack(dv)
			}
			return
		}
		ch := l.changedCh() // before Execute, so that no state change is missed
		var errs []error
		start := time.Now()
		_, err := l.cb.Execute(func() (struct{}, error) {
			errs = l.batch.SendBatch(l.d.sendCtx, evs)
			return struct{}{}, firstRetryable(errs)
		})
		if rejected(err) {
			if !l.awaitBreaker(ch, errors.Is(err, gobreaker.ErrOpenState)) {
				for _, dv := range dvs {
					l.giveBack(dv)
				}
				return
			}
			continue
		}
		for i, dv := range dvs {
			var err error
			if errs != nil {
				err = errs[i]
			}
			l.finish(dv, err, start, 0)
		}
		return
	}
}

// wait waits for the rate limit to allow n more attempts, and reports false
// if the lane is stopping first (the caller gives its deliveries back).
func (l *lane) wait(n int) bool {
	if l.limiter == nil {
		return true
	}
	return l.limiter.WaitN(l.takeCtx, n) == nil
}

// rejected reports whether the breaker refused the call without making it.
func rejected(err error) bool {
	return errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests)
}

// firstRetryable is the error that makes a batch count as a failure for
// the breaker: the first that is not permanent, as with IsSuccessful.
func firstRetryable(errs []error) error {
	for _, err := range errs {
		if err != nil && !sinks.IsPermanent(err) {
			return err
		}
	}
	return nil
}

// finish records the outcome of one attempt to send dv: done, given back
// (cut short by shutdown), dead-lettered or retried later.
// The attempt started at start; status is the destination's answer to a
// successful one, 0 if the sink does not report it.
func (l *lane) finish(dv *queue.Delivery, err error, start time.Time, status int) {
	switch {
	case err == nil:
		l.d.stepOK(dv, start, time.Since(start), status)
		l.succeeded(dv)
	case l.d.sendCtx.Err() != nil:
		// Cut short by shutdown: not the destination's fault, no attempt spent.
		l.giveBack(dv)
	case sinks.IsPermanent(err):
		l.mPermanent.Inc()
		dv.Attempts++
		dv.LastError = err.Error()
		l.noteFailure(dv, err)
		sent := sentAs(dv)
		state := journal.DeadLetter
		if !l.deadLetter(dv, dv.LastError) {
			state = journal.Retrying
		}
		l.d.step(sent, state, start, time.Since(start), err, "")
	default:
		took := time.Since(start)
		sent := sentAs(dv)
		l.d.step(sent, l.retryable(dv, err), start, took, err, "")
	}
}

// sentAs is what the journal's step says of dv, taken before dv goes back
// to the queue: another worker may then take it at once, and the queue give
// it another Event (the disk queue drops the body while it waits).
func sentAs(dv *queue.Delivery) *queue.Delivery {
	return &queue.Delivery{Event: dv.Event, Sink: dv.Sink}
}

// awaitBreaker waits until the breaker may let a request through: until the
// open period ends, or (half-open, the probe is out) until the probe's
// outcome changes the state. It reports false if the lane is stopping.
func (l *lane) awaitBreaker(changed <-chan struct{}, open bool) bool {
	wait := l.set.BreakerOpenFor
	if open {
		wait = time.Until(time.Unix(0, l.openedAt.Load()).Add(l.set.BreakerOpenFor))
		wait = max(wait, time.Millisecond)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-changed:
		return true
	case <-t.C:
		return true
	case <-l.takeCtx.Done():
		return false
	}
}

func (l *lane) succeeded(dv *queue.Delivery) {
	l.mOK.Inc()
	l.mDelivered.Inc()
	l.delivered.Add(1)
	if !dv.Event.ReceivedAt.IsZero() {
		l.mLatency.Observe(time.Since(dv.Event.ReceivedAt).Seconds())
	}
	if l.failing.Load() {
		l.failMu.Lock()
		l.failKey, l.lastFail = "", ""
		l.failing.Store(false)
		l.failMu.Unlock()
		l.d.log.Info("delivery recovered", "sink", l.name, "event_id", dv.Event.ID)
	}
	if err := l.d.q.Done(dv); err != nil {
		l.d.log.Error("queue done failed", "sink", l.name, "event_id", dv.Event.ID, "error", err)
	}
}

// retryable handles a retryable failure and returns the delivery's state
// after it: retrying, or dead_letter once its attempts are spent.
func (l *lane) retryable(dv *queue.Delivery, err error) string {
	l.mRetryable.Inc()
	dv.Attempts++
	dv.LastError = err.Error()
	l.noteFailure(dv, err)
	if dv.Attempts >= l.set.MaxAttempts {
		if l.deadLetter(dv, dv.LastError) {
			return journal.DeadLetter
		}
		return journal.Retrying
	}
	delay := backoff(l.set, dv.Attempts)
	if ra, ok := sinks.RetryAfterOf(err); ok && ra > delay {
		delay = ra
	}
	if err := l.d.q.Retry(dv, delay); err != nil {
		l.d.log.Error("queue retry failed", "sink", l.name, "event_id", dv.Event.ID, "error", err)
	}
	return journal.Retrying
}

// backoff is the delay before attempt n+1 after n failed ones: full jitter
// over an exponential ceiling, so that retries of many events spread out.
func backoff(s Settings, attempts int) time.Duration {
	ceiling := s.InitialBackoff
	for i := 1; i < attempts && ceiling < s.MaxBackoff; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, s.MaxBackoff)
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

// noteFailure remembers err for Status and logs it if the sink's failures
// changed kind: a destination down for an hour logs once, not per attempt.
func (l *lane) noteFailure(dv *queue.Delivery, err error) {
	key := failureKey(err)
	l.failMu.Lock()
	changed := key != l.failKey
	l.failKey, l.lastFail = key, err.Error()
	l.failing.Store(true)
	l.failMu.Unlock()
	if changed {
		l.d.log.Warn("delivery failing", "sink", l.name, "event_id", dv.Event.ID, "attempts", dv.Attempts, "error", err)
	}
}

// failureKey is what makes two failures "the same" for logging: the status
// code for HTTP answers (their bodies vary), else the message.
func failureKey(err error) string {
	var se *sinks.StatusError
	if errors.As(err, &se) {
		return fmt.Sprintf("http status %d", se.Code)
	}
	return err.Error()
}

// deadLetter writes dv to the dead-letter file and forgets it. If the file
// cannot be written the delivery stays queued: the dead letter is its last
// copy. It reports whether dv was dead-lettered.
func (l *lane) deadLetter(dv *queue.Delivery, errText string) bool {
	if err := l.d.writeDeadLetter(newRecord(dv, errText, time.Now())); err != nil {
		if rerr := l.d.q.Retry(dv, l.set.MaxBackoff); rerr != nil {
			l.d.log.Error("queue retry failed", "sink", l.name, "event_id", dv.Event.ID, "error", rerr)
		}
		return false
	}
	l.failed.Add(1)
	l.mDeadLetter.Inc()
	l.mDeadLetters.Inc()
	l.d.log.Warn("delivery dead-lettered", "sink", l.name, "event_id", dv.Event.ID, "attempts", dv.Attempts, "error", errText)
	if err := l.d.q.Done(dv); err != nil {
		l.d.log.Error("queue done failed", "sink", l.name, "event_id", dv.Event.ID, "error", err)
	}
	return true
}

// giveBack returns dv to the queue untouched, for another worker or, after a
// restart, another process.
func (l *lane) giveBack(dv *queue.Delivery) {
	if err := l.d.q.Retry(dv, 0); err != nil {
		l.d.log.Error("queue retry failed", "sink", l.name, "event_id", dv.Event.ID, "error", err)
	}
}

func (l *lane) status(draining bool) LaneStatus {
	l.failMu.Lock()
	last := l.lastFail
	l.failMu.Unlock()
	failed := l.failed.Load()
	return LaneStatus{
		Type:                     l.target.Type,
		Breaker:                  l.cb.State().String(),
		Depth:                    l.d.q.Depth(l.name),
		OldestUndeliveredSeconds: l.d.oldestSeconds(l.name),
		Workers:                  l.set.Workers,
		Delivered:                l.delivered.Load(),
		Failed:                   failed,
		DeadLetters:              failed,
		Draining:                 draining,
		LastError:                last,
	}
}

// sleep waits for d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
