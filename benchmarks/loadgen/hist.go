package main

import (
	"math"
	"math/bits"
	"time"
)

// histSubBits sets the precision: each power-of-two range of values is split
// into 2^histSubBits linear buckets, so a reported percentile is within
// 1/2^histSubBits (under 0.8%) of the true value, as HdrHistogram does with
// about two significant digits.
const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	// histBuckets covers every uint64: values below 2*histSub are exact, then
	// 64-histSubBits-1 halvings of histSub buckets each.
	histBuckets = (64 - histSubBits + 1) * histSub
)

// histogram records durations in nanoseconds in log-linear buckets. The zero
// value is not ready; use newHistogram. It is not safe for concurrent use:
// each worker owns one and they are merged at the end.
type histogram struct {
	counts []uint64
	total  uint64
	min    uint64
	max    uint64
	sum    float64
}

func newHistogram() *histogram {
	return &histogram{counts: make([]uint64, histBuckets), min: math.MaxUint64}
}

// bucketOf returns v's bucket index.
func bucketOf(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1
	return (shift+1)*histSub + int(v>>uint(shift)) - histSub
}

// bucketHigh returns the largest value that falls in bucket i.
func bucketHigh(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	shift := i/histSub - 1
	mant := uint64(i%histSub + histSub)
	return (mant+1)<<uint(shift) - 1
}

// record adds one observation; a negative duration counts as zero.
func (h *histogram) record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucketOf(v)]++
	h.total++
	h.sum += float64(v)
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// merge adds o's observations to h.
func (h *histogram) merge(o *histogram) {
	if o.total == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// quantile returns the value below or at which a fraction q of the
// observations fall (the highest value of that bucket, capped at the largest
// observation, so it never understates). 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	if q >= 1 {
		return time.Duration(h.max)
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(max(bucketHigh(i), h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

// mean returns the arithmetic mean, 0 when empty.
func (h *histogram) mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.total))
}
