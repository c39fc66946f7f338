package dedup

import (
	"errors"
	"time"
)

// DefaultClaimTimeout is how long a claim that was neither committed nor
// released keeps its key. It bounds the damage of a request that died between
// Claim and Commit (a crash with Redis, a bug in-process): after it, the
// sender's retry is accepted instead of being taken for a duplicate forever.
const DefaultClaimTimeout = 60 * time.Second

// DefaultRedisPrefix is prepended to every key the Redis store writes.
const DefaultRedisPrefix = "hookrouter:dedup:"

// DefaultTimeout is dedup.timeout's default: the longest a request waits for
// the store, a copy in flight included, before it is answered 503.
const DefaultTimeout = 2 * time.Second

// ErrClosed is returned by a store's methods after Close.
var ErrClosed = errors.New("dedup store closed")

// ErrInFlightFailed is returned by Claim when the key was claimed by another
// request that then released it (its event could not be queued): the copy is
// neither new (the other request may still be retried) nor a duplicate.
var ErrInFlightFailed = errors.New("dedup: the copy of this event in flight was not accepted")

// ErrCopyInFlight is wrapped, with the context's error, by a Claim whose
// deadline passed while another request held the key: its own claim was
// never made, so there is nothing to release.
var ErrCopyInFlight = errors.New("dedup: a copy of this event is still in flight")

// errTTL rejects a Commit that would remember a key for no time at all, which
// would silently disable deduplication for it.
var errTTL = errors.New("dedup ttl must be positive")

// Option tunes a store built by NewMemory or NewRedis.
type Option func(*options)

type options struct {
	claimTimeout time.Duration
	prefix       string
	// clock replaces the memory store's clock (unix nanoseconds).
	clock func() int64
	// keyHash replaces the memory store's 64-bit key hash (a seeded maphash
	// when nil); tests use it to force collisions.
	keyHash func(string) uint64
}

func buildOptions(opts []Option) options {
	o := options{claimTimeout: DefaultClaimTimeout, prefix: DefaultRedisPrefix}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithClaimTimeout sets how long an uncommitted, unreleased claim holds its key
// (default DefaultClaimTimeout). Values ≤ 0 keep the default.
func WithClaimTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.claimTimeout = d
		}
	}
}

// WithPrefix sets the prefix of the Redis store's keys (default
// DefaultRedisPrefix), so that several deployments can share one Redis. The
// memory store ignores it.
func WithPrefix(p string) Option {
	return func(o *options) { o.prefix = p }
}

// WithClock gives the memory store a clock other than time.Now, in unix
// nanoseconds, for tests that move time on instead of sleeping. It decides
// the expiry of claims and of the committed keys the store keeps beside
// ristretto; ristretto itself expires the keys it holds on the wall clock.
// The Redis store ignores it.
func WithClock(now func() int64) Option {
	return func(o *options) { o.clock = now }
}
