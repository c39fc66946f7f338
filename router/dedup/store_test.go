package dedup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testRedisURL = "redis://127.0.0.1:6379/0"

// storeKinds builds each Store implementation for the shared tests.
var storeKinds = []struct {
	name string
	open func(t *testing.T, opts ...Option) Store
}{
	{"memory", func(t *testing.T, opts ...Option) Store { return newTestMemory(t, 100_000, opts...) }},
	{"redis", func(t *testing.T, opts ...Option) Store { return newTestRedis(t, opts...) }},
}

func newTestMemory(t testing.TB, maxKeys int, opts ...Option) *Memory {
	t.Helper()
	m, err := NewMemory(maxKeys, opts...)
	if err != nil {
		t.Fatalf("NewMemory: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// newTestRedis connects to the local Redis under a random key prefix, so that
// concurrent runs do not collide, and deletes the prefix's keys afterwards.
func newTestRedis(t testing.TB, opts ...Option) *Redis {
	t.Helper()
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	prefix := "hookrouter:test:" + hex.EncodeToString(rnd[:]) + ":"
	r, err := NewRedis(testRedisURL, append([]Option{WithPrefix(prefix)}, opts...)...)
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := r.Ping(ctx); err != nil {
		_ = r.Close()
		t.Skipf("redis at %s unreachable, skipping the Redis store test: %v", testRedisURL, err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		var keys []string
		iter := r.client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for len(keys) > 0 {
			n := min(len(keys), 1000)
			if err := r.client.Del(ctx, keys[:n]...).Err(); err != nil {
				t.Errorf("cleanup redis keys: %v", err)
			}
			keys = keys[n:]
		}
		_ = r.Close()
	})
	return r
}

// shortTTL is a TTL a test waits out. Both stores expire committed keys on
// the wall clock (Redis, and ristretto inside the memory store), so it is
// real time; it is long enough that a loaded machine checks the key still
// remembered before it expires.
const shortTTL = 500 * time.Millisecond

// awaitExpiry polls until key, committed with shortTTL, can be claimed again
// (that claim is the caller's), failing if it is still remembered after 5s.
func awaitExpiry(t *testing.T, s Store, key string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, err := s.Claim(t.Context(), key, "t")
		if err != nil {
			t.Fatalf("Claim(%q): %v", key, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q still remembered 5s after its commit with ttl %v", key, shortTTL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustClaim(t *testing.T, s Store, key string, want bool) {
	t.Helper()
	got, err := s.Claim(t.Context(), key, "t")
	if err != nil {
		t.Fatalf("Claim(%q): %v", key, err)
	}
	if got != want {
		t.Fatalf("Claim(%q) = %v, want %v", key, got, want)
	}
}

func mustCommitTok(t *testing.T, s Store, key, token string, ttl time.Duration) {
	t.Helper()
	if err := s.Commit(t.Context(), key, token, ttl); err != nil {
		t.Fatalf("Commit(%q): %v", key, err)
	}
}

func mustCommit(t *testing.T, s Store, key string, ttl time.Duration) {
	t.Helper()
	if err := s.Commit(t.Context(), key, "t", ttl); err != nil {
		t.Fatalf("Commit(%q): %v", key, err)
	}
}

func TestSameKeyConcurrentClaims(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			s := kind.open(t)
			const n = 40
			var wins, dups atomic.Int32
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-start
					ok, err := s.Claim(t.Context(), "evt_same", "req-"+strconv.Itoa(i))
					if err != nil {
						t.Errorf("Claim: %v", err)
						return
					}
					if !ok {
						dups.Add(1)
						return
					}
					wins.Add(1)
					// The copies wait for this outcome.
					if err := s.Commit(t.Context(), "evt_same", "req-"+strconv.Itoa(i), time.Hour); err != nil {
						t.Errorf("Commit: %v", err)
					}
				})
			}
			close(start)
			wg.Wait()
			if got := wins.Load(); got != 1 || dups.Load() != n-1 {
				t.Fatalf("%d of %d concurrent claims won and %d saw a duplicate, want exactly 1 and %d", got, n, dups.Load(), n-1)
			}
		})
	}
}

// TestClaimWaitsForCopyInFlight: a copy of a key another request holds waits
// for that request's outcome, and answers within its own deadline.
func TestClaimWaitsForCopyInFlight(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			cases := []struct {
				name    string
				outcome func(t *testing.T, s Store)
				want    func(ok bool, err error) bool
			}{
				{"commit: duplicate", func(t *testing.T, s Store) { mustCommitTok(t, s, "k", "first", time.Hour) },
					func(ok bool, err error) bool { return !ok && err == nil }},
				{"release: in flight failed", func(t *testing.T, s Store) {
					if err := s.Release(t.Context(), "k", "first"); err != nil {
						t.Fatal(err)
					}
				}, func(ok bool, err error) bool { return !ok && errors.Is(err, ErrInFlightFailed) }},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					s := kind.open(t)
					if ok, err := s.Claim(t.Context(), "k", "first"); err != nil || !ok {
						t.Fatalf("first Claim = %v, %v", ok, err)
					}
					type result struct {
						ok  bool
						err error
					}
					got := make(chan result, 1)
					go func() {
						ok, err := s.Claim(t.Context(), "k", "second")
						got <- result{ok, err}
					}()
					// The copy is waiting (it has not answered) ...
					select {
					case r := <-got:
						t.Fatalf("copy answered %v, %v before the first request's outcome", r.ok, r.err)
					case <-time.After(30 * time.Millisecond):
					}
					// ... until the outcome.
					tc.outcome(t, s)
					if r := <-got; !tc.want(r.ok, r.err) {
						t.Fatalf("copy's Claim = %v, %v", r.ok, r.err)
					}
				})
			}
			t.Run("deadline", func(t *testing.T) {
				s := kind.open(t)
				if ok, err := s.Claim(t.Context(), "k", "first"); err != nil || !ok {
					t.Fatalf("first Claim = %v, %v", ok, err)
				}
				ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
				defer cancel()
				start := time.Now()
				ok, err := s.Claim(ctx, "k", "second")
				if ok || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("copy's Claim past its deadline = %v, %v, want a deadline error", ok, err)
				}
				if d := time.Since(start); d > time.Second {
					t.Fatalf("copy's Claim took %v with a 50ms deadline", d)
				}
			})
		})
	}
}

// TestClaimTokens: a Claim repeated with the same token (a client retrying a
// call whose answer it lost) is the same claim, and only the owner's token
// releases it.
func TestClaimTokens(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			s := kind.open(t)
			if kind.name == "redis" {
				for range 2 {
					if ok, err := s.Claim(t.Context(), "k", "mine"); err != nil || !ok {
						t.Fatalf("Claim with the claim's own token = %v, %v, want the claim", ok, err)
					}
				}
			} else if ok, err := s.Claim(t.Context(), "k", "mine"); err != nil || !ok {
				t.Fatalf("Claim = %v, %v", ok, err)
			}
			if kind.name == "redis" {
				// Memory tokens are not checked: its calls are never retried.
				if err := s.Release(t.Context(), "k", "other"); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
				_, err := s.Claim(ctx, "k", "third")
				cancel()
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("after another token's Release, Claim = %v, want it still held", err)
				}
			}
			if err := s.Release(t.Context(), "k", "mine"); err != nil {
				t.Fatal(err)
			}
			mustClaim(t, s, "k", true)
		})
	}
}

// TestDistinctKeysClaimedTwice has two goroutines race on every key; the
// winner commits at once, so the loser's claim often lands between the
// commit's Set and the moment ristretto shows the key.
func TestDistinctKeysClaimedTwice(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			s := kind.open(t)
			const keys, workers = 10_000, 8
			key := func(i int) string { return "channel.message_in_msg-" + strconv.Itoa(i) }
			wins := make([]atomic.Int32, keys)
			var total atomic.Int64
			start := make(chan struct{})
			var wg sync.WaitGroup
			// Two groups walk the same keys in the same order, so each key
			// is claimed by two goroutines at nearly the same moment.
			for g := range 2 {
				tok := "group-" + strconv.Itoa(g)
				for w := range workers {
					wg.Go(func() {
						<-start
						for i := w; i < keys; i += workers {
							ok, err := s.Claim(t.Context(), key(i), tok)
							if err != nil {
								t.Errorf("Claim: %v", err)
								return
							}
							if !ok {
								continue
							}
							wins[i].Add(1)
							total.Add(1)
							if err := s.Commit(t.Context(), key(i), tok, time.Hour); err != nil {
								t.Errorf("Commit: %v", err)
								return
							}
						}
					})
				}
			}
			close(start)
			wg.Wait()
			if got := total.Load(); got != keys {
				t.Errorf("first pass: %d wins, want %d", got, keys)
			}
			for i := range wins {
				if n := wins[i].Load(); n != 1 {
					t.Fatalf("key %d won %d times, want 1", i, n)
				}
			}

			var again atomic.Int64
			for w := range workers {
				wg.Go(func() {
					for i := w; i < keys; i += workers {
						ok, err := s.Claim(t.Context(), key(i), "t")
						if err != nil {
							t.Errorf("Claim: %v", err)
							return
						}
						if ok {
							again.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if got := again.Load(); got != 0 {
				t.Fatalf("second pass: %d committed keys claimed again, want 0", got)
			}
			if m, ok := s.(*Memory); ok {
				settle(t, m)
				st := m.Stats()
				if st.SetsDropped != 0 || st.SetsRejected != 0 || st.Overflow != 0 || st.EvictedLive != 0 {
					t.Errorf("stats within max_keys = %+v, want no drops, rejections, overflow or evictions", st)
				}
				if st.Keys != keys || m.Len() != keys {
					t.Errorf("Keys = %d, Len = %d, want %d", st.Keys, m.Len(), keys)
				}
			}
		})
	}
}

func TestReleaseAndCommitSemantics(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			cases := []struct {
				name  string
				steps func(t *testing.T, s Store)
			}{
				{"release frees a claim", func(t *testing.T, s Store) {
					mustClaim(t, s, "k", true)
					if err := s.Release(t.Context(), "k", "t"); err != nil {
						t.Fatal(err)
					}
					mustClaim(t, s, "k", true)
				}},
				{"release does not forget a committed key", func(t *testing.T, s Store) {
					mustClaim(t, s, "k", true)
					mustCommit(t, s, "k", time.Hour)
					if err := s.Release(t.Context(), "k", "t"); err != nil {
						t.Fatal(err)
					}
					mustClaim(t, s, "k", false)
				}},
				{"release of an unknown key is harmless", func(t *testing.T, s Store) {
					if err := s.Release(t.Context(), "never", "t"); err != nil {
						t.Fatal(err)
					}
					mustClaim(t, s, "never", true)
				}},
				{"ttl expiry frees the key", func(t *testing.T, s Store) {
					mustClaim(t, s, "k", true)
					mustCommit(t, s, "k", shortTTL)
					mustClaim(t, s, "k", false)
					awaitExpiry(t, s, "k")
				}},
				{"recommit after expiry remembers again", func(t *testing.T, s Store) {
					mustClaim(t, s, "k", true)
					mustCommit(t, s, "k", shortTTL)
					awaitExpiry(t, s, "k")
					mustCommit(t, s, "k", time.Hour)
					mustClaim(t, s, "k", false)
				}},
				{"zero ttl is refused", func(t *testing.T, s Store) {
					mustClaim(t, s, "k", true)
					if err := s.Commit(t.Context(), "k", "t", 0); err == nil {
						t.Fatal("Commit with ttl 0: no error")
					}
				}},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) { tc.steps(t, kind.open(t)) })
			}
		})
	}
}

// TestClaimTimeout: a claim neither committed nor released (its request
// died) holds its key for the claim timeout only; a copy waiting on it then
// claims the key itself.
func TestClaimTimeout(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			s := kind.open(t, WithClaimTimeout(80*time.Millisecond))
			if ok, err := s.Claim(t.Context(), "stuck", "dead"); err != nil || !ok {
				t.Fatalf("Claim = %v, %v", ok, err)
			}
			start := time.Now()
			if kind.name == "memory" {
				// The memory store's waiter sees the claim expire and
				// claims the key.
				if ok, err := s.Claim(t.Context(), "stuck", "next"); err != nil || !ok {
					t.Fatalf("Claim after the claim timeout = %v, %v, want the key", ok, err)
				}
				if d := time.Since(start); d < 70*time.Millisecond {
					t.Fatalf("second Claim won after %v, before the claim timeout", d)
				}
			} else {
				// Redis reports the expired claim as a failed copy in flight.
				if _, err := s.Claim(t.Context(), "stuck", "next"); !errors.Is(err, ErrInFlightFailed) {
					t.Fatalf("Claim after the claim timeout = %v, want ErrInFlightFailed", err)
				}
				mustClaim(t, s, "stuck", true)
			}
			// A commit after the timeout still makes the key a duplicate.
			mustCommit(t, s, "stuck", time.Hour)
			mustClaim(t, s, "stuck", false)
		})
	}
}

func TestMemoryNoneForgottenAtMaxKeys(t *testing.T) {
	const n = 20_000
	m := newTestMemory(t, n)
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				k := fmt.Sprintf("device.connected_dev-%d_1700000000", i)
				if ok, err := m.Claim(t.Context(), k, "t"); err != nil || !ok {
					t.Errorf("Claim(%q) = %v, %v", k, ok, err)
					return
				}
				if err := m.Commit(t.Context(), k, "t", time.Hour); err != nil {
					t.Errorf("Commit: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Re-claimed at once, while the verifier is still busy with the last
	// commits, and again once it is done.
	for range 2 {
		for i := range n {
			k := fmt.Sprintf("device.connected_dev-%d_1700000000", i)
			if ok, err := m.Claim(t.Context(), k, "t"); err != nil || ok {
				t.Fatalf("re-Claim(%q) = %v, %v: a committed key was forgotten (stats %+v)", k, ok, err, m.Stats())
			}
		}
		settle(t, m)
	}
	st := m.Stats()
	want := MemoryStats{Keys: n}
	if st != want {
		t.Fatalf("stats = %+v, want %+v: ristretto must hold every key itself within max_keys", st, want)
	}
}

// TestMemoryBeyondMaxKeys checks that traffic far over max_keys degrades as
// documented: counted, bounded, never an error.
func TestMemoryBeyondMaxKeys(t *testing.T) {
	const maxKeys, n = 100, 3000
	m := newTestMemory(t, maxKeys)
	for i := range n {
		k := "over-" + strconv.Itoa(i)
		if ok, err := m.Claim(t.Context(), k, "t"); err != nil || !ok {
			t.Fatalf("Claim(%q) = %v, %v", k, ok, err)
		}
		mustCommit(t, m, k, time.Hour)
	}
	settle(t, m)
	st := m.Stats()
	if st.SetsRejected+st.EvictedLive == 0 {
		t.Errorf("stats = %+v: %d keys in a store of %d, want rejections or evictions counted", st, n, maxKeys)
	}
	if limit := maxKeys + 64 + 1024 + 1; m.Len() > limit {
		t.Errorf("Len = %d, want at most %d (cache + bounded overflow)", m.Len(), limit)
	}
	if st.Overflow > 1024 {
		t.Errorf("overflow = %d, want at most 1024", st.Overflow)
	}
	// Every key still held, by ristretto or in overflow, must be refused.
	refused := 0
	for i := range n {
		ok, err := m.Claim(t.Context(), "over-"+strconv.Itoa(i), "t")
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			refused++
		}
	}
	if want := st.Keys + st.Overflow; refused != want {
		t.Errorf("%d re-claims refused, want %d (stats %+v)", refused, want, st)
	}
}

// TestMemoryOverflowKeepsRefusedKeys makes every key collide on ristretto's
// 64-bit hash, so that ristretto holds only the first one and refuses the
// others: they must still be remembered, in the bounded overflow set.
func TestMemoryOverflowKeepsRefusedKeys(t *testing.T) {
	const maxKeys, n = 100, 1100 // overflow holds max(1024, maxKeys/16)
	m := newTestMemory(t, maxKeys, withKeyHash(func(string) uint64 { return 42 }))
	key := func(i int) string { return "collide-" + strconv.Itoa(i) }
	for i := range n {
		mustClaim(t, m, key(i), true)
		mustCommit(t, m, key(i), time.Hour)
	}
	settle(t, m)
	st := m.Stats()
	want := MemoryStats{Keys: 1, InFlight: 1024, Overflow: 1024, SetsRejected: commitAttempts * (n - 1), Forgotten: n - 1 - 1024}
	if st != want {
		t.Fatalf("stats = %+v, want %+v", st, want)
	}
	for i := range 1 + 1024 {
		mustClaim(t, m, key(i), false)
	}
	// Past the overflow bound keys are forgotten, as counted.
	mustClaim(t, m, key(n-1), true)

	// Overflow entries expire with their TTL like any key, on the store's
	// clock: the test moves it on rather than sleeping, so a slow verifier
	// round cannot see the key expire early.
	clock := &testClock{now: time.Now().UnixNano()}
	m2 := newTestMemory(t, maxKeys, withKeyHash(func(string) uint64 { return 42 }), WithClock(clock.Now))
	for _, k := range []string{"first", "short"} {
		mustClaim(t, m2, k, true)
		mustCommit(t, m2, k, time.Hour)
	}
	mustClaim(t, m2, "short", false)
	settle(t, m2)
	if st := m2.Stats(); st.Overflow != 1 {
		t.Fatalf("stats = %+v, want 1 key in overflow", st)
	}
	mustClaim(t, m2, "short", false)
	clock.advance(time.Hour - time.Second)
	mustClaim(t, m2, "short", false)
	clock.advance(2 * time.Second)
	mustClaim(t, m2, "short", true)
}

// testClock is a clock for WithClock that only moves when told to.
type testClock struct{ now int64 }

func (c *testClock) Now() int64              { return atomic.LoadInt64(&c.now) }
func (c *testClock) advance(d time.Duration) { atomic.AddInt64(&c.now, int64(d)) }

// TestMemorySeed: a seeded key is a duplicate until it expires; an expired
// one is not seeded.
func TestMemorySeed(t *testing.T) {
	clock := &testClock{now: time.Now().UnixNano()}
	m := newTestMemory(t, 1000, WithClock(clock.Now))
	m.Seed("kept", time.Unix(0, clock.Now()).Add(time.Hour))
	m.Seed("stale", time.Unix(0, clock.Now()).Add(-time.Second))
	mustClaim(t, m, "kept", false)
	mustClaim(t, m, "stale", true)
	settle(t, m)
	mustClaim(t, m, "kept", false)
}

// settle waits until the verifier has seen every committed key in ristretto
// or moved it to overflow and gone idle, so that Stats are final.
func settle(t testing.TB, m *Memory) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for m.unverified() > 0 || !m.idle.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("verifier still has %d keys to check after 10s (stats %+v)", m.unverified(), m.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// withKeyHash replaces the memory store's 64-bit key hash, to force
// collisions.
func withKeyHash(h func(string) uint64) Option {
	return func(o *options) { o.keyHash = h }
}

func TestMemoryClosed(t *testing.T) {
	m, err := NewMemory(10)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := m.Claim(t.Context(), "k", "t"); !errors.Is(err, ErrClosed) {
		t.Errorf("Claim after Close: %v, want ErrClosed", err)
	}
	if err := m.Commit(t.Context(), "k", "t", time.Hour); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Close: %v, want ErrClosed", err)
	}
	if err := m.Release(t.Context(), "k", "t"); !errors.Is(err, ErrClosed) {
		t.Errorf("Release after Close: %v, want ErrClosed", err)
	}
}

func TestNewMemoryInvalid(t *testing.T) {
	for _, n := range []int{0, -1} {
		if _, err := NewMemory(n); err == nil {
			t.Errorf("NewMemory(%d): no error", n)
		}
	}
}

func TestRedisKeysAndValues(t *testing.T) {
	r := newTestRedis(t, WithClaimTimeout(30*time.Second))
	ctx := t.Context()
	mustClaim(t, r, "evt", true)
	full := r.prefix + "evt"
	if v, err := r.client.Get(ctx, full).Result(); err != nil || v != claimPrefix+"t" {
		t.Fatalf("after Claim %s = %q, %v, want %q", full, v, err, claimPrefix+"t")
	}
	if ttl := r.client.PTTL(ctx, full).Val(); ttl <= 0 || ttl > 30*time.Second {
		t.Fatalf("claim PTTL = %v, want within the 30s claim timeout", ttl)
	}
	mustCommit(t, r, "evt", 10*time.Minute)
	if v, _ := r.client.Get(ctx, full).Result(); v != valueCommitted {
		t.Fatalf("after Commit value = %q, want %q", v, valueCommitted)
	}
	if ttl := r.client.PTTL(ctx, full).Val(); ttl <= 30*time.Second || ttl > 10*time.Minute {
		t.Fatalf("commit PTTL = %v, want the 10m ttl", ttl)
	}
	if r.Len() != 1 {
		t.Errorf("Len = %d, want 1 commit", r.Len())
	}
}

func TestRedisErrors(t *testing.T) {
	if _, err := NewRedis("http://user:s3cret@127.0.0.1:6379"); err == nil {
		t.Error("NewRedis with an http URL: no error")
	}
	_, err := NewRedis("redis://user:s3cret@127.0.0.1:notaport/0")
	if err == nil {
		t.Fatal("NewRedis with a bad port: no error")
	}
	if s := err.Error(); strings.Contains(s, "s3cret") {
		t.Errorf("error %q leaks the password", s)
	}

	// A server that is not there: every operation fails, none panics.
	r, err := NewRedis("redis://127.0.0.1:1/0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := r.Claim(ctx, "k", "t"); err == nil {
		t.Error("Claim against a closed port: no error")
	}
	if err := r.Commit(ctx, "k", "t", time.Hour); err == nil {
		t.Error("Commit against a closed port: no error")
	}
	if err := r.Release(ctx, "k", "t"); err == nil {
		t.Error("Release against a closed port: no error")
	}
	if err := r.Ping(ctx); err == nil {
		t.Error("Ping against a closed port: no error")
	}
}

// TestMemoryCommitThenClaimElsewhere re-claims each key from another goroutine
// the moment its Commit returns, before ristretto has applied (or even been
// offered) its Set, and keeps re-claiming recent keys while the verifier
// moves them from the in-flight set into ristretto: every one of those claims
// must see a duplicate. With colliding hashes the keys go the long way, from
// refused Sets to the overflow set.
func TestMemoryCommitThenClaimElsewhere(t *testing.T) {
	cases := []struct {
		name string
		opts []Option
	}{
		{"distinct hashes", nil},
		{"colliding hashes", []Option{withKeyHash(func(k string) uint64 { return uint64(len(k)) % 7 })}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const writers, perWriter = 4, 3_000
			// max_keys large enough that the overflow set can hold every
			// colliding key: nothing may be forgotten.
			m := newTestMemory(t, 16*writers*perWriter, tc.opts...)
			handoff := make(chan string, 16)
			var slipped atomic.Int64
			var checkers, producers sync.WaitGroup
			for c := range 2 {
				checkers.Go(func() {
					var recent [512]string
					n := 0
					for k := range handoff {
						if ok, err := m.Claim(t.Context(), k, "t"); err != nil || ok {
							slipped.Add(1)
							t.Errorf("Claim(%q) right after its Commit = %v, %v, want a duplicate", k, ok, err)
						}
						recent[n%len(recent)] = k
						n++
						for j := range 6 {
							old := recent[(n*7+j*131+c)%min(n, len(recent))]
							if ok, err := m.Claim(t.Context(), old, "t"); err != nil || ok {
								slipped.Add(1)
								t.Errorf("re-Claim(%q) = %v, %v, want a duplicate (stats %+v)", old, ok, err, m.Stats())
							}
						}
					}
				})
			}
			for w := range writers {
				producers.Go(func() {
					for i := range perWriter {
						k := fmt.Sprintf("agent.message_out_w%d-%d", w, i)
						if ok, err := m.Claim(t.Context(), k, "t"); err != nil || !ok {
							t.Errorf("first Claim(%q) = %v, %v", k, ok, err)
							return
						}
						mustCommit(t, m, k, time.Hour)
						handoff <- k
					}
				})
			}
			producers.Wait()
			close(handoff)
			checkers.Wait()
			if n := slipped.Load(); n > 0 {
				t.Fatalf("%d duplicates slipped through", n)
			}
			settle(t, m)
			st := m.Stats()
			if st.Forgotten != 0 || st.Keys+st.Overflow != writers*perWriter {
				t.Errorf("stats = %+v, want all %d keys held by ristretto or overflow", st, writers*perWriter)
			}
			for w := range writers {
				for i := range perWriter {
					mustClaim(t, m, fmt.Sprintf("agent.message_out_w%d-%d", w, i), false)
				}
			}
		})
	}
}

// TestMemoryCloseWhileBusy closes the store under concurrent traffic: every
// call returns nil or ErrClosed, none panics (ristretto does if used during
// its Close), and no goroutine is left behind (TestMain checks).
func TestMemoryCloseWhileBusy(t *testing.T) {
	m, err := NewMemory(10_000)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var calls atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				k := "busy-" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
				_, err := m.Claim(t.Context(), k, "t")
				if err == nil {
					if i%3 == 0 {
						err = m.Release(t.Context(), k, "t")
					} else {
						err = m.Commit(t.Context(), k, "t", time.Hour)
					}
				}
				calls.Add(1)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("call before Close: %v", err)
					return
				}
			}
		})
	}
	for calls.Load() < 2_000 {
		time.Sleep(time.Millisecond)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if n := m.Len(); n != 0 {
		t.Errorf("Len after Close = %d, want 0", n)
	}
}

// TestMemoryClaimCommitAllocs keeps Claim and Commit free of allocations: the
// only one per key is ristretto's, when the verifier Sets it.
func TestMemoryClaimCommitAllocs(t *testing.T) {
	m := newTestMemory(t, 100_000)
	keys := benchKeys(20_001)
	i := 0
	allocs := testing.AllocsPerRun(20_000, func() {
		if ok, err := m.Claim(t.Context(), keys[i], "t"); err != nil || !ok {
			t.Fatalf("Claim = %v, %v", ok, err)
		}
		mustCommit(t, m, keys[i], time.Hour)
		i++
	})
	settle(t, m)
	// AllocsPerRun counts every goroutine's allocations, the verifier's
	// included, and truncates the average.
	if allocs > 1 {
		t.Errorf("Claim+Commit: %.0f allocations per key, want at most 1", allocs)
	}
	t.Logf("%.2f allocations per key", allocs)
}
