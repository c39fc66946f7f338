package dedup

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// numShards splits the in-flight set so that concurrent requests for
// different keys rarely wait on the same mutex.
const numShards = 64

// commitAttempts bounds how often the verifier offers a committed key to
// ristretto when a round ends without ristretto showing it (a hash collision
// with another key, or the cache over capacity); after that the key is kept in
// the overflow set instead.
const commitAttempts = 3

// verifyEvery is how long the verifier lets commits gather before a round:
// one ristretto Wait then covers all of them. A key stays in the in-flight set
// for about this long after its Commit, so it also bounds that set's size
// (rate × verifyEvery).
const verifyEvery = 10 * time.Millisecond

// queueLimit is how many commits a shard queues for the verifier before a
// Commit waits for the verifier to take them. The verifier only falls that far
// behind when producers saturate the CPU (a tight benchmark loop, not real
// traffic), and the wait bounds the in-flight set then.
const queueLimit = 1024

// setChunk bounds the Sets the verifier buffers in ristretto between two
// Waits, well below ristretto's 32k Set buffer, so that none is dropped.
const setChunk = 8192

// sweepEvery is how often a shard purges its expired overflow entries and stale
// claims; they are otherwise only dropped when the same key is seen again.
const sweepEvery = int64(time.Second)

// Memory is the in-process Store: committed keys live in a ristretto cache,
// and an exact in-flight set in front of it covers what ristretto does not
// promise.
//
// Ristretto's Set is asynchronous (a lookup right after it may miss) and may
// be refused or dropped, so a key stays in the in-flight set from Claim until
// a background verifier knows ristretto holds it: at every moment each
// committed, unexpired key is in the in-flight set or held by ristretto, and
// Claim checks both, in that order, under the key's shard lock.
//
// Commit only marks the key committed in its shard and queues it there, so a
// request never waits for ristretto. The verifier wakes when a key is queued,
// lets commits gather for verifyEvery, then runs a round: it takes every
// shard's queue, Sets those keys, calls ristretto's Wait once for all of them,
// and drops from the in-flight set the keys it now knows ristretto holds. A
// key ristretto does not hold (its Set refused: a 64-bit hash collision, or
// the cache over capacity) is Set again next round, and after commitAttempts
// rounds stays in the in-flight set as an overflow entry until its TTL.
//
// Ristretto is configured so that it never refuses or evicts a key while it
// holds at most maxKeys: cost 1 per key, internal cost ignored, MaxCost
// slightly above maxKeys. Its TinyLFU admission only runs when the cache is
// full, i.e. beyond the contract.
type Memory struct {
	cache     *ristretto.Cache[[]byte, struct{}]
	shards    [numShards]shard
	seed      maphash.Seed
	keyHash   func(string) uint64
	claimTTL  int64 // nanoseconds
	overflowN int64
	// now is the store's clock (unix nanoseconds): time.Now unless a test
	// gives it another with WithClock. Ristretto keeps its own wall-clock
	// TTLs; the store's clock decides for the in-flight set.
	now func() int64

	// closed is read under a shard lock by every operation before it touches
	// ristretto, and Close sets it, then takes each shard lock once, before it
	// closes ristretto: ristretto panics if a lookup races with its Close.
	// Only the verifier Sets, and Close stops it first.
	closed    atomic.Bool
	closeOnce sync.Once

	// queued is set by the Commit that first queues a key after the verifier
	// took its last batch, which then wakes the verifier through kick.
	queued atomic.Bool
	kick   chan struct{}
	// idle is set while the verifier sleeps with nothing to do.
	idle atomic.Bool
	// taken is closed each time the verifier takes the shards' queues; a
	// Commit that found its shard's queue full waits for it.
	taken atomic.Pointer[chan struct{}]
	stop  chan struct{}
	done  chan struct{}

	overflow    atomic.Int64 // overflow entries in all shards
	dropped     atomic.Uint64
	rejected    atomic.Uint64
	evicted     atomic.Uint64 // every key ristretto removed, for any reason
	evictedLive atomic.Uint64
	forgotten   atomic.Uint64
}

// keyID is a key as the in-flight set and ristretto know it: the 64-bit hash
// ristretto uses as its map key and the independent 64-bit hash it uses as its
// conflict check. The key string itself is never kept, and it is hashed once
// per call: ristretto's key is the keyID spelt in 16 bytes (see spell), which
// its KeyToHash only decodes.
type keyID struct{ h, c uint64 }

// idBytes holds a keyID spelt as ristretto's key.
type idBytes [16]byte

// spell writes id into buf and returns it as ristretto's key. Ristretto hashes
// a key and never keeps it, so a buffer owned by the caller serves every call
// without an allocation (a slice of a local array would escape to the heap
// through ristretto's KeyToHash func value).
func (id keyID) spell(buf *idBytes) []byte {
	binary.LittleEndian.PutUint64(buf[:8], id.h)
	binary.LittleEndian.PutUint64(buf[8:], id.c)
	return buf[:]
}

// unspell is ristretto's KeyToHash: it decodes a key written by spell.
func unspell(k []byte) (uint64, uint64) {
	return binary.LittleEndian.Uint64(k[:8]), binary.LittleEndian.Uint64(k[8:16])
}

type shard struct {
	mu sync.Mutex
	m  map[keyID]entry
	// queue holds the keys committed since the verifier last took it, in
	// order: the verifier reads only these, never the whole map.
	queue []commitRec
	// unverified counts the map's committed entries not yet seen in
	// ristretto (overflow ones excluded).
	unverified int
	// highWater is the map's largest size since it was last rebuilt: a Go map
	// keeps the room of its peak, so a sweep rebuilds one that has shrunk a
	// lot since a burst.
	highWater int
	nextSweep int64
	// waiters holds, for a claimed key that another copy is waiting on, what
	// the claim's owner does with it (nil until a copy first waits).
	waiters map[keyID]*waiter
	// key is where Claim spells a keyID for ristretto, under mu.
	key idBytes
	// The padding keeps two shards' hot fields off one cache line whatever
	// the array's alignment.
	_ [64]byte
}

// entry is a key's state in the in-flight set.
type entry struct {
	// until is when the entry stops counting (unix nanoseconds): the claim's
	// deadline, or the committed key's expiry.
	until int64
	state entryState
}

type entryState uint8

const (
	// claimed: reserved by a request in flight.
	claimed entryState = iota
	// committed: remembered, waiting for the verifier to see it in ristretto.
	committed
	// overflowed: committed, and ristretto would not hold it.
	overflowed
)

// waiter is the outcome of a claim that copies of its key wait for: done is
// closed when the claim's owner commits (committed) or releases it.
type waiter struct {
	done      chan struct{}
	committed bool
}

// commitRec is one Commit waiting for the verifier.
type commitRec struct {
	id    keyID
	until int64
	tries uint8
}

// MemoryStats is a snapshot of a Memory store's counters.
type MemoryStats struct {
	// Keys is the number of keys ristretto holds (expired ones included until
	// its periodic cleanup removes them).
	Keys int
	// InFlight counts keys claimed, or committed and not yet seen in
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
// exactly. Close it to stop its goroutine and ristretto's.
func NewMemory(maxKeys int, opts ...Option) (*Memory, error) {
	if maxKeys <= 0 {
		return nil, fmt.Errorf("dedup max_keys must be positive, got %d", maxKeys)
	}
	o := buildOptions(opts)
	if o.clock == nil {
		o.clock = func() int64 { return time.Now().UnixNano() }
	}
	if o.keyHash == nil {
		// maphash (AES-based where the CPU has it) hashes a ~40-byte key
		// in about a third of xxhash's time; its seed, unlike m.seed, makes
		// it independent of the conflict hash.
		seed := maphash.MakeSeed()
		o.keyHash = func(k string) uint64 { return maphash.String(seed, k) }
	}
	m := &Memory{
		now:      o.clock,
		seed:     maphash.MakeSeed(),
		keyHash:  o.keyHash,
		claimTTL: int64(o.claimTimeout),
		// The overflow set is a safety net for rare misses, not a second
		// cache: bound it so that a store far beyond max_keys cannot grow
		// without limit.
		overflowN: int64(max(1024, maxKeys/16)),
		kick:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	for i := range m.shards {
		m.shards[i].m = make(map[keyID]entry)
	}
	taken := make(chan struct{})
	m.taken.Store(&taken)
	cache, err := ristretto.NewCache(&ristretto.Config[[]byte, struct{}]{
		// Ristretto's admission counters count Gets, and this store never
		// calls Get (see held): they stay at zero whatever their size, so a
		// full cache admits each new key in place of a sampled old one. A
		// token size saves the ~4 MB per million keys they would take.
		NumCounters: 64,
		// Expired keys stay counted until ristretto's cleanup pass (every
		// few seconds) removes them; the slack keeps them from pushing a live
		// key out when exactly max_keys are live.
		MaxCost: int64(maxKeys) + int64(maxKeys)/100 + 64,
		// BufferItems is the size of ristretto's Get buffers (unused here);
		// 64 is its documented default.
		BufferItems: 64,
		// Ristretto's own Metrics keep a 100,000-entry map of admission
		// times (~10 MB); the hooks below count what Stats needs instead.
		Metrics: false,
		// Without this ristretto adds its per-item overhead (~56) to our cost
		// of 1, and a cache with MaxCost = max_keys would hold ~2% of them.
		IgnoreInternalCost: true,
		// The same two hashes as the in-flight set's keyID, already
		// computed: two keys must collide on both to be confused.
		KeyToHash: unspell,
		OnEvict:   m.onEvict,
		OnReject:  func(*ristretto.Item[struct{}]) { m.rejected.Add(1) },
	})
	if err != nil {
		return nil, fmt.Errorf("dedup memory store: %w", err)
	}
	m.cache = cache
	go m.verify()
	return m, nil
}

// id hashes key into its keyID. The conflict hash is never 0, which would
// disable ristretto's conflict check.
func (m *Memory) id(key string) keyID {
	c := maphash.String(m.seed, key)
	if c == 0 {
		c = 1
	}
	return keyID{h: m.keyHash(key), c: c}
}

// held reports whether ristretto holds id, unexpired; buf is the caller's
// buffer for ristretto's key (see spell). It uses GetTTL rather
// than Get: Get also feeds ristretto's admission counters (a sketch update per
// call on ristretto's policy goroutine), which only matter once the cache is
// full and say nothing about keys that are each seen about once.
func (m *Memory) held(id keyID, buf *idBytes) bool {
	_, ok := m.cache.GetTTL(id.spell(buf))
	return ok
}

func (m *Memory) shard(id keyID) *shard {
	return &m.shards[id.h%numShards]
}

// onEvict counts evictions made for room, i.e. of keys whose TTL had not
// passed. Ristretto's TTL cleanup passes the item's expiry, its eviction for
// room a zero one (every key here has a TTL), and Close empties the cache
// through OnEvict too, which is no loss either.
func (m *Memory) onEvict(it *ristretto.Item[struct{}]) {
	m.evicted.Add(1)
	if !m.closed.Load() && it.Expiration.IsZero() {
		m.evictedLive.Add(1)
	}
}

// Claim implements Store. The memory store makes no call that a client
// could retry, so the token only has to be unique; a copy of a key in flight
// waits on the claim's waiter, or until the claim expires.
func (m *Memory) Claim(ctx context.Context, key, _ string) (bool, error) {
	id := m.id(key)
	s := m.shard(id)
	for {
		now := m.now()
		s.mu.Lock()
		if m.closed.Load() {
			s.mu.Unlock()
			return false, ErrClosed
		}
		e, ok := s.m[id]
		if ok && now >= e.until {
			m.remove(s, id, e)
			ok = false
		}
		if ok && e.state != claimed {
			s.mu.Unlock()
			return false, nil
		}
		if !ok {
			// Checked after the in-flight set and under the shard lock: the
			// verifier removes a committed key from the set under this
			// lock, and only once ristretto holds it.
			if m.held(id, &s.key) {
				s.mu.Unlock()
				return false, nil
			}
			s.m[id] = entry{until: now + m.claimTTL}
			s.highWater = max(s.highWater, len(s.m))
			m.maybeSweep(s, now)
			s.mu.Unlock()
			return true, nil
		}
		// Another request holds the claim: wait for its outcome.
		w := s.waiters[id]
		if w == nil {
			if s.waiters == nil {
				s.waiters = map[keyID]*waiter{}
			}
			w = &waiter{done: make(chan struct{})}
			s.waiters[id] = w
		}
		left := time.Duration(e.until - now)
		s.mu.Unlock()
		committed, err := m.wait(ctx, w, left)
		if err != nil {
			return false, err
		}
		if w.isDone() {
			if committed {
				return false, nil
			}
			return false, ErrInFlightFailed
		}
		// The claim expired unanswered: its owner is gone; look again.
	}
}

// wait blocks until w is done, ctx is done, or left has passed on the
// wall clock (a claim's remaining life). It reports w's outcome.
func (m *Memory) wait(ctx context.Context, w *waiter, left time.Duration) (committed bool, err error) {
	t := time.NewTimer(max(left, time.Millisecond))
	defer t.Stop()
	select {
	case <-w.done:
		return w.committed, nil
	case <-ctx.Done():
		return false, fmt.Errorf("%w: %w", ErrCopyInFlight, ctx.Err())
	case <-t.C:
		return false, nil
	case <-m.stop:
		return false, ErrClosed
	}
}

func (w *waiter) isDone() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// settle tells the copies waiting on id's claim what became of it; s.mu
// must be held.
func (s *shard) settle(id keyID, committed bool) {
	if w := s.waiters[id]; w != nil {
		w.committed = committed
		close(w.done)
		delete(s.waiters, id)
	}
}

// Commit implements Store. The key is a duplicate for every Claim that starts
// after Commit returns: it stays in the in-flight set until the verifier has
// seen ristretto hold it.
func (m *Memory) Commit(ctx context.Context, key, _ string, ttl time.Duration) error {
	if ttl <= 0 {
		return errTTL
	}
	now := m.now()
	until := now + int64(ttl)
	if until < now {
		until = math.MaxInt64
	}
	return m.commit(ctx, m.id(key), now, until)
}

// Seed remembers key until expires, as a committed key, without a claim: the
// router seeds the store at start with the keys a durable queue kept across
// the restart. An expired key is ignored.
func (m *Memory) Seed(key string, expires time.Time) {
	now := m.now()
	if until := expires.UnixNano(); until > now {
		_ = m.commit(context.Background(), m.id(key), now, until)
	}
}

// commit marks id committed until the given time and queues it for the
// verifier.
func (m *Memory) commit(ctx context.Context, id keyID, now, until int64) error {
	s := m.shard(id)
	s.mu.Lock()
	if m.closed.Load() {
		s.mu.Unlock()
		return ErrClosed
	}
	prev, ok := s.m[id]
	switch {
	case !ok || prev.state == claimed:
		s.unverified++
	case prev.state == overflowed:
		m.overflow.Add(-1)
		s.unverified++
	}
	s.m[id] = entry{until: until, state: committed}
	s.settle(id, true)
	s.highWater = max(s.highWater, len(s.m))
	s.queue = append(s.queue, commitRec{id: id, until: until})
	var taken chan struct{}
	if len(s.queue) >= queueLimit {
		taken = *m.taken.Load() // loaded before the verifier can take s.queue
	}
	m.maybeSweep(s, now)
	s.mu.Unlock()

	// The verifier clears queued before it takes the shards' queues, and this
	// key was queued before the load below: either the verifier's next batch
	// takes it, or this load sees false and wakes the verifier.
	if !m.queued.Load() && m.queued.CompareAndSwap(false, true) {
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
	if taken != nil {
		// The key is committed already; this only holds the caller back
		// while the verifier is far behind, and never past its deadline.
		select {
		case <-taken:
		case <-m.stop:
		case <-ctx.Done():
		}
	}
	return nil
}

// Release implements Store. A committed key is not released.
func (m *Memory) Release(_ context.Context, key, _ string) error {
	id := m.id(key)
	s := m.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.closed.Load() {
		return ErrClosed
	}
	if e, ok := s.m[id]; ok && e.state == claimed {
		m.remove(s, id, e)
		s.settle(id, false)
	}
	return nil
}

// remove deletes id from s; s.mu must be held.
func (m *Memory) remove(s *shard, id keyID, e entry) {
	delete(s.m, id)
	switch e.state {
	case committed:
		s.unverified--
	case overflowed:
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
	for id, e := range s.m {
		if now >= e.until {
			m.remove(s, id, e)
		}
	}
	// A waiter whose claim is gone was left by copies that gave up.
	for id := range s.waiters {
		if e, ok := s.m[id]; !ok || e.state != claimed {
			delete(s.waiters, id)
		}
	}
	s.shrink()
}

// shrink copies s.m into a map of the right size once it holds far fewer
// entries than at its peak: a Go map never gives back the room of its peak.
// s.mu must be held.
func (s *shard) shrink() {
	if s.highWater <= 256 || len(s.m) >= s.highWater/8 {
		return
	}
	fresh := make(map[keyID]entry, len(s.m))
	for id, e := range s.m {
		fresh[id] = e
	}
	s.m = fresh
	s.highWater = len(s.m)
}

// verify is the verifier goroutine: it sleeps until a Commit queues a key,
// lets commits gather for verifyEvery, and runs a round, until Close.
func (m *Memory) verify() {
	defer close(m.done)
	var v verifier
	timer := time.NewTimer(verifyEvery)
	defer timer.Stop()
	for {
		if len(v.retry) == 0 {
			select {
			case <-m.kick:
			default:
				// Nothing to do: give back the room a burst took before
				// sleeping.
				m.tidy(&v)
				m.idle.Store(true)
				select {
				case <-m.kick:
					m.idle.Store(false)
				case <-m.stop:
					return
				}
			}
		}
		// Let commits gather, unless the last round was a big one: then
		// producers are ahead, and some may be waiting for this round.
		if !v.behind {
			timer.Reset(verifyEvery)
			select {
			case <-timer.C:
			case <-m.stop:
				return
			}
		}
		m.round(&v)
	}
}

// verifier is the verifier goroutine's state, reused across rounds.
type verifier struct {
	batch   []commitRec
	visible []bool
	// retry holds the keys of the last round that ristretto did not hold,
	// offered again in the next round before the new ones, so that a key's
	// later Commit is always Set after its earlier ones.
	retry []commitRec
	// behind is set after a round that took a full chunk of keys.
	behind bool
	// key is where the verifier spells a keyID for ristretto.
	key idBytes
}

// round Sets every key committed since the last round, waits once for
// ristretto to apply them, and drops from the in-flight set those ristretto
// holds.
func (m *Memory) round(v *verifier) {
	// Cleared before the queues are taken; see Commit.
	m.queued.Store(false)
	v.batch = append(v.batch[:0], v.retry...)
	v.retry = v.retry[:0]
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		v.batch = append(v.batch, s.queue...)
		s.queue = s.queue[:0]
		s.mu.Unlock()
	}
	next := make(chan struct{})
	close(*m.taken.Swap(&next))
	v.behind = len(v.batch) >= setChunk
	if len(v.batch) == 0 {
		return
	}

	losses := m.rejected.Load() + m.evicted.Load()
	now := m.now()
	v.visible = v.visible[:0]
	for i := range v.batch {
		r := &v.batch[i]
		left := r.until - now
		if left <= 0 {
			v.visible = append(v.visible, false) // expired: the entry goes
			continue
		}
		if i > 0 && i%setChunk == 0 {
			m.cache.Wait()
		}
		key := r.id.spell(&v.key)
		ok := m.cache.SetWithTTL(key, struct{}{}, 1, time.Duration(left))
		if !ok {
			// Only this goroutine Sets, so the buffer is full only if
			// ristretto is far behind: let it catch up and try once more;
			// a key still not held is retried next round.
			m.dropped.Add(1)
			m.cache.Wait()
			if ok = m.cache.SetWithTTL(key, struct{}{}, 1, time.Duration(left)); !ok {
				m.dropped.Add(1)
			}
		}
		v.visible = append(v.visible, ok)
	}
	// Wait applies every Set buffered so far. After it, each key whose Set
	// ristretto took is stored (its store holds a hash only when its policy
	// does, and the policy refuses a hash it already has), unless the
	// policy rejected it or it was removed since; ristretto reports each
	// of those through OnReject or OnEvict on the goroutine that applies
	// Sets, before it handles the next buffered item, i.e. before Wait
	// returns. A round that saw none of them, the rule within max_keys, is
	// settled; otherwise every key of the round is looked up.
	m.cache.Wait()
	if m.rejected.Load()+m.evicted.Load() != losses {
		for i := range v.batch {
			v.visible[i] = v.visible[i] && m.held(v.batch[i].id, &v.key)
		}
	}

	now = m.now()
	var s *shard
	for i := range v.batch {
		r := &v.batch[i]
		if next := m.shard(r.id); next != s {
			if s != nil {
				s.mu.Unlock()
			}
			s = next
			s.mu.Lock()
		}
		e, ok := s.m[r.id]
		if !ok || e.state != committed || e.until != r.until {
			continue // expired and swept, or a later Claim or Commit owns it
		}
		switch {
		case v.visible[i] || now >= e.until:
			m.remove(s, r.id, e)
		case r.tries+1 < commitAttempts:
			r.tries++
			v.retry = append(v.retry, *r)
		case m.overflow.Load() < m.overflowN:
			s.m[r.id] = entry{until: e.until, state: overflowed}
			s.unverified--
			m.overflow.Add(1)
		default:
			m.remove(s, r.id, e)
			m.forgotten.Add(1)
		}
	}
	if s != nil {
		s.mu.Unlock()
	}
}

// tidy gives back the room a burst of commits took: the shards' queues and
// maps and the verifier's batch keep their largest size otherwise. It runs
// when the verifier has nothing to do, never between two busy rounds.
func (m *Memory) tidy(v *verifier) {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		if len(s.queue) == 0 && cap(s.queue) > 256 {
			s.queue = nil
		}
		s.shrink()
		s.mu.Unlock()
	}
	if cap(v.batch) > 1024 {
		v.batch, v.visible = nil, nil
	}
	if len(v.retry) == 0 && cap(v.retry) > 1024 {
		v.retry = nil
	}
}

// Len implements Store: keys held by ristretto plus keys in flight (a key
// just committed may be counted twice for the moment between ristretto
// applying its Set and the verifier seeing it).
func (m *Memory) Len() int {
	st := m.Stats()
	return st.Keys + st.InFlight
}

// Stats returns the store's counters.
func (m *Memory) Stats() MemoryStats {
	inFlight := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		inFlight += len(s.m)
		s.mu.Unlock()
	}
	return MemoryStats{
		// Each key costs 1, so the cost ristretto's policy has admitted is
		// the number of keys it holds.
		Keys:         int(max(0, m.cache.MaxCost()-m.cache.RemainingCost())),
		InFlight:     inFlight,
		Overflow:     int(m.overflow.Load()),
		SetsDropped:  m.dropped.Load(),
		SetsRejected: m.rejected.Load(),
		EvictedLive:  m.evictedLive.Load(),
		Forgotten:    m.forgotten.Load(),
	}
}

// unverified is the number of committed keys the verifier has yet to see in
// ristretto or move to overflow.
func (m *Memory) unverified() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += s.unverified
		s.mu.Unlock()
	}
	return n
}

// Close stops the verifier and ristretto's goroutines and forgets every key.
// Other methods return ErrClosed afterwards; a second Close does nothing.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() {
		m.closed.Store(true)
		// Every operation checks closed under its shard lock before it
		// touches ristretto: once each lock was taken after the Store
		// above, none is still running or will touch ristretto again.
		for i := range m.shards {
			s := &m.shards[i]
			s.mu.Lock()
			s.m, s.queue, s.unverified, s.highWater = map[keyID]entry{}, nil, 0, 0
			s.waiters = nil // their copies see m.stop
			s.mu.Unlock()
		}
		m.overflow.Store(0)
		close(m.stop)
		<-m.done
		m.cache.Close()
	})
	return nil
}

var _ Store = (*Memory)(nil)
