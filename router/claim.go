package router

import (
	"context"
	"errors"
	"time"

	"github.com/hookrouter/hookrouter/router/dedup"
)

// dedupStoreKey is the dedup store's key of an event of source whose dedup
// key is key: keys are per source. A disk queue keeps it with the event, so
// that the key outlives a restart: changing its form forgets the kept keys.
func dedupStoreKey(source, key string) string { return source + "\x00" + key }

// claim claims key for the request whose token is given, bounded by
// dedup.timeout. A claim that failed or timed out may still be applied by
// the store later (Redis runs a command it had read before it stalled), so
// it is released in the background, answering at once: the sender's retry
// must find the key free, not claimed by a request that already answered.
func (r *Router) claim(key, token string) (bool, error) {
	c, cancel := context.WithTimeout(context.Background(), r.dedupTimeout)
	claimed, err := r.dedup.Claim(c, key, token)
	cancel()
	if err != nil && !errors.Is(err, dedup.ErrInFlightFailed) && !errors.Is(err, dedup.ErrCopyInFlight) {
		r.releaseLater(key, token)
	}
	return claimed, err
}

// releaseGiveUp bounds releaseLater: the store drops an unreleased claim
// after its claim timeout anyway.
const releaseGiveUp = dedup.DefaultClaimTimeout

// releaseLater releases token's claim on key in the background, trying again
// until the store answers, the claim has expired anyway, or shutdown. A
// release sent after the store answers again is applied after the stalled
// claim it undoes.
func (r *Router) releaseLater(key, token string) {
	r.bg.Go(func() {
		giveUp := time.Now().Add(releaseGiveUp)
		delay := 50 * time.Millisecond
		for {
			c, cancel := context.WithTimeout(context.Background(), r.dedupTimeout)
			err := r.dedup.Release(c, key, token)
			cancel()
			if err == nil || errors.Is(err, dedup.ErrClosed) || time.Now().After(giveUp) {
				return
			}
			select {
			case <-r.quit:
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, time.Second)
		}
	})
}

func (r *Router) releaseKey(key, token string) {
	// Release with a fresh context: the request's may be done, and a key left
	// claimed would make the sender's retry wait for a request that is gone.
	c, cancel := context.WithTimeout(context.Background(), r.dedupTimeout)
	defer cancel()
	if err := r.dedup.Release(c, key, token); err != nil {
		r.metrics.DedupStoreErrors.Inc()
		r.storeLog.warn(r.log, "dedup", "dedup release failed", "error", err)
	}
}
