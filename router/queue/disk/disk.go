// Package disk is the durable queue backend (`queue.backend: disk`, the
// default): a segmented append-only log under <data_dir>/queue. An event
// is answered 200 once its record is in the log and fdatasynced, so that it
// is delivered even after kill -9 or a power loss.
//
// Writes go through one committer goroutine that appends every record
// waiting at that moment (Puts, and the Done, Retry and dedup-key records
// made since the last write) with one write and one fdatasync: group
// commit without an added delay, since a batch starts as soon as the
// previous one is on disk. Done and Retry are never synced on their own:
// they wait for the next Put's write or at most ackDelay, and losing the
// last of them to a crash only means an extra attempt.
//
// Memory holds the index only: per event its acceptance number, where its
// record lies and the deliveries it still owes (sink, attempts, when the
// next attempt is due); the body is read back from the log when a worker
// takes it, except for a small cache of the oldest ones. Open rebuilds the
// index by reading the log. A compactor deletes the oldest segment once
// nothing in it is needed, and first rewrites forward what is (the records
// of events still owed, with their retry state, and dedup keys not yet
// expired) when the segment is mostly garbage or the log's garbage grows
// large: disk use follows the backlog, bounded by max_bytes.
//
// The in-memory side (per-sink order, retry timers) is a queue.Scheduler.
package disk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

const (
	// lingerBelow and maxYields make group commits larger under concurrent
	// load: when the previous batch had more than one Put, the committer
	// first lets the Puts about to arrive join (gather) while fewer than
	// lingerBelow wait. A sync costs far more than the records it writes
	// (here ~55 µs of CPU and a virtio doorbell per fdatasync).
	lingerBelow = 32
	maxYields   = 8
	// ackDelay bounds how long a Done, Retry or KeepKey record waits for
	// a Put's write to carry it before the committer writes it alone.
	ackDelay = 100 * time.Millisecond
	// ackBatch writes the waiting records at once past that many.
	ackBatch = 32768
	// maxCacheBytes caps the events kept in memory (Queue.cacheBudget):
	// small, since a backlog is read back from the log and a recent
	// record from the page cache.
	maxCacheBytes = 4 << 20
	// reservedSegments is the space the bound keeps aside, in segments:
	// the active one's preallocation, one spare, and room for the
	// compactor to rewrite a segment's survivors before it deletes it.
	reservedSegments = 3
	// freeAfterReplay: past this many bytes of log read at Open, its
	// garbage is returned to the OS at once.
	freeAfterReplay = 64 << 20
)

// Queue is the disk-backed queue.Queue. Create it with Open.
type Queue struct {
	dir   string
	log   *slog.Logger
	sched *queue.Scheduler
	files *segLog

	maxBytes int64 // bound on the log's disk use; 0 means none
	segBytes int64
	// cacheBudget bounds cached, the bytes of events whose bodies stay in
	// memory; the others are read back from the log on Take.
	cacheBudget int64
	cached      atomic.Int64
	ackDelay    time.Duration
	// maxKeys bounds the dedup keys kept after their events are delivered
	// (0: none kept).
	maxKeys int

	// recoveredMax is the highest seq found at Open (Recovered).
	recoveredMax uint64

	mu sync.Mutex
	// lastLSN is the highest lsn handed out; records are numbered under
	// mu as they are queued in pending, so pending is in lsn order.
	lastLSN uint64
	pending []pend
	// pendingPuts counts the bytes of the Puts in pending, reserved
	// against the bound before they are written.
	pendingPuts int64
	// logBytes, liveBytes, keyBytes sum the segments' size, live and keys;
	// keyCount is the number of 'K' records in the log.
	logBytes, liveBytes, keyBytes int64
	keyCount                      int
	// writtenLSN is the last lsn the committer has dealt with (written, or
	// failed to); wrote is broadcast after each batch.
	writtenLSN uint64
	wrote      *sync.Cond
	closed     bool // no more Puts
	final      bool // the committer took its last batch: no more records
	ackArmed   bool

	kick           chan struct{}
	stop           chan struct{}
	stopped        chan struct{}
	compactKick    chan struct{}
	compactStop    chan struct{}
	compactStopped chan struct{}
	ackTimer       *time.Timer
}

// entry is what the deliveries of one event share in memory: for an event
// not cached, only what scheduling and compaction need.
type entry struct {
	seq uint64
	// loc is where its current 'P' record lies: segment id << 32 | offset.
	loc atomic.Uint64
	n   int32 // that record's length; guarded by Queue.mu
	// ev is the whole event when cached, else nil (read back on Take); it
	// is immutable once the entry is published.
	ev     *sinks.Event
	cached bool
	owed   atomic.Int32
	dels   []delivery // one per sink of its 'P' record
}

func packLoc(id uint32, off int64) uint64 { return uint64(id)<<32 | uint64(off) }

func unpackLoc(loc uint64) (uint32, int64) { return uint32(loc >> 32), int64(loc & 0xffffffff) }

// ref is a Delivery's Ref: its event and whether a worker holds it.
type ref struct {
	e     *entry
	taken atomic.Bool
	// done and retry (the state its last Retry logged; nil: none) are
	// guarded by Queue.mu, and read by the compactor to log the event again.
	done  bool
	retry *deliveryState
}

// delivery is a Delivery with its Ref, allocated together (one slice per
// event for all its sinks).
type delivery struct {
	d queue.Delivery
	r ref
}

// putReq is one Put waiting for its commit.
type putReq struct {
	ev  *sinks.Event
	to  []string
	e   *entry
	n   int // its record's length
	err error
	// done is released by the committer once err is set; a WaitGroup
	// rather than a channel saves an allocation per Put.
	done sync.WaitGroup
}

// pend is one record waiting for the committer, numbered lsn.
type pend struct {
	lsn uint64
	typ byte
	put *putReq  // a first Put
	rw  *rewrite // a live event logged again by the compactor
	job *compactJob
	// The fields of a 'D', 'T' or 'K' record.
	seq     uint64
	sink    string
	st      deliveryState
	key     string
	expires int64
}

// rewrite is a live event that the compactor logs again.
type rewrite struct {
	e     *entry
	sinks []sinkState
	val   []byte // its event value, from the old record
}

// keptKey is a dedup key kept after its event.
type keptKey struct {
	key     string
	expires int64
}

// compactJob is the records one compaction step waits for.
type compactJob struct {
	wg  sync.WaitGroup
	mu  sync.Mutex
	err error
}

func (j *compactJob) finish(err error) {
	if err != nil {
		j.mu.Lock()
		j.err = errors.Join(j.err, err)
		j.mu.Unlock()
	}
	j.wg.Done()
}

// Option configures Open.
type Option func(*options)

type options struct {
	maxKeys  int
	ackDelay time.Duration // tests stretch it
	segBytes int64         // tests shrink it
}

// flush has the committer write every record queued so far and waits
// until it has (or failed to).
func (q *Queue) flush() {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.lastLSN
	for q.writtenLSN < n && !q.final {
		q.wake()
		q.wrote.Wait()
	}
}

// KeepKeys keeps up to n committed dedup keys after their events are
// delivered (and those given to KeepKey), oldest dropped first, until they
// expire; see queue.KeyKeeper. Without it (or with n ≤ 0) only the keys of
// events still owed are kept, in their records.
func KeepKeys(n int) Option { return func(o *options) { o.maxKeys = max(n, 0) } }

// Open opens (creating it if needed) the queue in dir, normally
// <data_dir>/queue, and loads every delivery still owed, in acceptance order,
// with the retry state it had. maxBytes bounds the log's disk use (0: no
// bound). Damaged records are skipped and what can be read is kept; see
// the package README.
func Open(dir string, maxBytes int64, log *slog.Logger, opts ...Option) (*Queue, error) {
	// Bodies beyond the budget are read back on Take; a quarter of the bound
	// keeps small queues entirely in memory.
	budget := int64(maxCacheBytes)
	if maxBytes > 0 {
		budget = min(maxCacheBytes, maxBytes/4)
	}
	return open(dir, maxBytes, budget, log, opts...)
}

// open is Open with the body cache's budget given.
func open(dir string, maxBytes, cacheBudget int64, log *slog.Logger, opts ...Option) (*Queue, error) {
	o := options{ackDelay: ackDelay, segBytes: segmentSize(maxBytes)}
	for _, opt := range opts {
		opt(&o)
	}
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
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	if err := migrateOldEngine(dir, log); err != nil {
		lock.Close()
		return nil, err
	}
	q := &Queue{
		dir:            dir,
		log:            log,
		sched:          queue.NewScheduler(),
		files:          &segLog{dir: dir, segBytes: o.segBytes},
		maxBytes:       max(maxBytes, 0),
		segBytes:       o.segBytes,
		maxKeys:        o.maxKeys,
		cacheBudget:    cacheBudget,
		ackDelay:       o.ackDelay,
		kick:           make(chan struct{}, 1),
		stop:           make(chan struct{}),
		stopped:        make(chan struct{}),
		compactKick:    make(chan struct{}, 1),
		compactStop:    make(chan struct{}),
		compactStopped: make(chan struct{}),
	}
	q.files.lock = lock
	q.wrote = sync.NewCond(&q.mu)
	if err := q.replay(); err != nil {
		_ = q.files.close()
		return nil, err
	}
	if q.logBytes > freeAfterReplay {
		// Reading a large log leaves its buffers and the index's growth as
		// garbage, more than the index itself: give it back to the OS now
		// rather than hold it at the peak (a small VM after an outage).
		debug.FreeOSMemory()
	}
	// The first segment is preallocated too; later spares are prepared by
	// the compactor, off the Puts' path.
	if q.spareFits() {
		if err := q.files.prepareSpare(); err != nil {
			log.Warn("log segment not preallocated; writing a growing segment", "error", err)
		}
	}
	q.ackTimer = time.AfterFunc(time.Hour, q.wake)
	q.ackTimer.Stop()
	go q.run()
	go q.compactLoop()
	q.wakeCompactor()
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
// disk. Concurrent Puts share one write and sync. ctx is checked before
// the write starts; once it has, Put waits for the outcome (well under a
// millisecond unless the disk is slow) so that nil means stored and an
// error means nothing was.
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
	n := firstPutLen(to, ev)
	e := &entry{n: int32(n), dels: make([]delivery, len(to))}
	e.owed.Store(int32(len(to)))
	if q.cached.Add(int64(n)) <= q.cacheBudget {
		e.cached = true
		e.ev = ev
	} else {
		// Not even its metadata stays in memory: Take reads the event back.
		q.cached.Add(-int64(n))
	}
	r := &putReq{ev: ev, to: to, e: e, n: n}
	for i, sink := range to {
		dl := &e.dels[i]
		dl.r.e = e
		dl.d = queue.Delivery{Event: e.ev, Sink: sink, Ref: &dl.r}
		dl.d.SetAccepted(ev.ReceivedAt)
	}
	r.done.Add(1)

	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		q.uncache(e)
		return queue.ErrClosed
	}
	if !q.fitsLocked(int64(n)) {
		q.mu.Unlock()
		q.uncache(e)
		q.wakeCompactor()
		return queue.ErrFull
	}
	q.pendingPuts += int64(n)
	// Numbered under the lock that queues it, so that the log is written
	// in acceptance order.
	q.lastLSN++
	e.seq = q.lastLSN
	q.pending = append(q.pending, pend{lsn: e.seq, typ: recPut, put: r})
	q.mu.Unlock()
	q.wake()
	r.done.Wait()
	if r.err != nil {
		q.uncache(e)
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

// fitsLocked reports whether n more bytes of records fit the bound. q.mu
// is held.
func (q *Queue) fitsLocked(n int64) bool {
	return q.maxBytes == 0 || q.logBytes+q.pendingPuts+n+reservedSegments*q.segBytes <= q.maxBytes
}

// spareFits reports whether a spare may be zero-filled: it is counted in
// the reserve, but a bound too small for the reserve has none.
func (q *Queue) spareFits() bool {
	return q.maxBytes == 0 || reservedSegments*q.segBytes <= q.maxBytes
}

// uncache gives back what a cached event counted against the cache.
func (q *Queue) uncache(e *entry) {
	if e.cached {
		q.cached.Add(-int64(e.n))
	}
}

// Take blocks until a delivery for sink is due, ctx is done, or the queue is
// closed (ErrClosed). A body not kept in memory is read back from the log.
func (q *Queue) Take(ctx context.Context, sink string) (*queue.Delivery, error) {
	for {
		d, err := q.sched.Take(ctx, sink)
		if err != nil {
			return nil, err
		}
		ok, err := q.prepare(d)
		if err != nil {
			return nil, err
		}
		if ok {
			return d, nil
		}
	}
}

// TakeBatch is Take for up to limit deliveries already due for sink; see
// queue.BatchTaker.
func (q *Queue) TakeBatch(ctx context.Context, sink string, limit int) ([]*queue.Delivery, error) {
	for {
		ds, err := q.sched.TakeBatch(ctx, sink, limit)
		if err != nil {
			return nil, err
		}
		ds, err = q.prepareAll(ds)
		if err != nil || len(ds) > 0 {
			return ds, err
		}
	}
}

// TakeDue returns the deliveries for sink due now, up to limit, without
// waiting; see queue.BatchTaker.
func (q *Queue) TakeDue(sink string, limit int) []*queue.Delivery {
	ds, _ := q.prepareAll(q.sched.TakeDue(sink, limit))
	return ds
}

// prepareAll prepares taken deliveries, keeping those that can be made. On
// ErrClosed it returns what was ready: the rest stays owed in the log and
// is delivered after the next start.
func (q *Queue) prepareAll(ds []*queue.Delivery) ([]*queue.Delivery, error) {
	out := ds[:0]
	for _, d := range ds {
		ok, err := q.prepare(d)
		if err != nil {
			if len(out) > 0 {
				return out, nil
			}
			return nil, err
		}
		if ok {
			out = append(out, d)
		}
	}
	return out, nil
}

// prepare gives a taken delivery its event, from memory or the log: an
// uncached delivery holds none while it waits. It reports false for a
// delivery that cannot be made (dropped), and queue.ErrClosed once the
// queue is closed.
func (q *Queue) prepare(d *queue.Delivery) (bool, error) {
	r := d.Ref.(*ref)
	r.taken.Store(true)
	if r.e.cached {
		d.Event = r.e.ev
		return true, nil
	}
	ev, err := q.load(r.e)
	if err == nil {
		d.Event = ev
		return true, nil
	}
	if errors.Is(err, queue.ErrClosed) {
		return false, err
	}
	// Open verified every record, so this is damage done since: the
	// delivery cannot be made, and keeping it would fail forever.
	q.log.Error("queued event unreadable, delivery dropped", "sink", d.Sink, "seq", r.e.seq, "error", err)
	if derr := q.Done(d); derr != nil {
		return false, derr
	}
	return false, nil
}

// readPool holds buffers for load: most records fit one page.
var readPool = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// load reads the event of e, body included, from its record in the log.
// A record moved by the compactor meanwhile is read at its new place.
func (q *Queue) load(e *entry) (*sinks.Event, error) {
	bp := readPool.Get().(*[]byte)
	defer readPool.Put(bp)
	for range 3 {
		id, off := unpackLoc(e.loc.Load())
		b, err := q.files.readAt(id, off, *bp)
		if err == nil && len(b) >= recHeader {
			if n := recHeader + int(beUint32(b)); n > len(b) && n <= 1<<30 {
				b, err = q.files.readAt(id, off, make([]byte, n))
			}
		}
		if errors.Is(err, errSegmentGone) {
			if q.isFinal() {
				return nil, queue.ErrClosed
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("record of event #%d at offset %d of segment %d: %w", e.seq, off, id, err)
		}
		rec, ok := parseRecord(b)
		if !ok || rec.typ != recPut || rec.seq != e.seq {
			return nil, fmt.Errorf("record of event #%d at offset %d of segment %d: %w", e.seq, off, id, errBadRecord)
		}
		return decodeEvent(seqKey(e.seq), rec.val, true)
	}
	return nil, fmt.Errorf("record of event #%d: moved too often while read", e.seq)
}

func beUint32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func (q *Queue) isFinal() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.final
}

// Done forgets d, which Take handed out: it was delivered or dead-lettered.
// Its record is logged lazily (see the package doc); with the event's last
// delivery, its dedup key is logged to be kept (KeepKeys).
func (q *Queue) Done(d *queue.Delivery) error {
	r, err := q.handOver(d)
	if err != nil {
		return err
	}
	q.sched.Done(d)
	var key string
	var expires int64
	if ev := d.Event; ev != nil && q.maxKeys > 0 && ev.DedupKey != "" && ev.DedupExpires.After(time.Now()) {
		key, expires = ev.DedupKey, ev.DedupExpires.UnixNano()
	}
	q.mu.Lock()
	if q.final {
		q.mu.Unlock()
		return queue.ErrClosed
	}
	r.done = true
	last := r.e.owed.Add(-1) == 0
	if last {
		q.forgetLocked(r.e)
	}
	q.queueLocked(pend{typ: recDone, seq: r.e.seq, sink: d.Sink})
	if last && key != "" {
		q.queueLocked(pend{typ: recKey, key: key, expires: expires})
	}
	n := len(q.pending)
	q.mu.Unlock()
	q.ackQueued(n)
	if last {
		q.wakeCompactor()
	}
	return nil
}

// forgetLocked drops a delivered event from its segment's live bytes.
// q.mu is held.
func (q *Queue) forgetLocked(e *entry) {
	if s := q.segmentOf(e); s != nil {
		s.live -= int64(e.n)
		q.liveBytes -= int64(e.n)
		// A delivered event's entry holds its deliveries, and through them
		// its body: swept from the list once half of it is delivered, not
		// kept until the segment is deleted (up to several segments of
		// bodies in memory while the sink keeps up).
		s.dead++
		if s.dead >= minSweep && 2*s.dead >= len(s.entries) {
			s.entries = slices.DeleteFunc(s.entries, func(x *entry) bool { return x.owed.Load() == 0 })
			s.dead = 0
		}
	}
	q.uncache(e)
}

// minSweep is the fewest delivered entries a segment's list is swept of.
const minSweep = 256

// segmentOf is the segment of e's current record.
func (q *Queue) segmentOf(e *entry) *segment {
	id, _ := unpackLoc(e.loc.Load())
	q.files.rmu.RLock()
	defer q.files.rmu.RUnlock()
	return q.files.byID[id]
}

// queueLocked numbers p and queues it for the committer. q.mu is held.
func (q *Queue) queueLocked(p pend) {
	q.lastLSN++
	p.lsn = q.lastLSN
	q.pending = append(q.pending, p)
}

// ackQueued has the committer write the queued records soon: at once past
// ackBatch, else within ackDelay (sooner if a Put comes).
func (q *Queue) ackQueued(n int) {
	if n >= ackBatch {
		q.wake()
		return
	}
	q.mu.Lock()
	arm := !q.ackArmed
	q.ackArmed = true
	q.mu.Unlock()
	if arm {
		q.ackTimer.Reset(q.ackDelay)
	}
}

// Retry makes d due again after delay and logs its Attempts, LastError and
// next attempt time, lazily. d must not be used by the caller afterwards:
// another worker may take it, and its Event may be dropped to its metadata
// until then, to keep the body out of memory.
func (q *Queue) Retry(d *queue.Delivery, delay time.Duration) error {
	r, err := q.handOver(d)
	if err != nil {
		return err
	}
	st := deliveryState{attempts: d.Attempts, lastError: d.LastError}
	if len(st.lastError) > maxLastError {
		st.lastError = st.lastError[:maxLastError]
	}
	if delay > 0 {
		st.nextAt = time.Now().Add(delay).UnixNano()
	}
	q.mu.Lock()
	if q.final {
		q.mu.Unlock()
		err = queue.ErrClosed
	} else {
		r.retry = &st
		q.queueLocked(pend{typ: recRetry, seq: r.e.seq, sink: d.Sink, st: st})
		n := len(q.pending)
		q.mu.Unlock()
		q.ackQueued(n)
	}
	if !r.e.cached && d.Event != nil {
		// Drop the body while it waits; the caller may still log the ID.
		d.Event = &sinks.Event{ID: d.Event.ID, Source: d.Event.Source, ReceivedAt: d.Event.ReceivedAt}
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
		return nil, fmt.Errorf("queue: delivery of event #%d to %q is not in flight", r.e.seq, d.Sink)
	}
	return r, nil
}

// Depth is the number of deliveries owed to sink: due, waiting or in flight.
func (q *Queue) Depth(sink string) int { return q.sched.Depth(sink) }

// Pending lists the sinks that are owed deliveries, including ones found at
// Open that the current config may no longer name.
func (q *Queue) Pending() []string { return q.sched.Pending() }

// Oldest implements queue.Ager.
func (q *Queue) Oldest(sink string) (time.Time, bool) { return q.sched.Oldest(sink) }

// Used is the disk space counted against maxBytes: the records in the
// log's segments (and Puts being written), plus the reserve.
func (q *Queue) Used() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.logBytes + q.pendingPuts + reservedSegments*q.segBytes
}

// Close refuses further Puts, makes Take return ErrClosed, writes the
// records waiting (Puts in flight, Done, Retry, keys), deletes the
// segments nothing is needed from and closes the files. Deliveries not
// Done stay owed and are loaded by the next Open. Done and Retry after
// Close return ErrClosed and are not recorded: the delivery is made again
// after the restart.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	q.sched.Close()
	close(q.compactStop)
	<-q.compactStopped
	close(q.stop)
	<-q.stopped
	q.ackTimer.Stop()
	var errs []error
	if err := q.files.close(); err != nil {
		errs = append(errs, fmt.Errorf("queue close: %w", err))
	}
	if err := q.retireUnneeded(); err != nil {
		errs = append(errs, fmt.Errorf("queue close: %w", err))
	}
	if err := q.files.lock.Close(); err != nil {
		errs = append(errs, fmt.Errorf("queue close: %w", err))
	}
	return errors.Join(errs...)
}

// retireUnneeded deletes, at Close, the oldest segments nothing is needed
// from, the last one included (none is written any more).
func (q *Queue) retireUnneeded() error {
	now := time.Now().UnixNano()
	for {
		s, _ := q.files.oldest()
		if s == nil {
			return nil
		}
		q.mu.Lock()
		need := s.needed(now)
		q.mu.Unlock()
		if need > 0 {
			return nil
		}
		if err := q.retireSegment(s); err != nil {
			return err
		}
	}
}

// retireSegment takes s out of the accounting and retires its file.
func (q *Queue) retireSegment(s *segment) error {
	q.mu.Lock()
	q.logBytes -= s.size
	q.liveBytes -= s.live
	q.keyBytes -= s.keys
	q.keyCount -= s.nkeys
	q.mu.Unlock()
	_, err := q.files.retire(s)
	return err
}

// wake asks the committer for a commit; it never blocks.
func (q *Queue) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// run is the committer: each turn takes every record waiting and logs them
// with one write and one sync. While a sync is in progress, new records
// pile up and form the next batch, so the batch size follows the load.
// When the previous batch shows concurrent senders and few Puts are
// waiting, it gathers the ones about to arrive first; a lone Put is not
// delayed.
func (q *Queue) run() {
	defer close(q.stopped)
	var spare []pend
	var buf []byte
	last := 0 // Puts in the previous batch
	for {
		final := false
		select {
		case <-q.kick:
		case <-q.stop:
			final = true
		}
		if last > 1 && !final {
			q.gather()
		}
		q.mu.Lock()
		batch := q.pending
		q.pending = spare
		q.ackArmed = false
		q.final = final
		q.mu.Unlock()
		last, buf = q.commit(batch, buf[:0])
		// The batch's slice gathers the batch after next: no regrowing it
		// from nil each turn. Cleared so it does not keep Puts alive.
		clear(batch)
		spare = batch[:0]
		if cap(buf) > 4<<20 {
			buf = nil
		}
		if final {
			return
		}
	}
}

// gather lets the Puts that are about to arrive join the batch: it yields
// to the other goroutines (the requests being handled) until no new record
// arrived during a yield, lingerBelow are waiting, or after maxYields
// yields. A timer would not do: here a 150 µs sleep takes over 1 ms. With
// nothing else runnable a yield returns at once, so a quiet queue is not
// delayed.
func (q *Queue) gather() {
	q.mu.Lock()
	n := len(q.pending)
	q.mu.Unlock()
	for i := 0; i < maxYields && n < lingerBelow; i++ {
		runtime.Gosched()
		q.mu.Lock()
		m := len(q.pending)
		q.mu.Unlock()
		if m == n {
			return
		}
		n = m
	}
}

// commit logs one batch, then publishes where the records went and hands
// the new deliveries to the scheduler in acceptance order, which is why
// only the committer pushes. It returns the number of Puts and buf.
func (q *Queue) commit(batch []pend, buf []byte) (int, []byte) {
	if len(batch) == 0 {
		return 0, buf
	}
	puts := 0
	spare := q.files.spareReady()
	seg, base, err := q.files.position(batch[0].lsn)
	if spare && !q.files.spareReady() {
		// The rotation took the spare: have the next one zero-filled.
		q.wakeCompactor()
	}
	// offs[i] is where batch[i] starts in buf, for 'P' records.
	// offs[i] is where batch[i] starts in buf.
	var offs []int
	if err == nil {
		offs = make([]int, len(batch)+1)
		for i := range batch {
			p := &batch[i]
			offs[i] = len(buf)
			switch p.typ {
			case recPut:
				if p.put != nil {
					puts++
					buf, _ = appendPut(buf, p.lsn, p.lsn, p.put.to, nil, p.put.ev, nil)
				} else {
					buf, _ = appendPut(buf, p.lsn, p.rw.e.seq, nil, p.rw.sinks, nil, p.rw.val)
				}
			case recDone:
				buf = appendDone(buf, p.lsn, p.seq, p.sink)
			case recRetry:
				buf = appendRetry(buf, p.lsn, p.seq, p.sink, p.st)
			case recKey:
				buf = appendKey(buf, p.lsn, p.key, p.expires)
			}
		}
		offs[len(batch)] = len(buf)
		if base+int64(len(buf)) > 1<<32-1 {
			err = errors.New("batch too large for one segment")
			q.files.abandon(batch[len(batch)-1].lsn)
		} else {
			err = q.files.append(buf, batch[len(batch)-1].lsn)
		}
	} else {
		// These records were numbered and will not be logged: the ones
		// after them must not follow a gap in the active segment, which
		// would read as damage (see segLog.abandon).
		q.files.abandon(batch[len(batch)-1].lsn)
	}
	q.mu.Lock()
	if err == nil {
		seg.size += int64(len(buf))
		q.logBytes += int64(len(buf))
		for i := range batch {
			p := &batch[i]
			at, n := base+int64(offs[i]), int64(offs[i+1]-offs[i])
			switch {
			case p.put != nil:
				e := p.put.e
				e.loc.Store(packLoc(seg.id, at))
				seg.entries = append(seg.entries, e)
				seg.live += n
				q.liveBytes += n
			case p.rw != nil:
				q.movedLocked(p.rw.e, seg, at, n)
			case p.typ == recKey:
				seg.keys += n
				seg.nkeys++
				seg.keysExp = max(seg.keysExp, p.expires)
				q.keyBytes += n
				q.keyCount++
			}
		}
	}
	for i := range batch {
		if p := &batch[i]; p.put != nil {
			q.pendingPuts -= int64(p.put.n)
		}
	}
	q.writtenLSN = batch[len(batch)-1].lsn
	q.wrote.Broadcast()
	q.mu.Unlock()
	for i := range batch {
		p := &batch[i]
		switch {
		case p.put != nil:
			p.put.err = err
			if err == nil {
				for j := range p.put.e.dels {
					q.sched.Push(&p.put.e.dels[j].d)
				}
			}
			p.put.done.Done()
		}
		if p.job != nil {
			p.job.finish(err)
		}
	}
	if err != nil {
		q.log.Error("queue write failed", "dir", q.dir, "records", len(batch), "error", err)
	}
	return puts, buf
}

// withSegmentBytes sets the segment size (tests).
func withSegmentBytes(n int64) Option { return func(o *options) { o.segBytes = n } }

// withAckDelay sets how long Done and Retry records wait for a write (tests).
func withAckDelay(d time.Duration) Option { return func(o *options) { o.ackDelay = d } }
