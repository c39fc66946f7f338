package dedup

import (
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchKeys builds n distinct keys shaped like the default dedup key
// (event + "_" + message id, ~40 bytes) before the timer starts.
func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "channel.message_in_01HZX3K9QW" + strconv.Itoa(1_000_000_000+i)
	}
	return keys
}

// BenchmarkMemoryClaimCommit times Claim+Commit of fresh keys, as a request
// sees them. The verifier's work for those keys partly runs after the loop:
// the benchmark waits for it with the timer stopped, and cpu-ns/op is the
// process's CPU time per key from the start of the loop to the end of that
// wait, all goroutines included.
func BenchmarkMemoryClaimCommit(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		m := newTestMemory(b, max(b.N, 1))
		keys := benchKeys(b.N)
		ctx := b.Context()
		b.ReportAllocs()
		cpu := startCPU(b)
		for i := range b.N {
			ok, err := m.Claim(ctx, keys[i], "t")
			if err != nil || !ok {
				b.Fatalf("Claim = %v, %v", ok, err)
			}
			if err := m.Commit(ctx, keys[i], "t", time.Hour); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		settle(b, m)
		cpu.report()
	})
	// parallel64 runs 64 goroutines, like the router under 64 connections.
	for _, par := range []struct {
		name    string
		perProc int
	}{{"parallel", 1}, {"parallel64", 64 / runtime.GOMAXPROCS(0)}} {
		b.Run(par.name, func(b *testing.B) {
			m := newTestMemory(b, max(b.N, 1))
			keys := benchKeys(b.N)
			ctx := b.Context()
			var next atomic.Int64
			b.SetParallelism(max(1, par.perProc))
			b.ReportAllocs()
			cpu := startCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := keys[next.Add(1)-1]
					ok, err := m.Claim(ctx, k, "t")
					if err != nil || !ok {
						b.Errorf("Claim = %v, %v", ok, err)
						return
					}
					if err := m.Commit(ctx, k, "t", time.Hour); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			settle(b, m)
			cpu.report()
		})
	}
	// paced offers keys as the router's load test does: 64 goroutines, ~35k
	// keys/s in all, into a store of the default max_keys. ns/op is only the
	// pacing; call-ns/op is the mean time a request spends in Claim+Commit,
	// and cpu-ns/op the CPU the process spends per key, the pacing included.
	b.Run("paced", func(b *testing.B) {
		const goroutines, rate = 64, 35_000
		m := newTestMemory(b, 1_000_000)
		keys := benchKeys(b.N)
		ctx := b.Context()
		var next atomic.Int64
		var inCalls atomic.Int64
		period := time.Duration(goroutines) * time.Second / rate
		b.ReportAllocs()
		cpu := startCPU(b)
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				due := time.Now().Add(time.Duration(g) * period / goroutines)
				for {
					i := next.Add(1) - 1
					if i >= int64(b.N) {
						return
					}
					time.Sleep(time.Until(due))
					due = due.Add(period)
					start := time.Now()
					ok, err := m.Claim(ctx, keys[i], "t")
					if err != nil || !ok {
						b.Errorf("Claim = %v, %v", ok, err)
						return
					}
					if err := m.Commit(ctx, keys[i], "t", time.Hour); err != nil {
						b.Error(err)
						return
					}
					inCalls.Add(int64(time.Since(start)))
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		settle(b, m)
		cpu.report()
		b.ReportMetric(float64(inCalls.Load())/float64(b.N), "call-ns/op")
	})
	b.Run("duplicate", func(b *testing.B) {
		m := newTestMemory(b, 1024)
		ctx := b.Context()
		if _, err := m.Claim(ctx, "dup", "t"); err != nil {
			b.Fatal(err)
		}
		if err := m.Commit(ctx, "dup", "t", time.Hour); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if ok, _ := m.Claim(ctx, "dup", "t"); ok {
					b.Error("duplicate claimed")
					return
				}
			}
		})
	})
}

func BenchmarkRedisClaimCommit(b *testing.B) {
	r := newTestRedis(b)
	keys := benchKeys(b.N)
	ctx := b.Context()
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := keys[next.Add(1)-1]
			ok, err := r.Claim(ctx, k, "t")
			if err != nil || !ok {
				b.Errorf("Claim = %v, %v", ok, err)
				return
			}
			if err := r.Commit(ctx, k, "t", time.Hour); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
