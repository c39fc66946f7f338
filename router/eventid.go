package router

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"time"
)

// newEventID returns a 32-character hex id: 6 bytes of milliseconds since the
// epoch, so ids sort by acceptance, then 10 random bytes.
func newEventID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], uint64(now.UnixMilli())<<16)
	binary.BigEndian.PutUint64(b[8:16], rand.Uint64())
	binary.BigEndian.PutUint16(b[6:8], uint16(rand.Uint32()))
	return hex.EncodeToString(b[:])
}
