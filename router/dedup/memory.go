package dedup

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/ristretto/v2"
)

// numShards splits the in-flight set so that concurrent requests for
// different keys rarely wait on the same mutex.
const numShards = 64

// commitAttempts bounds how often Commit re-offers a key that ristretto did not
// show after a Wait (a Set dropped under contention, or a hash collision with
// another key); after that the key is kept in the overflow set instead.
const commitAttempts = 3

// sweepEvery is how often a shard purges its expired overflow entries and stale
// claims; they are otherwise only dropped when the same key is seen again.
const sweepEvery = int64(time.Second)

// Memory is the in-process Store: committed keys live in a ristretto cache,
// and an exact in-flight set in front of it covers what ristretto does not
// promise.
//
// Ristretto's Set is asynchronous (a Get right after it may miss) and may be
// dropped under contention, so a key stays in the in-flight set from Claim
// until Commit has seen ristretto return it: at every moment each committed,
// unexpired key is either in the in-flight set or visible in ristretto, and
// Claim checks both under the key's shard lock. A key ristretto still does not
// show after a few attempts (a 64-bit hash collision, or the cache over
// capacity) stays in the in-flight set as an overflow entry until its TTL.
//
// Ristretto is configured so that it never refuses or evicts a key while it
// holds at most maxKeys: cost 1 per key, internal cost ignored, MaxCost
// slightly above maxKeys. Its TinyLFU admission only runs when the cache is
// full, i.e. beyond the contract.
type Memory struct {
	cache     *ristretto.Cache[string, struct{}]
	shards    [numShards]shard
	claimTTL  int64 // nanoseconds
	maxKeys   int
	overflowN int64

	// mu makes Close wait for operations in progress: ristretto panics if a Set
	// or Wait races with its Close.
	mu     sync.RWMutex
	closed atomic.Bool

	pending     atomic.Int64 // entries in all shards
	overflow    atomic.Int64 // of which overflow entries
	keys        atomic.Int64 // keys ristretto holds
	dropped     atomic.Uint64
	rejected    atomic.Uint64
	evictedLive atomic.Uint64
	forgotten   atomic.Uint64
}

type shard struct {
	mu        sync.Mutex
	m         map[string]entry
	nextSweep int64
	_         [40]byte // keep neighbouring shards' mutexes off one cache line
}

// entry is a key's state in the in-flight set.
type entry struct {
	// until is when the entry stops counting (unix nanoseconds): the claim's
	// deadline, or the committed key's expiry.
	until     int64
	committed bool
	// overflow marks a committed key that ristretto would not hold.
	overflow bool
}

// MemoryStats is a snapshot of a Memory store's counters.
type MemoryStats struct {
	// Keys is the number of keys ristretto holds (expired ones included until
	// its periodic cleanup removes them).
	Keys int
	// InFlight counts keys claimed, or committed and not yet visible in
	// ristretto, overflow entries included.
	InFlight int
	// Overflow counts committed keys kept beside ristretto because it would not
	// hold them.
	Overflow int
	// SetsDropped counts ristretto Sets dropped under contention (each one was
	// retried or kept in overflow, never lost).
	SetsDropped uint64
	// SetsRejected counts Sets ristretto refused: by its admission policy,
	// which only happens once it holds more than max_keys, or because another
	// key with the same 64-bit hash is stored (those keys go to overflow).
	SetsRejected uint64
	// EvictedLive counts unexpired keys evicted to make room: non-zero means
	// max_keys is too small for the traffic within the TTL, and duplicates of
	// those keys will be accepted again.
	EvictedLive uint64
	// Forgotten counts committed keys that neither ristretto nor the bounded
	// overflow set could keep.
	Forgotten uint64
}

// NewMemory returns an in-process store that remembers up to maxKeys keys
// exactly. Close it to stop ristretto's goroutines.
func NewMemory(maxKeys int, opts ...Option) (*Memory, error) {
	if maxKeys <= 0 {
		return nil, fmt.Errorf("dedup max_keys must be positive, got %d", maxKeys)
	}
	o := buildOptions(opts)
	m := &Memory{
		claimTTL: int64(o.claimTimeout),
		maxKeys:  maxKeys,
		// The overflow set is a safety net for rare misses, not a second
		// cache: bound it so that a store far beyond max_keys cannot grow
		// without limit.
		overflowN: int64(max(1024, maxKeys/16)),
	}
	for i := range m.shards {
		m.shards[i].m = make(map[string]entry)
	}
	seed := maphash.MakeSeed()
	cache, err := ristretto.NewCache(&ristretto.Config[string, struct{}]{
		// Ristretto suggests 10 counters per key, but its admission counters
		// only decide anything once the cache is full, i.e. beyond max_keys,
		// and a dedup key is seen about once anyway: one per key saves ~45 MB
		// per million keys, needed to stay within 200 MB.
		NumCounters: int64(maxKeys),
		// Expired keys stay counted until ristretto's cleanup pass (every
		// few seconds) removes them; the slack keeps them from pushing a live
		// key out when exactly max_keys are live.
		MaxCost: int64(maxKeys) + int64(maxKeys)/100 + 64,
		// BufferItems is the size of ristretto's Get buffers; 64 is its
		// documented default.
		BufferItems: 64,
		// Ristretto's own Metrics keep a 100,000-entry map of admission
		// times (~10 MB); the hooks below count what Stats needs instead.
		Metrics: false,
		// Without this ristretto adds its per-item overhead (~56) to our cost
		// of 1, and a cache with MaxCost = max_keys would hold ~2% of them.
		IgnoreInternalCost: true,
		// The 64-bit xxhash is the map key; the seeded maphash is ristretto's
		// conflict check, so two keys must collide on both to be confused.
		// The key string itself is never stored.
		KeyToHash: func(k string) (uint64, uint64) {
			c := maphash.String(seed, k)
			if c == 0 {
				c = 1 // 0 disables ristretto's conflict check
			}
			return o.keyHash(k), c
		},
		OnEvict:  m.onEvict,
		OnReject: func(*ristretto.Item[struct{}]) { m.rejected.Add(1) },
		// ShouldUpdate runs when a Set finds its key already stored (a key
		// committed again after its TTL, before ristretto's cleanup): that
		// Set adds no key, and Commit's count must not either.
		ShouldUpdate: func(_, _ struct{}) bool {
			m.keys.Add(-1)
			return true
		},
	})
	if err != nil {
		return nil, fmt.Errorf("dedup memory store: %w", err)
	}
	m.cache = cache
	return m, nil
}

// onEvict counts evictions made for room, i.e. of keys whose TTL had not
// passed. Ristretto's TTL cleanup passes the item's expiry, its eviction for
// room a zero one (every key here has a TTL), and Close empties the cache
// through OnEvict too, which is no loss either.
func (m *Memory) onEvict(it *ristretto.Item[struct{}]) {
	m.keys.Add(-1)
	if !m.closed.Load() && it.Expiration.IsZero() {
		m.evictedLive.Add(1)
	}
}

func (m *Memory) shard(key string) *shard {
	return &m.shards[xxhash.Sum64String(key)%numShards]
}

// Claim implements Store.
func (m *Memory) Claim(_ context.Context, key string, _ time.Duration) (bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed.Load() {
		return false, ErrClosed
	}
	now := time.Now().UnixNano()
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		if now < e.until {
			return false, nil
		}
		m.remove(s, key, e)
	}
	// Checked under the shard lock: a Commit removes its key from the
	// in-flight set under this lock, and only once ristretto shows it.
	if _, ok := m.cache.Get(key); ok {
		return false, nil
	}
	s.m[key] = entry{until: now + m.claimTTL}
	m.pending.Add(1)
	m.maybeSweep(s, now)
	return true, nil
}

// Commit implements Store. It returns once the key is visible in ristretto or
// kept in the overflow set, so a Claim after it surely sees the key.
func (m *Memory) Commit(_ context.Context, key string, ttl time.Duration) error {
	if ttl <= 0 {
		return errTTL
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed.Load() {
		return ErrClosed
	}
	until := time.Now().Add(ttl).UnixNano()
	s := m.shard(key)
	s.mu.Lock()
	if prev, ok := s.m[key]; !ok {
		m.pending.Add(1)
	} else if prev.overflow {
		m.overflow.Add(-1)
	}
	s.m[key] = entry{until: until, committed: true}
	s.mu.Unlock()

	visible, expired := false, false
	for range commitAttempts {
		left := time.Until(time.Unix(0, until))
		if left <= 0 {
			expired = true
			break
		}
		if !m.cache.SetWithTTL(key, struct{}{}, 1, left) {
			m.dropped.Add(1)
		}
		// Wait applies every Set buffered so far, ours included, so a Get
		// after it reflects whether ristretto kept the key.
		m.cache.Wait()
		if _, visible = m.cache.Get(key); visible {
			m.keys.Add(1)
			break
		}
	}

	now := time.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok || !e.committed || e.until != until {
		return nil // a later Commit of the same key owns the entry now
	}
	switch {
	case visible || expired:
		m.remove(s, key, e)
	case m.overflow.Load() < m.overflowN:
		e.overflow = true
		s.m[key] = e
		m.overflow.Add(1)
	default:
		m.remove(s, key, e)
		m.forgotten.Add(1)
	}
	m.maybeSweep(s, now)
	return nil
}

// Release implements Store. A committed key is not released.
func (m *Memory) Release(_ context.Context, key string) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed.Load() {
		return ErrClosed
	}
	s := m.shard(key)
	s.mu.Lock()
	if e, ok := s.m[key]; ok && !e.committed {
		m.remove(s, key, e)
	}
	s.mu.Unlock()
	return nil
}

// remove deletes key from s; s.mu must be held.
func (m *Memory) remove(s *shard, key string, e entry) {
	delete(s.m, key)
	m.pending.Add(-1)
	if e.overflow {
		m.overflow.Add(-1)
	}
}

// maybeSweep drops s's expired entries at most once per sweepEvery; s.mu must
// be held.
func (m *Memory) maybeSweep(s *shard, now int64) {
	if now < s.nextSweep {
		return
	}
	s.nextSweep = now + sweepEvery
	for k, e := range s.m {
		if now >= e.until {
			m.remove(s, k, e)
		}
	}
}

// Len implements Store: keys held by ristretto plus keys in flight.
func (m *Memory) Len() int {
	return max(0, int(m.keys.Load()+m.pending.Load()))
}

// Stats returns the store's counters.
func (m *Memory) Stats() MemoryStats {
	return MemoryStats{
		Keys:         max(0, int(m.keys.Load())),
		InFlight:     int(m.pending.Load()),
		Overflow:     int(m.overflow.Load()),
		SetsDropped:  m.dropped.Load(),
		SetsRejected: m.rejected.Load(),
		EvictedLive:  m.evictedLive.Load(),
		Forgotten:    m.forgotten.Load(),
	}
}

// Close stops ristretto's goroutines and forgets every key. Other methods
// return ErrClosed afterwards; a second Close does nothing.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed.Swap(true) {
		return nil
	}
	m.cache.Close()
	return nil
}

var _ Store = (*Memory)(nil)
