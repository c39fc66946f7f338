// Package dedup decides, exactly, whether an event was already accepted.
//
// A key goes through two phases: Claim reserves it atomically (a concurrent
// Claim of the same key sees a duplicate), then Commit remembers it for its
// TTL once the event is safely queued, or Release forgets it if queuing
// failed, so that the sender's retry is not mistaken for a duplicate.
package dedup

import (
	"context"
	"time"
)

// Store remembers dedup keys. Implementations are safe for concurrent use.
type Store interface {
	// Claim reserves key. It reports false if key is committed and unexpired,
	// or claimed by a request still in flight: the event is a duplicate.
	Claim(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// Commit makes a claimed key a remembered one, until ttl passes.
	Commit(ctx context.Context, key string, ttl time.Duration) error
	// Release forgets a claimed key that was not committed.
	Release(ctx context.Context, key string) error
	// Len is the number of keys remembered or claimed (approximate for
	// shared stores); /health shows it as processed_events.
	Len() int
	Close() error
}
