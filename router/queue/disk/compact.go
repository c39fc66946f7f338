package disk

import (
	"slices"
	"time"
)

// The compactor keeps the log's disk use close to what is needed: the
// records of events still owed and the dedup keys still kept. It only ever
// works on the oldest segment, which makes deleting it safe: a Done or
// Retry record in the oldest segment refers to an event whose current 'P'
// record is in that same segment (rewritten, with its state, before the
// segment goes) or later (a rewrite, which states the event's whole state
// and so replaces every record before it).
//
// The oldest segment is
//   - deleted at once when nothing in it is needed: a backlog drained in
//     order empties its segments front first;
//   - rewritten forward (what is needed) and deleted while the log holds
//     more than two segments of garbage making up half of it, or the queue
//     is near its bound: a backlog stuck at the front (its sink down) then
//     moves forward a segment at a time, and the garbage behind it
//     (delivered events, superseded Retry records, acknowledgements) comes
//     to the front and goes. Rewriting a half-drained front segment
//     instead would copy what the drain is about to deliver;

// wakeCompactor asks the compactor to look at the oldest segment; it never
// blocks.
func (q *Queue) wakeCompactor() {
	select {
	case q.compactKick <- struct{}{}:
	default:
	}
}

func (q *Queue) compactLoop() {
	defer close(q.compactStopped)
	for {
		select {
		case <-q.compactKick:
		case <-q.compactStop:
			return
		}
		for q.compactOnce() {
			select {
			case <-q.compactStop:
				return
			default:
			}
		}
		// After a rotation took the spare (and no compacted segment was
		// recycled into one), zero-fill the next.
		if q.spareFits() {
			if err := q.files.prepareSpare(); err != nil {
				q.log.Warn("log segment not preallocated; the next segment grows as it is written", "error", err)
			}
		}
	}
}

// maxStep bounds the segments one compaction step deletes: a step waits
// for one write of all their survivors.
const maxStep = 64

// compactPlan is one segment a compaction step deletes.
type compactPlan struct {
	s    *segment
	keep int      // dedup keys to write forward
	live []*entry // events whose current record is in s
	keys []keptKey
	b    []byte // s's records, when something is written forward
}

// compactOnce deletes the oldest segments that should go (see above),
// after writing forward, in one batch, what is needed from them, and
// reports whether it deleted any.
func (q *Queue) compactOnce() bool {
	q.files.mu.Lock()
	var segs []*segment
	for _, s := range q.files.segs {
		if !s.closed {
			break
		}
		segs = append(segs, s)
	}
	q.files.mu.Unlock()
	now := time.Now().UnixNano()
	q.mu.Lock()
	garbage := q.logBytes - q.liveBytes - q.keyBytes
	logBytes := q.logBytes
	nearFull := q.maxBytes > 0 && 4*(q.logBytes+q.pendingPuts+reservedSegments*q.segBytes) > 3*q.maxBytes
	var plans []compactPlan
	var survivors int64
	for _, s := range segs {
		keep := q.keysToKeepLocked(s, now)
		need := s.live
		if keep > 0 {
			need += s.keys
		}
		due := need == 0 ||
			(garbage > 2*q.segBytes && (2*garbage > logBytes || nearFull))
		if !due || len(plans) == maxStep || (len(plans) > 0 && survivors+need > q.segBytes) {
			break
		}
		p := compactPlan{s: s, keep: keep}
		for _, e := range s.entries {
			if id, _ := unpackLoc(e.loc.Load()); id == s.id && e.owed.Load() > 0 {
				p.live = append(p.live, e)
			}
		}
		plans = append(plans, p)
		survivors += need
		garbage -= s.size - need
		logBytes -= s.size - need
	}
	if len(plans) == 0 || q.final {
		q.mu.Unlock()
		return false
	}
	q.mu.Unlock()

	for i := range plans {
		p := &plans[i]
		if len(p.live) == 0 && p.keep == 0 {
			continue
		}
		var err error
		if p.b, err = q.files.readAt(p.s.id, 0, make([]byte, p.s.size)); err != nil || int64(len(p.b)) < p.s.size {
			q.log.Error("log segment unreadable; not compacted", "file", segmentName(p.s.first), "error", err)
			return false
		}
		if p.keep > 0 {
			scanSegment(p.b, p.s.first, func(_ int, r record) {
				if r.typ == recKey && r.expires > now {
					p.keys = append(p.keys, keptKey{key: string(r.key), expires: r.expires})
				}
			})
			if len(p.keys) > p.keep {
				// The bound drops the keys expiring first.
				slices.SortStableFunc(p.keys, func(a, b keptKey) int { return cmpInt64(a.expires, b.expires) })
				p.keys = p.keys[len(p.keys)-p.keep:]
			}
		}
	}

	job := &compactJob{}
	q.mu.Lock()
	if q.final {
		q.mu.Unlock()
		return false
	}
	for _, p := range plans {
		q.rewriteLocked(p, job)
	}
	q.mu.Unlock()
	q.wake()
	job.wg.Wait()
	if job.err != nil {
		q.log.Warn("log segments not compacted; retrying later", "from", segmentName(plans[0].s.first), "error", job.err)
		return false
	}
	for _, p := range plans {
		q.mu.Lock()
		left := p.s.live
		q.mu.Unlock()
		if left != 0 {
			q.log.Error("log segment still holds live records after compaction; kept", "file", segmentName(p.s.first), "bytes", left)
			return false
		}
		if err := q.retireSegment(p.s); err != nil {
			q.log.Warn("compacted log segment not deleted", "file", segmentName(p.s.first), "error", err)
			return false
		}
	}
	return true
}

// rewriteLocked queues what p's segment holds that is needed: its live
// events, logged again with their state, and its keys. q.mu is held.
func (q *Queue) rewriteLocked(p compactPlan, job *compactJob) {
	for _, e := range p.live {
		id, off := unpackLoc(e.loc.Load())
		if id != p.s.id || e.owed.Load() <= 0 {
			continue
		}
		r, ok := parseRecord(p.b[off:])
		if !ok || r.typ != recPut || r.seq != e.seq {
			// Checked at Open or written by this process: damage since.
			q.log.Error("queued event's record unreadable while compacting; its deliveries are dropped", "file", segmentName(p.s.first), "seq", e.seq)
			q.dropLocked(e)
			continue
		}
		sinks := make([]sinkState, 0, e.owed.Load())
		for i := range e.dels {
			dl := &e.dels[i]
			if dl.r.done {
				continue
			}
			ss := sinkState{sink: dl.d.Sink}
			if dl.r.retry != nil {
				ss.deliveryState = *dl.r.retry
			}
			sinks = append(sinks, ss)
		}
		job.wg.Add(1)
		q.queueLocked(pend{typ: recPut, rw: &rewrite{e: e, sinks: sinks, val: r.val}, job: job})
	}
	for _, k := range p.keys {
		job.wg.Add(1)
		q.queueLocked(pend{typ: recKey, key: k.key, expires: k.expires, job: job})
	}
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// keysToKeepLocked is how many of the oldest segment s's dedup keys must be
// kept: none expired, and none beyond maxKeys counting the newer ones.
// q.mu is held.
func (q *Queue) keysToKeepLocked(s *segment, now int64) int {
	if s.nkeys == 0 || s.keysExp <= now || q.maxKeys == 0 {
		return 0
	}
	return max(0, min(s.nkeys, q.maxKeys-(q.keyCount-s.nkeys)))
}

// movedLocked publishes e's record, logged again by the compactor at off
// in seg with length n, unless e was delivered meanwhile. q.mu is held.
func (q *Queue) movedLocked(e *entry, seg *segment, off, n int64) {
	if e.owed.Load() <= 0 {
		return
	}
	if old := q.segmentOf(e); old != nil {
		old.live -= int64(e.n)
		q.liveBytes -= int64(e.n)
	}
	e.loc.Store(packLoc(seg.id, off))
	e.n = int32(n)
	seg.entries = append(seg.entries, e)
	seg.live += n
	q.liveBytes += n
}

// dropLocked forgets an event whose record can no longer be read: its
// deliveries are owed no more (they would fail at every Take). q.mu is held.
func (q *Queue) dropLocked(e *entry) {
	q.forgetLocked(e)
	e.owed.Store(0)
}
