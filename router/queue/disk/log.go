package disk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The log's segment files are seg-<first lsn, 16 hex digits>.log in the
// queue directory. The committer appends to the last one; the compactor
// deletes (or recycles) the oldest once nothing in it is needed.

const (
	segPrefix = "seg-"
	segSuffix = ".log"
	// maxSegmentBytes is the size past which the committer starts a new
	// segment, unless max_bytes asks for smaller ones (segmentSize).
	maxSegmentBytes = 32 << 20
	// minSegmentBytes bounds segments from below for tiny max_bytes.
	minSegmentBytes = 4 << 10
)

// segmentSize is the segment size for a bound of maxBytes (0: none): a
// sixteenth of it, so that the space kept aside (segLog) is a small part.
func segmentSize(maxBytes int64) int64 {
	if maxBytes <= 0 {
		return maxSegmentBytes
	}
	return min(maxSegmentBytes, max(minSegmentBytes, maxBytes/16))
}

// errTorn ends the reading of a segment: a record cut short or failing its
// checksum with no valid record after it, the tail of a write that a crash
// interrupted before its sync (so never acknowledged), or damage.
var errTorn = errors.New("torn or damaged record")

func segmentName(first uint64) string {
	return fmt.Sprintf("%s%016x%s", segPrefix, first, segSuffix)
}

// listSegments returns the first lsns of the segments in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("queue dir: %w", err)
	}
	var firsts []uint64
	for _, de := range ents {
		name := de.Name()
		hex, prefixed := strings.CutPrefix(name, segPrefix)
		hex, suffixed := strings.CutSuffix(hex, segSuffix)
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

// segment is one log file. Its fields from live on are the queue's
// accounting, guarded by Queue.mu.
type segment struct {
	id          uint32 // names it in entry locations
	first, last uint64 // lsns; last is known once closed
	closed      bool
	// reuse is set for the segments this process created. One found at
	// Open is deleted, not recycled: a batch torn by the crash may have
	// left records in it numbered past its last valid one (lsns that are
	// handed out again), which its spare name would not bound.
	reuse bool
	// size is the bytes of records in it (written and synced); disk is
	// what the file takes: size, or more when it was preallocated.
	size, disk int64
	rf         *os.File // for reading bodies back; guarded by segLog.rmu

	live    int64    // bytes of the current 'P' records of live events
	keys    int64    // bytes of its 'K' records
	nkeys   int      // and their number
	keysExp int64    // the latest expiry among them (unix ns)
	entries []*entry // events whose 'P' record was written here
	// dead counts the entries delivered since entries was last swept of
	// them (forgetLocked).
	dead int
	// compacting is set while the compactor rewrites it.
	compacting bool
}

// needed reports whether anything in s must outlive it: a live event's
// record, or a dedup key not yet expired. Queue.mu is held.
func (s *segment) needed(now int64) int64 {
	n := s.live
	if s.keysExp > now {
		n += s.keys
	}
	return n
}

// segLog is the writing side of the log's files. append and abandon are
// called by the committer only; retire and prepareSpare by the compactor.
//
// Segments are preallocated: a new segment is a spare file, zero-filled
// once (prepareSpare) or a compacted segment renamed for reuse instead of
// deleted (retire), as PostgreSQL recycles its WAL files. Writing over
// blocks that are already allocated and synced lets fdatasync flush the
// data alone, without a journal commit for the file's new size, which is
// most of the cost of a sync on ext4. A spare is renamed to the new
// segment's name, and that name synced, before the first record in it is
// acknowledged.
//
// A recycled segment still holds the records of its previous life past
// what was written in this one, with valid checksums. Reading stops at the
// end of this life's records because (see scanSegment):
//   - every write ends with recHeader zero bytes, a zero length, which the
//     next write overwrites: a clean end reads as a zero length;
//   - the records of a segment are numbered without gaps from the first
//     lsn in its name (a failed append abandons the segment, so a gap never
//     follows), and a record of an earlier life has a lower lsn than any
//     record of this one: Open numbers records past every lsn that a
//     segment or spare name says its file may hold (floor), and a spare's
//     name is at least the highest lsn it ever held.
//
// Space: besides the segments, the log keeps up to maxSpares spares of
// segBytes each, also while hookrouter is stopped. The queue's bound
// counts them (Queue.reserve). A spare is only zero-filled while the file
// system has spareFreeFactor times segBytes free, so preallocation never
// takes the last free space from Puts.
type segLog struct {
	dir      string
	segBytes int64
	f        *os.File // the active segment; nil until the first append
	off      int64    // bytes of f known to be written and synced
	// prealloc is set when f is a spare: its first segBytes are allocated.
	prealloc bool
	// dirty is set while f's name is not yet synced to the directory.
	dirty bool
	// lastLSN bounds the lsns written to the last segment: that of the
	// last record appended, or failed to be.
	lastLSN uint64

	mu     sync.Mutex
	segs   []*segment // on disk, in order; the last one is f's while f is open
	nextID uint32
	spares []uint64 // names of the spare files ready for reuse
	// nextSpare is the lowest name a new spare may take (names are unique).
	nextSpare uint64
	// floor is the highest lsn that a segment or spare found at Open may
	// hold; Open numbers new records above it.
	floor uint64
	// prepareAfter delays the next zero-fill after one failed or was
	// skipped for lack of space.
	prepareAfter time.Time
	// recycled and zeroFilled count the spares made each way (for tests).
	recycled, zeroFilled int

	// rmu guards the segments' read handles: readers hold it shared while
	// they read, retire exclusively while it closes one.
	rmu  sync.RWMutex
	byID map[uint32]*segment

	// lock is the queue directory's lock file, held while the queue is open.
	lock *os.File
}

const (
	spareFile = "spare-%016x.seg" // highest lsn the file may hold (unique)
	// spareTemp is a spare being zero-filled; Open removes a leftover one.
	spareTemp = "spare-new.tmp"
	// maxSpares bounds the spare segments kept; retired segments beyond
	// it are deleted.
	maxSpares = 1
	// spareFreeFactor: a spare is zero-filled only while the file system
	// has that many segBytes free.
	spareFreeFactor = 4
	// prepareRetry is how long prepareSpare waits after a failure or a
	// lack of space before it tries again.
	prepareRetry = time.Minute
)

// terminator is the zero length written after the last record of each
// append (and overwritten by the next one).
var terminator [recHeader]byte

// addSegment registers a segment found at Open or created by rotate, with
// a read handle. w.mu is not held.
func (w *segLog) addSegment(s *segment) error {
	rf, err := os.Open(filepath.Join(w.dir, segmentName(s.first)))
	if err != nil {
		return fmt.Errorf("log segment: %w", err)
	}
	w.mu.Lock()
	w.nextID++
	s.id, s.rf = w.nextID, rf
	w.segs = append(w.segs, s)
	w.mu.Unlock()
	w.rmu.Lock()
	if w.byID == nil {
		w.byID = map[uint32]*segment{}
	}
	w.byID[s.id] = s
	w.rmu.Unlock()
	return nil
}

// position returns the segment and offset where the next append, of the
// records from lsn first on, will go: the active segment, or a new one
// when it is full (or has to grow and a spare is ready).
func (w *segLog) position(first uint64) (*segment, int64, error) {
	if w.f == nil || w.off >= w.segBytes || (!w.prealloc && w.spareReady()) {
		if err := w.rotate(first); err != nil {
			return nil, 0, err
		}
	}
	w.mu.Lock()
	s := w.segs[len(w.segs)-1]
	w.mu.Unlock()
	return s, w.off, nil
}

// append writes buf, the records of lsns first to last, at the position
// that position returned, and syncs it. buf is written with terminator
// after it (appended in place when buf has the capacity). On failure the
// segment is cut back to its last synced length, so that the failed
// records are not read back, and abandoned: the next append starts a new
// segment named after its own first lsn, which keeps every segment's lsns
// free of gaps.
func (w *segLog) append(buf []byte, last uint64) error {
	var err error
	if w.dirty {
		// Before any record in the segment is acknowledged, its name must
		// survive a crash.
		if err = syncDir(w.dir); err == nil {
			w.dirty = false
		}
	}
	if err == nil {
		_, err = w.f.WriteAt(append(buf, terminator[:]...), w.off)
	}
	if err == nil {
		err = datasync(w.f)
	}
	if err != nil {
		if terr := w.f.Truncate(w.off); terr == nil {
			_ = datasync(w.f)
		}
		w.abandon(last) // if the cut failed, the file may hold them
		return fmt.Errorf("log append: %w", err)
	}
	w.off += int64(len(buf))
	w.lastLSN = last
	return nil
}

// abandon ends the active segment, if any, after records up to last were
// numbered but not logged: the next append starts a new segment named
// after its own first lsn, which keeps every segment's lsns free of gaps.
func (w *segLog) abandon(last uint64) {
	if w.f != nil {
		_ = w.f.Close()
		w.f = nil
	}
	w.lastLSN = last
	w.closeLast(last)
}

// closeLast marks the last segment closed, holding lsns up to last.
func (w *segLog) closeLast(last uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(w.segs); n > 0 && !w.segs[n-1].closed {
		w.segs[n-1].closed, w.segs[n-1].last = true, last
	}
}

func (w *segLog) spareReady() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.spares) > 0
}

// rotate closes the active segment and starts the next, named after the
// first lsn it will hold: a spare renamed when there is one, else a new
// empty file that grows as it is written. append syncs the directory
// before the first write.
func (w *segLog) rotate(first uint64) error {
	if w.f != nil {
		_ = w.f.Close()
		w.f = nil
	}
	w.closeLast(first - 1)
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
		// No spare, or it could not be used: a growing file. O_TRUNC
		// empties a file of an earlier run.
		f, err = os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("log segment: %w", err)
		}
	}
	s := &segment{first: first, last: first - 1, reuse: true}
	if prealloc {
		s.disk = w.segBytes
	}
	if err := w.addSegment(s); err != nil {
		_ = f.Close()
		return err
	}
	w.f, w.off, w.prealloc, w.dirty, w.lastLSN = f, 0, prealloc, true, first-1
	return nil
}

// oldest returns the oldest closed segment, and how many segments there are.
func (w *segLog) oldest() (*segment, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.segs) == 0 || !w.segs[0].closed {
		return nil, len(w.segs)
	}
	return w.segs[0], len(w.segs)
}

// retire removes s, the oldest segment, from the log: renamed into a spare
// when this process created it, fewer than maxSpares are kept and it is
// allocated in full, else deleted. It reports the disk space given back
// (none for a spare, which the bound still counts). The rename needs no
// directory sync: if a crash undoes it, Open finds the segment again, and
// nothing in it is needed.
func (w *segLog) retire(s *segment) (int64, error) {
	w.rmu.Lock()
	delete(w.byID, s.id)
	if s.rf != nil {
		_ = s.rf.Close()
		s.rf = nil
	}
	w.rmu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.segs) > 0 && w.segs[0] == s {
		// Cleared, not just sliced off: the array would keep the segment,
		// its entries and their events alive.
		w.segs[0] = nil
		w.segs = w.segs[1:]
	}
	s.entries = nil
	path := filepath.Join(w.dir, segmentName(s.first))
	if s.reuse && len(w.spares) < maxSpares && s.disk >= w.segBytes {
		// The name is at least every lsn the file holds: the segment is
		// closed, so s.last bounds this life's records (failed appends
		// included), and earlier lives' are below s.first.
		name := max(s.last, s.first, w.nextSpare)
		if err := os.Rename(path, filepath.Join(w.dir, fmt.Sprintf(spareFile, name))); err == nil {
			w.spares = append(w.spares, name)
			w.nextSpare = name + 1
			w.recycled++
			return max(s.disk, s.size) - w.segBytes, nil
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	return max(s.disk, s.size), nil
}

// readAt reads len(b) bytes at off of the segment id, or up to its end,
// and returns the bytes read.
func (w *segLog) readAt(id uint32, off int64, b []byte) ([]byte, error) {
	w.rmu.RLock()
	defer w.rmu.RUnlock()
	s := w.byID[id]
	if s == nil || s.rf == nil {
		return nil, errSegmentGone
	}
	n, err := s.rf.ReadAt(b, off)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return b[:n], err
}

// errSegmentGone is returned by readAt for a segment retired meanwhile
// (the record was moved: read its new location) or closed with the queue.
var errSegmentGone = errors.New("log segment gone")

// prepareSpare zero-fills a new spare segment when none is ready, so that
// the next rotation finds one. It writes segBytes and syncs them: the
// blocks are then allocated and the committer's writes overwrite them. It
// does nothing while a previous attempt failed or found too little free
// space less than prepareRetry ago, or when fits says the bound has no
// room for it.
func (w *segLog) prepareSpare() error {
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
		return fmt.Errorf("log spare segment: %w", err)
	}
	w.mu.Lock()
	w.spares = append(w.spares, name)
	w.nextSpare = name + 1
	w.zeroFilled++
	w.mu.Unlock()
	return nil
}

func (w *segLog) retryPrepareLater() {
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
// zero-filled by a crash, deleted. Every spare name raises floor.
func (w *segLog) openSpares() error {
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
		w.floor = max(w.floor, name)
		w.nextSpare = max(w.nextSpare, name+1)
		path := filepath.Join(w.dir, de.Name())
		// Exactly segBytes: a spare of another size (max_bytes changed)
		// would count wrong against the bound.
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Size() == w.segBytes && len(w.spares) < maxSpares {
			w.spares = append(w.spares, name)
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("log spare segment: %w", err)
		}
	}
	return nil
}

// close closes the active segment and every read handle.
func (w *segLog) close() error {
	var err error
	if w.f != nil {
		err = w.f.Close()
		w.f = nil
	}
	w.closeLast(w.lastLSN)
	w.rmu.Lock()
	defer w.rmu.Unlock()
	for id, s := range w.byID {
		if s.rf != nil {
			_ = s.rf.Close()
			s.rf = nil
		}
		delete(w.byID, id)
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
