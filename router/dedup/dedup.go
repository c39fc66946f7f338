// Package dedup decides, exactly, whether an event was already accepted.
//
// A key goes through two phases: Claim reserves it atomically for one request,
// then Commit remembers it for its TTL once the event is safely queued, or
// Release forgets it if queuing failed, so that the sender's retry is not
// mistaken for a duplicate. A Claim of a key another request holds waits for
// that request's outcome: a duplicate once it commits, ErrInFlightFailed if it
// releases. Each request claims with a token of its own, so that a call the
// client library repeats (after a read timeout) finds its own claim rather
// than a "duplicate": no retry can change a verdict.
package dedup

import (
	"context"
	"time"
)

// Store remembers dedup keys. Implementations are safe for concurrent use.
type Store interface {
	// Claim reserves key for the request that token (unique per request)
	// names. It reports false if key is committed and unexpired: the event
	// is a duplicate. While another request holds the key, Claim waits for
	// it, until ctx is done (an error wrapping ctx's): false once it
	// commits, ErrInFlightFailed if it releases.
	Claim(ctx context.Context, key, token string) (bool, error)
	// Commit makes the key token claimed a remembered one, until ttl passes.
	Commit(ctx context.Context, key, token string, ttl time.Duration) error
	// Release forgets the key token claimed, unless it was committed.
	Release(ctx context.Context, key, token string) error
	// Len is the number of keys remembered or claimed (approximate for
	// shared stores); /health shows it as processed_events.
	Len() int
	Close() error
}
