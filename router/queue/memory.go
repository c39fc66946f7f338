package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// DeliveryOverhead is what the memory queue counts against its bound for each
// delivery on top of the event's body: the Delivery, its bookkeeping in the
// scheduler, and the event's own fields, roughly.
const DeliveryOverhead = 256

// Memory is the in-process Queue: fast, bounded, and lost on a crash. Each
// event is stored once however many sinks it is owed to; the bound counts its
// body (plus DeliveryOverhead per delivery) until every sink is Done with it.
type Memory struct {
	sched *Scheduler

	mu     sync.Mutex
	used   int64
	max    int64
	closed bool
}

// memEvent is what the deliveries of one event share.
type memEvent struct {
	owed int // deliveries not yet Done; guarded by Memory.mu
}

// NewMemory returns an empty memory queue holding at most maxBytes.
func NewMemory(maxBytes int64) *Memory {
	return &Memory{sched: NewScheduler(), max: maxBytes}
}

// Put records ev as owed to each sink in to. It never blocks: at the bound
// it returns ErrFull and records nothing.
func (m *Memory) Put(_ context.Context, ev *sinks.Event, to []string) error {
	if len(to) == 0 {
		return errors.New("queue: put with no sinks")
	}
	cost := int64(len(ev.Body)) + int64(len(to))*DeliveryOverhead
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.used+cost > m.max {
		return ErrFull
	}
	m.used += cost
	ref := &memEvent{owed: len(to)}
	// Pushing under m.mu keeps Put atomic with Close: an event is either
	// refused or wholly owed, never half-recorded.
	for _, sink := range to {
		m.sched.Push(&Delivery{Event: ev, Sink: sink, Ref: ref})
	}
	return nil
}

// Take blocks until a delivery for sink is due, ctx is done, or the queue is
// closed (ErrClosed).
func (m *Memory) Take(ctx context.Context, sink string) (*Delivery, error) {
	return m.sched.Take(ctx, sink)
}

// TakeBatch is Take for up to limit deliveries already due for sink; see
// BatchTaker.
func (m *Memory) TakeBatch(ctx context.Context, sink string, limit int) ([]*Delivery, error) {
	return m.sched.TakeBatch(ctx, sink, limit)
}

// TakeDue returns the deliveries for sink due now, up to limit, without
// waiting; see BatchTaker.
func (m *Memory) TakeDue(sink string, limit int) []*Delivery {
	return m.sched.TakeDue(sink, limit)
}

// Done forgets d, which Take handed out; once every delivery of its event is
// Done, the event's bytes no longer count against the bound.
func (m *Memory) Done(d *Delivery) error {
	ref, ok := d.Ref.(*memEvent)
	if !ok {
		return fmt.Errorf("queue: delivery of event %q to %q is not from this queue", d.Event.ID, d.Sink)
	}
	if !m.sched.Done(d) {
		return fmt.Errorf("queue: delivery of event %q to %q is not in flight", d.Event.ID, d.Sink)
	}
	m.mu.Lock()
	m.used -= DeliveryOverhead
	ref.owed--
	if ref.owed == 0 {
		m.used -= int64(len(d.Event.Body))
	}
	m.mu.Unlock()
	return nil
}

// Retry makes d due again after delay.
func (m *Memory) Retry(d *Delivery, delay time.Duration) error {
	if _, ok := d.Ref.(*memEvent); !ok {
		return fmt.Errorf("queue: delivery of event %q to %q is not from this queue", d.Event.ID, d.Sink)
	}
	m.sched.Delay(d, delay)
	return nil
}

// Depth is the number of deliveries owed to sink: due, waiting or in flight.
func (m *Memory) Depth(sink string) int { return m.sched.Depth(sink) }

// Pending lists the sinks that are owed deliveries.
func (m *Memory) Pending() []string { return m.sched.Pending() }

// Oldest implements Ager.
func (m *Memory) Oldest(sink string) (time.Time, bool) { return m.sched.Oldest(sink) }

// Remaining returns every delivery still owed, in acceptance order; the
// dispatcher dead-letters them at shutdown since memory does not survive it.
func (m *Memory) Remaining() []*Delivery { return m.sched.Remaining() }

// Used is the number of bytes counted against the bound.
func (m *Memory) Used() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.used
}

// Close refuses further Puts and makes Take return ErrClosed. Deliveries not
// yet Done stay listed by Remaining; Done and Retry keep working so that
// sends finishing during shutdown can report.
func (m *Memory) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.sched.Close()
	return nil
}

var (
	_ Queue      = (*Memory)(nil)
	_ Drainer    = (*Memory)(nil)
	_ BatchTaker = (*Memory)(nil)
)
