package disk

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// The log is a series of records, each
//
//	length (4) | crc-32C of the payload (4) | payload
//	payload:   lsn (8) | type (1) | body
//
// all big-endian. lsn numbers every record of the log without gaps within
// a segment (see segLog). The bodies:
//
//	'P' put:    seq (8) | uvarint len(sinks) | sink... | event value
//	            sink:  uvarint len(name) name | uvarint attempts | uvarint next attempt, unix ns (0: due) |
//	                   uvarint len(last error) last error
//	'D' done:   seq (8) | sink name
//	'T' retry:  seq (8) | uvarint attempts | uvarint next attempt, unix ns | uvarint len(sink) sink | last error
//	'K' key:    expires, unix ns (8) | dedup key
//	'Z' pad:    lsn of the next record (8) | zeros (over a damaged range)
//
// A Put's seq is the lsn of the record that first logged it (its acceptance
// number). Compaction logs a live event again, as a 'P' record with its
// original seq, the sinks it still owes and their retry state: a 'P' record
// states an event's whole state, replacing what earlier records said.
//
// The event value carries a CRC-32C of its own (over its seq and itself),
// so that a body read back on Take is checked without its frame:
//
//	crc (4) | 2 | uvarint len(id) id | uvarint len(source) source | received_at (8) |
//	uvarint len(dedup key) dedup key | dedup expires unix ns (8) | body
//
// Version 1 event values (no dedup key) are still read.

const (
	recPut   = 'P'
	recDone  = 'D'
	recRetry = 'T'
	recKey   = 'K'
	// recPad fills a damaged range that Open found, once it has kept a
	// copy of the segment: its body is the lsn of the record after the
	// range, then zeros, so the next Open reads past it quietly.
	recPad = 'Z'
	// minPad is the smallest range a pad record fills.
	minPad = recHeader + payloadHeader + 8

	// recHeader is the length and checksum before each payload.
	recHeader = 8
	// payloadHeader is the lsn and type at the start of each payload.
	payloadHeader = 9
)

const eventVersion = 2 // 1 had no dedup key

// maxLastError bounds the stored error text of a delivery.
const maxLastError = 1024

// errBadRecord is returned for a record whose checksum or layout is wrong.
var errBadRecord = errors.New("bad record")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

func checksum(key, rest []byte) uint32 {
	c := crc32.Update(0, castagnoli, key)
	return crc32.Update(c, castagnoli, rest)
}

// deliveryState is the retry state of one delivery as logged.
type deliveryState struct {
	attempts  int
	nextAt    int64 // unix ns; 0 when due at once
	lastError string
}

// sinkState is one sink of a 'P' record.
type sinkState struct {
	sink string
	deliveryState
}

// beginRecord appends a record's header, lsn and type to b; finishRecord
// fills in its length and checksum once the body is appended.
func beginRecord(b []byte, lsn uint64, typ byte) ([]byte, int) {
	start := len(b)
	b = append(b, make([]byte, recHeader)...)
	b = binary.BigEndian.AppendUint64(b, lsn)
	return append(b, typ), start
}

func finishRecord(b []byte, start int) []byte {
	payload := b[start+recHeader:]
	binary.BigEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(payload, castagnoli))
	return b
}

// putRecordLen is the length of a 'P' record owed to sinks, with an
// event value of valLen bytes.
func putRecordLen(sinks []sinkState, valLen int) int {
	n := recHeader + payloadHeader + 8 + uvarintLen(len(sinks)) + valLen
	for _, s := range sinks {
		le := min(len(s.lastError), maxLastError)
		n += uvarintLen(len(s.sink)) + len(s.sink) + uvarintLen(s.attempts) + uvarintLen64(uint64(max(s.nextAt, 0))) + uvarintLen(le) + le
	}
	return n
}

// firstPutLen is putRecordLen for a first Put to the sinks in to.
func firstPutLen(to []string, ev *sinks.Event) int {
	n := recHeader + payloadHeader + 8 + uvarintLen(len(to)) + eventValueLen(ev)
	for _, s := range to {
		n += uvarintLen(len(s)) + len(s) + 3
	}
	return n
}

// appendPut appends a 'P' record for the event seq owed to sinks (nil
// sinks: to, a first Put), ev or, when ev is nil, the event value val
// logged before, and returns it with the offset of the record's start.
func appendPut(b []byte, lsn, seq uint64, to []string, sinks []sinkState, ev *sinks.Event, val []byte) ([]byte, int) {
	b, start := beginRecord(b, lsn, recPut)
	keyAt := len(b)
	b = binary.BigEndian.AppendUint64(b, seq)
	if sinks == nil {
		b = binary.AppendUvarint(b, uint64(len(to)))
		for _, s := range to {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
			b = append(b, 0, 0, 0)
		}
	} else {
		b = binary.AppendUvarint(b, uint64(len(sinks)))
		for _, s := range sinks {
			b = binary.AppendUvarint(b, uint64(len(s.sink)))
			b = append(b, s.sink...)
			b = appendState(b, s.deliveryState)
		}
	}
	// The event value's checksum covers its seq, the 8 bytes at keyAt:
	// only read, and still valid if the append below moves b.
	if ev != nil {
		b = appendEvent(b, b[keyAt:keyAt+8], ev)
	} else {
		b = append(b, val...)
	}
	return finishRecord(b, start), start
}

func appendState(b []byte, s deliveryState) []byte {
	le := s.lastError[:min(len(s.lastError), maxLastError)]
	b = binary.AppendUvarint(b, uint64(max(s.attempts, 0)))
	b = binary.AppendUvarint(b, uint64(max(s.nextAt, 0)))
	b = binary.AppendUvarint(b, uint64(len(le)))
	return append(b, le...)
}

// appendDone appends a 'D' record.
func appendDone(b []byte, lsn, seq uint64, sink string) []byte {
	b, start := beginRecord(b, lsn, recDone)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, sink...)
	return finishRecord(b, start)
}

// appendRetry appends a 'T' record.
func appendRetry(b []byte, lsn, seq uint64, sink string, s deliveryState) []byte {
	b, start := beginRecord(b, lsn, recRetry)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.AppendUvarint(b, uint64(max(s.attempts, 0)))
	b = binary.AppendUvarint(b, uint64(max(s.nextAt, 0)))
	b = binary.AppendUvarint(b, uint64(len(sink)))
	b = append(b, sink...)
	b = append(b, s.lastError[:min(len(s.lastError), maxLastError)]...)
	return finishRecord(b, start)
}

// appendKey appends a 'K' record.
func appendKey(b []byte, lsn uint64, key string, expires int64) []byte {
	b, start := beginRecord(b, lsn, recKey)
	b = binary.BigEndian.AppendUint64(b, uint64(expires))
	b = append(b, key...)
	return finishRecord(b, start)
}

// appendPad appends a 'Z' record of exactly n bytes (n ≥ minPad), numbered
// lsn, after which the next record is numbered next.
func appendPad(b []byte, lsn, next uint64, n int) []byte {
	b, start := beginRecord(b, lsn, recPad)
	b = binary.BigEndian.AppendUint64(b, next)
	b = append(b, make([]byte, n-minPad)...)
	return finishRecord(b, start)
}

// record is one record read back from the log; its slices alias the
// segment's bytes.
type record struct {
	lsn  uint64
	typ  byte
	n    int // framed length
	seq  uint64
	sink []byte        // 'D', 'T'
	st   deliveryState // 'T' (lastError not set: see lastErr)
	// lastErr is the raw last error of a 'T' record.
	lastErr []byte
	sinks   []byte // 'P': the encoded sink list, see eachSink
	nsinks  int
	val     []byte // 'P': the event value
	key     []byte // 'K'
	expires int64  // 'K'
}

// parseRecord checks and decodes the record at the start of b. It reports
// false for anything but a whole record with a valid checksum and layout.
func parseRecord(b []byte) (record, bool) {
	if len(b) < recHeader+payloadHeader {
		return record{}, false
	}
	n := int(binary.BigEndian.Uint32(b))
	if n < payloadHeader || n > len(b)-recHeader {
		return record{}, false
	}
	p := b[recHeader : recHeader+n]
	if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return record{}, false
	}
	r := record{lsn: binary.BigEndian.Uint64(p), typ: p[8], n: recHeader + n}
	p = p[payloadHeader:]
	switch r.typ {
	case recPut:
		if len(p) < 8 {
			return record{}, false
		}
		r.seq = binary.BigEndian.Uint64(p)
		p = p[8:]
		count, w := binary.Uvarint(p)
		if w <= 0 || count == 0 || count > uint64(len(p)) {
			return record{}, false
		}
		r.nsinks = int(count)
		rest := p[w:]
		q := rest
		for range count {
			var ok bool
			if q, ok = skipSink(q); !ok {
				return record{}, false
			}
		}
		r.sinks = rest[:len(rest)-len(q)]
		r.val = q
	case recDone:
		if len(p) < 9 {
			return record{}, false
		}
		r.seq, r.sink = binary.BigEndian.Uint64(p), p[8:]
	case recRetry:
		if len(p) < 8 {
			return record{}, false
		}
		r.seq = binary.BigEndian.Uint64(p)
		p = p[8:]
		var ok bool
		var a, next uint64
		if a, p, ok = readUvarint(p); !ok || a > 1<<31 {
			return record{}, false
		}
		if next, p, ok = readUvarint(p); !ok {
			return record{}, false
		}
		if r.sink, p, ok = readBytes(p); !ok || len(r.sink) == 0 {
			return record{}, false
		}
		r.st = deliveryState{attempts: int(a), nextAt: int64(next)}
		r.lastErr = p
	case recKey:
		if len(p) < 8 {
			return record{}, false
		}
		r.expires, r.key = int64(binary.BigEndian.Uint64(p)), p[8:]
	case recPad:
		if len(p) < 8 || binary.BigEndian.Uint64(p) <= r.lsn {
			return record{}, false
		}
		r.seq = binary.BigEndian.Uint64(p) // the next record's lsn
	default:
		return record{}, false
	}
	return r, true
}

// skipSink checks one sink of a 'P' record and returns what follows it.
func skipSink(p []byte) ([]byte, bool) {
	name, p, ok := readBytes(p)
	if !ok || len(name) == 0 {
		return nil, false
	}
	if _, p, ok = readUvarint(p); !ok {
		return nil, false
	}
	if _, p, ok = readUvarint(p); !ok {
		return nil, false
	}
	_, p, ok = readBytes(p)
	return p, ok
}

// eachSink calls fn for each sink of a 'P' record, checked by parseRecord.
func (r *record) eachSink(fn func(name []byte, st deliveryState, lastErr []byte)) {
	p := r.sinks
	for range r.nsinks {
		name, q, _ := readBytes(p)
		a, q, _ := readUvarint(q)
		next, q, _ := readUvarint(q)
		le, q, _ := readBytes(q)
		fn(name, deliveryState{attempts: int(a), nextAt: int64(next)}, le)
		p = q
	}
}

func readUvarint(p []byte) (uint64, []byte, bool) {
	v, w := binary.Uvarint(p)
	if w <= 0 {
		return 0, nil, false
	}
	return v, p[w:], true
}

// appendEvent appends the event value for ev under key (its seq) to dst.
func appendEvent(dst, key []byte, ev *sinks.Event) []byte {
	start := len(dst)
	b := append(dst, 0, 0, 0, 0, eventVersion)
	b = binary.AppendUvarint(b, uint64(len(ev.ID)))
	b = append(b, ev.ID...)
	b = binary.AppendUvarint(b, uint64(len(ev.Source)))
	b = append(b, ev.Source...)
	b = binary.BigEndian.AppendUint64(b, uint64(ev.ReceivedAt.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(ev.DedupKey)))
	b = append(b, ev.DedupKey...)
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(ev.DedupExpires)))
	b = append(b, ev.Body...)
	binary.BigEndian.PutUint32(b[start:], checksum(key, b[start+4:]))
	return b
}

// unixNano is t in unix nanoseconds, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromUnixNano is unixNano's inverse.
func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// decodeEvent parses an event value after checking it. The Event owns
// copies of everything; with withBody false its Body and DedupKey are
// empty.
func decodeEvent(key, v []byte, withBody bool) (*sinks.Event, error) {
	f, ok := parseEvent(key, v)
	if !ok {
		return nil, errBadRecord
	}
	ev := &sinks.Event{
		ID:         string(f.id),
		Source:     string(f.source),
		ReceivedAt: time.Unix(0, f.receivedAt),
	}
	if withBody {
		ev.Body = append(make([]byte, 0, len(f.body)), f.body...)
		ev.DedupKey = string(f.dedupKey)
		ev.DedupExpires = fromUnixNano(f.dedupExpires)
	}
	return ev, nil
}

// eventFields are the parts of an event value, aliasing it.
type eventFields struct {
	id, source, dedupKey, body []byte
	receivedAt, dedupExpires   int64
}

// parseEvent checks and splits an event value without copying.
func parseEvent(key, v []byte) (eventFields, bool) {
	var f eventFields
	if len(v) < 5 || binary.BigEndian.Uint32(v) != checksum(key, v[4:]) || (v[4] != 1 && v[4] != eventVersion) {
		return f, false
	}
	version := v[4]
	p := v[5:]
	var ok bool
	if f.id, p, ok = readBytes(p); !ok {
		return f, false
	}
	if f.source, p, ok = readBytes(p); !ok || len(p) < 8 {
		return f, false
	}
	f.receivedAt = int64(binary.BigEndian.Uint64(p))
	p = p[8:]
	if version == eventVersion {
		if f.dedupKey, p, ok = readBytes(p); !ok || len(p) < 8 {
			return f, false
		}
		f.dedupExpires = int64(binary.BigEndian.Uint64(p))
		p = p[8:]
	}
	f.body = p
	return f, true
}

func readBytes(p []byte) ([]byte, []byte, bool) {
	n, w := binary.Uvarint(p)
	if w <= 0 || uint64(len(p)-w) < n {
		return nil, nil, false
	}
	return p[w : w+int(n)], p[w+int(n):], true
}

func uvarintLen(n int) int { return uvarintLen64(uint64(max(n, 0))) }

func uvarintLen64(n uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], n)
}

// eventValueLen is the length of appendEvent's output for ev.
func eventValueLen(ev *sinks.Event) int {
	return 4 + 1 + uvarintLen(len(ev.ID)) + len(ev.ID) + uvarintLen(len(ev.Source)) + len(ev.Source) + 8 +
		uvarintLen(len(ev.DedupKey)) + len(ev.DedupKey) + 8 + len(ev.Body)
}
