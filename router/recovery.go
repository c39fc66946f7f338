package router

import (
	"context"
	"errors"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// recoverer is implemented by durable queues that found owed events at
// start; EachRecovered streams them, so a large backlog is not all in memory.
type recoverer interface {
	EachRecovered(fn func(ev *sinks.Event) error) error
}

// reclaimQueuedKeys commits the dedup keys of the events a durable queue
// still owes after a restart, so that a sender retrying one of them during
// recovery is recognised as a duplicate rather than routed a second time.
// (With the in-memory dedup store the keys of delivered events are gone
// after a restart; a persistent store, redis, keeps them.)
func (r *Router) reclaimQueuedKeys(rt *Runtime) error {
	rec, ok := r.queue.(recoverer)
	if !ok {
		return nil
	}
	ttlBySource := map[string]time.Duration{}
	for _, s := range rt.sources {
		ttlBySource[s.name] = time.Duration(s.ttl)
	}
	var errs []error
	ctx := context.Background()
	err := rec.EachRecovered(func(ev *sinks.Event) error {
		ttl, ok := ttlBySource[ev.Source]
		if !ok {
			return nil
		}
		in := rt.Rules.Acquire(ev.Source, nil)
		if err := in.Parse(ev.Body); err != nil {
			rt.Rules.Release(in)
			return nil
		}
		key, _ := in.DedupKey()
		rt.Rules.Release(in)
		storeKey := ev.Source + "\x00" + key
		// The key's TTL runs from the original acceptance.
		remaining := ttl - time.Since(ev.ReceivedAt)
		if remaining <= 0 {
			return nil
		}
		if _, err := r.dedup.Claim(ctx, storeKey, ev.ID); err != nil {
			errs = append(errs, err)
			return nil
		}
		if err := r.dedup.Commit(ctx, storeKey, ev.ID, remaining); err != nil {
			errs = append(errs, err)
		}
		return nil
	})
	return errors.Join(append(errs, err)...)
}
