package disk

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hookrouter/hookrouter/router/queue"
)

// scanResult is what scanSegment found in one segment.
type scanResult struct {
	end  int    // where this life's readable records end
	last uint64 // the last lsn read (first-1: none)
	// torn is set when the records end in one cut short or failing its
	// checksum, with no valid record after it.
	torn bool
	// skips are damaged ranges with valid records after them.
	skips []skip
}

// skip is a damaged range of a segment: at offset at, n bytes that are no
// record (n is 0 for records missing between two valid ones), where the
// record numbered lsn was expected and the one numbered resume follows.
type skip struct {
	at, n       int
	lsn, resume uint64
}

// scanSegment calls fn for each record of the current life of the segment
// b, named after first, in order: the first record's lsn is first and each
// next one's is the previous plus one. It stops at a zero length (the
// terminator of the last write, or the zero-filled rest of a spare), at a
// record with a lower lsn than expected (one left from the file's previous
// life, see segLog), and at the end of b. Past a record cut short, failing
// its checksum or numbered past the expected lsn, it looks for the next
// valid record of this life (lsn not below the expected one): found, the
// damage is a skip and reading goes on there; not found, the segment is
// torn there (a crash mid-write leaves that).
func scanSegment(b []byte, first uint64, fn func(off int, r record)) scanResult {
	next := first
	off := 0
	var res scanResult
	for off < len(b) {
		if zeroLength(b[off:]) {
			break
		}
		r, ok := parseRecord(b[off:])
		if ok && r.lsn < next {
			break
		}
		if ok && r.lsn > next {
			res.skips = append(res.skips, skip{at: off, lsn: next, resume: r.lsn})
			next = r.lsn
		}
		if ok && r.typ == recPad {
			// A damaged range filled by an earlier Open.
			next = r.seq
			off += r.n
			continue
		}
		if ok {
			fn(off, r)
			next++
			off += r.n
			continue
		}
		at := resync(b, off+1, next)
		if at < 0 {
			res.torn = true
			break
		}
		r, _ = parseRecord(b[at:])
		res.skips = append(res.skips, skip{at: off, n: at - off, lsn: next, resume: r.lsn})
		next = r.lsn
		off = at
	}
	res.end = off
	res.last = next - 1
	return res
}

// resync finds the first offset from off on where a valid record numbered
// next or later starts, or -1. The lsn is checked before the checksum, so
// that nearly every offset costs a few loads.
func resync(b []byte, off int, next uint64) int {
	for ; off+recHeader+payloadHeader <= len(b); off++ {
		n := int(beUint32(b[off:]))
		if n < payloadHeader || n > len(b)-off-recHeader {
			continue
		}
		lsn := beUint64(b[off+recHeader:])
		if lsn < next || lsn-next > 1<<32 {
			continue
		}
		if r, ok := parseRecord(b[off:]); ok && r.lsn >= next {
			return off
		}
	}
	return -1
}

func beUint64(b []byte) uint64 {
	return uint64(beUint32(b))<<32 | uint64(beUint32(b[4:]))
}

// zeroLength reports whether b starts with a zero record length (all of
// the length's bytes that b holds are zero).
func zeroLength(b []byte) bool {
	for _, c := range b[:min(len(b), 4)] {
		if c != 0 {
			return false
		}
	}
	return true
}

// replay rebuilds the index from the log at Open: it reads every segment
// in order and applies its records, so that each event ends with the state
// its last records gave it, then hands the owed deliveries to the
// scheduler in acceptance order. Damage is reported (see the README) and
// what is readable is kept.
func (q *Queue) replay() error {
	if err := q.files.openSpares(); err != nil {
		return err
	}
	firsts, err := listSegments(q.dir)
	if err != nil {
		return err
	}
	// The index being rebuilt: first Puts come in seq order (inOrder, found
	// by binary search); events logged again by the compactor or a
	// migration come later than their seq says (moved, a map). A slice of
	// pointers costs far less than a map of a million entries.
	var inOrder []*entry
	moved := map[uint64]*entry{}
	lookup := func(seq uint64) *entry {
		if e := moved[seq]; e != nil {
			return e
		}
		i, ok := slices.BinarySearchFunc(inOrder, seq, func(e *entry, seq uint64) int { return cmpUint64(e.seq, seq) })
		if ok && inOrder[i].owed.Load() > 0 {
			return inOrder[i]
		}
		return nil
	}
	add := func(e *entry) {
		if n := len(inOrder); n == 0 || inOrder[n-1].seq < e.seq {
			inOrder = append(inOrder, e)
		} else {
			moved[e.seq] = e
		}
	}
	names := map[string]string{}
	intern := func(b []byte) string {
		if s, ok := names[string(b)]; ok {
			return s
		}
		s := string(b)
		names[s] = s
		return s
	}
	var cached int64
	uncache := func(e *entry) {
		if e.cached {
			cached -= int64(e.n)
			e.cached, e.ev = false, nil
		}
	}
	// dead takes a delivered (or superseded) event's record out of the
	// live bytes of its segment.
	dead := func(e *entry) {
		if s := q.segmentOf(e); s != nil {
			s.live -= int64(e.n)
		}
		uncache(e)
	}
	var buf []byte
	var lastLSN uint64
	var damaged []string
	skipped, torn := 0, 0
	for i, first := range firsts {
		name := segmentName(first)
		path := filepath.Join(q.dir, name)
		b, err := readFileInto(path, buf)
		if err != nil {
			return fmt.Errorf("log segment %s: %w", path, err)
		}
		buf = b
		s := &segment{first: first, last: first - 1, closed: true, disk: int64(len(b))}
		if err := q.files.addSegment(s); err != nil {
			return err
		}
		res := scanSegment(b, first, func(off int, r record) {
			switch r.typ {
			case recPut:
				f, ok := parseEvent(seqKey(r.seq), r.val)
				if !ok {
					// The frame's checksum passed: only a bug gets here.
					q.log.Error("event record unreadable, event dropped", "file", path, "offset", off, "seq", r.seq)
					return
				}
				e := lookup(r.seq)
				if e != nil {
					dead(e) // logged again: this record replaces it
				} else {
					e = &entry{seq: r.seq}
					add(e)
				}
				e.loc.Store(packLoc(s.id, int64(off)))
				e.n = int32(r.n)
				s.live += int64(r.n)
				s.entries = append(s.entries, e)
				e.dels = make([]delivery, r.nsinks)
				e.owed.Store(int32(r.nsinks))
				if cached+int64(r.n) <= q.cacheBudget {
					if ev, err := decodeEvent(seqKey(r.seq), r.val, true); err == nil {
						e.ev, e.cached = ev, true
						cached += int64(r.n)
					}
				}
				accepted := time.Unix(0, f.receivedAt)
				i := 0
				r.eachSink(func(sink []byte, st deliveryState, lastErr []byte) {
					dl := &e.dels[i]
					i++
					dl.r.e = e
					dl.d = queue.Delivery{Event: e.ev, Sink: intern(sink), Attempts: st.attempts, Ref: &dl.r}
					dl.d.SetAccepted(accepted)
					if st.attempts > 0 || st.nextAt > 0 || len(lastErr) > 0 {
						st.lastError = string(lastErr)
						dl.d.LastError = st.lastError
						dl.r.retry = &st
					}
				})
			case recDone, recRetry:
				e := lookup(r.seq)
				if e == nil {
					return // delivered, or replaced by a later 'P' record
				}
				for i := range e.dels {
					dl := &e.dels[i]
					if dl.r.done || dl.d.Sink != string(r.sink) {
						continue
					}
					if r.typ == recRetry {
						st := r.st
						st.lastError = string(r.lastErr)
						dl.d.Attempts, dl.d.LastError = st.attempts, st.lastError
						dl.r.retry = &st
						break
					}
					dl.r.done = true
					if e.owed.Add(-1) == 0 {
						dead(e)
						delete(moved, r.seq)
					}
					break
				}
			case recKey:
				s.keys += int64(r.n)
				s.nkeys++
				s.keysExp = max(s.keysExp, r.expires)
			}
		})
		s.size, s.last = int64(res.end), res.last
		lastLSN = max(lastLSN, res.last)
		last := i == len(firsts)-1
		if len(res.skips) > 0 || (res.torn && !last) {
			kept := q.keepDamaged(path)
			for _, sk := range res.skips {
				skipped += sk.n
			}
			damaged = append(damaged, name)
			q.padDamage(path, res.skips)
			q.log.Error("queue log segment damaged; the records after the damage are kept", "file", path, "kept_as", kept,
				"damaged_ranges", fmt.Sprint(res.skips), "torn_at", tornAt(res), "readable_end", res.end)
		} else if res.torn {
			// A crash mid-write leaves this; it is not damage to report
			// at error level, but say what was ignored.
			q.log.Warn("queue log segment ends in a torn or damaged record; the rest of it is ignored (never acknowledged)", "file", path, "offset", res.end)
			torn++
		}
		if res.torn {
			// Cut, so that the next start does not read it again; the
			// segment is never written to again either way.
			if err := os.Truncate(path, int64(res.end)); err != nil {
				q.log.Warn("torn log segment not cut", "file", path, "error", err)
			}
		}
	}
	q.files.lastLSN = lastLSN
	q.lastLSN = max(lastLSN, q.files.floor)

	live := slices.DeleteFunc(inOrder, func(e *entry) bool { return e.owed.Load() <= 0 || moved[e.seq] != nil })
	if len(moved) > 0 {
		for _, e := range moved {
			live = append(live, e)
		}
		clear(moved)
		slices.SortFunc(live, func(a, b *entry) int { return cmpUint64(a.seq, b.seq) })
	}
	now := time.Now().UnixNano()
	deliveries := 0
	for _, e := range live {
		for i := range e.dels {
			dl := &e.dels[i]
			if dl.r.done {
				continue
			}
			deliveries++
			// Push and Delay number first-seen deliveries in call order, so
			// calling them in seq order keeps acceptance order.
			if dl.r.retry != nil && dl.r.retry.nextAt > now {
				q.sched.Delay(&dl.d, time.Duration(dl.r.retry.nextAt-now))
			} else {
				q.sched.Push(&dl.d)
			}
		}
	}
	q.recoveredMax = q.lastLSN
	events := len(live)
	live = nil
	q.cached.Store(cached)

	// Totals, and the segments that hold nothing any more.
	q.files.mu.Lock()
	segs := slices.Clone(q.files.segs)
	q.files.mu.Unlock()
	for _, s := range segs {
		q.logBytes += s.size
		q.liveBytes += s.live
		q.keyBytes += s.keys
		q.keyCount += s.nkeys
		if s.size == 0 {
			// Records of no life of its own (a segment started just
			// before a crash): deleted, so that its name can be reused.
			if err := q.retireSegment(s); err != nil {
				return fmt.Errorf("log segment: %w", err)
			}
		}
	}
	if len(damaged) > 0 {
		q.log.Error("queue salvage finished", "dir", q.dir, "damaged_segments", fmt.Sprint(damaged), "bytes_skipped", skipped,
			"events", events, "deliveries", deliveries)
	}
	if events > 0 {
		q.log.Info("queue recovered", "events", events, "deliveries", deliveries, "log_bytes", q.logBytes, "segments", len(segs), "torn_segments", torn)
	}
	if !q.fitsLocked(0) {
		q.log.Warn("queue holds more than max_bytes allows; new events are refused until it drains", "bytes", q.logBytes+reservedSegments*q.segBytes, "max_bytes", q.maxBytes)
	}
	return nil
}

func tornAt(res scanResult) any {
	if res.torn {
		return res.end
	}
	return "none"
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readFileInto reads the file at path into buf's storage (grown if needed).
func readFileInto(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n := int(fi.Size())
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// padDamage fills the damaged ranges of the segment at path (a copy of it
// kept) with pad records, so that the next Open reads past them quietly
// instead of reporting the same damage at every start. A range too short
// for a pad, or missing records (no bytes), is left: reported again.
func (q *Queue) padDamage(path string, skips []skip) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		q.log.Warn("damaged log segment not repaired", "file", path, "error", err)
		return
	}
	defer f.Close()
	for _, sk := range skips {
		if sk.n < minPad {
			continue
		}
		if _, err := f.WriteAt(appendPad(nil, sk.lsn, sk.resume, sk.n), int64(sk.at)); err != nil {
			q.log.Warn("damaged log segment not repaired", "file", path, "error", err)
			return
		}
	}
	if err := datasync(f); err != nil {
		q.log.Warn("damaged log segment not repaired", "file", path, "error", err)
	}
}

// keepDamaged keeps a copy of a damaged segment as it was found, next to
// it (never deleted; the segment itself is cut or compacted away), and
// returns its path.
func (q *Queue) keepDamaged(path string) string {
	kept := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000Z")
	if err := copyFile(path, kept); err != nil {
		q.log.Error("damaged log segment could not be kept", "file", path, "error", err)
		return ""
	}
	return kept
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
