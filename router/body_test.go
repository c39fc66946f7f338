package router

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestMemReturner: dropped large buffers are given back once returnAfter
// bytes were dropped, at most once per returnEvery, and the drops that come
// within an interval are given back when it ends, not left at the peak.
func TestMemReturner(t *testing.T) {
	var frees atomic.Int32
	m := &memReturner{free: func() { frees.Add(1) }}
	scheduled := func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.timer != nil
	}
	m.dropped(returnAfter - 1)
	if scheduled() {
		t.Fatal("a return scheduled below returnAfter")
	}
	m.dropped(1)
	waitFor(t, time.Second, "the first return, at once", func() bool { return frees.Load() == 1 })
	start := time.Now()
	for range 10 { // a burst: one return for all of it, once the interval ends
		m.dropped(returnAfter)
	}
	waitFor(t, 2*returnEvery, "the burst's return", func() bool { return frees.Load() == 2 })
	if d := time.Since(start); d < returnEvery/2 {
		t.Errorf("the burst was returned after %v, before the interval ended", d)
	}
	if scheduled() {
		t.Error("another return scheduled after the burst's")
	}
}
