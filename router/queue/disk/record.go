package disk

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// On disk, the queue is two bbolt buckets keyed by the event's acceptance
// number (8 bytes, big-endian, so that key order is acceptance order), and
// the committed dedup keys of delivered (or unrouted) events, keyed by expiry:
//
//	events:     seq               → crc | 2 | uvarint len(id) id | uvarint len(source) source | received_at (8) |
//	                                uvarint len(dedup key) dedup key | dedup expires unix ns (8) | body
//	deliveries: seq | sink name   → crc | 1 | uvarint attempts | next_attempt unix ns (8, 0 = due now) | last error
//	keys:       expires | n (8+8) → crc | 1 | dedup key
//
// Version 1 event records (no dedup key), written before keys were kept,
// are still read.
//
// bbolt checksums only its meta pages, so every record carries a CRC-32C of
// its key and value: a flipped bit in a body is found at Open instead of
// being delivered.

var (
	bucketEvents     = []byte("events")
	bucketDeliveries = []byte("deliveries")
	bucketKeys       = []byte("keys")
)

const (
	recordVersion = 1 // deliveries and keys
	eventVersion  = 2 // events; 1 had no dedup key
)

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

func deliveryKey(seq uint64, sink string) []byte {
	k := make([]byte, 8, 8+len(sink))
	binary.BigEndian.PutUint64(k, seq)
	return append(k, sink...)
}

func checksum(key, rest []byte) uint32 {
	c := crc32.Update(0, castagnoli, key)
	return crc32.Update(c, castagnoli, rest)
}

// appendEvent appends the events-bucket value for ev under key to dst.
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

// decodeEvent parses an events-bucket value after checking it. The Event
// owns copies of everything; with withBody false its Body and DedupKey are
// empty, which is how the queue keeps large backlogs out of memory.
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

// eventFields are the parts of an events-bucket value, aliasing it.
type eventFields struct {
	id, source, dedupKey, body []byte
	receivedAt, dedupExpires   int64
}

// parseEvent checks and splits an events-bucket value without copying.
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

// keyKey is a keys-bucket key: expiry first, so that the oldest keys are
// first (pruned first, handed back first), then a number that makes it unique.
func keyKey(expires int64, n uint64) []byte { return putKeyKey(make([]byte, 16), expires, n) }

// putKeyKey writes a keys-bucket key into the first 16 bytes of b.
func putKeyKey(b []byte, expires int64, n uint64) []byte {
	binary.BigEndian.PutUint64(b, uint64(expires))
	binary.BigEndian.PutUint64(b[8:], n)
	return b[:16]
}

func encodeKey(k []byte, dedupKey string) []byte {
	return appendKeyValue(make([]byte, 0, 5+len(dedupKey)), k, []byte(dedupKey))
}

// appendKeyValue appends the keys-bucket value of dedupKey under k to b.
func appendKeyValue(b, k, dedupKey []byte) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, recordVersion)
	b = append(b, dedupKey...)
	binary.BigEndian.PutUint32(b[start:], checksum(k, b[start+4:]))
	return b
}

// decodeKey checks a keys-bucket record and returns its dedup key (aliasing
// v) and expiry.
func decodeKey(k, v []byte) ([]byte, int64, bool) {
	if len(k) != 16 || len(v) < 5 || binary.BigEndian.Uint32(v) != checksum(k, v[4:]) || v[4] != recordVersion {
		return nil, 0, false
	}
	return v[5:], int64(binary.BigEndian.Uint64(k)), true
}

// deliveryState is what a delivery record holds besides its key.
type deliveryState struct {
	attempts  int
	nextAt    int64 // unix ns; 0 when due at once
	lastError string
}

func encodeDelivery(key []byte, s deliveryState) []byte {
	le := s.lastError
	if len(le) > maxLastError {
		le = le[:maxLastError]
	}
	b := make([]byte, 4, 4+1+binary.MaxVarintLen64+8+len(le))
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, uint64(max(s.attempts, 0)))
	b = binary.BigEndian.AppendUint64(b, uint64(s.nextAt))
	b = append(b, le...)
	binary.BigEndian.PutUint32(b, checksum(key, b[4:]))
	return b
}

func decodeDelivery(key, v []byte) (deliveryState, error) {
	if len(v) < 5 || binary.BigEndian.Uint32(v) != checksum(key, v[4:]) || v[4] != recordVersion {
		return deliveryState{}, errBadRecord
	}
	p := v[5:]
	attempts, w := binary.Uvarint(p)
	if w <= 0 || len(p)-w < 8 || attempts > 1<<31 {
		return deliveryState{}, errBadRecord
	}
	p = p[w:]
	return deliveryState{
		attempts:  int(attempts),
		nextAt:    int64(binary.BigEndian.Uint64(p)),
		lastError: string(p[8:]),
	}, nil
}

// splitDeliveryKey returns the acceptance number and sink of a deliveries key.
func splitDeliveryKey(k []byte) (uint64, []byte, bool) {
	if len(k) <= 8 {
		return 0, nil, false
	}
	return binary.BigEndian.Uint64(k), k[8:], true
}

// Sizes counted against maxBytes: the records and keys as written, plus
// bbolt's per-element header. They are computed from lengths alone, before
// anything is written (so ErrFull leaves no trace), and the same way when
// Open recounts the backlog. A delivery's last error, kept for retries, is
// not counted.
const (
	elemOverhead     = 16 // bbolt leaf element header
	deliveryValueMax = 4 + 1 + binary.MaxVarintLen64 + 8
)

// eventValueLen is the length of appendEvent's output for ev.
func eventValueLen(ev *sinks.Event) int {
	return 4 + 1 + uvarintLen(len(ev.ID)) + len(ev.ID) + uvarintLen(len(ev.Source)) + len(ev.Source) + 8 +
		uvarintLen(len(ev.DedupKey)) + len(ev.DedupKey) + 8 + len(ev.Body)
}

func uvarintLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n))
}

func eventBytes(valueLen int) int64 { return int64(8 + elemOverhead + valueLen) }

func deliveryBytes(sink string) int64 {
	return int64(8 + len(sink) + elemOverhead + deliveryValueMax)
}

// storedSize is what an event owed to the sinks in to counts against maxBytes.
func storedSize(ev *sinks.Event, to []string) int64 {
	n := eventBytes(eventValueLen(ev))
	for _, s := range to {
		n += deliveryBytes(s)
	}
	return n
}
