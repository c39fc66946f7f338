package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"
)

// Stats mirrors the capture server's GET /stats answer.
type Stats struct {
	Received   uint64 `json:"received"`
	Unique     uint64 `json:"unique"`
	Duplicates uint64 `json:"duplicates"`
	Invalid    uint64 `json:"invalid"`
	Failed     uint64 `json:"failed"`
	// LastAt is when the last new event was acknowledged, unix nanoseconds.
	LastAt int64 `json:"last_at"`
}

// SinkResult is one capture server's deliveries during the measured phase.
type SinkResult struct {
	URL string `json:"url"`
	Stats
	// Delivered counts distinct events acknowledged during the measured phase.
	Delivered uint64 `json:"delivered"`
	// DrainS is from the measured phase's start to the last new delivery:
	// DeliveredPS = Delivered / DrainS is the end-to-end delivery rate.
	DrainS      float64 `json:"drain_s"`
	DeliveredPS float64 `json:"delivered_per_s"`
	// Settled is false if counts were still changing when -sink-wait ran out.
	Settled bool `json:"settled"`
}

type sinkStats struct {
	Stats
	settled bool
}

func querySinks(urls []string) ([]sinkStats, error) {
	out := make([]sinkStats, len(urls))
	for i, u := range urls {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.SetRequestURI(u + "/stats")
		err := fasthttp.DoTimeout(req, resp, 5*time.Second)
		if err == nil && resp.StatusCode() != fasthttp.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode())
		}
		if err == nil {
			err = json.Unmarshal(resp.Body(), &out[i].Stats)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		if err != nil {
			return nil, fmt.Errorf("sink %s stats: %w", u, err)
		}
	}
	return out, nil
}

// waitSinks polls the capture servers until each has acknowledged expect
// new events since base (nil: since zero), or its counts stopped changing
// for -sink-quiet, or -sink-wait ran out.
func waitSinks(ctx context.Context, o *options, expect uint64, base []sinkStats) ([]sinkStats, error) {
	deadline := time.Now().Add(o.sinkWait)
	last, err := querySinks(o.sinks)
	if err != nil {
		return nil, err
	}
	changed := make([]time.Time, len(last))
	now := time.Now()
	for i := range changed {
		changed[i] = now
	}
	for {
		done := true
		for i, s := range last {
			var b uint64
			if base != nil {
				b = base[i].Unique
			}
			last[i].settled = s.Unique-b >= expect || time.Since(changed[i]) >= o.sinkQuiet
			done = done && last[i].settled
		}
		if done || time.Now().After(deadline) || ctx.Err() != nil {
			return last, nil
		}
		time.Sleep(100 * time.Millisecond)
		cur, err := querySinks(o.sinks)
		if err != nil {
			return nil, err
		}
		for i := range cur {
			if cur[i].Stats != last[i].Stats {
				changed[i] = time.Now()
			}
		}
		last = cur
	}
}
