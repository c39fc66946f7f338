package disk

import (
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hookrouter/hookrouter/sinks"
)

// BenchmarkEngineBoltGroupCommit is the prototype measurement behind the
// choice of engine (see the README): the other design issue 19 names, bbolt
// alone with a group commit of its own, no log in front. One committer
// goroutine takes every Put waiting, writes their event and delivery
// records in one bbolt transaction (bbolt syncs twice per commit: pages,
// then meta) and releases them. Compare with BenchmarkPutParallel in the
// same run: same 64 writers, 1 KiB bodies, two sinks.
func BenchmarkEngineBoltGroupCommit(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "proto.db"), 0o600, boltOptions(false))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, n := range [][]byte{bucketEvents, bucketDeliveries} {
			if _, err := tx.CreateBucketIfNotExists(n); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	type req struct {
		seq  uint64
		ev   *sinks.Event
		done chan error
	}
	var mu sync.Mutex
	var waiting []*req
	kick := make(chan struct{}, 1)
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-kick:
			case <-stop:
				return
			}
			mu.Lock()
			batch := waiting
			waiting = nil
			mu.Unlock()
			if len(batch) == 0 {
				continue
			}
			err := db.Update(func(tx *bolt.Tx) error {
				eb, dbk := tx.Bucket(bucketEvents), tx.Bucket(bucketDeliveries)
				eb.FillPercent, dbk.FillPercent = 0.9, 0.9
				for _, r := range batch {
					k := seqKey(r.seq)
					if err := eb.Put(k, appendEvent(nil, k, r.ev)); err != nil {
						return err
					}
					for _, s := range []string{"crm", "archive"} {
						dk := deliveryKey(r.seq, s)
						if err := dbk.Put(dk, encodeDelivery(dk, deliveryState{})); err != nil {
							return err
						}
					}
				}
				return nil
			})
			for _, r := range batch {
				r.done <- err
			}
		}
	}()
	var seq atomic.Uint64
	body := event("bench", 1024).Body
	var lmu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			r := &req{ev: &sinks.Event{ID: fmt.Sprint(seq.Load()), Source: "platform", ReceivedAt: time.Now(), Body: body}, done: make(chan error, 1)}
			t0 := time.Now()
			mu.Lock()
			r.seq = seq.Add(1)
			waiting = append(waiting, r)
			mu.Unlock()
			select {
			case kick <- struct{}{}:
			default:
			}
			if err := <-r.done; err != nil {
				b.Error(err)
				return
			}
			local = append(local, time.Since(t0))
		}
		lmu.Lock()
		lat = append(lat, local...)
		lmu.Unlock()
	})
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N)/1e3, "cpu-µs/op")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	close(stop)
	<-stopped
}
