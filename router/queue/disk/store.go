package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

// errCorrupt marks damage found in the queue file: Open then moves the file
// aside and carries over what it can read, instead of refusing to start (a
// crash loop that would also turn away new events) or starting empty (losing
// accepted ones silently).
var errCorrupt = errors.New("queue file damaged")

// state is what Open found in the file.
type state struct {
	items   []item // in acceptance order
	events  int
	used    int64
	cached  int64
	maxSeq  uint64
	dropped int    // unreadable records removed (salvage only)
	keys    int    // records in the keys bucket
	maxKeyN uint64 // the highest number a key record carries
	// salvage, when the file was salvaged, holds the attributes of the
	// summary that Open logs once the log has been replayed.
	salvage []any
}

// item is one owed delivery and when it is due.
type item struct {
	d      *queue.Delivery
	nextAt int64
}

func boltOptions(readOnly bool) *bolt.Options {
	// The freelist stays synced (the default): with NoFreelistSync, Open
	// rebuilds it by walking every page in a goroutine of bbolt's own, where
	// a damaged page would crash the process instead of being reported.
	return &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType, ReadOnly: readOnly}
}

// openStore opens and verifies the file, or salvages it if it is damaged.
func (q *Queue) openStore() (*state, error) {
	st, err := q.openChecked()
	if err == nil || !errors.Is(err, errCorrupt) {
		return st, err
	}
	return q.salvage(err)
}

func (q *Queue) openChecked() (*state, error) {
	// A file shorter than its last commit says (a torn tail) would fault on
	// the first read of a missing page: check before bbolt maps it.
	if err := checkMeta(q.path); err != nil {
		return nil, err
	}
	var db *bolt.DB
	err := guard(func() (err error) {
		db, err = bolt.Open(q.path, 0o600, boltOptions(false))
		return err
	})
	switch {
	case err == nil:
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("queue file %s is locked by another process (another hookrouter on the same data_dir?)", q.path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %s: %w", errCorrupt, q.path, err)
	default:
		return nil, fmt.Errorf("queue file %s: %w", q.path, err)
	}
	st, err := q.loadState(db, false)
	if err != nil {
		_ = guard(db.Close)
		return nil, err
	}
	q.db = db
	return st, nil
}

// guard runs f, turning a panic or a memory fault (a page past the end of a
// truncated file, a garbage page offset) into errCorrupt: bbolt trusts its
// pages and panics on nonsense, and a panic at Open would be a crash loop.
func guard(f func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errCorrupt, r)
		}
	}()
	return f()
}

// checkMeta reads bbolt's two meta pages the way bbolt does and checks that
// the file holds every page the newest valid one refers to. A missing or
// empty file is fine: bbolt creates it.
func checkMeta(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("queue file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("queue file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("queue file %s is not a regular file", path)
	}
	if fi.Size() == 0 {
		return nil
	}
	best, ok := readMeta(f, 0)
	var sizes []int64
	if ok {
		sizes = []int64{int64(best.pageSize)}
	} else {
		for i := range 15 {
			sizes = append(sizes, 1024<<i)
		}
	}
	for _, ps := range sizes {
		if m, ok1 := readMeta(f, ps); ok1 {
			if !ok || m.txid > best.txid {
				best, ok = m, true
			}
			break
		}
	}
	if !ok {
		return fmt.Errorf("%w: %s: no valid meta page", errCorrupt, path)
	}
	if need := int64(best.pgid) * int64(best.pageSize); fi.Size() < need {
		return fmt.Errorf("%w: %s: file is %d bytes but its last commit needs %d (truncated)", errCorrupt, path, fi.Size(), need)
	}
	return nil
}

// boltMeta is the part of bbolt's meta page that checkMeta needs.
type boltMeta struct {
	pageSize uint32
	pgid     uint64 // high-water mark, in pages
	txid     uint64
}

// readMeta parses the meta page at off: a 16-byte page header, then magic,
// version, page size, flags, root bucket (16), freelist, pgid, txid, and an
// FNV-64a checksum of the preceding 56 bytes, in the machine's byte order.
func readMeta(r io.ReaderAt, off int64) (boltMeta, bool) {
	const header, size = 16, 64
	var b [header + size]byte
	if _, err := r.ReadAt(b[:], off); err != nil {
		return boltMeta{}, false
	}
	m := b[header:]
	ne := binary.NativeEndian
	h := fnv.New64a()
	h.Write(m[:56])
	if ne.Uint32(m[0:]) != 0xED0CDAED || ne.Uint32(m[4:]) != 2 || ne.Uint64(m[56:]) != h.Sum64() {
		return boltMeta{}, false
	}
	return boltMeta{pageSize: ne.Uint32(m[8:]), pgid: ne.Uint64(m[40:]), txid: ne.Uint64(m[48:])}, true
}

// loadState reads every owed delivery. Strict (repair false), any bad or
// orphaned record is errCorrupt; with repair, such records are removed and
// counted, which is how a salvaged copy is cleaned.
func (q *Queue) loadState(db *bolt.DB, repair bool) (*state, error) {
	// Write only when the buckets are missing (a new file): a damaged file
	// must reach salvage exactly as it was found.
	var missing bool
	err := guard(func() error {
		return db.View(func(tx *bolt.Tx) error {
			missing = tx.Bucket(bucketEvents) == nil || tx.Bucket(bucketDeliveries) == nil
			return nil
		})
	})
	if err == nil && missing {
		err = db.Update(func(tx *bolt.Tx) error {
			for _, name := range [][]byte{bucketEvents, bucketDeliveries} {
				if _, err := tx.CreateBucketIfNotExists(name); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		return nil, fmt.Errorf("queue file %s: %w", q.path, err)
	}
	st := &state{}
	type badKey struct{ bucket, key []byte }
	var bad []badKey
	problem := func(bucket, key []byte, what string) error {
		if !repair {
			return fmt.Errorf("%w: %s: record %x in %s: %s", errCorrupt, q.path, key, bucket, what)
		}
		bad = append(bad, badKey{bucket, bytes.Clone(key)})
		return nil
	}
	err = guard(func() error {
		return db.View(func(tx *bolt.Tx) error {
			evc := tx.Bucket(bucketEvents).Cursor()
			ek, ev := evc.First()
			var cur *entry
			var curBad bool
			finish := func() {
				if cur != nil && !curBad {
					st.events++
					st.used += cur.size
					if cur.cached {
						st.cached += cur.size
					}
				}
			}
			names := map[string]string{}
			var curAccepted time.Time // cur's ReceivedAt, for queue.Ager
			dc := tx.Bucket(bucketDeliveries).Cursor()
			for k, v := dc.First(); k != nil; k, v = dc.Next() {
				seq, sink, ok := splitDeliveryKey(k)
				ds, derr := decodeDelivery(k, v)
				if !ok || derr != nil {
					if err := problem(bucketDeliveries, k, "checksum or layout"); err != nil {
						return err
					}
					continue
				}
				if cur == nil || cur.seq != seq {
					finish()
					cur, curBad = nil, false
					for ; ek != nil && (len(ek) != 8 || binary.BigEndian.Uint64(ek) < seq); ek, ev = evc.Next() {
						if err := problem(bucketEvents, ek, "owed to no sink"); err != nil {
							return err
						}
					}
					if ek == nil || binary.BigEndian.Uint64(ek) != seq {
						cur, curBad = &entry{seq: seq}, true
					} else {
						// Checked here; kept in memory only within the
						// cache's budget, else read back on Take.
						withBody := st.cached+int64(len(ev)) <= q.cacheBudget
						var e *sinks.Event
						var err error
						f, ok := parseEvent(ek, ev)
						switch {
						case !ok:
							err = errBadRecord
						case withBody:
							e, err = decodeEvent(ek, ev, true)
						}
						if err != nil {
							if err := problem(bucketEvents, ek, "checksum or layout"); err != nil {
								return err
							}
							cur, curBad = &entry{seq: seq}, true
						} else {
							cur = &entry{seq: seq, ev: e, cached: withBody, size: eventBytes(len(ev))}
							curAccepted = time.Unix(0, f.receivedAt)
						}
						ek, ev = evc.Next()
					}
					st.maxSeq = max(st.maxSeq, seq)
				}
				if curBad {
					if err := problem(bucketDeliveries, k, "its event is missing or unreadable"); err != nil {
						return err
					}
					continue
				}
				// One allocation per delivery, with its Ref; sink names
				// shared, not one copy per delivery.
				name, ok := names[string(sink)]
				if !ok {
					name = string(sink)
					names[name] = name
				}
				cur.size += deliveryBytes(name)
				cur.owed.Add(1)
				dl := &delivery{d: queue.Delivery{Event: cur.ev, Sink: name, Attempts: ds.attempts, LastError: ds.lastError}, r: ref{e: cur}}
				dl.d.Ref = &dl.r
				dl.d.SetAccepted(curAccepted)
				st.items = append(st.items, item{d: &dl.d, nextAt: ds.nextAt})
			}
			finish()
			for ; ek != nil; ek, _ = evc.Next() {
				if err := problem(bucketEvents, ek, "owed to no sink"); err != nil {
					return err
				}
			}
			if b := tx.Bucket(bucketKeys); b != nil {
				c := b.Cursor()
				for k, v := c.First(); k != nil; k, v = c.Next() {
					if _, _, ok := decodeKey(k, v); !ok {
						if err := problem(bucketKeys, k, "checksum or layout"); err != nil {
							return err
						}
						continue
					}
					st.keys++
					st.maxKeyN = max(st.maxKeyN, binary.BigEndian.Uint64(k[8:]))
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		err := db.Update(func(tx *bolt.Tx) error {
			for _, b := range bad {
				if err := tx.Bucket(b.bucket).Delete(b.key); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("queue file %s: %w", q.path, err)
		}
		st.dropped = len(bad)
	}
	return st, nil
}

// salvage moves the damaged file aside (it is kept for inspection, never
// deleted), copies every record bbolt can still read into a fresh file, and
// loads that, dropping records that fail their checksum. Deliveries in pages
// that cannot be read are lost; the two error logs say how many records were
// kept and where the original is.
func (q *Queue) salvage(cause error) (*state, error) {
	aside := q.path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000Z")
	if err := os.Rename(q.path, aside); err != nil {
		return nil, fmt.Errorf("queue file %s is damaged (%v) and could not be moved aside: %w", q.path, cause, err)
	}
	q.log.Error("queue file damaged, moved aside; salvaging readable events", "file", q.path, "moved_to", aside, "error", cause)
	db, err := bolt.Open(q.path, 0o600, boltOptions(false))
	if err != nil {
		return nil, fmt.Errorf("queue file %s: %w", q.path, err)
	}
	copied, rerr := copyReadable(aside, db)
	st, err := q.loadState(db, true)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	q.db = db
	st.salvage = []any{"file", q.path, "moved_to", aside, "records_read", copied, "records_dropped", st.dropped, "salvaged_events", st.events, "salvaged_deliveries", len(st.items)}
	if rerr != nil {
		// Records on unreadable pages, or below an unreadable branch page, were not read.
		st.salvage = append(st.salvage, "read_error", rerr.Error())
	}
	return st, nil
}

// copyReadable copies the records of src's buckets into dst, in chunks.
// When a page cannot be read, it skips the keys that lead to it (see
// skipDamaged) and goes on with the next readable page, so that one bad
// leaf costs only its own records, not every later record of its bucket.
func copyReadable(src string, dst *bolt.DB) (int, error) {
	var sdb *bolt.DB
	err := guard(func() (err error) {
		sdb, err = bolt.Open(src, 0o400, boltOptions(true))
		return err
	})
	if errors.Is(err, berrors.ErrTimeout) {
		// A bbolt Open of this file that panicked earlier in this process
		// still holds its lock: read a copy instead.
		tmp := src + ".tmp"
		if err = copyFile(src, tmp); err == nil {
			defer os.Remove(tmp)
			err = guard(func() (err error) {
				sdb, err = bolt.Open(tmp, 0o400, boltOptions(true))
				return err
			})
		}
	}
	if err != nil {
		return 0, err
	}
	defer guard(sdb.Close)
	const chunk = 1024
	var copied int
	var errs []error
	for _, name := range [][]byte{bucketEvents, bucketDeliveries, bucketWAL, bucketKeys} {
		// Read from `from` (inclusive) when set, else after `after`.
		var from, after []byte
		for {
			var kvs [][2][]byte
			rerr := guard(func() error {
				return sdb.View(func(tx *bolt.Tx) error {
					b := tx.Bucket(name)
					if b == nil {
						return nil
					}
					c := b.Cursor()
					var k, v []byte
					switch {
					case from != nil:
						k, v = c.Seek(from)
					case after != nil:
						if k, v = c.Seek(after); bytes.Equal(k, after) {
							k, v = c.Next()
						}
					default:
						k, v = c.First()
					}
					for ; k != nil && len(kvs) < chunk; k, v = c.Next() {
						if v != nil { // nil: a nested bucket, never ours
							kvs = append(kvs, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
						}
					}
					return nil
				})
			})
			werr := dst.Update(func(tx *bolt.Tx) error {
				b, err := tx.CreateBucketIfNotExists(name)
				if err != nil {
					return err
				}
				for _, kv := range kvs {
					if err := b.Put(kv[0], kv[1]); err != nil {
						return err
					}
				}
				return nil
			})
			if werr != nil {
				return copied, fmt.Errorf("write salvaged records: %w", werr)
			}
			copied += len(kvs)
			if len(kvs) > 0 {
				from, after = nil, kvs[len(kvs)-1][0]
			}
			if rerr != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, rerr))
				if len(kvs) == 0 && from != nil {
					break // the key found readable is not, after all: no progress
				}
				next, ok := skipDamaged(sdb, name, after)
				if !ok {
					break
				}
				from, after = next, nil
				continue
			}
			if len(kvs) < chunk {
				break
			}
		}
	}
	return copied, errors.Join(errs...)
}

// skipDamaged finds the first key of bucket that can be read past the
// damage met after key after (nil: at the bucket's start). Keys begin with
// an acceptance number, and a Seek fails exactly for the numbers whose path
// leads into the damaged page, so the first number that seeks cleanly is
// found by an exponential then a binary search: a few dozen Seeks, however
// sparse the numbers. It reports false when nothing readable follows.
func skipDamaged(db *bolt.DB, bucket, after []byte) ([]byte, bool) {
	var base uint64
	if len(after) >= 8 {
		base = binary.BigEndian.Uint64(after)
	}
	seek := func(seq uint64) (key []byte, ok bool) {
		err := guard(func() error {
			return db.View(func(tx *bolt.Tx) error {
				if b := tx.Bucket(bucket); b != nil {
					k, _ := b.Cursor().Seek(seqKey(seq))
					key = bytes.Clone(k)
				}
				return nil
			})
		})
		return key, err == nil
	}
	lo, hi := base, base // seeking lo fails (or is the damage's start), hi succeeds
	for step := uint64(1); ; step *= 2 {
		if hi = base + step; hi < base || step == 0 {
			return nil, false // wrapped: nothing readable up to the largest number
		}
		if _, ok := seek(hi); ok {
			break
		}
		lo = hi
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if _, ok := seek(mid); ok {
			hi = mid
		} else {
			lo = mid
		}
	}
	key, _ := seek(hi)
	return key, key != nil
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

// Recovered returns the events that were owed deliveries when Open ran, in
// acceptance order, read from the file now (the queue does not keep them),
// so that the router can re-claim their dedup keys before it starts
// accepting. Events delivered since Open are not included. Prefer
// EachRecovered for large backlogs: Recovered holds them all at once.
func (q *Queue) Recovered() []*sinks.Event {
	out := make([]*sinks.Event, 0, q.recoveredN)
	if err := q.EachRecovered(func(ev *sinks.Event) error {
		out = append(out, ev)
		return nil
	}); err != nil {
		q.log.Error("reading recovered events", "error", err)
	}
	return out
}

// EachRecovered calls fn for each event Recovered would return, reading a
// few hundred at a time; it stops at fn's first error and returns it.
func (q *Queue) EachRecovered(fn func(ev *sinks.Event) error) error {
	const chunk = 256
	next := uint64(1)
	var seen map[uint64]bool // bbolt's copies of recoveredLogged events
	if len(q.recoveredLogged) > 0 {
		seen = map[uint64]bool{}
	}
	for next <= q.recoveredMax {
		var evs []*sinks.Event
		err := q.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketEvents).Cursor()
			for k, v := c.Seek(seqKey(next)); k != nil && len(evs) < chunk; k, v = c.Next() {
				seq := binary.BigEndian.Uint64(k)
				if seq > q.recoveredMax {
					break
				}
				next = seq + 1
				if seen != nil && seq >= q.recoveredLogged[0].seq {
					seen[seq] = true
				}
				ev, err := decodeEvent(k, v, true)
				if err != nil {
					return fmt.Errorf("event record %d: %w", seq, err)
				}
				evs = append(evs, ev)
			}
			if len(evs) < chunk {
				next = q.recoveredMax + 1
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("queue file %s: %w", q.path, err)
		}
		for _, ev := range evs {
			if err := fn(ev); err != nil {
				return err
			}
		}
	}
	// Replayed from the log but not yet in bbolt (it could not take them at
	// Open): read from memory, unless applied since and so read above.
	for _, p := range q.recoveredLogged {
		if p.e.owed.Load() <= 0 || seen[p.seq] {
			continue
		}
		ev, err := decodeEvent(seqKey(p.seq), p.val, true)
		if err != nil {
			return fmt.Errorf("wal record %d: %w", p.seq, err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}
