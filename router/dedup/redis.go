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

// Values a key holds in Redis: a claim is provisional and expires after the
// claim timeout on its own; a committed key lives for its TTL.
const (
	valueClaimed   = "claimed"
	valueCommitted = "committed"
)

// releaseScript deletes a key only while it is still a claim, in one atomic
// step, so that a late Release never forgets a key another request committed.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0
`)

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
func (r *Redis) Claim(ctx context.Context, key string, _ time.Duration) (bool, error) {
	ok, err := r.client.SetNX(ctx, r.prefix+key, valueClaimed, r.claimTimeout).Result()
	if err != nil {
		return false, fmt.Errorf("dedup redis claim: %w", err)
	}
	return ok, nil
}

// Commit implements Store.
func (r *Redis) Commit(ctx context.Context, key string, ttl time.Duration) error {
	if ttl <= 0 {
		return errTTL
	}
	if err := r.client.Set(ctx, r.prefix+key, valueCommitted, ttl).Err(); err != nil {
		return fmt.Errorf("dedup redis commit: %w", err)
	}
	r.committed.Add(1)
	return nil
}

// Release implements Store. A committed key is not released.
func (r *Redis) Release(ctx context.Context, key string) error {
	if err := releaseScript.Run(ctx, r.client, []string{r.prefix + key}, valueClaimed).Err(); err != nil {
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
