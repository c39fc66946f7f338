package disk

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

// writers is the number of concurrent Put callers the benchmarks aim at: a
// busy ingress with 64 requests in flight.
const writers = 64

// benchPut runs Put from about 64 goroutines and reports, besides ns/op,
// the median and 99th percentile latency of one Put and the process CPU
// time per Put (committer, applier and the Put callers together).
func benchPut(b *testing.B, q queue.Queue) { benchPutKeyed(b, q, false) }

// benchPutKeyed is benchPut, with a dedup key on each event when keyed.
func benchPutKeyed(b *testing.B, q queue.Queue, keyed bool) {
	b.Helper()
	body := event("bench", 1024).Body
	to := []string{"crm", "archive"}
	var n atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	cpu0 := processCPU()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			ev := &sinks.Event{ID: fmt.Sprint(n.Add(1)), Source: "platform", ReceivedAt: time.Now(), Body: body}
			if keyed {
				ev.DedupKey = "platform\x00channel.message_in_msg_" + ev.ID
				ev.DedupExpires = ev.ReceivedAt.Add(24 * time.Hour)
			}
			t0 := time.Now()
			if err := q.Put(context.Background(), ev, to); err != nil {
				b.Error(err)
				return
			}
			local = append(local, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N)/1e3, "cpu-µs/op")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}

// BenchmarkPutParallel measures durable Puts (fdatasync per batch) on the
// file system of the test's temporary directory.
func BenchmarkPutParallel(b *testing.B) {
	q, err := Open(b.TempDir(), 1<<40, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	benchPut(b, q)
}

// BenchmarkMemoryPutParallel is the same load on the memory backend, for the
// ratio the README quotes.
func BenchmarkMemoryPutParallel(b *testing.B) {
	q := queue.NewMemory(1 << 40)
	defer q.Close()
	benchPut(b, q)
}

// BenchmarkPutDoneParallel is BenchmarkPutParallel with the queue being
// drained at the same time, as in service: commits then also carry the
// removals of delivered events.
func BenchmarkPutDoneParallel(b *testing.B) { benchPutDone(b, false) }

// BenchmarkPutDoneParallelKeys is BenchmarkPutDoneParallel with a dedup key
// on every event, kept after delivery (up to a million): the difference in
// cpu-µs/op is what keeping dedup keys across a restart costs per event.
func BenchmarkPutDoneParallelKeys(b *testing.B) { benchPutDone(b, true) }

func benchPutDone(b *testing.B, keyed bool) {
	var opts []Option
	if keyed {
		opts = append(opts, KeepKeys(1_000_000))
	}
	q, err := Open(b.TempDir(), 1<<40, nil, opts...)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, sink := range []string{"crm", "archive"} {
		wg.Go(func() {
			for {
				d, err := q.Take(ctx, sink)
				if err != nil {
					return
				}
				if err := q.Done(d); err != nil {
					b.Error(err)
				}
			}
		})
	}
	benchPutKeyed(b, q, keyed)
	cancel()
	wg.Wait()
	q.Close()
}
