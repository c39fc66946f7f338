//go:build !race

package dedup

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestMemoryHeapMillionKeys measures the heap a full store of 1,000,000
// ~40-byte keys costs (budget: 200 MB). It is left out of -race runs, where it
// would be slow, and of -short ones.
func TestMemoryHeapMillionKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: commits 1,000,000 keys")
	}
	const n = 1_000_000
	keys := benchKeys(n)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	m := newTestMemory(t, n)
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if ok, err := m.Claim(t.Context(), keys[i], "t"); err != nil || !ok {
					t.Errorf("Claim = %v, %v", ok, err)
					return
				}
				if err := m.Commit(t.Context(), keys[i], "t", 24*time.Hour); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	settle(t, m)
	// Twice: the first GC only moves sync.Pool contents to their victim cache.
	runtime.GC()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap for %d keys: %.1f MB (%.0f B/key); stats %+v", n, float64(heap)/1e6, float64(heap)/n, m.Stats())
	if heap > 200e6 {
		t.Errorf("heap %.1f MB for %d keys, budget 200 MB", float64(heap)/1e6, n)
	}
	if st := m.Stats(); st.Keys != n || st.SetsDropped != 0 || st.SetsRejected != 0 {
		t.Errorf("stats = %+v, want %d keys held, none dropped or rejected", st, n)
	}
	runtime.KeepAlive(keys)
}
