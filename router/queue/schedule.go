package queue

import (
	"container/heap"
	"context"
	"slices"
	"sort"
	"sync"
	"time"
)

// Scheduler is the in-memory part every backend shares: per sink, a FIFO of
// due deliveries in acceptance order and the deliveries taken but not yet
// finished; across sinks, one timer heap of deliveries waiting for a retry.
// Backends keep the bytes (in memory, on disk, in a stream) and drive a
// Scheduler: Push when a delivery is recorded (in acceptance order), Take to
// hand it to a worker, Delay on Retry, Done on Done.
//
// Push and Take are O(1); a delivery that comes back from a retry costs
// O(log n). One timer (time.AfterFunc) serves all delayed deliveries and
// waiting takers block on a channel, so nothing polls and no goroutine is
// started per delivery. All methods are safe for concurrent use.
type Scheduler struct {
	mu     sync.Mutex
	lanes  map[string]*schedLane
	timers timerHeap
	timer  *time.Timer
	armed  time.Time // when timer fires; zero while it is not armed
	seq    uint64
	done   bool
	closed chan struct{}
}

// schedLane is one sink's share of a Scheduler.
type schedLane struct {
	fresh    ring                   // due, never delayed, in seq order
	retried  seqHeap                // due again after a delay, by seq
	waiting  int                    // in the timer heap
	inflight map[*Delivery]struct{} // taken, neither Done nor delayed yet
	// signal holds one token while deliveries may be due; a taker that
	// consumes it and leaves work behind passes it on, so one Push wakes one
	// taker and no wakeup is lost.
	signal chan struct{}
}

// NewScheduler returns an empty, open Scheduler.
func NewScheduler() *Scheduler {
	s := &Scheduler{lanes: make(map[string]*schedLane), closed: make(chan struct{})}
	s.timer = time.AfterFunc(time.Hour, s.fire)
	s.timer.Stop()
	return s
}

func (s *Scheduler) lane(sink string) *schedLane {
	l := s.lanes[sink]
	if l == nil {
		l = &schedLane{inflight: make(map[*Delivery]struct{}), signal: make(chan struct{}, 1)}
		s.lanes[sink] = l
	}
	return l
}

func (l *schedLane) due() int { return l.fresh.len() + len(l.retried) }

func (l *schedLane) wake() {
	select {
	case l.signal <- struct{}{}:
	default:
	}
}

// Push makes d due for d.Sink now. Deliveries pushed for the first time are
// numbered in the order of their Push calls, and that is the order Take
// returns them in: call Push in acceptance order (also when recovering).
func (s *Scheduler) Push(d *Delivery) {
	s.mu.Lock()
	d.noteAccepted()
	l := s.lane(d.Sink)
	if d.seq == 0 {
		// New: never handed out, so not in the in-flight set (a delete of
		// an absent key still hashes and probes, on every event).
		s.seq++
		d.seq = s.seq
		l.fresh.push(d)
	} else {
		// Seen before (a retry made due at once): it goes back among the due
		// ones in its acceptance place, ahead of later events.
		delete(l.inflight, d)
		heap.Push(&l.retried, d)
	}
	l.wake()
	s.mu.Unlock()
}

// Delay makes d due again after the given delay (at once if it is not
// positive). It takes d out of the in-flight set if Take had handed it out.
func (s *Scheduler) Delay(d *Delivery, after time.Duration) {
	if after <= 0 {
		s.Push(d)
		return
	}
	at := time.Now().Add(after)
	s.mu.Lock()
	d.noteAccepted()
	l := s.lane(d.Sink)
	delete(l.inflight, d)
	if d.seq == 0 {
		s.seq++
		d.seq = s.seq
	}
	l.waiting++
	heap.Push(&s.timers, timed{at: at, d: d})
	if !s.done && (s.armed.IsZero() || at.Before(s.armed)) {
		s.armed = at
		s.timer.Reset(after)
	}
	s.mu.Unlock()
}

// fire moves every delivery whose delay has passed to its lane's due set and
// re-arms the timer for the next one.
func (s *Scheduler) fire() {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed = time.Time{}
	if s.done {
		return
	}
	for len(s.timers) > 0 && !s.timers[0].at.After(now) {
		t := heap.Pop(&s.timers).(timed)
		l := s.lane(t.d.Sink)
		l.waiting--
		heap.Push(&l.retried, t.d)
		l.wake()
	}
	if len(s.timers) > 0 {
		s.armed = s.timers[0].at
		s.timer.Reset(s.armed.Sub(now))
	}
}

// Take blocks until a delivery for sink is due, ctx is done (ctx.Err()) or
// the Scheduler is closed (ErrClosed). A ctx already done wins over a due
// delivery, so that a stopping worker gets nothing more. The delivery stays
// owed, in flight, until Done or Delay.
func (s *Scheduler) Take(ctx context.Context, sink string) (*Delivery, error) {
	var d *Delivery
	err := s.takeWhenDue(ctx, sink, func(l *schedLane) bool {
		if d = l.pop(); d == nil {
			return false
		}
		l.inflight[d] = struct{}{}
		if l.due() > 0 {
			l.wake() // pass the token on: work is left for another taker
		}
		return true
	})
	return d, err
}

// takeWhenDue calls take, with s.mu held, until it reports that it took
// something from sink's lane; it blocks between calls until the lane may
// have due deliveries. It returns ctx.Err() once ctx is done (at once if it
// already is) or ErrClosed once the Scheduler is closed, and take is not
// called again.
func (s *Scheduler) takeWhenDue(ctx context.Context, sink string, take func(*schedLane) bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	l := s.lane(sink)
	s.mu.Unlock()
	for {
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			return ErrClosed
		}
		if take(l) {
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		if err := s.await(ctx, l); err != nil {
			return err
		}
	}
}

// BatchTaker is implemented by queues that can hand out several due
// deliveries for one sink at once, so that a worker pays for one take (and
// its sink, if a sinks.BatchSender, for one write) per batch.
type BatchTaker interface {
	// TakeBatch blocks like Take until a delivery for sink is due, then
	// returns it with the ones due right after it, in Take's order, up to
	// limit in all, without waiting for more.
	TakeBatch(ctx context.Context, sink string, limit int) ([]*Delivery, error)
	// TakeDue returns the deliveries for sink due now, in Take's order, up
	// to limit; none (nil) if nothing is due or the queue is closed. It
	// never blocks.
	TakeDue(sink string, limit int) []*Delivery
}

// TakeBatch is Take for up to limit deliveries: it blocks until one is due,
// then adds those already due behind it, in the same order, without waiting
// for more. Each stays in flight until Done or Delay.
func (s *Scheduler) TakeBatch(ctx context.Context, sink string, limit int) ([]*Delivery, error) {
	limit = max(limit, 1)
	var out []*Delivery
	err := s.takeWhenDue(ctx, sink, func(l *schedLane) bool {
		out = s.takeDueLocked(l, limit)
		return out != nil
	})
	return out, err
}

// TakeDue returns the deliveries for sink that are due now, up to limit, in
// Take's order, without waiting; nil if none is due or the Scheduler is
// closed. Each stays in flight until Done or Delay.
func (s *Scheduler) TakeDue(sink string, limit int) []*Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil
	}
	return s.takeDueLocked(s.lane(sink), limit)
}

// takeDueLocked moves up to limit due deliveries of l in flight and returns
// them, or nil. s.mu is held.
func (s *Scheduler) takeDueLocked(l *schedLane, limit int) []*Delivery {
	n := min(l.due(), limit)
	if n <= 0 {
		return nil
	}
	out := make([]*Delivery, n)
	for i := range out {
		out[i] = l.pop()
		l.inflight[out[i]] = struct{}{}
	}
	if l.due() > 0 {
		l.wake() // pass the token on: work is left for another taker
	}
	return out
}

// await blocks until l may have due deliveries, ctx is done (ctx.Err()) or
// the Scheduler is closed (ErrClosed).
func (s *Scheduler) await(ctx context.Context, l *schedLane) error {
	select {
	case <-l.signal:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closed:
		return ErrClosed
	}
}

// pop removes the due delivery accepted first, or returns nil.
func (l *schedLane) pop() *Delivery {
	f := l.fresh.peek()
	if len(l.retried) > 0 && (f == nil || l.retried[0].seq < f.seq) {
		return heap.Pop(&l.retried).(*Delivery)
	}
	if f != nil {
		return l.fresh.pop()
	}
	return nil
}

// Done forgets d, which Take handed out: it was delivered or dead-lettered.
// It reports whether d was in flight.
func (s *Scheduler) Done(d *Delivery) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.lanes[d.Sink]
	if l == nil {
		return false
	}
	if _, ok := l.inflight[d]; !ok {
		return false
	}
	delete(l.inflight, d)
	return true
}

// Depth is the number of deliveries owed to sink: due, waiting for a retry,
// or in flight.
func (s *Scheduler) Depth(sink string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.lanes[sink]
	if l == nil {
		return 0
	}
	return l.due() + l.waiting + len(l.inflight)
}

// Oldest returns when the oldest delivery owed to sink (due, waiting for a
// retry or in flight) was accepted, and false if none is owed. It walks the
// waiting and in-flight deliveries, so it is for health and metrics, not for
// every request.
func (s *Scheduler) Oldest(sink string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.lanes[sink]
	if l == nil {
		return time.Time{}, false
	}
	var oldest *Delivery
	consider := func(d *Delivery) {
		if d != nil && (oldest == nil || d.seq < oldest.seq) {
			oldest = d
		}
	}
	if l.fresh.n > 0 {
		consider(l.fresh.buf[l.fresh.head])
	}
	if len(l.retried) > 0 {
		consider(l.retried[0])
	}
	for d := range l.inflight {
		consider(d)
	}
	if l.waiting > 0 {
		for _, t := range s.timers {
			if t.d.Sink == sink {
				consider(t.d)
			}
		}
	}
	if oldest == nil || oldest.accepted == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, oldest.accepted), true
}

// noteAccepted copies d's acceptance time the first time the Scheduler sees
// d, while no worker holds it: a backend may swap d.Event later (the disk
// queue loads the body into a taken delivery), and Oldest reads only this.
// s.mu is held.
func (d *Delivery) noteAccepted() {
	if d.accepted == 0 && d.Event != nil {
		d.accepted = d.Event.ReceivedAt.UnixNano()
	}
}

// Pending lists, sorted, the sinks that are owed at least one delivery.
func (s *Scheduler) Pending() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, l := range s.lanes {
		if l.due()+l.waiting+len(l.inflight) > 0 {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// Remaining returns every delivery still owed (due, waiting or in flight),
// in acceptance order, without removing them; it is meant for shutdown.
func (s *Scheduler) Remaining() []*Delivery {
	s.mu.Lock()
	var out []*Delivery
	for _, l := range s.lanes {
		out = l.fresh.appendTo(out)
		out = append(out, l.retried...)
		for d := range l.inflight {
			out = append(out, d)
		}
	}
	for _, t := range s.timers {
		out = append(out, t.d)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b *Delivery) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	return out
}

// Close makes pending and future Take calls return ErrClosed and stops the
// timer. Deliveries stay owed: Remaining still lists them, and Push and
// Delay still record (a worker finishing its send during shutdown reports
// its outcome after Close).
func (s *Scheduler) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	s.done = true
	s.timer.Stop()
	s.armed = time.Time{}
	close(s.closed)
}

// ring is a growable FIFO of deliveries.
type ring struct {
	buf  []*Delivery
	head int
	n    int
}

func (r *ring) len() int { return r.n }

func (r *ring) push(d *Delivery) {
	if r.n == len(r.buf) {
		nb := make([]*Delivery, max(16, 2*len(r.buf)))
		r.appendTo(nb[:0])
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = d
	r.n++
}

func (r *ring) peek() *Delivery {
	if r.n == 0 {
		return nil
	}
	return r.buf[r.head]
}

func (r *ring) pop() *Delivery {
	if r.n == 0 {
		return nil
	}
	d := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	if r.n == 0 {
		r.head = 0
	}
	return d
}

// appendTo appends the ring's contents, oldest first, to out.
func (r *ring) appendTo(out []*Delivery) []*Delivery {
	for i := 0; i < r.n; i++ {
		out = append(out, r.buf[(r.head+i)%len(r.buf)])
	}
	return out
}

// seqHeap is a min-heap (container/heap) of deliveries by acceptance
// number.
type seqHeap []*Delivery

func (h seqHeap) Len() int           { return len(h) }
func (h seqHeap) Less(i, j int) bool { return h[i].seq < h[j].seq }
func (h seqHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *seqHeap) Push(x any)        { *h = append(*h, x.(*Delivery)) }
func (h *seqHeap) Pop() any {
	a := *h
	d := a[len(a)-1]
	a[len(a)-1] = nil
	*h = a[:len(a)-1]
	return d
}

// timed is a delivery waiting until at.
type timed struct {
	at time.Time
	d  *Delivery
}

// timerHeap is a min-heap (container/heap) of waiting deliveries by due
// time, then by acceptance, so that equal delays keep their order.
type timerHeap []timed

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].d.seq < h[j].d.seq
	}
	return h[i].at.Before(h[j].at)
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(timed)) }
func (h *timerHeap) Pop() any {
	a := *h
	t := a[len(a)-1]
	a[len(a)-1] = timed{}
	*h = a[:len(a)-1]
	return t
}
