package disk

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// On disk, the queue is two bbolt buckets keyed by the event's acceptance
// number (8 bytes, big-endian, so that key order is acceptance order):
//
//	events:     seq               → crc | 1 | uvarint len(id) id | uvarint len(source) source | received_at (8) | body
//	deliveries: seq | sink name   → crc | 1 | uvarint attempts | next_attempt unix ns (8, 0 = due now) | last error
//
// bbolt checksums only its meta pages, so every record carries a CRC-32C of
// its key and value: a flipped bit in a body is found at Open instead of
// being delivered.

var (
	bucketEvents     = []byte("events")
	bucketDeliveries = []byte("deliveries")
)

const recordVersion = 1

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
	b := append(dst, 0, 0, 0, 0, recordVersion)
	b = binary.AppendUvarint(b, uint64(len(ev.ID)))
	b = append(b, ev.ID...)
	b = binary.AppendUvarint(b, uint64(len(ev.Source)))
	b = append(b, ev.Source...)
	b = binary.BigEndian.AppendUint64(b, uint64(ev.ReceivedAt.UnixNano()))
	b = append(b, ev.Body...)
	binary.BigEndian.PutUint32(b[start:], checksum(key, b[start+4:]))
	return b
}

// decodeEvent parses an events-bucket value after checking it. The Event
// owns copies of everything; with withBody false its Body is nil, which is
// how the queue keeps large backlogs out of memory.
func decodeEvent(key, v []byte, withBody bool) (*sinks.Event, error) {
	if len(v) < 5 || binary.BigEndian.Uint32(v) != checksum(key, v[4:]) || v[4] != recordVersion {
		return nil, errBadRecord
	}
	p := v[5:]
	id, p, ok := readString(p)
	if !ok {
		return nil, errBadRecord
	}
	source, p, ok := readString(p)
	if !ok || len(p) < 8 {
		return nil, errBadRecord
	}
	ev := &sinks.Event{
		ID:         id,
		Source:     source,
		ReceivedAt: time.Unix(0, int64(binary.BigEndian.Uint64(p))),
	}
	if withBody {
		ev.Body = append(make([]byte, 0, len(p)-8), p[8:]...)
	}
	return ev, nil
}

func readString(p []byte) (string, []byte, bool) {
	n, w := binary.Uvarint(p)
	if w <= 0 || uint64(len(p)-w) < n {
		return "", nil, false
	}
	return string(p[w : w+int(n)]), p[w+int(n):], true
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
func splitDeliveryKey(k []byte) (uint64, string, bool) {
	if len(k) <= 8 {
		return 0, "", false
	}
	return binary.BigEndian.Uint64(k), string(k[8:]), true
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
	return 4 + 1 + uvarintLen(len(ev.ID)) + len(ev.ID) + uvarintLen(len(ev.Source)) + len(ev.Source) + 8 + len(ev.Body)
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
