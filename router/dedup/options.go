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

// ErrClosed is returned by a store's methods after Close.
var ErrClosed = errors.New("dedup store closed")

// errTTL rejects a Commit that would remember a key for no time at all, which
// would silently disable deduplication for it.
var errTTL = errors.New("dedup ttl must be positive")

// Option tunes a store built by NewMemory or NewRedis.
type Option func(*options)

type options struct {
	claimTimeout time.Duration
	prefix       string
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
