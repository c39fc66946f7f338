package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := []uint64{0, 1, 2*histSub - 1, 2 * histSub, 2*histSub + 1, 1 << 20, 1<<40 + 12345, math.MaxUint64 >> 1}
	for range 10000 {
		vals = append(vals, rng.Uint64()>>rng.UintN(64))
	}
	for _, v := range vals {
		i := bucketOf(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d, out of range", v, i)
		}
		if hi := bucketHigh(i); hi < v {
			t.Fatalf("bucketHigh(bucketOf(%d)) = %d, below the value", v, hi)
		}
		if i > 0 && bucketHigh(i-1) >= v {
			t.Fatalf("bucketHigh(%d) = %d, not below %d: buckets overlap", i-1, bucketHigh(i-1), v)
		}
		// The bucket's width bounds the error: under 1/histSub of the value.
		if hi := bucketHigh(i); v > 0 && float64(hi-v)/float64(v) > 1.0/histSub {
			t.Fatalf("value %d in bucket ending %d: error above %v", v, hi, 1.0/histSub)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tests := []struct {
		name string
		gen  func(i int) time.Duration
		n    int
	}{
		{"uniform 1..100000µs", func(i int) time.Duration { return time.Duration(1+i%100000) * time.Microsecond }, 100000},
		{"constant", func(int) time.Duration { return 1234567 * time.Nanosecond }, 1000},
		{"exponential", func(int) time.Duration { return time.Duration(rng.ExpFloat64() * float64(time.Millisecond)) }, 50000},
		{"bimodal with a tail", func(i int) time.Duration {
			if i%1000 == 0 {
				return 2 * time.Second
			}
			if i%2 == 0 {
				return 100 * time.Microsecond
			}
			return 5 * time.Millisecond
		}, 20000},
		{"tiny values", func(i int) time.Duration { return time.Duration(i % 50) }, 1000},
		{"ten values, exact ranks", func(i int) time.Duration { return time.Duration(10 - i) }, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHistogram()
			exact := make([]time.Duration, tc.n)
			for i := range tc.n {
				d := tc.gen(i)
				exact[i] = d
				h.record(d)
			}
			slices.Sort(exact)
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
				want := exact[max(0, int(math.Ceil(q*float64(tc.n)))-1)]
				got := h.quantile(q)
				if got < want || float64(got-want) > float64(want)/histSub+1 {
					t.Errorf("quantile(%v) = %v, want %v within %.1f%% above", q, got, want, 100.0/histSub)
				}
			}
			if h.quantile(1) != exact[tc.n-1] {
				t.Errorf("max = %v, want %v", h.quantile(1), exact[tc.n-1])
			}
			if h.total != uint64(tc.n) {
				t.Errorf("total = %d, want %d", h.total, tc.n)
			}
		})
	}
}

func TestHistogramMergeAndEmpty(t *testing.T) {
	empty := newHistogram()
	if empty.quantile(0.5) != 0 || empty.mean() != 0 {
		t.Fatalf("empty histogram: quantile %v mean %v, want 0", empty.quantile(0.5), empty.mean())
	}
	a, b := newHistogram(), newHistogram()
	for i := 1; i <= 100; i++ {
		a.record(time.Duration(i) * time.Millisecond)
		b.record(time.Duration(i+100) * time.Millisecond)
	}
	a.merge(b)
	a.merge(empty)
	if a.total != 200 {
		t.Fatalf("total = %d, want 200", a.total)
	}
	if got := a.quantile(0.5); got < 100*time.Millisecond || got > 101*time.Millisecond {
		t.Errorf("p50 = %v, want ~100ms", got)
	}
	if got := a.quantile(1); got != 200*time.Millisecond {
		t.Errorf("max = %v, want 200ms", got)
	}
	if got := a.mean(); got < 100*time.Millisecond || got > 101*time.Millisecond {
		t.Errorf("mean = %v, want 100.5ms", got)
	}
	a.record(-time.Second)
	if a.min != 0 {
		t.Errorf("negative duration recorded as %d, want 0", a.min)
	}
}
