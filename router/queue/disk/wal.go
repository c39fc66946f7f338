package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// The write-ahead log is a series of segment files, wal-<first seq, 16 hex
// digits>.log, in the queue directory. A Put's record is
//
//	length (4) | crc-32C of the payload (4) | payload
//	payload: seq (8) | uvarint len(sinks) | (uvarint len(sink) sink)... | events-bucket value
//
// all big-endian. The events-bucket value is exactly what the applier
// stores in bbolt (it carries its own CRC). Records are appended in
// acceptance order, so a segment's records are below the next segment's
// first seq, which is how the applier knows a segment is fully applied.

const (
	walPrefix = "wal-"
	walSuffix = ".log"
	// walHeader is the length and checksum before each payload.
	walHeader = 8
	// segmentBytes is the size past which the committer starts a new
	// segment, so that applied segments can be deleted whole.
	segmentBytes = 32 << 20
)

// bucketWAL holds walAppliedKey: the highest seq whose WAL record has been
// applied to bbolt. Open skips WAL records at or below it.
var (
	bucketWAL     = []byte("wal")
	walAppliedKey = []byte("applied_seq")
)

// errTorn ends the replay of a segment: a record cut short or failing its
// checksum, the tail of a write that a crash interrupted before its sync
// (so never acknowledged), or damage.
var errTorn = errors.New("torn or damaged record")

func segmentName(first uint64) string {
	return fmt.Sprintf("%s%016x%s", walPrefix, first, walSuffix)
}

// listSegments returns the first seqs of the segments in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("queue dir: %w", err)
	}
	var firsts []uint64
	for _, de := range ents {
		name := de.Name()
		hex, prefixed := strings.CutPrefix(name, walPrefix)
		hex, suffixed := strings.CutSuffix(hex, walSuffix)
		if !prefixed || !suffixed || len(hex) != 16 || !de.Type().IsRegular() {
			continue
		}
		first, err := strconv.ParseUint(hex, 16, 64)
		if err != nil {
			continue
		}
		firsts = append(firsts, first)
	}
	slices.Sort(firsts)
	return firsts, nil
}

// walRecordLen is the length of a Put's framed record.
func walRecordLen(to []string, ev *sinks.Event) int {
	n := walHeader + 8 + uvarintLen(len(to)) + eventValueLen(ev)
	for _, s := range to {
		n += uvarintLen(len(s)) + len(s)
	}
	return n
}

// appendWALRecord appends one Put's framed record to b and returns it with
// the offset of the events-bucket value within it.
func appendWALRecord(b []byte, seq uint64, to []string, ev *sinks.Event) ([]byte, int) {
	start := len(b)
	b = append(b, make([]byte, walHeader)...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.AppendUvarint(b, uint64(len(to)))
	for _, s := range to {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	valOff := len(b)
	// The payload starts with the event's key, seqKey(seq): checksum it
	// from there rather than allocate it (only read, and still valid if
	// the append below moves b).
	key := b[start+walHeader : start+walHeader+8]
	b = appendEvent(b, key, ev)
	payload := b[start+walHeader:]
	binary.BigEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(payload, castagnoli))
	return b, valOff
}

// walRecord is one record read back from a segment.
type walRecord struct {
	seq uint64
	to  []string
	val []byte // the events-bucket value
	n   int64  // framed length
}

// readSegment parses the segment at path, named after first, and calls fn
// for each record of its current life, in order: the first record's seq is
// first and each next one's is the previous plus one. It stops without an
// error at a zero length (the terminator of the last write, or the
// zero-filled rest of a spare) and at a record with a lower seq than
// expected (one left from the file's previous life, see wal). It stops
// with errTorn, giving the offset, at a record cut short, failing its
// checksum or numbered past the expected seq; the records after it are
// not read.
func readSegment(path string, first uint64, fn func(walRecord)) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("wal segment: %w", err)
	}
	next := first
	for off := 0; off < len(b); {
		if zeroLength(b[off:]) {
			return nil
		}
		rec, n, ok := parseWALRecord(b[off:])
		if ok && rec.seq < next {
			return nil
		}
		if !ok || rec.seq != next {
			return fmt.Errorf("%w at offset %d of %d bytes", errTorn, off, len(b))
		}
		next++
		fn(rec)
		off += n
	}
	return nil
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

// parseWALRecord decodes the record at the start of b.
func parseWALRecord(b []byte) (walRecord, int, bool) {
	if len(b) < walHeader {
		return walRecord{}, 0, false
	}
	n := int(binary.BigEndian.Uint32(b))
	if n < 8 || n > len(b)-walHeader {
		return walRecord{}, 0, false
	}
	p := b[walHeader : walHeader+n]
	if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return walRecord{}, 0, false
	}
	rec := walRecord{seq: binary.BigEndian.Uint64(p), n: int64(walHeader + n)}
	p = p[8:]
	count, w := binary.Uvarint(p)
	if w <= 0 || count == 0 || count > uint64(len(p)) {
		return walRecord{}, 0, false
	}
	p = p[w:]
	for range count {
		var s []byte
		var ok bool
		if s, p, ok = readBytes(p); !ok || len(s) == 0 {
			return walRecord{}, 0, false
		}
		rec.to = append(rec.to, string(s))
	}
	rec.val = p
	return rec, walHeader + n, true
}

// wal is the writing side of the log. append and abandon are called by
// the committer only; dropApplied and prepareSpare by the applier only.
//
// Segments are preallocated: a new segment is a spare file, zero-filled
// once (prepareSpare) or a fully applied segment renamed for reuse instead
// of deleted (dropApplied), as PostgreSQL recycles its WAL files. Writing
// over blocks that are already allocated and synced lets fdatasync flush
// the data alone, without a journal commit for the file's new size, which
// is most of the cost of a sync on ext4. A spare is renamed to the new
// segment's name, and that name synced, before the first record in it is
// acknowledged.
//
// A recycled segment still holds the records of its previous life past
// what was written in this one, with valid checksums. Replay stops at the
// end of this life's records because (see readSegment):
//   - every write ends with walHeader zero bytes, a zero length, which the
//     next write overwrites: a clean end reads as a zero length;
//   - the records of a segment are numbered without gaps from the first
//     seq in its name (a failed append abandons the segment, so a gap never
//     follows), and a record of an earlier life has a lower seq than any
//     record of this one: Open numbers Puts past every seq that a segment
//     or spare name says its file may hold (floorSeq), and a spare's name
//     is at least the highest seq it ever held.
//
// Space: besides what the applier has not taken yet, the log keeps the
// active segment, allocated at its full segBytes, and up to maxSpares
// spares of segBytes each, also while hookrouter is stopped. With the
// default 32 MiB segments that is 64 MiB in the steady state (before
// preallocation: the active segment only, growing to 32 MiB). None of it
// counts against max_bytes, which bounds stored events; a spare is only
// zero-filled while the file system has spareFreeFactor times segBytes
// free, so preallocation never takes the last free space from Puts.
type wal struct {
	dir      string
	segBytes int64
	f        *os.File // the active segment; nil until the first append
	off      int64    // bytes of f known to be written and synced
	// prealloc is set when f is a spare: its first segBytes are allocated.
	prealloc bool
	// dirty is set while f's name is not yet synced to the directory.
	dirty bool
	// lastSeq bounds the seqs written to the last segment: that of the
	// last record appended, or failed to be.
	lastSeq uint64

	mu     sync.Mutex
	segs   []segment // on disk, in order; the last one is f's while f is open
	spares []uint64  // names of the spare files ready for reuse
	// nextSpare is the lowest name a new spare may take (names are unique).
	nextSpare uint64
	// floorSeq is the highest seq that a segment or spare found at Open
	// may hold; Open numbers new Puts above it.
	floorSeq uint64
	// prepareAfter delays the next zero-fill after one failed or was
	// skipped for lack of space.
	prepareAfter time.Time
	// recycled and zeroFilled count the spares made each way (for tests).
	recycled, zeroFilled int
}

const (
	spareFile = "spare-%016x.wal" // highest seq the file may hold (unique)
	// spareTemp is a spare being zero-filled; Open removes a leftover one.
	spareTemp = "spare-new.tmp"
	// maxSpares bounds the spare segments kept; applied segments beyond
	// it are deleted. One is enough when the applier keeps up: a segment
	// is applied within flushDelay of being closed, long before the next
	// one fills.
	maxSpares = 1
	// spareFreeFactor: a spare is zero-filled only while the file system
	// has that many segBytes free.
	spareFreeFactor = 4
	// prepareRetry is how long prepareSpare waits after a failure or a
	// lack of space before it tries again.
	prepareRetry = time.Minute
)

// segment is one log file. Its last seq is known once it is closed: the
// next segment's first seq minus one, or for a segment found at Open, the
// last seq read from it.
type segment struct {
	first, last uint64
	closed      bool
	// reuse is set for the segments this process created. One found at
	// Open is deleted, not recycled: a batch torn by the crash may have
	// left records in it numbered past its last valid one (seqs that are
	// handed out again), which its spare name would not bound.
	reuse bool
}

// walTerminator is the zero length written after the last record of each
// append (and overwritten by the next one).
var walTerminator [walHeader]byte

// append writes buf, the records of Puts first to last, and syncs it. buf
// is written with walTerminator after it (appended in place when buf has
// the capacity). On failure the segment is cut back to its last synced
// length, so that the failed records are not replayed, and abandoned: the
// next append starts a new segment named after its own first seq, which
// keeps every segment's seqs free of gaps.
func (w *wal) append(buf []byte, first, last uint64) error {
	if w.f == nil || w.off >= w.segBytes || (!w.prealloc && w.spareReady()) {
		// A segment that had to grow is left as soon as a spare is ready.
		if err := w.rotate(first); err != nil {
			return err
		}
	}
	var err error
	if w.dirty {
		// Before any record in the segment is acknowledged, its name must
		// survive a crash.
		if err = syncDir(w.dir); err == nil {
			w.dirty = false
		}
	}
	if err == nil {
		_, err = w.f.WriteAt(append(buf, walTerminator[:]...), w.off)
	}
	if err == nil {
		err = datasync(w.f)
	}
	if err != nil {
		if terr := w.f.Truncate(w.off); terr == nil {
			_ = datasync(w.f)
		}
		w.abandon(last) // if the cut failed, the file may hold them
		return fmt.Errorf("wal append: %w", err)
	}
	w.off += int64(len(buf))
	w.lastSeq = last
	return nil
}

// abandon ends the active segment, if any, after Puts up to last were
// numbered but not logged (an append failed, or the committer failed them
// before it): the next append starts a new segment named after its own
// first seq, which keeps every segment's seqs free of gaps. Replay stops at
// a gap with a warning: left in place, it would hide the acknowledged
// records after it.
func (w *wal) abandon(last uint64) {
	if w.f != nil {
		_ = w.f.Close()
		w.f = nil
	}
	w.lastSeq = last
}

func (w *wal) spareReady() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.spares) > 0
}

// rotate closes the active segment and starts the next, named after the
// first seq it will hold: a spare renamed when there is one, else a new
// empty file that grows as it is written. append syncs the directory
// before the first write.
func (w *wal) rotate(first uint64) error {
	if w.f != nil {
		_ = w.f.Close()
		w.f = nil
	}
	path := filepath.Join(w.dir, segmentName(first))
	w.mu.Lock()
	var spare uint64
	haveSpare := len(w.spares) > 0
	if haveSpare {
		spare = w.spares[len(w.spares)-1]
		w.spares = w.spares[:len(w.spares)-1]
	}
	w.mu.Unlock()
	var f *os.File
	var err error
	prealloc := false
	if haveSpare {
		if err = os.Rename(filepath.Join(w.dir, fmt.Sprintf(spareFile, spare)), path); err == nil {
			f, err = os.OpenFile(path, os.O_WRONLY, 0)
			prealloc = err == nil
		}
	}
	if !prealloc {
		// No spare, or it could not be used: a growing file, as before
		// preallocation. O_TRUNC empties a file of an earlier run.
		f, err = os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("wal segment: %w", err)
		}
	}
	w.f, w.off, w.prealloc, w.dirty, w.lastSeq = f, 0, prealloc, true, first-1
	w.mu.Lock()
	if n := len(w.segs); n > 0 && !w.segs[n-1].closed {
		w.segs[n-1].closed, w.segs[n-1].last = true, first-1
	}
	if n := len(w.segs); n > 0 && w.segs[n-1].first == first {
		// An empty segment of an earlier run, replaced above.
		w.segs[n-1] = segment{first: first, reuse: true}
	} else {
		w.segs = append(w.segs, segment{first: first, reuse: true})
	}
	w.mu.Unlock()
	return nil
}

// dropApplied recycles or deletes the closed segments whose records are
// all at or below applied, oldest first. The segment being written is
// never touched.
func (w *wal) dropApplied(applied uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.segs) > 0 && w.segs[0].closed && w.segs[0].last <= applied {
		if err := w.retireLocked(w.segs[0]); err != nil {
			return err
		}
		w.segs = w.segs[1:]
	}
	return nil
}

// retireLocked renames an applied segment into a spare when this process
// created it, fewer than maxSpares are kept and it is allocated in full (a
// segment that grew less than segBytes is not), else deletes it. The rename needs no
// directory sync: if a crash undoes it, Open finds the segment again, with
// records all applied. w.mu is held.
func (w *wal) retireLocked(s segment) error {
	path := filepath.Join(w.dir, segmentName(s.first))
	if s.reuse && len(w.spares) < maxSpares {
		if fi, err := os.Stat(path); err == nil && fi.Size() >= w.segBytes {
			// The name is at least every seq the file holds: the segment
			// is closed, so s.last bounds this life's records (failed
			// appends included), and earlier lives' are below s.first.
			name := max(s.last, s.first, w.nextSpare)
			if err := os.Rename(path, filepath.Join(w.dir, fmt.Sprintf(spareFile, name))); err == nil {
				w.spares = append(w.spares, name)
				w.nextSpare = name + 1
				w.recycled++
				return nil
			}
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// prepareSpare zero-fills a new spare segment when none is ready, so that
// the next rotation finds one. It writes segBytes and syncs them: the
// blocks are then allocated and the committer's writes overwrite them. It
// does nothing while a previous attempt failed or found too little free
// space less than prepareRetry ago.
func (w *wal) prepareSpare() error {
	w.mu.Lock()
	skip := len(w.spares) > 0 || time.Now().Before(w.prepareAfter)
	w.mu.Unlock()
	if skip {
		return nil
	}
	if free, ok := freeBytes(w.dir); ok && free < spareFreeFactor*w.segBytes {
		w.retryPrepareLater()
		return nil
	}
	tmp := filepath.Join(w.dir, spareTemp)
	err := zeroFile(tmp, w.segBytes)
	w.mu.Lock()
	name := w.nextSpare
	w.mu.Unlock()
	if err == nil {
		err = os.Rename(tmp, filepath.Join(w.dir, fmt.Sprintf(spareFile, name)))
	}
	if err != nil {
		_ = os.Remove(tmp)
		w.retryPrepareLater()
		return fmt.Errorf("wal spare segment: %w", err)
	}
	w.mu.Lock()
	w.spares = append(w.spares, name)
	w.nextSpare = name + 1
	w.zeroFilled++
	w.mu.Unlock()
	return nil
}

func (w *wal) retryPrepareLater() {
	w.mu.Lock()
	w.prepareAfter = time.Now().Add(prepareRetry)
	w.mu.Unlock()
}

// zeroFile creates path with size zero bytes, written and synced.
func zeroFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	zeros := make([]byte, min(size, 1<<20))
	for off := int64(0); off < size && err == nil; off += int64(len(zeros)) {
		_, err = f.Write(zeros[:min(int64(len(zeros)), size-off)])
	}
	if err == nil {
		err = datasync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// openSpares lists the spare segments in dir: those of segBytes or more
// are kept (up to maxSpares), the others, and a spare left half
// zero-filled by a crash, deleted. Every spare name raises floorSeq.
func (w *wal) openSpares() error {
	_ = os.Remove(filepath.Join(w.dir, spareTemp))
	ents, err := os.ReadDir(w.dir)
	if err != nil {
		return fmt.Errorf("queue dir: %w", err)
	}
	for _, de := range ents {
		var name uint64
		if n, err := fmt.Sscanf(de.Name(), spareFile, &name); n != 1 || err != nil || de.Name() != fmt.Sprintf(spareFile, name) {
			continue
		}
		w.floorSeq = max(w.floorSeq, name)
		w.nextSpare = max(w.nextSpare, name+1)
		path := filepath.Join(w.dir, de.Name())
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Size() >= w.segBytes && len(w.spares) < maxSpares {
			w.spares = append(w.spares, name)
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("wal spare segment: %w", err)
		}
	}
	return nil
}

// close closes the active segment and, when everything in the log has
// been applied, retires every segment (recycled as a spare or deleted).
func (w *wal) close(removeAll bool) error {
	var err error
	if w.f != nil {
		err = w.f.Close()
		w.f = nil
	}
	if !removeAll {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(w.segs); n > 0 && !w.segs[n-1].closed {
		// The segment that was being written holds up to lastSeq.
		w.segs[n-1].closed, w.segs[n-1].last = true, w.lastSeq
	}
	for len(w.segs) > 0 {
		if rerr := w.retireLocked(w.segs[0]); rerr != nil {
			return errors.Join(err, rerr)
		}
		w.segs = w.segs[1:]
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
