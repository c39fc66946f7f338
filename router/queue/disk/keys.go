package disk

import (
	"fmt"
	"slices"
	"time"

	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

// KeepKey records a committed dedup key for an event that was not queued
// (no rule routed it), so that it too survives a restart; see
// queue.KeyKeeper. It is logged with the next write (within ackDelay),
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
	q.queueLocked(pend{typ: recKey, key: key, expires: expires.UnixNano()})
	n := len(q.pending)
	q.mu.Unlock()
	q.ackQueued(n)
	return nil
}

// Keys calls fn for each dedup key not yet expired that the log holds:
// first the kept keys of delivered and unrouted events (at most maxKeys,
// the latest expiring), oldest first, then those of the events still owed,
// in acceptance order; see queue.KeyKeeper. It reads the whole log, so it
// is meant for the start, before events are accepted: keys given since the
// last write are not included.
func (q *Queue) Keys(fn func(key string, expires time.Time)) error {
	now := time.Now().UnixNano()
	kept := map[string]int64{}
	type owedKey struct {
		seq     uint64
		key     string
		expires int64
	}
	var owed []owedKey
	q.files.mu.Lock()
	segs := slices.Clone(q.files.segs)
	q.files.mu.Unlock()
	var b []byte
	for _, s := range segs {
		q.mu.Lock()
		size := s.size
		var here []*entry
		for _, e := range s.entries {
			if id, _ := unpackLoc(e.loc.Load()); id == s.id && e.owed.Load() > 0 {
				here = append(here, e)
			}
		}
		nkeys := s.nkeys
		q.mu.Unlock()
		if size == 0 || (len(here) == 0 && (nkeys == 0 || q.maxKeys == 0)) {
			continue
		}
		if int64(cap(b)) < size {
			b = make([]byte, size)
		}
		var err error
		if b, err = q.files.readAt(s.id, 0, b[:size]); err != nil {
			// Retired meanwhile (compacted): its records were moved
			// forward, to a segment read after this one.
			continue
		}
		if q.maxKeys > 0 && nkeys > 0 {
			scanSegment(b, s.first, func(_ int, r record) {
				if r.typ == recKey && r.expires > now && r.expires > kept[string(r.key)] {
					kept[string(r.key)] = r.expires
				}
			})
		}
		for _, e := range here {
			_, off := unpackLoc(e.loc.Load())
			if off >= size {
				continue
			}
			r, ok := parseRecord(b[off:])
			if !ok || r.typ != recPut || r.seq != e.seq {
				continue
			}
			f, ok := parseEvent(seqKey(e.seq), r.val)
			if ok && len(f.dedupKey) > 0 && f.dedupExpires > now {
				owed = append(owed, owedKey{seq: e.seq, key: string(f.dedupKey), expires: f.dedupExpires})
			}
		}
	}
	keys := make([]keptKey, 0, len(kept))
	for k, exp := range kept {
		keys = append(keys, keptKey{key: k, expires: exp})
	}
	clear(kept)
	slices.SortFunc(keys, func(a, b keptKey) int {
		if c := cmpInt64(a.expires, b.expires); c != 0 {
			return c
		}
		if a.key < b.key {
			return -1
		}
		return 1
	})
	if len(keys) > q.maxKeys {
		keys = keys[len(keys)-q.maxKeys:]
	}
	for _, k := range keys {
		fn(k.key, time.Unix(0, k.expires))
	}
	slices.SortFunc(owed, func(a, b owedKey) int { return cmpUint64(a.seq, b.seq) })
	for _, k := range slices.CompactFunc(owed, func(a, b owedKey) bool { return a.seq == b.seq }) {
		fn(k.key, time.Unix(0, k.expires))
	}
	return nil
}

// Recovered returns the events that were owed deliveries when Open ran, in
// acceptance order, read from the log now (the queue does not keep them),
// so that the router can re-claim their dedup keys before it starts
// accepting. Events delivered since Open are not included. Prefer
// EachRecovered for large backlogs: Recovered holds them all at once.
func (q *Queue) Recovered() []*sinks.Event {
	var out []*sinks.Event
	if err := q.EachRecovered(func(ev *sinks.Event) error {
		out = append(out, ev)
		return nil
	}); err != nil {
		q.log.Error("reading recovered events", "error", err)
	}
	return out
}

// EachRecovered calls fn for each event Recovered would return, one at a
// time; it stops at fn's first error and returns it.
func (q *Queue) EachRecovered(fn func(ev *sinks.Event) error) error {
	for _, e := range q.recoveredEntries() {
		ev := e.ev
		if !e.cached {
			var err error
			if ev, err = q.load(e); err != nil {
				return fmt.Errorf("queue event #%d: %w", e.seq, err)
			}
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}

// recoveredEntries lists the live events found at Open, in seq order.
func (q *Queue) recoveredEntries() []*entry {
	q.files.mu.Lock()
	segs := slices.Clone(q.files.segs)
	q.files.mu.Unlock()
	var out []*entry
	q.mu.Lock()
	for _, s := range segs {
		for _, e := range s.entries {
			if id, _ := unpackLoc(e.loc.Load()); id == s.id && e.owed.Load() > 0 && e.seq <= q.recoveredMax {
				out = append(out, e)
			}
		}
	}
	q.mu.Unlock()
	slices.SortFunc(out, func(a, b *entry) int { return cmpUint64(a.seq, b.seq) })
	return slices.CompactFunc(out, func(a, b *entry) bool { return a == b })
}

var (
	_ queue.Queue      = (*Queue)(nil)
	_ queue.BatchTaker = (*Queue)(nil)
	_ queue.KeyKeeper  = (*Queue)(nil)
)
