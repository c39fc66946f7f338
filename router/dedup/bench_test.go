package dedup

import (
	"strconv"
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

func BenchmarkMemoryClaimCommit(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		m := newTestMemory(b, max(b.N, 1))
		keys := benchKeys(b.N)
		ctx := b.Context()
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			ok, err := m.Claim(ctx, keys[i], time.Hour)
			if err != nil || !ok {
				b.Fatalf("Claim = %v, %v", ok, err)
			}
			if err := m.Commit(ctx, keys[i], time.Hour); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		m := newTestMemory(b, max(b.N, 1))
		keys := benchKeys(b.N)
		ctx := b.Context()
		var next atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k := keys[next.Add(1)-1]
				ok, err := m.Claim(ctx, k, time.Hour)
				if err != nil || !ok {
					b.Errorf("Claim = %v, %v", ok, err)
					return
				}
				if err := m.Commit(ctx, k, time.Hour); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("duplicate", func(b *testing.B) {
		m := newTestMemory(b, 1024)
		ctx := b.Context()
		if _, err := m.Claim(ctx, "dup", time.Hour); err != nil {
			b.Fatal(err)
		}
		if err := m.Commit(ctx, "dup", time.Hour); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if ok, _ := m.Claim(ctx, "dup", time.Hour); ok {
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
			ok, err := r.Claim(ctx, k, time.Hour)
			if err != nil || !ok {
				b.Errorf("Claim = %v, %v", ok, err)
				return
			}
			if err := r.Commit(ctx, k, time.Hour); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
