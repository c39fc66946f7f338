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
	b = appendEvent(b, seqKey(seq), ev)
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

// readSegment parses the segment at path and calls fn for each intact
// record in order. It stops at the first torn or damaged record and
// returns errTorn with the offset; the records after it are not read.
func readSegment(path string, fn func(walRecord)) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("wal segment: %w", err)
	}
	var prev uint64
	for off := 0; off < len(b); {
		rec, n, ok := parseWALRecord(b[off:])
		if !ok || rec.seq <= prev {
			return fmt.Errorf("%w at offset %d of %d bytes", errTorn, off, len(b))
		}
		prev = rec.seq
		fn(rec)
		off += n
	}
	return nil
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
		var s string
		var ok bool
		if s, p, ok = readString(p); !ok || s == "" {
			return walRecord{}, 0, false
		}
		rec.to = append(rec.to, s)
	}
	rec.val = p
	return rec, walHeader + n, true
}

// wal is the writing side of the log. append is called by the committer
// only; dropApplied by the applier.
type wal struct {
	dir      string
	segBytes int64
	f        *os.File // the active segment; nil until the first append
	off      int64    // bytes of f known to be written and synced

	mu   sync.Mutex
	segs []segment // on disk, in order; the last one is f's while f is open
}

// segment is one log file. Its last seq is known once it is closed: the
// next segment's first seq minus one, or for a segment found at Open, the
// last seq read from it.
type segment struct {
	first, last uint64
	closed      bool
}

// append writes buf, the records of Puts from first on, and syncs it. On
// failure the segment is cut back to its last synced length so that a
// later record does not follow garbage; if even that fails, the next
// append starts a new segment.
func (w *wal) append(buf []byte, first uint64) error {
	if w.f == nil || w.off >= w.segBytes {
		if err := w.rotate(first); err != nil {
			return err
		}
	}
	_, err := w.f.WriteAt(buf, w.off)
	if err == nil {
		err = datasync(w.f)
	}
	if err != nil {
		if terr := w.f.Truncate(w.off); terr != nil || datasync(w.f) != nil {
			_ = w.f.Close()
			w.f = nil
		}
		return fmt.Errorf("wal append: %w", err)
	}
	w.off += int64(len(buf))
	return nil
}

// rotate closes the active segment and creates the next, named after the
// first seq it will hold, syncing the directory so the new name survives a
// crash before any record acknowledged in it.
func (w *wal) rotate(first uint64) error {
	if w.f != nil {
		_ = w.f.Close()
		w.f = nil
	}
	f, err := os.OpenFile(filepath.Join(w.dir, segmentName(first)), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("wal segment: %w", err)
	}
	if err := syncDir(w.dir); err != nil {
		_ = f.Close()
		return fmt.Errorf("wal segment: %w", err)
	}
	w.f, w.off = f, 0
	w.mu.Lock()
	if n := len(w.segs); n > 0 && !w.segs[n-1].closed {
		w.segs[n-1].closed, w.segs[n-1].last = true, first-1
	}
	if n := len(w.segs); n > 0 && w.segs[n-1].first == first {
		// An empty segment of an earlier run, truncated above.
		w.segs[n-1] = segment{first: first}
	} else {
		w.segs = append(w.segs, segment{first: first})
	}
	w.mu.Unlock()
	return nil
}

// dropApplied deletes the closed segments whose records are all at or
// below applied, oldest first. The segment being written is never deleted.
func (w *wal) dropApplied(applied uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.segs) > 0 && w.segs[0].closed && w.segs[0].last <= applied {
		if err := os.Remove(filepath.Join(w.dir, segmentName(w.segs[0].first))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		w.segs = w.segs[1:]
	}
	return nil
}

// close closes the active segment and, when everything in the log has
// been applied, deletes every segment.
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
	for len(w.segs) > 0 {
		if rerr := os.Remove(filepath.Join(w.dir, segmentName(w.segs[0].first))); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
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
