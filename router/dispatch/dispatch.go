// Package dispatch delivers queued events to their sinks. Each sink has its
// own lane: workers that take the sink's deliveries from the queue, send
// them, and decide what happens next — done, retry later with exponential
// backoff and full jitter, or dead letter — behind the sink's own circuit
// breaker, so that a slow or dead destination never delays another one.
//
// Apply sets the sinks in force and is called again on every config reload:
// unchanged sinks keep their lane (workers, breaker, connections), changed
// ones are swapped once their in-flight sends finish, removed ones drain what
// the queue still owes them, and deliveries owed to sinks that are in no
// config at all are dead-lettered rather than forgotten.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hookrouter/hookrouter/router/journal"
	"github.com/hookrouter/hookrouter/router/metrics"
	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

// Settings are one sink's delivery policy. Zero fields take the defaults of
// the config file: 8 attempts, backoff from 500ms up to 1m, a breaker that
// opens after 5 consecutive failures for 30s, 4 workers, no rate limit.
type Settings struct {
	MaxAttempts     int
	InitialBackoff  time.Duration
	MaxBackoff      time.Duration
	BreakerFailures int
	BreakerOpenFor  time.Duration
	Workers         int
	// Rate bounds the sink's attempts to this many per second on average,
	// with bursts of up to Burst (at least 1); zero means no limit. A
	// delivery beyond it waits, still queued, for its turn: it is neither
	// dropped nor counted as a failure.
	Rate  float64
	Burst int
}

// withDefaults fills the zero fields of s.
func (s Settings) withDefaults() Settings {
	if s.MaxAttempts <= 0 {
		s.MaxAttempts = 8
	}
	if s.InitialBackoff <= 0 {
		s.InitialBackoff = 500 * time.Millisecond
	}
	if s.MaxBackoff <= 0 {
		s.MaxBackoff = time.Minute
	}
	s.MaxBackoff = max(s.MaxBackoff, s.InitialBackoff)
	if s.BreakerFailures <= 0 {
		s.BreakerFailures = 5
	}
	if s.BreakerOpenFor <= 0 {
		s.BreakerOpenFor = 30 * time.Second
	}
	if s.Workers <= 0 {
		s.Workers = 4
	}
	if s.Rate > 0 {
		s.Burst = max(s.Burst, 1)
	} else {
		s.Rate, s.Burst = 0, 0
	}
	return s
}

// Target is one sink in force: the built sink, its config type (for
// /health) and its delivery policy.
type Target struct {
	Sink     sinks.Sink
	Type     string
	Settings Settings
}

// LaneStatus is what /health shows about one sink.
type LaneStatus struct {
	Type string `json:"type"`
	// Breaker is "closed", "half-open" or "open".
	Breaker string `json:"breaker"`
	// Depth counts the deliveries owed to the sink: due, waiting or in flight.
	Depth int `json:"depth"`
	// OldestUndeliveredSeconds is how long ago the oldest delivery owed to
	// the sink was accepted; 0 when none is owed (or the queue, nats, does
	// not tell).
	OldestUndeliveredSeconds float64 `json:"oldest_undelivered_seconds"`
	Workers                  int     `json:"workers"`
	// Delivered and Failed count deliveries finished by this lane since it
	// started: sent, or dead-lettered.
	Delivered int64 `json:"delivered"`
	Failed    int64 `json:"failed"`
	// DeadLetters counts the deliveries this lane wrote to the dead-letter
	// file since it started (every failed delivery is dead-lettered).
	DeadLetters int64 `json:"dead_letters"`
	// Draining is set for a sink removed from the config that is still owed
	// deliveries.
	Draining bool `json:"draining,omitempty"`
	// LastError is the error of the latest failed attempt while the sink is
	// failing; empty once a delivery succeeds again.
	LastError string `json:"last_error,omitempty"`
}

// shutdownError is the dead-letter error of deliveries still owed by a
// memory queue when the process stops.
const shutdownError = "shutdown before delivery"

// sinkCloseTimeout bounds the close of a sink replaced or removed by a reload.
const sinkCloseTimeout = 10 * time.Second

// Dispatcher runs the lanes of every sink in force. Create it with New,
// give it its sinks with Apply, stop it with Close.
type Dispatcher struct {
	q   queue.Queue
	dl  *DeadLetters
	m   *metrics.Metrics
	log *slog.Logger
	// jr, when set, is told every attempt and change of state.
	jr *journal.Journal

	// sendCtx is given to every Send; Close cancels it when its own deadline
	// passes, cutting short the sends still running.
	sendCtx    context.Context
	cancelSend context.CancelFunc
	// every is the period of reconcile: queue depth gauges, end of drains,
	// discovery of deliveries owed to unknown sinks.
	every time.Duration

	mu       sync.Mutex
	lanes    map[string]*lane   // in the config
	draining map[string]*lane   // removed from the config, still owed deliveries
	orphans  map[string]*lane   // owed deliveries, in no config
	retiring map[*lane]struct{} // stopped, workers finishing their sends
	closed   bool
	ticking  bool
	stopTick chan struct{}

	wg sync.WaitGroup // workers, sink closers, the reconcile ticker
}

// New returns a Dispatcher taking deliveries from q and writing the ones
// that fail for good to dl. m may be nil (a private registry is used).
func New(q queue.Queue, dl *DeadLetters, m *metrics.Metrics, log *slog.Logger) *Dispatcher {
	if m == nil {
		m = metrics.New()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Dispatcher{
		q: q, dl: dl, m: m, log: log.With("component", "dispatch"),
		sendCtx: ctx, cancelSend: cancel,
		every:    time.Second,
		lanes:    make(map[string]*lane),
		draining: make(map[string]*lane),
		orphans:  make(map[string]*lane),
		retiring: make(map[*lane]struct{}),
		stopTick: make(chan struct{}),
	}
}

// SetJournal makes the dispatcher record every attempt and change of state
// of a delivery in j. Call it before the first Apply.
func (d *Dispatcher) SetJournal(j *journal.Journal) { d.jr = j }

// Apply makes targets the sinks in force. It is called at start and on
// every reload, and returns at once: the swaps it starts finish in the
// background.
func (d *Dispatcher) Apply(targets map[string]Target) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	for name, t := range targets {
		if old := d.lanes[name]; old != nil {
			if sameTarget(old.target, t) {
				continue
			}
			// The new lane starts taking at once; the old workers finish the
			// send they are in and stop, then the old sink is closed.
			d.retire(old)
			d.log.Info("sink changed, lane replaced", "sink", name)
		} else if dr := d.draining[name]; dr != nil {
			delete(d.draining, name)
			if sameTarget(dr.target, t) {
				dr.removedAt = time.Time{}
				d.lanes[name] = dr
				d.log.Info("sink back in the config", "sink", name)
				continue
			}
			d.retire(dr)
		}
		if o := d.orphans[name]; o != nil {
			delete(d.orphans, name)
			d.retire(o)
		}
		d.lanes[name] = d.start(name, t, false)
	}
	now := time.Now()
	for name, l := range d.lanes {
		if _, ok := targets[name]; !ok {
			delete(d.lanes, name)
			l.removedAt = now
			d.draining[name] = l
			d.log.Info("sink removed from the config, draining", "sink", name, "depth", d.q.Depth(name))
		}
	}
	d.reconcileLocked()
	if !d.ticking {
		d.ticking = true
		d.wg.Add(1)
		go d.tick()
	}
}

// tick runs reconcile until Close.
func (d *Dispatcher) tick() {
	defer d.wg.Done()
	t := time.NewTicker(d.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			d.mu.Lock()
			if !d.closed {
				d.reconcileLocked()
			}
			d.mu.Unlock()
		case <-d.stopTick:
			return
		}
	}
}

// reconcileLocked ends the drains that are over, starts dead-lettering for
// sinks that are owed deliveries but in no config, and updates the depth
// gauges. d.mu is held.
func (d *Dispatcher) reconcileLocked() {
	for name, l := range d.draining {
		// A removed sink stays at least one period, so that an event matched
		// by the old rules just before the reload still finds it.
		if d.q.Depth(name) == 0 && time.Since(l.removedAt) >= d.every {
			delete(d.draining, name)
			d.retire(l)
			d.m.QueueDepth.DeleteLabelValues(name)
			d.m.QueueOldest.DeleteLabelValues(name)
			d.m.BreakerState.DeleteLabelValues(name)
			d.log.Info("removed sink drained, closing it", "sink", name)
		}
	}
	for name, l := range d.orphans {
		if d.q.Depth(name) == 0 {
			delete(d.orphans, name)
			d.retire(l)
			d.m.QueueDepth.DeleteLabelValues(name)
			d.m.QueueOldest.DeleteLabelValues(name)
		}
	}
	// A shared queue (nats) may owe deliveries to a sink that another
	// instance's newer config added: those are that instance's to deliver.
	shared := false
	if sq, ok := d.q.(queue.Sharer); ok {
		shared = sq.Shared()
	}
	for _, name := range d.q.Pending() {
		if !shared && d.lanes[name] == nil && d.draining[name] == nil && d.orphans[name] == nil {
			d.log.Warn("deliveries owed to a sink not in the config, dead-lettering them", "sink", name, "depth", d.q.Depth(name))
			d.orphans[name] = d.start(name, Target{}, true)
		}
	}
	for _, set := range []map[string]*lane{d.lanes, d.draining, d.orphans} {
		for name := range set {
			d.m.QueueDepth.WithLabelValues(name).Set(float64(d.q.Depth(name)))
			d.m.QueueOldest.WithLabelValues(name).Set(d.oldestSeconds(name))
		}
	}
}

// oldestSeconds is how long ago the oldest delivery owed to sink was
// accepted, 0 if none is owed or the queue does not tell.
func (d *Dispatcher) oldestSeconds(sink string) float64 {
	a, ok := d.q.(queue.Ager)
	if !ok {
		return 0
	}
	at, ok := a.Oldest(sink)
	if !ok {
		return 0
	}
	return max(0, time.Since(at).Seconds())
}

// retire stops l taking deliveries and, once its workers are done, closes
// its sink unless another lane still uses the same one. d.mu is held.
func (d *Dispatcher) retire(l *lane) {
	l.retired.Store(true)
	l.stop()
	d.retiring[l] = struct{}{}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		l.workers.Wait()
		// Deciding under d.mu, after leaving retiring, makes the last lane
		// done with a sink the one that closes it, exactly once.
		d.mu.Lock()
		delete(d.retiring, l)
		shared := l.orphan || d.inUseLocked(l.target.Sink)
		d.mu.Unlock()
		if shared {
			return
		}
		ctx, cancel := context.WithTimeout(d.sendCtx, sinkCloseTimeout)
		defer cancel()
		if err := l.target.Sink.Close(ctx); err != nil {
			d.log.Error("closing replaced sink", "sink", l.name, "error", err)
		}
	}()
}

// inUseLocked reports whether a lane other than a finished one delivers
// through s. d.mu is held.
func (d *Dispatcher) inUseLocked(s sinks.Sink) bool {
	for _, set := range []map[string]*lane{d.lanes, d.draining} {
		for _, l := range set {
			if sameSink(l.target.Sink, s) {
				return true
			}
		}
	}
	for l := range d.retiring {
		if !l.orphan && sameSink(l.target.Sink, s) {
			return true
		}
	}
	return false
}

// Close stops taking deliveries, lets the sends in flight finish until ctx
// is done (then cancels them), and closes every sink. With a queue that does
// not survive the process (a queue.Drainer), everything still owed is
// dead-lettered with the error "shutdown before delivery". The queue itself
// is left open for its owner to close.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.stopTick)
	var live []*lane
	for _, set := range []map[string]*lane{d.lanes, d.draining, d.orphans} {
		for _, l := range set {
			l.stop()
			if !l.orphan {
				live = append(live, l)
			}
		}
	}
	d.mu.Unlock()

	var errs []error
	stopped := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		d.cancelSend()
		select {
		case <-stopped:
		case <-time.After(time.Second):
			errs = append(errs, errors.New("dispatch: sends still running after shutdown deadline"))
		}
	}
	d.cancelSend()

	var closed []sinks.Sink
	for _, l := range live {
		if containsSink(closed, l.target.Sink) {
			continue
		}
		closed = append(closed, l.target.Sink)
		if err := l.target.Sink.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close sink %q: %w", l.name, err))
		}
	}

	if dq, ok := d.q.(queue.Drainer); ok {
		if err := d.deadLetterRemaining(dq.Remaining()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deadLetterRemaining writes what a memory queue still owes at shutdown to
// the dead-letter file, so that `hookrouter replay` can send it later.
func (d *Dispatcher) deadLetterRemaining(rest []*queue.Delivery) error {
	if len(rest) == 0 {
		return nil
	}
	perSink := map[string]int{}
	var failed int
	now := time.Now()
	for _, dv := range rest {
		if err := d.writeDeadLetter(newRecord(dv, shutdownError, now)); err != nil {
			failed++
			continue
		}
		perSink[dv.Sink]++
		d.step(dv, journal.DeadLetter, now, 0, nil, shutdownError)
		d.m.Deliveries.WithLabelValues(dv.Sink, "dead_letter").Inc()
		d.m.DeadLetters.WithLabelValues(dv.Sink).Inc()
		d.log.Debug("delivery dead-lettered", "sink", dv.Sink, "event_id", dv.Event.ID, "error", shutdownError)
	}
	for sink, n := range perSink {
		d.log.Warn("deliveries dead-lettered at shutdown", "sink", sink, "count", n, "error", shutdownError)
	}
	if failed > 0 {
		return fmt.Errorf("dispatch: %d deliveries owed at shutdown could not be dead-lettered", failed)
	}
	return nil
}

// step records, when there is a journal, a change to dv: the attempt that
// started at start and took took (failed with err, or not if nil), or with
// took 0 and a note, a change without a send.
func (d *Dispatcher) step(dv *queue.Delivery, state string, start time.Time, took time.Duration, err error, note string) {
	if d.jr == nil {
		return
	}
	st := journal.Step{EventID: dv.Event.ID, Sink: dv.Sink, State: state, At: start, Note: note}
	if note == "" {
		st.DurationMS = float64(took.Microseconds()) / 1000
		switch {
		case err == nil:
			st.Outcome = journal.OK
		case sinks.IsPermanent(err):
			st.Outcome = journal.Permanent
		default:
			st.Outcome = journal.Retryable
		}
		if err != nil {
			st.Error = err.Error()
			var se *sinks.StatusError
			if errors.As(err, &se) {
				st.Status = se.Code
			}
		}
	}
	d.jr.RecordStep(st)
}

// stepOK records a successful attempt, with the destination's status code
// when the sink reported it.
func (d *Dispatcher) stepOK(dv *queue.Delivery, start time.Time, took time.Duration, status int) {
	if d.jr == nil {
		return
	}
	d.jr.RecordStep(journal.Step{EventID: dv.Event.ID, Sink: dv.Sink, State: journal.Delivered, At: start,
		DurationMS: float64(took.Microseconds()) / 1000, Outcome: journal.OK, Status: status})
}

func (d *Dispatcher) writeDeadLetter(rec *Record) error {
	if d.dl == nil {
		err := errors.New("dispatch: no dead-letter file")
		d.log.Error("dead letter lost", "sink", rec.Sink, "event_id", rec.EventID, "error", err)
		return err
	}
	if err := d.dl.Write(rec); err != nil {
		d.log.Error("dead letter not written", "sink", rec.Sink, "event_id", rec.EventID, "error", err)
		return err
	}
	return nil
}

// Status reports every sink in force, and removed sinks still draining.
func (d *Dispatcher) Status() map[string]LaneStatus {
	type entry struct {
		l        *lane
		draining bool
	}
	d.mu.Lock()
	lanes := make([]entry, 0, len(d.lanes)+len(d.draining))
	for _, l := range d.lanes {
		lanes = append(lanes, entry{l, false})
	}
	for _, l := range d.draining {
		lanes = append(lanes, entry{l, true})
	}
	d.mu.Unlock()
	out := make(map[string]LaneStatus, len(lanes))
	for _, e := range lanes {
		out[e.l.name] = e.l.status(e.draining)
	}
	return out
}

func sameTarget(a, b Target) bool {
	return a.Type == b.Type && a.Settings == b.Settings && sameSink(a.Sink, b.Sink)
}

// sameSink compares two sinks as values; a sink whose dynamic type cannot
// be compared is never the same as another.
func sameSink(a, b sinks.Sink) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

func containsSink(list []sinks.Sink, s sinks.Sink) bool {
	for _, x := range list {
		if sameSink(x, s) {
			return true
		}
	}
	return false
}
