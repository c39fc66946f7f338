// Package disk is the durable queue backend (`queue.backend: disk`, the
// default): accepted events are written to a bbolt file under
// <data_dir>/queue and fdatasynced before Put returns, so that an event
// answered 200 is delivered even after kill -9 or a power loss.
//
// Writes go through one committer goroutine that applies every Put waiting
// at that moment in a single bbolt transaction (one pair of fdatasyncs for
// the batch): group commit without an added delay, since a batch starts as
// soon as the previous one is on disk. Done and Retry are recorded lazily,
// with the next batch or within flushDelay; losing the last of them to a
// crash only means an extra attempt.
//
// The in-memory side (per-sink order, retry timers) is a queue.Scheduler.
// Bodies of the oldest events, up to a byte budget, stay in memory; the
// others are read back from the file when a worker takes them, so a large
// backlog does not have to fit in RAM.
package disk

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

// FileName is the name of the queue file inside the queue directory.
const FileName = "queue.db"

const (
	// flushDelay bounds how long a Done or Retry waits for a Put to share
	// its commit before it is committed on its own.
	flushDelay = 100 * time.Millisecond
	// flushUpdates commits pending Done/Retry records at once when this many
	// have piled up, which bounds the memory they hold.
	flushUpdates = 4096
	// maxCacheBytes caps the bodies kept in memory (Queue.cacheBudget).
	maxCacheBytes = 64 << 20
)

// Queue is the disk-backed queue.Queue. Create it with Open.
type Queue struct {
	db    *bolt.DB
	path  string
	log   *slog.Logger
	sched *queue.Scheduler

	maxBytes int64        // bound on used; 0 means none
	used     atomic.Int64 // stored bytes of events not fully delivered
	// cacheBudget bounds cached, the bytes of events whose bodies stay in
	// memory; the others are read back from the file on Take.
	cacheBudget int64
	cached      atomic.Int64
	lastSeq     atomic.Uint64 // highest acceptance number handed out

	recoveredMax uint64 // events up to this number were found at Open
	recoveredN   int

	mu         sync.Mutex
	puts       []*putReq
	updates    []update
	closed     bool // no more Puts
	final      bool // committer has taken its last batch: no more updates
	flushArmed bool

	kick       chan struct{}
	stop       chan struct{}
	stopped    chan struct{}
	flushTimer *time.Timer
}

// entry is what the deliveries of one event share in memory.
type entry struct {
	seq  uint64
	size int64 // counted against maxBytes until owed reaches 0
	// ev is the whole event when cached, else a copy without Body; it is
	// immutable once the entry is published.
	ev     *sinks.Event
	cached bool
	owed   atomic.Int32
}

// ref is a Delivery's Ref: its event and whether a worker holds it.
type ref struct {
	e     *entry
	taken atomic.Bool
}

// putReq is one Put waiting for its commit.
type putReq struct {
	seq  uint64
	key  []byte
	val  []byte
	dels []*queue.Delivery
	dkey [][]byte
	dval [][]byte
	err  error
	done chan struct{}
}

// update is a lazily committed Done or Retry.
type update struct {
	seq    uint64
	sink   string
	delete bool // Done: the delivery record goes
	last   bool // and with it the event, its last delivery
	state  deliveryState
}

// Open opens (creating it if needed) the queue in dir, normally
// <data_dir>/queue, and loads every delivery still owed, in acceptance order,
// with the retry state it had. maxBytes bounds the stored bytes of events
// not yet fully delivered (0: no bound). A file found damaged is moved aside
// and what can be read from it is carried over; see the package README.
func Open(dir string, maxBytes int64, log *slog.Logger) (*Queue, error) {
	// Bodies beyond the budget are read back on Take; a quarter of the bound
	// keeps small queues entirely in memory.
	budget := int64(maxCacheBytes)
	if maxBytes > 0 {
		budget = min(maxCacheBytes, maxBytes/4)
	}
	return open(dir, maxBytes, budget, log)
}

// open is Open with the body cache's budget given.
func open(dir string, maxBytes, cacheBudget int64, log *slog.Logger) (*Queue, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("backend", "disk")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("queue dir: %w", err)
	}
	if err := checkWritable(dir); err != nil {
		return nil, fmt.Errorf("queue dir %s is not writable: %w", dir, err)
	}
	q := &Queue{
		path:        filepath.Join(dir, FileName),
		log:         log,
		sched:       queue.NewScheduler(),
		maxBytes:    max(maxBytes, 0),
		cacheBudget: cacheBudget,
		kick:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		stopped:     make(chan struct{}),
	}
	st, err := q.openStore()
	if err != nil {
		return nil, err
	}
	q.lastSeq.Store(st.maxSeq)
	q.recoveredMax = st.maxSeq
	q.recoveredN = st.events
	q.used.Store(st.used)
	q.cached.Store(st.cached)
	now := time.Now()
	for _, it := range st.items {
		// Push and Delay number first-seen deliveries in call order, so
		// calling them in key order keeps acceptance order across restarts.
		if it.nextAt > now.UnixNano() {
			q.sched.Delay(it.d, time.Duration(it.nextAt-now.UnixNano()))
		} else {
			q.sched.Push(it.d)
		}
	}
	if st.events > 0 {
		log.Info("queue recovered", "events", st.events, "deliveries", len(st.items), "bytes", st.used)
	}
	if q.maxBytes > 0 && st.used > q.maxBytes {
		log.Warn("queue holds more than max_bytes; new events are refused until it drains", "bytes", st.used, "max_bytes", q.maxBytes)
	}
	q.flushTimer = time.AfterFunc(time.Hour, q.wake)
	q.flushTimer.Stop()
	go q.run()
	return q, nil
}

// checkWritable fails early, with the OS's reason, when files cannot be
// created in dir (read-only mount, wrong owner), rather than at the first Put.
func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	err = f.Close()
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	return err
}

// Put records ev as owed to each sink in to and returns once that is on
// disk. Concurrent Puts share one commit. ctx is checked before the write
// starts; once it has, Put waits for the outcome (a few milliseconds) so
// that nil means stored and an error means nothing was.
func (q *Queue) Put(ctx context.Context, ev *sinks.Event, to []string) error {
	if len(to) == 0 {
		return errors.New("queue: put with no sinks")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if hasDuplicate(to) {
		to = slices.Compact(slices.Sorted(slices.Values(to)))
	}
	size := storedSize(ev, to)
	if !q.reserve(size) {
		return queue.ErrFull
	}
	seq := q.lastSeq.Add(1)
	e := &entry{seq: seq, size: size, ev: ev}
	e.owed.Store(int32(len(to)))
	if q.cached.Add(size) <= q.cacheBudget {
		e.cached = true
	} else {
		q.cached.Add(-size)
		e.ev = &sinks.Event{ID: ev.ID, Source: ev.Source, ReceivedAt: ev.ReceivedAt}
	}
	key := seqKey(seq)
	r := &putReq{seq: seq, key: key, val: encodeEvent(key, ev), done: make(chan struct{})}
	for _, sink := range to {
		dk := deliveryKey(seq, sink)
		r.dels = append(r.dels, &queue.Delivery{Event: e.ev, Sink: sink, Ref: &ref{e: e}})
		r.dkey = append(r.dkey, dk)
		r.dval = append(r.dval, encodeDelivery(dk, deliveryState{}))
	}

	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		q.release(e)
		return queue.ErrClosed
	}
	q.puts = append(q.puts, r)
	q.mu.Unlock()
	q.wake()
	<-r.done
	if r.err != nil {
		q.release(e)
		return fmt.Errorf("queue write: %w", r.err)
	}
	return nil
}

func hasDuplicate(to []string) bool {
	for i := 1; i < len(to); i++ {
		if slices.Contains(to[:i], to[i]) {
			return true
		}
	}
	return false
}

// reserve counts size against the bound, or reports that it does not fit.
func (q *Queue) reserve(size int64) bool {
	for {
		u := q.used.Load()
		if q.maxBytes > 0 && u+size > q.maxBytes {
			return false
		}
		if q.used.CompareAndSwap(u, u+size) {
			return true
		}
	}
}

// release gives back what an event counted, once it is delivered or failed
// to be stored.
func (q *Queue) release(e *entry) {
	q.used.Add(-e.size)
	if e.cached {
		q.cached.Add(-e.size)
	}
}

// Take blocks until a delivery for sink is due, ctx is done, or the queue is
// closed (ErrClosed). A body not kept in memory is read back from the file.
func (q *Queue) Take(ctx context.Context, sink string) (*queue.Delivery, error) {
	for {
		d, err := q.sched.Take(ctx, sink)
		if err != nil {
			return nil, err
		}
		r := d.Ref.(*ref)
		r.taken.Store(true)
		if r.e.cached {
			return d, nil
		}
		ev, err := q.load(r.e.seq)
		if err == nil {
			d.Event = ev
			return d, nil
		}
		if errors.Is(err, bolt.ErrDatabaseNotOpen) {
			return nil, queue.ErrClosed
		}
		// Open verified every record, so this is damage done since: the
		// delivery cannot be made, and keeping it would fail forever.
		q.log.Error("queued event unreadable, delivery dropped", "sink", sink, "event_id", r.e.ev.ID, "seq", r.e.seq, "error", err)
		if derr := q.Done(d); derr != nil {
			return nil, derr
		}
	}
}

// load reads one event, body included, from the file.
func (q *Queue) load(seq uint64) (*sinks.Event, error) {
	var ev *sinks.Event
	err := q.db.View(func(tx *bolt.Tx) error {
		k := seqKey(seq)
		v := tx.Bucket(bucketEvents).Get(k)
		if v == nil {
			return errors.New("event record missing")
		}
		var err error
		ev, err = decodeEvent(k, v, true)
		return err
	})
	return ev, err
}

// Done forgets d, which Take handed out: it was delivered or dead-lettered.
// The removal is committed lazily (see the package doc).
func (q *Queue) Done(d *queue.Delivery) error {
	r, err := q.handOver(d)
	if err != nil {
		return err
	}
	q.sched.Done(d)
	last := r.e.owed.Add(-1) == 0
	if last {
		q.release(r.e)
	}
	return q.record(update{seq: r.e.seq, sink: d.Sink, delete: true, last: last})
}

// Retry makes d due again after delay and records its Attempts, LastError
// and next attempt time, lazily. d must not be used by the caller afterwards:
// another worker may take it, and its Event may be dropped to its metadata
// until then, to keep the body out of memory.
func (q *Queue) Retry(d *queue.Delivery, delay time.Duration) error {
	r, err := q.handOver(d)
	if err != nil {
		return err
	}
	st := deliveryState{attempts: d.Attempts, lastError: d.LastError}
	if delay > 0 {
		st.nextAt = time.Now().Add(delay).UnixNano()
	}
	err = q.record(update{seq: r.e.seq, sink: d.Sink, state: st})
	if !r.e.cached {
		d.Event = r.e.ev
	}
	q.sched.Delay(d, delay)
	return err
}

// handOver checks that d came from this queue's Take and is being handed
// back for the first time.
func (q *Queue) handOver(d *queue.Delivery) (*ref, error) {
	r, ok := d.Ref.(*ref)
	if !ok {
		return nil, fmt.Errorf("queue: delivery to %q is not from this queue", d.Sink)
	}
	if !r.taken.CompareAndSwap(true, false) {
		return nil, fmt.Errorf("queue: delivery of event %q to %q is not in flight", r.e.ev.ID, d.Sink)
	}
	return r, nil
}

// record queues a Done or Retry for a later commit.
func (q *Queue) record(u update) error {
	q.mu.Lock()
	if q.final {
		q.mu.Unlock()
		return queue.ErrClosed
	}
	q.updates = append(q.updates, u)
	n := len(q.updates)
	arm := !q.flushArmed
	q.flushArmed = true
	q.mu.Unlock()
	if n >= flushUpdates {
		q.wake()
	} else if arm {
		q.flushTimer.Reset(flushDelay)
	}
	return nil
}

// Depth is the number of deliveries owed to sink: due, waiting or in flight.
func (q *Queue) Depth(sink string) int { return q.sched.Depth(sink) }

// Pending lists the sinks that are owed deliveries, including ones found at
// Open that the current config may no longer name.
func (q *Queue) Pending() []string { return q.sched.Pending() }

// Used is the number of bytes counted against maxBytes.
func (q *Queue) Used() int64 { return q.used.Load() }

// Close refuses further Puts, makes Take return ErrClosed, commits what is
// pending (Puts in flight, Done and Retry records) and closes the file.
// Deliveries not Done stay owed and are loaded by the next Open. Done and
// Retry after Close return ErrClosed and are not recorded: the delivery is
// made again after the restart.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	q.sched.Close()
	close(q.stop)
	<-q.stopped
	q.flushTimer.Stop()
	if err := q.db.Close(); err != nil {
		return fmt.Errorf("queue close: %w", err)
	}
	return nil
}

// wake asks the committer for a commit; it never blocks.
func (q *Queue) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// run is the committer: each turn takes every Put and update waiting and
// commits them in one transaction. While a commit is syncing, new Puts pile
// up and form the next batch, so the batch size follows the load and a lone
// Put is not delayed.
func (q *Queue) run() {
	defer close(q.stopped)
	for {
		final := false
		select {
		case <-q.kick:
		case <-q.stop:
			final = true
		}
		q.mu.Lock()
		puts, updates := q.puts, q.updates
		q.puts, q.updates = nil, nil
		q.flushArmed = false
		q.final = final
		q.mu.Unlock()
		q.commit(puts, updates)
		if final {
			return
		}
	}
}

// commit writes one batch and then hands the new deliveries to the scheduler
// in acceptance order, which is why only the committer pushes.
func (q *Queue) commit(puts []*putReq, updates []update) {
	if len(puts) == 0 && len(updates) == 0 {
		return
	}
	// Acceptance numbers are taken before the lock that queues a Put, so
	// two racing Puts can arrive swapped; within a batch, restore the order.
	slices.SortFunc(puts, func(a, b *putReq) int { return cmp.Compare(a.seq, b.seq) })
	err := q.db.Update(func(tx *bolt.Tx) error {
		if err := writePuts(tx, puts); err != nil {
			return err
		}
		return writeUpdates(tx, updates)
	})
	if err != nil && len(puts) > 0 && len(updates) > 0 {
		// Do not lose delivery progress to a failing Put (a full disk).
		err2 := q.db.Update(func(tx *bolt.Tx) error { return writeUpdates(tx, updates) })
		if err2 != nil {
			q.log.Error("queue commit failed, delivery progress not recorded", "updates", len(updates), "error", err2)
		}
	} else if err != nil && len(updates) > 0 {
		q.log.Error("queue commit failed, delivery progress not recorded", "updates", len(updates), "error", err)
	}
	for _, p := range puts {
		p.err = err
		if err == nil {
			for _, d := range p.dels {
				q.sched.Push(d)
			}
		}
		close(p.done)
	}
}

func writePuts(tx *bolt.Tx, puts []*putReq) error {
	if len(puts) == 0 {
		return nil
	}
	eb, db := tx.Bucket(bucketEvents), tx.Bucket(bucketDeliveries)
	// Keys only grow, so pages split at the end can be filled up.
	eb.FillPercent, db.FillPercent = 0.9, 0.9
	for _, p := range puts {
		if err := eb.Put(p.key, p.val); err != nil {
			return err
		}
		for i := range p.dkey {
			if err := db.Put(p.dkey[i], p.dval[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeUpdates(tx *bolt.Tx, updates []update) error {
	eb, db := tx.Bucket(bucketEvents), tx.Bucket(bucketDeliveries)
	for _, u := range updates {
		dk := deliveryKey(u.seq, u.sink)
		var err error
		switch {
		case u.delete:
			err = db.Delete(dk)
			if err == nil && u.last {
				err = eb.Delete(seqKey(u.seq))
			}
		default:
			err = db.Put(dk, encodeDelivery(dk, u.state))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

var _ queue.Queue = (*Queue)(nil)
