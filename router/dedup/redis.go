package dedup

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Values a key holds in Redis: a claim, "claim:" and the token of the
// request holding it, is provisional and expires after the claim timeout on
// its own; a committed key lives for its TTL.
const (
	claimPrefix    = "claim:"
	valueCommitted = "committed"
)

// claimScript claims a key in one atomic step, idempotently: it returns 1 if
// the key is free (and claims it) or already holds this request's claim (a
// retried call finding its own first attempt), 0 if it is committed, and
// otherwise the value of the other request's claim.
var claimScript = redis.NewScript(`
local v = redis.call("GET", KEYS[1])
if not v then
	redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
	return 1
end
if v == ARGV[1] then
	return 1
end
if v == "committed" then
	return 0
end
return v
`)

// releaseScript deletes a key only while it holds this request's claim, in
// one atomic step, so that a late Release never forgets a key another
// request claimed or committed.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0
`)

// Polling bounds of a Claim waiting for another request's claim to be
// committed or released: a copy in flight is rare, and its owner is usually
// done within milliseconds.
const (
	pollFirst = 2 * time.Millisecond
	pollMax   = 50 * time.Millisecond
)

// Redis is the shared Store for several instances behind a load balancer.
// Claim is SET NX with the claim timeout, so a crash between Claim and Commit
// does not pin a key forever; Commit overwrites the claim with the TTL.
type Redis struct {
	client       *redis.Client
	prefix       string
	claimTimeout time.Duration
	committed    atomic.Int64
}

// NewRedis connects lazily to the Redis at rawURL (redis://[user:pass@]host:port/db
// or rediss://…). Use Ping to check it is reachable.
func NewRedis(rawURL string, opts ...Option) (*Redis, error) {
	ro, err := redis.ParseURL(rawURL)
	if err != nil {
		// url.Error quotes the whole URL, password included.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return nil, fmt.Errorf("dedup redis_url: %w", err)
	}
	o := buildOptions(opts)
	// Every call of the ingress path carries a deadline (dedup.timeout):
	// without this go-redis would keep its own 3s read timeout and retries.
	ro.ContextTimeoutEnabled = true
	return &Redis{
		client:       redis.NewClient(ro),
		prefix:       o.prefix,
		claimTimeout: o.claimTimeout,
	}, nil
}

// Ping reports whether Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("dedup redis ping: %w", err)
	}
	return nil
}

// Claim implements Store.
func (r *Redis) Claim(ctx context.Context, key, token string) (bool, error) {
	full, mine := r.prefix+key, claimPrefix+token
	res, err := claimScript.Run(ctx, r.client, []string{full}, mine, r.claimTimeout.Milliseconds()).Result()
	if err != nil {
		return false, fmt.Errorf("dedup redis claim: %w", err)
	}
	switch v := res.(type) {
	case int64:
		return v == 1, nil
	case string:
		return false, r.await(ctx, full, v)
	default:
		return false, fmt.Errorf("dedup redis claim: unexpected answer %T", res)
	}
}

// await waits until the claim other on full is committed (nil: a
// duplicate) or gone, released or expired (ErrInFlightFailed), or ctx is done.
func (r *Redis) await(ctx context.Context, full, other string) error {
	delay := pollFirst
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrCopyInFlight, ctx.Err())
		case <-t.C:
		}
		v, err := r.client.Get(ctx, full).Result()
		switch {
		case errors.Is(err, redis.Nil):
			return ErrInFlightFailed
		case err != nil:
			return fmt.Errorf("dedup redis claim: %w", err)
		case v == valueCommitted:
			return nil
		case v != other:
			// Released, then claimed by a third copy.
			return ErrInFlightFailed
		}
		delay = min(2*delay, pollMax)
		t.Reset(delay)
	}
}

// Commit implements Store. It is idempotent, so a retried call is harmless.
func (r *Redis) Commit(ctx context.Context, key, _ string, ttl time.Duration) error {
	if ttl <= 0 {
		return errTTL
	}
	if err := r.client.Set(ctx, r.prefix+key, valueCommitted, ttl).Err(); err != nil {
		return fmt.Errorf("dedup redis commit: %w", err)
	}
	r.committed.Add(1)
	return nil
}

// Release implements Store. Only the token's own claim is released.
func (r *Redis) Release(ctx context.Context, key, token string) error {
	if err := releaseScript.Run(ctx, r.client, []string{r.prefix + key}, claimPrefix+token).Err(); err != nil {
		return fmt.Errorf("dedup redis release: %w", err)
	}
	return nil
}

// Len implements Store. Counting the shared keys would cost a scan of Redis,
// so it is the number of keys this instance committed since it started: the
// events it processed.
func (r *Redis) Len() int { return int(r.committed.Load()) }

// Close closes the connection pool.
func (r *Redis) Close() error {
	if err := r.client.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("dedup redis close: %w", err)
	}
	return nil
}

var _ Store = (*Redis)(nil)
