package disk

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The engine before the log kept the queue in a bbolt file, queue.db, with
// a write-ahead log (wal-<seq>.log) in front of it. A queue directory
// written by it is migrated once, at the first Open: what it owes is read
// (with bbolt itself, read-only, and the old log's format, the last of
// this package's own) and written as one segment of the log, and queue.db
// is then kept beside it as queue.db.migrated-<time>, for the operator to
// delete. bbolt is used for nothing else; this file goes, with the
// dependency, once no such directory is left to migrate.

const (
	// oldFileName is the old engine's store.
	oldFileName  = "queue.db"
	oldWALPrefix = "wal-"
	oldWALSuffix = ".log"
	oldSpare     = "spare-"
	oldSpareExt  = ".wal"
)

// lockName is the lock file held while a queue is open.
const lockName = "lock"

// migrateOldEngine migrates an old engine's queue.db (and its log) in dir,
// if there is one, into a log segment; see above. It runs before the log
// is read, with the directory locked.
func migrateOldEngine(dir string, log *slog.Logger) error {
	path := filepath.Join(dir, oldFileName)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("queue file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("queue file %s (of the engine before the log) is not a regular file: remove it", path)
	}
	m := &migration{dir: dir, log: log}
	_ = os.Remove(filepath.Join(dir, migratingName))
	if err := m.read(path); err != nil {
		if m.f != nil {
			m.f.Close()
			_ = os.Remove(m.f.Name())
		}
		return fmt.Errorf("queue file %s, of the engine before the log, cannot be migrated: %w; "+
			"to start without the events it holds, move it (and any wal-*.log files) out of %s", path, err, dir)
	}
	if err := m.write(); err != nil {
		return fmt.Errorf("queue migration of %s: %w", path, err)
	}
	kept := path + ".migrated-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(path, kept); err != nil {
		return fmt.Errorf("queue migration of %s: %w", path, err)
	}
	ents, _ := os.ReadDir(dir)
	for _, de := range ents {
		name := de.Name()
		if (strings.HasPrefix(name, oldWALPrefix) && strings.HasSuffix(name, oldWALSuffix)) ||
			(strings.HasPrefix(name, oldSpare) && strings.HasSuffix(name, oldSpareExt)) {
			_ = os.Remove(filepath.Join(dir, name))
		}
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("queue migration: %w", err)
	}
	log.Info("queue migrated from the engine before the log", "from", path, "kept_as", kept, "events", m.events,
		"deliveries", m.deliveries, "from_old_wal", m.fromWAL, "keys", m.keys, "records_dropped", m.dropped)
	if m.dropped > 0 {
		log.Error("queue migration dropped unreadable records of the old queue file", "file", path, "kept_as", kept, "records_dropped", m.dropped)
	}
	return nil
}

// migration is one migration's state: the new segment being written and
// what was carried over.
type migration struct {
	dir string
	log *slog.Logger
	// first is the segment's first lsn, past every old seq, so that the
	// events keep their acceptance numbers and new ones follow; next is the
	// lsn of the next record.
	first, next uint64
	f           *os.File
	w           *bufio.Writer
	buf         []byte
	walPuts     []oldPut
	events      int
	fromWAL     int
	// deliveries, keys, dropped count what is carried over and what is not.
	deliveries, keys, dropped int
}

// oldPut is a Put found in the old log.
type oldPut struct {
	seq uint64
	to  []string
	val []byte
}

// emitPut writes a 'P' record for the event seq owed to sinks.
func (m *migration) emitPut(seq uint64, sinks []sinkState, val []byte) error {
	m.buf, _ = appendPut(m.buf[:0], m.next, seq, nil, sinks, nil, val)
	m.next++
	m.events++
	m.deliveries += len(sinks)
	_, err := m.w.Write(m.buf)
	return err
}

// emitKey writes a 'K' record.
func (m *migration) emitKey(key []byte, expires int64) error {
	m.buf = appendKey(m.buf[:0], m.next, string(key), expires)
	m.next++
	m.keys++
	_, err := m.w.Write(m.buf)
	return err
}

// read reads the old store and the Puts its log holds beyond what the
// store had applied, and writes them as one segment under a temporary
// name, streaming (an old backlog need not fit in memory). bbolt trusts
// its pages and panics (or faults) on a damaged file: that is an error
// here, not a crash loop.
func (m *migration) read(path string) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged: %v", r)
		}
	}()
	db, err := bolt.Open(path, 0o400, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if errors.Is(err, berrors.ErrTimeout) {
		return errors.New("locked by another process (another hookrouter on the same data_dir?)")
	}
	if err != nil {
		return err
	}
	defer db.Close()
	now := time.Now().UnixNano()
	return db.View(func(tx *bolt.Tx) error {
		var applied, maxSeq uint64
		if b := tx.Bucket([]byte("wal")); b != nil {
			if v := b.Get([]byte("applied_seq")); len(v) == 8 {
				applied = binary.BigEndian.Uint64(v)
			}
		}
		eb, dbk := tx.Bucket([]byte("events")), tx.Bucket([]byte("deliveries"))
		if eb != nil {
			if k, _ := eb.Cursor().Last(); len(k) == 8 {
				maxSeq = binary.BigEndian.Uint64(k)
			}
		}
		if err := m.readWAL(max(applied, maxSeq)); err != nil {
			return err
		}
		for _, p := range m.walPuts {
			maxSeq = max(maxSeq, p.seq)
		}
		if err := m.create(maxSeq + 1); err != nil {
			return err
		}
		if b := tx.Bucket([]byte("keys")); b != nil {
			c := b.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) != 16 || len(v) < 5 || binary.BigEndian.Uint32(v) != checksum(k, v[4:]) || v[4] != 1 {
					m.dropped++
					continue
				}
				if exp := int64(binary.BigEndian.Uint64(k)); exp > now {
					if err := m.emitKey(v[5:], exp); err != nil {
						return err
					}
				}
			}
		}
		if eb != nil && dbk != nil {
			var seq uint64
			var val []byte
			var sinks []sinkState
			flush := func() error {
				if len(sinks) == 0 {
					return nil
				}
				err := m.emitPut(seq, sinks, val)
				sinks = sinks[:0]
				return err
			}
			c := dbk.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				st, ok := oldDelivery(k, v)
				if !ok {
					m.dropped++
					continue
				}
				if s := binary.BigEndian.Uint64(k); len(sinks) == 0 || s != seq {
					if err := flush(); err != nil {
						return err
					}
					seq, val = s, eb.Get(k[:8])
					if _, ok := parseEvent(k[:8], val); !ok {
						m.dropped++
						val = nil
					}
				}
				if val != nil {
					sinks = append(sinks, sinkState{sink: string(k[8:]), deliveryState: st})
				}
			}
			if err := flush(); err != nil {
				return err
			}
		}
		for _, p := range m.walPuts {
			sinks := make([]sinkState, len(p.to))
			for i, s := range p.to {
				sinks[i].sink = s
			}
			if err := m.emitPut(p.seq, sinks, p.val); err != nil {
				return err
			}
			m.fromWAL++
		}
		return nil
	})
}

// create starts the temporary segment, numbered from first.
func (m *migration) create(first uint64) error {
	f, err := os.OpenFile(filepath.Join(m.dir, migratingName), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	m.f, m.w, m.first, m.next = f, bufio.NewWriterSize(f, 1<<20), first, first
	return nil
}

// migratingName is the segment being written by a migration.
const migratingName = "seg-migrating.tmp"

// oldDelivery decodes an old deliveries-bucket value.
func oldDelivery(k, v []byte) (deliveryState, bool) {
	if len(k) <= 8 || len(v) < 5 || binary.BigEndian.Uint32(v) != checksum(k, v[4:]) || v[4] != 1 {
		return deliveryState{}, false
	}
	attempts, p, ok := readUvarint(v[5:])
	if !ok || len(p) < 8 || attempts > 1<<31 {
		return deliveryState{}, false
	}
	return deliveryState{attempts: int(attempts), nextAt: int64(binary.BigEndian.Uint64(p)), lastError: string(p[8:])}, true
}

// readWAL reads the old log's Puts numbered past skip (not yet in the
// store when the old engine stopped): length (4) | crc-32C (4) | seq (8) |
// uvarint len(sinks) | (uvarint len sink)... | event value, numbered
// without gaps from the seq in the segment's name. A zero length or a
// lower seq ends a segment (the old engine recycled its files); so does a
// torn record (never acknowledged).
func (m *migration) readWAL(skip uint64) error {
	ents, err := os.ReadDir(m.dir)
	if err != nil {
		return err
	}
	var firsts []uint64
	for _, de := range ents {
		hex, ok1 := strings.CutPrefix(de.Name(), oldWALPrefix)
		hex, ok2 := strings.CutSuffix(hex, oldWALSuffix)
		if first, err := strconv.ParseUint(hex, 16, 64); ok1 && ok2 && len(hex) == 16 && err == nil {
			firsts = append(firsts, first)
		}
	}
	slices.Sort(firsts)
	for _, first := range firsts {
		b, err := os.ReadFile(filepath.Join(m.dir, fmt.Sprintf("%s%016x%s", oldWALPrefix, first, oldWALSuffix)))
		if err != nil {
			return err
		}
		next := first
		for off := 0; off+8 <= len(b) && !zeroLength(b[off:]); {
			n := int(binary.BigEndian.Uint32(b[off:]))
			if n < 8 || n > len(b)-off-8 || crc32.Checksum(b[off+8:off+8+n], castagnoli) != binary.BigEndian.Uint32(b[off+4:]) {
				break
			}
			p := b[off+8 : off+8+n]
			seq := binary.BigEndian.Uint64(p)
			if seq != next {
				break
			}
			next++
			off += 8 + n
			count, q, ok := readUvarint(p[8:])
			if !ok || count == 0 || count > uint64(len(q)) {
				break
			}
			var to []string
			for range count {
				var s []byte
				if s, q, ok = readBytes(q); !ok || len(s) == 0 {
					break
				}
				to = append(to, string(s))
			}
			if !ok {
				break
			}
			if seq <= skip {
				continue
			}
			if _, ok := parseEvent(seqKey(seq), q); !ok {
				m.dropped++
				continue
			}
			m.walPuts = append(m.walPuts, oldPut{seq: seq, to: to, val: slices.Clone(q)})
		}
	}
	return nil
}

// write syncs the segment and renames it into place. A crash before the
// old file is renamed aside redoes the same migration into the same
// segment (the same name, the same records).
func (m *migration) write() error {
	if m.f == nil {
		return nil
	}
	tmp := m.f.Name()
	err := m.w.Flush()
	if err == nil {
		err = m.f.Sync()
	}
	if cerr := m.f.Close(); err == nil {
		err = cerr
	}
	if err == nil && m.next == m.first {
		return os.Remove(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(m.dir, segmentName(m.first)))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(m.dir)
}
