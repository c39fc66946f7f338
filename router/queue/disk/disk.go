// Package disk is the durable queue backend (`queue.backend: disk`, the
// default): accepted events are written to a write-ahead log under
// <data_dir>/queue and fdatasynced before Put returns, so that an event
// answered 200 is delivered even after kill -9 or a power loss; a
// background applier then moves them into a bbolt file, the store.
//
// Writes go through one committer goroutine that appends every Put waiting
// at that moment to the log with one write and one fdatasync: group commit
// without an added delay, since a batch starts as soon as the previous one
// is on disk. Every flushDelay (or sooner under load) the applier writes the
// logged Puts, with the Done and Retry records made since, into bbolt in one
// transaction that also records the highest log seq applied; fully applied
// log segments are then deleted. Open replays what the log holds beyond
// that seq. Done and Retry are never synced on their own: losing the last
// of them to a crash only means an extra attempt.
//
// The in-memory side (per-sink order, retry timers) is a queue.Scheduler.
// Bodies of the oldest events, up to a byte budget, stay in memory; the
// others are read back from the file when a worker takes them, so a large
// backlog does not have to fit in RAM.
package disk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

// FileName is the name of the queue file inside the queue directory.
const FileName = "queue.db"

const (
	// lingerBelow and maxYields make group commits larger under concurrent
	// load: when the previous batch had more than one Put, the committer
	// first lets the Puts about to arrive join (gather) while fewer than
	// lingerBelow wait. A sync costs far more than the records it writes
	// (here ~55 µs of CPU and a virtio doorbell per fdatasync).
	lingerBelow = 32
	maxYields   = 8
	// flushDelay bounds how long a logged Put, a Done or a Retry waits
	// before the applier writes it into bbolt. An event delivered within it
	// never reaches bbolt at all (applyOnce skips a Put whose last Done is
	// in the same apply), so a longer delay saves bbolt writes and syncs
	// under load; the log keeps the Puts durable meanwhile, and the bytes
	// and records it lets pile up are bounded by flushBytes and flushUpdates.
	flushDelay = 100 * time.Millisecond
	// flushUpdates and flushBytes start the applier at once when that many
	// Done/Retry records or bytes of logged Puts are waiting, which bounds
	// the memory they hold.
	flushUpdates = 32768
	flushBytes   = 8 << 20
	// maxUnapplied makes the committer wait for the applier before logging
	// more: logged Puts keep their records in memory until applied.
	maxUnapplied = 64 << 20
	// maxCacheBytes caps the events kept in memory (Queue.cacheBudget):
	// small, since a delivery made within flushDelay is sent from the
	// logged copy anyway, and a backlog is read back from the file.
	maxCacheBytes = 4 << 20
)

// Queue is the disk-backed queue.Queue. Create it with Open.
type Queue struct {
	db    *bolt.DB
	path  string
	log   *slog.Logger
	sched *queue.Scheduler
	wal   *wal

	maxBytes int64        // bound on used; 0 means none
	used     atomic.Int64 // stored bytes of events not fully delivered
	// cacheBudget bounds cached, the bytes of events whose bodies stay in
	// memory; the others are read back from the file on Take.
	cacheBudget int64
	cached      atomic.Int64
	lastSeq     atomic.Uint64 // highest acceptance number handed out
	applyDelay  time.Duration // flushDelay, longer in tests

	recoveredMax uint64 // events up to this number were found at Open
	recoveredN   int
	// recoveredLogged are the events replayed from the log at Open that
	// bbolt could not take then (a full disk), for EachRecovered.
	recoveredLogged []walPut

	// maxKeys bounds the dedup keys kept after their events are delivered
	// (0: none kept); keyCount is how many the keys bucket holds, read and
	// written by Open and then the applier only. keyN numbers keys.
	maxKeys  int
	keyCount int
	keyN     atomic.Uint64

	mu          sync.Mutex
	keeps       []keptKey // KeepKey calls waiting for the applier
	puts        []*putReq // waiting for the committer, in seq order
	logged      []walPut  // synced to the log, waiting for the applier
	loggedBytes int64
	updates     []update
	applyErr    error      // the applier's latest failure, nil once it succeeds
	applied     *sync.Cond // broadcast after each apply (committer backpressure)
	closed      bool       // no more Puts
	final       bool       // applier has taken its last batch: no more updates
	applyArmed  bool

	kick         chan struct{}
	stop         chan struct{}
	stopped      chan struct{}
	applyKick    chan struct{}
	applyStop    chan struct{}
	applyStopped chan struct{}
	applyTimer   *time.Timer
}

// entry is what the deliveries of one event share in memory: for an event
// not cached, only what scheduling and the bound need.
type entry struct {
	seq  uint64
	size int64 // counted against maxBytes until owed reaches 0
	// ev is the whole event when cached, else nil (read back on Take); it
	// is immutable once the entry is published.
	ev     *sinks.Event
	cached bool
	// unapplied holds the whole event of an uncached entry until the
	// applier has written it into bbolt, where Take can read it back.
	unapplied atomic.Pointer[sinks.Event]
	owed      atomic.Int32
}

// ref is a Delivery's Ref: its event and whether a worker holds it.
type ref struct {
	e     *entry
	taken atomic.Bool
}

// putReq is one Put waiting for its commit.
type putReq struct {
	seq  uint64
	ev   *sinks.Event
	to   []string
	e    *entry
	dels []delivery // one per sink in to
	err  error
	// done is released by the committer once err is set; a WaitGroup
	// rather than a channel saves an allocation per Put.
	done sync.WaitGroup
}

// delivery is a Delivery with its Ref, allocated together (one slice per
// Put for all its sinks).
type delivery struct {
	d queue.Delivery
	r ref
}

// walPut is a Put synced to the log and not yet applied to bbolt.
type walPut struct {
	seq uint64
	to  []string
	val []byte // the events-bucket value
	n   int64  // bytes of its log record, counted in loggedBytes
	e   *entry
}

// keptKey is a dedup key waiting to be written into the keys bucket.
type keptKey struct {
	key     string
	expires int64
}

// update is a lazily committed Done or Retry.
type update struct {
	seq    uint64
	sink   string
	delete bool // Done: the delivery record goes
	last   bool // and with it the event, its last delivery
	state  deliveryState
}

// Option configures Open.
type Option func(*options)

type options struct {
	maxKeys int
}

// KeepKeys keeps up to n committed dedup keys after their events are
// delivered (and those given to KeepKey), oldest dropped first, until they
// expire; see queue.KeyKeeper. Without it (or with n ≤ 0) only the keys of
// events still owed are kept, in their records.
func KeepKeys(n int) Option { return func(o *options) { o.maxKeys = max(n, 0) } }

// Open opens (creating it if needed) the queue in dir, normally
// <data_dir>/queue, and loads every delivery still owed, in acceptance order,
// with the retry state it had. maxBytes bounds the stored bytes of events
// not yet fully delivered (0: no bound). A file found damaged is moved aside
// and what can be read from it is carried over; see the package README.
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
	return openWith(dir, maxBytes, cacheBudget, flushDelay, segmentBytes, log, opts...)
}

// openWith is open with the applier's delay and the log's segment size
// given, which tests shorten or stretch.
func openWith(dir string, maxBytes, cacheBudget int64, applyDelay time.Duration, segBytes int64, log *slog.Logger, opts ...Option) (*Queue, error) {
	var o options
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
	q := &Queue{
		path:         filepath.Join(dir, FileName),
		log:          log,
		sched:        queue.NewScheduler(),
		wal:          &wal{dir: dir, segBytes: segBytes},
		maxBytes:     max(maxBytes, 0),
		maxKeys:      o.maxKeys,
		cacheBudget:  cacheBudget,
		applyDelay:   applyDelay,
		kick:         make(chan struct{}, 1),
		stop:         make(chan struct{}),
		stopped:      make(chan struct{}),
		applyKick:    make(chan struct{}, 1),
		applyStop:    make(chan struct{}),
		applyStopped: make(chan struct{}),
	}
	q.applied = sync.NewCond(&q.mu)
	st, err := q.openStore()
	if err != nil {
		return nil, err
	}
	replayed, err := q.replay(dir, st)
	if err != nil {
		_ = q.db.Close()
		return nil, err
	}
	if st.salvage != nil {
		// Logged after the replay so that the count is what will be delivered.
		q.log.Error("queue salvage finished", append(st.salvage, "events", st.events, "deliveries", len(st.items), "replayed_from_wal", replayed)...)
	}
	// Past every seq a log file may hold, so that a recycled segment's old
	// records always number below its new ones (see wal).
	q.lastSeq.Store(max(st.maxSeq, q.wal.floorSeq))
	q.recoveredMax = st.maxSeq
	q.recoveredN = st.events
	q.used.Store(st.used)
	q.cached.Store(st.cached)
	q.keyCount = st.keys
	q.keyN.Store(st.maxKeyN)
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
		log.Info("queue recovered", "events", st.events, "deliveries", len(st.items), "bytes", st.used, "replayed_from_wal", replayed)
	}
	if q.maxBytes > 0 && st.used > q.maxBytes {
		log.Warn("queue holds more than max_bytes; new events are refused until it drains", "bytes", st.used, "max_bytes", q.maxBytes)
	}
	// The first segment is preallocated too; later spares are prepared by
	// the applier, off the Puts' path.
	if err := q.wal.prepareSpare(); err != nil {
		log.Warn("wal segment not preallocated; writing a growing segment", "error", err)
	}
	q.applyTimer = time.AfterFunc(time.Hour, q.wakeApplier)
	q.applyTimer.Stop()
	if len(q.logged) > 0 {
		q.armApplier()
	}
	go q.run()
	go q.applyLoop()
	return q, nil
}

// replay reads the log segments left by the previous run, in order, and
// adds the Puts beyond the applied seq stored in bbolt to st, then applies
// them to bbolt and deletes the segments. A torn or damaged record ends the
// replay of its segment: it was being written when the process died, so its
// Put was never acknowledged (or the disk damaged it: logged either way).
// If bbolt cannot take the records now (a full disk), they stay logged and
// the applier retries. It returns the number of events replayed.
func (q *Queue) replay(dir string, st *state) (int, error) {
	var applied uint64
	if err := q.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketWAL); b != nil {
			if v := b.Get(walAppliedKey); len(v) == 8 {
				applied = binary.BigEndian.Uint64(v)
			}
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("queue file %s: %w", q.path, err)
	}
	// After a salvage that lost applied_seq, what bbolt holds is the bound.
	skip := max(applied, st.maxSeq)
	st.maxSeq = skip
	if err := q.wal.openSpares(); err != nil {
		return 0, err
	}
	segs, err := listSegments(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, first := range segs {
		path := filepath.Join(dir, segmentName(first))
		seg := segment{first: first, last: first, closed: true}
		err := readSegment(path, first, func(rec walRecord) {
			seg.last = max(seg.last, rec.seq)
			if rec.seq <= st.maxSeq {
				return
			}
			ev, err := decodeEvent(seqKey(rec.seq), rec.val, true)
			if err != nil {
				// The record's own CRC passed: only a bug gets here.
				q.log.Error("wal record unreadable, event dropped", "file", path, "seq", rec.seq, "error", err)
				return
			}
			size := eventBytes(len(rec.val))
			for _, s := range rec.to {
				size += deliveryBytes(s)
			}
			e := &entry{seq: rec.seq, size: size, cached: st.cached+size <= q.cacheBudget}
			if e.cached {
				st.cached += size
				e.ev = ev
			} else {
				e.unapplied.Store(ev)
			}
			e.owed.Store(int32(len(rec.to)))
			dels := make([]delivery, len(rec.to))
			for i, s := range rec.to {
				dels[i] = delivery{d: queue.Delivery{Event: e.ev, Sink: s}, r: ref{e: e}}
				dels[i].d.Ref = &dels[i].r
				dels[i].d.SetAccepted(ev.ReceivedAt)
				st.items = append(st.items, item{d: &dels[i].d})
			}
			st.events++
			st.used += size
			st.maxSeq = rec.seq
			q.logged = append(q.logged, walPut{seq: rec.seq, to: rec.to, val: rec.val, n: rec.n, e: e})
			q.loggedBytes += rec.n
			n++
		})
		if errors.Is(err, errTorn) {
			// A crash mid-write leaves this; it is not damage to report
			// at error level, but say what was ignored.
			q.log.Warn("wal segment ends in a torn or damaged record; the rest of it is ignored (never acknowledged)", "file", path, "error", err)
		} else if err != nil {
			return 0, err
		}
		q.wal.segs = append(q.wal.segs, seg)
		q.wal.floorSeq = max(q.wal.floorSeq, seg.last)
	}
	if len(q.logged) == 0 {
		// Nothing to apply: every segment is spent.
		return 0, q.wal.close(true)
	}
	if err := q.applyOnce(); err != nil {
		q.log.Warn("replayed wal records not yet applied; retrying in the background", "events", n, "error", err)
		q.recoveredLogged = slices.Clone(q.logged)
		return n, nil
	}
	if err := q.wal.close(true); err != nil {
		q.log.Warn("applied wal segments not deleted", "error", err)
	}
	return n, nil
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
// disk (in the log). Concurrent Puts share one write and sync. ctx is
// checked before the write starts; once it has, Put waits for the outcome
// (well under a millisecond unless the disk is slow) so that nil means
// stored and an error means nothing was.
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
	e := &entry{size: size}
	e.owed.Store(int32(len(to)))
	if q.cached.Add(size) <= q.cacheBudget {
		e.cached = true
		e.ev = ev
	} else {
		// Not even its metadata stays in memory once applied: Take reads
		// the event back (until then, from unapplied).
		q.cached.Add(-size)
		e.unapplied.Store(ev)
	}
	r := &putReq{ev: ev, to: to, e: e, dels: make([]delivery, len(to))}
	for i, sink := range to {
		dl := &r.dels[i]
		dl.r.e = e
		dl.d = queue.Delivery{Event: e.ev, Sink: sink, Ref: &dl.r}
		dl.d.SetAccepted(ev.ReceivedAt)
	}
	r.done.Add(1)

	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		q.release(e)
		return queue.ErrClosed
	}
	// Numbered under the lock that queues it, so that the log is written
	// in acceptance order (the applier's applied seq relies on it).
	r.seq = q.lastSeq.Add(1)
	e.seq = r.seq
	q.puts = append(q.puts, r)
	q.mu.Unlock()
	q.wake()
	r.done.Wait()
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
// ErrClosed it returns what was ready: the rest stays owed in the file and
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

// prepare gives a taken delivery its event, from memory or the file: an
// uncached delivery holds none while it waits. It reports false for a
// delivery that cannot be made (dropped), and queue.ErrClosed once the file
// is closed.
func (q *Queue) prepare(d *queue.Delivery) (bool, error) {
	r := d.Ref.(*ref)
	r.taken.Store(true)
	if r.e.cached {
		d.Event = r.e.ev
		return true, nil
	}
	if ev := r.e.unapplied.Load(); ev != nil {
		d.Event = ev
		return true, nil
	}
	ev, err := q.load(r.e.seq)
	if err == nil {
		d.Event = ev
		return true, nil
	}
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return false, queue.ErrClosed
	}
	// Open verified every record, so this is damage done since: the
	// delivery cannot be made, and keeping it would fail forever.
	q.log.Error("queued event unreadable, delivery dropped", "sink", d.Sink, "seq", r.e.seq, "error", err)
	if derr := q.Done(d); derr != nil {
		return false, derr
	}
	return false, nil
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

// record queues a Done or Retry for the applier.
func (q *Queue) record(u update) error {
	q.mu.Lock()
	if q.final {
		q.mu.Unlock()
		return queue.ErrClosed
	}
	q.updates = append(q.updates, u)
	n := len(q.updates)
	q.mu.Unlock()
	if n >= flushUpdates {
		q.wakeApplier()
	} else {
		q.armApplier()
	}
	return nil
}

// Depth is the number of deliveries owed to sink: due, waiting or in flight.
func (q *Queue) Depth(sink string) int { return q.sched.Depth(sink) }

// Pending lists the sinks that are owed deliveries, including ones found at
// Open that the current config may no longer name.
func (q *Queue) Pending() []string { return q.sched.Pending() }

// Oldest implements queue.Ager.
func (q *Queue) Oldest(sink string) (time.Time, bool) { return q.sched.Oldest(sink) }

// Used is the number of bytes counted against maxBytes.
func (q *Queue) Used() int64 { return q.used.Load() }

// Close refuses further Puts, makes Take return ErrClosed, logs the Puts
// in flight, applies everything logged and every Done and Retry to the
// file, deletes the log and closes the file. Deliveries not Done stay owed
// and are loaded by the next Open. Done and Retry after Close return
// ErrClosed and are not recorded: the delivery is made again after the
// restart.
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
	close(q.applyStop)
	<-q.applyStopped
	q.applyTimer.Stop()
	q.mu.Lock()
	applyErr, left := q.applyErr, len(q.logged)
	q.mu.Unlock()
	var errs []error
	if left > 0 {
		// Kept: the next Open replays them.
		errs = append(errs, fmt.Errorf("queue close: %d logged events not applied: %w", left, applyErr))
	}
	if err := q.wal.close(left == 0); err != nil {
		errs = append(errs, fmt.Errorf("queue close: wal: %w", err))
	}
	if err := q.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("queue close: %w", err))
	}
	return errors.Join(errs...)
}

// wake asks the committer for a commit; it never blocks.
func (q *Queue) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// wakeApplier asks the applier for an apply now; it never blocks.
func (q *Queue) wakeApplier() {
	select {
	case q.applyKick <- struct{}{}:
	default:
	}
}

// armApplier makes sure the applier runs within applyDelay.
func (q *Queue) armApplier() {
	q.mu.Lock()
	arm := !q.applyArmed
	q.applyArmed = true
	q.mu.Unlock()
	if arm {
		q.applyTimer.Reset(q.applyDelay)
	}
}

// run is the committer: each turn takes every Put waiting and logs them
// with one write and one sync. While a sync is in progress, new Puts pile
// up and form the next batch, so the batch size follows the load. When the
// previous batch shows concurrent senders and few Puts are waiting, it
// gathers the ones about to arrive first; a lone Put is not delayed.
func (q *Queue) run() {
	defer close(q.stopped)
	var spare []*putReq
	last := 0 // size of the previous batch
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
		puts := q.puts
		q.puts = spare
		q.mu.Unlock()
		last = len(puts)
		q.commit(puts)
		// The batch's slice gathers the batch after next: no regrowing it
		// from nil each turn. Cleared so it does not keep Puts alive.
		clear(puts)
		spare = puts[:0]
		if final {
			return
		}
	}
}

// gather lets the Puts that are about to arrive join the batch: it yields
// to the other goroutines (the requests being handled) until no new Put
// arrived during a yield, lingerBelow are waiting, or after maxYields
// yields. A timer would not do: here a 150 µs sleep takes over 1 ms. With
// nothing else runnable a yield returns at once, so a quiet queue is not
// delayed.
func (q *Queue) gather() {
	q.mu.Lock()
	n := len(q.puts)
	q.mu.Unlock()
	for i := 0; i < maxYields && n < lingerBelow; i++ {
		runtime.Gosched()
		q.mu.Lock()
		m := len(q.puts)
		q.mu.Unlock()
		if m == n {
			return
		}
		n = m
	}
}

// commit logs one batch and then hands the new deliveries to the scheduler
// in acceptance order, which is why only the committer pushes.
func (q *Queue) commit(puts []*putReq) {
	if len(puts) == 0 {
		return
	}
	err := q.waitApplier()
	if err != nil {
		// These Puts were numbered and will not be logged: the records
		// after them must not follow a gap in the active segment, which
		// replay would take for a torn write (see wal.abandon).
		q.wal.abandon(puts[len(puts)-1].seq)
	}
	var buf []byte
	logged := make([]walPut, len(puts))
	if err == nil {
		n := 0
		for _, p := range puts {
			n += walRecordLen(p.to, p.ev)
		}
		// Room for the terminator that wal.append writes after the records.
		buf = make([]byte, 0, n+walHeader)
		for i, p := range puts {
			start := len(buf)
			var valOff int
			buf, valOff = appendWALRecord(buf, p.seq, p.to, p.ev)
			logged[i] = walPut{seq: p.seq, to: p.to, val: buf[valOff:len(buf):len(buf)], n: int64(len(buf) - start), e: p.e}
		}
		err = q.wal.append(buf, puts[0].seq, puts[len(puts)-1].seq)
	}
	if err == nil {
		q.mu.Lock()
		q.logged = append(q.logged, logged...)
		q.loggedBytes += int64(len(buf))
		full := q.loggedBytes >= flushBytes
		q.mu.Unlock()
		if full {
			q.wakeApplier()
		} else {
			q.armApplier()
		}
	}
	for _, p := range puts {
		p.err = err
		if err == nil {
			for i := range p.dels {
				q.sched.Push(&p.dels[i].d)
			}
		}
		p.done.Done()
	}
}

// waitApplier holds the committer back while the applier is behind by
// maxUnapplied bytes, which bounds the memory logged Puts hold. If the
// applier is failing (a full disk), it returns that error instead of
// waiting for it to recover.
func (q *Queue) waitApplier() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.loggedBytes >= maxUnapplied {
		if q.applyErr != nil {
			return fmt.Errorf("apply to %s: %w", q.path, q.applyErr)
		}
		q.wakeApplier()
		q.applied.Wait()
	}
	return nil
}

// applyLoop is the applier: woken by its timer, by a backlog, or by Close
// for a last apply.
func (q *Queue) applyLoop() {
	defer close(q.applyStopped)
	for {
		final := false
		select {
		case <-q.applyKick:
		case <-q.applyStop:
			final = true
		}
		q.mu.Lock()
		q.applyArmed = false
		q.final = final
		q.mu.Unlock()
		if err := q.applyOnce(); err != nil {
			q.log.Error("queue apply failed; retrying", "error", err)
			if !final {
				q.armApplier()
			}
		}
		if final {
			return
		}
		// After a rotation took the spare (and no applied segment was
		// recycled into one), zero-fill the next.
		if err := q.wal.prepareSpare(); err != nil {
			q.log.Warn("wal segment not preallocated; the next segment grows as it is written", "error", err)
		}
	}
}

// applyOnce writes every logged Put and every Done and Retry waiting into
// bbolt in one transaction, with the highest seq applied, and then deletes
// the log segments that holds. Done and Retry refer only to Puts logged
// before them, so taking both lists at once and writing the Puts first
// keeps them in order. On failure both lists are put back, in front.
func (q *Queue) applyOnce() error {
	q.mu.Lock()
	puts, updates, keeps, nbytes := q.logged, q.updates, q.keeps, q.loggedBytes
	q.logged, q.updates, q.keeps = nil, nil, nil
	q.mu.Unlock()
	if len(puts) == 0 && len(updates) == 0 && len(keeps) == 0 {
		return nil
	}
	// An event delivered everywhere before it was applied needs no bbolt
	// write at all: its Put and updates cancel out.
	var gone map[uint64]bool
	if len(puts) > 0 {
		for _, u := range updates {
			if u.last && u.seq >= puts[0].seq {
				if gone == nil {
					gone = map[uint64]bool{}
				}
				gone[u.seq] = true
			}
		}
	}
	ks := keySaver{q: q, count: q.keyCount, now: time.Now().UnixNano()}
	err := q.db.Update(func(tx *bolt.Tx) error {
		if err := ks.open(tx); err != nil {
			return err
		}
		if err := writePuts(tx, puts, gone, &ks); err != nil {
			return err
		}
		if err := writeUpdates(tx, updates, gone, &ks); err != nil {
			return err
		}
		for _, k := range keeps {
			if err := ks.keep([]byte(k.key), k.expires); err != nil {
				return err
			}
		}
		return ks.prune()
	})
	q.mu.Lock()
	if err != nil {
		q.logged = append(puts, q.logged...)
		q.updates = append(updates, q.updates...)
		q.keeps = append(keeps, q.keeps...)
	} else {
		q.loggedBytes -= nbytes
		q.keyCount = ks.count
	}
	q.applyErr = err
	q.applied.Broadcast()
	q.mu.Unlock()
	if err != nil {
		return fmt.Errorf("queue apply: %w", err)
	}
	if len(puts) > 0 {
		for _, p := range puts {
			// bbolt has the body now: Take reads it from there.
			p.e.unapplied.Store(nil)
		}
		if err := q.wal.dropApplied(puts[len(puts)-1].seq); err != nil {
			q.log.Warn("applied wal segment not deleted", "error", err)
		}
	}
	return nil
}

// writePuts stores the Puts not in gone, and the last seq applied. The
// dedup keys of those in gone (delivered already) go to ks.
func writePuts(tx *bolt.Tx, puts []walPut, gone map[uint64]bool, ks *keySaver) error {
	if len(puts) == 0 {
		return nil
	}
	eb, db := tx.Bucket(bucketEvents), tx.Bucket(bucketDeliveries)
	// Keys only grow, so pages split at the end can be filled up.
	eb.FillPercent, db.FillPercent = 0.9, 0.9
	for _, p := range puts {
		if gone[p.seq] {
			if err := ks.keepEvent(seqKey(p.seq), p.val); err != nil {
				return err
			}
			continue
		}
		if err := eb.Put(seqKey(p.seq), p.val); err != nil {
			return err
		}
		for _, sink := range p.to {
			dk := deliveryKey(p.seq, sink)
			if err := db.Put(dk, encodeDelivery(dk, deliveryState{})); err != nil {
				return err
			}
		}
	}
	wb, err := tx.CreateBucketIfNotExists(bucketWAL)
	if err != nil {
		return err
	}
	return wb.Put(walAppliedKey, seqKey(puts[len(puts)-1].seq))
}

// writeUpdates stores the Done and Retry records of events not in gone. The
// dedup key of an event whose record goes with its last delivery goes to ks.
func writeUpdates(tx *bolt.Tx, updates []update, gone map[uint64]bool, ks *keySaver) error {
	eb, db := tx.Bucket(bucketEvents), tx.Bucket(bucketDeliveries)
	for _, u := range updates {
		if gone[u.seq] {
			continue
		}
		dk := deliveryKey(u.seq, u.sink)
		var err error
		switch {
		case u.delete:
			err = db.Delete(dk)
			if err == nil && u.last {
				ek := seqKey(u.seq)
				if v := eb.Get(ek); v != nil {
					err = ks.keepEvent(ek, v)
				}
				if err == nil {
					err = eb.Delete(ek)
				}
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

// keySaver writes dedup keys into the keys bucket within one apply, and
// prunes it to maxKeys and the keys not yet expired. count is the bucket's
// size as of this transaction: the applier adopts it once the commit succeeds.
type keySaver struct {
	q     *Queue
	b     *bolt.Bucket
	count int
	now   int64
}

func (ks *keySaver) open(tx *bolt.Tx) error {
	if ks.q.maxKeys == 0 {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(bucketKeys)
	if err != nil {
		return err
	}
	// Keys are mostly added in expiry order, at the end.
	b.FillPercent = 0.9
	ks.b = b
	return nil
}

// keepEvent keeps the dedup key of the event record v under key k, if it
// has one.
func (ks *keySaver) keepEvent(k, v []byte) error {
	if ks.b == nil {
		return nil
	}
	f, ok := parseEvent(k, v)
	if !ok || len(f.dedupKey) == 0 {
		// A record that fails its check now was damaged since Open; its
		// key is lost, not its delivery (made already).
		return nil
	}
	return ks.keep(f.dedupKey, f.dedupExpires)
}

func (ks *keySaver) keep(key []byte, expires int64) error {
	if ks.b == nil || expires <= ks.now {
		return nil
	}
	// Key and value share one allocation (bbolt keeps both until commit).
	buf := make([]byte, 16, 16+5+len(key))
	k := putKeyKey(buf, expires, ks.q.keyN.Add(1))
	if err := ks.b.Put(k, appendKeyValue(buf[16:16:cap(buf)], k, key)); err != nil {
		return err
	}
	ks.count++
	return nil
}

// prune deletes the keys expired and, beyond maxKeys, the oldest ones.
// Keys are ordered by expiry, so both are at the bucket's start.
func (ks *keySaver) prune() error {
	if ks.b == nil {
		return nil
	}
	c := ks.b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.First() {
		if ks.count <= ks.q.maxKeys && len(k) == 16 && int64(binary.BigEndian.Uint64(k)) > ks.now {
			break
		}
		if err := c.Delete(); err != nil {
			return err
		}
		ks.count--
	}
	return nil
}

// KeepKey records a committed dedup key for an event that was not queued
// (no rule routed it), so that it too survives a restart; see
// queue.KeyKeeper. It is written with the next apply (within flushDelay),
// not synced on its own: a crash before then loses it, and the sender's
// retry of that event is routed (to no sink) once more.
func (q *Queue) KeepKey(key string, expires time.Time) error {
	if q.maxKeys == 0 || key == "" || !expires.After(time.Now()) {
		return nil
	}
	q.mu.Lock()
	if q.final {
		q.mu.Unlock()
		return queue.ErrClosed
	}
	q.keeps = append(q.keeps, keptKey{key: key, expires: expires.UnixNano()})
	n := len(q.keeps)
	q.mu.Unlock()
	if n >= flushUpdates {
		q.wakeApplier()
	} else {
		q.armApplier()
	}
	return nil
}

// Keys calls fn for each dedup key not yet expired that the file holds:
// first the kept keys of delivered and unrouted events, oldest first, then
// those of the events still owed, in acceptance order; see queue.KeyKeeper.
// It reads the file, so it is meant for the start, before events are
// accepted: keys given since the last apply are not included.
func (q *Queue) Keys(fn func(key string, expires time.Time)) error {
	now := time.Now().UnixNano()
	err := q.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketKeys); b != nil {
			c := b.Cursor()
			for k, v := c.Seek(keyKey(now+1, 0)); k != nil; k, v = c.Next() {
				key, expires, ok := decodeKey(k, v)
				if !ok {
					// Open checked every record: damage since then.
					q.log.Error("kept dedup key unreadable, skipped", "record", fmt.Sprintf("%x", k))
					continue
				}
				fn(string(key), time.Unix(0, expires))
			}
		}
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			f, ok := parseEvent(k, v)
			if ok && len(f.dedupKey) > 0 && f.dedupExpires > now {
				fn(string(f.dedupKey), time.Unix(0, f.dedupExpires))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("queue file %s: %w", q.path, err)
	}
	// Replayed from the log but not in bbolt (it could not take them at Open).
	for _, p := range q.recoveredLogged {
		if p.e.owed.Load() <= 0 {
			continue
		}
		f, ok := parseEvent(seqKey(p.seq), p.val)
		if ok && len(f.dedupKey) > 0 && f.dedupExpires > now {
			fn(string(f.dedupKey), time.Unix(0, f.dedupExpires))
		}
	}
	return nil
}

var (
	_ queue.Queue      = (*Queue)(nil)
	_ queue.BatchTaker = (*Queue)(nil)
	_ queue.KeyKeeper  = (*Queue)(nil)
)
