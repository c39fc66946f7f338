package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// options shape how the capture server answers.
type options struct {
	check      bool
	status     int
	delay      time.Duration
	failRatio  float64
	failStatus int
}

func (o options) validate() error {
	if o.status < 100 || o.status > 599 || o.failStatus < 100 || o.failStatus > 599 {
		return fmt.Errorf("status %d / fail-status %d: want 100..599", o.status, o.failStatus)
	}
	if o.delay < 0 || o.delay > time.Minute {
		return fmt.Errorf("delay %v: want 0..1m", o.delay)
	}
	if o.failRatio < 0 || o.failRatio > 1 {
		return fmt.Errorf("fail-ratio %v: want 0..1", o.failRatio)
	}
	return nil
}

// stats is the GET /stats answer.
type stats struct {
	// Received counts every captured request.
	Received uint64 `json:"received"`
	// Unique counts distinct event ids acknowledged with a 2xx.
	Unique uint64 `json:"unique"`
	// Duplicates counts 2xx-acknowledged requests for an id already acknowledged.
	Duplicates uint64 `json:"duplicates"`
	// Invalid counts bodies that are not JSON (only with -check).
	Invalid uint64 `json:"invalid"`
	// Failed counts requests answered with a non-2xx.
	Failed uint64 `json:"failed"`
	// LastAt is when the last new id was acknowledged, unix nanoseconds, 0
	// if none: the end of an end-to-end run's delivery.
	LastAt int64 `json:"last_at"`
}

// capture counts what it receives. Ids are kept as 64-bit hashes: at a few
// million events a collision is vanishingly unlikely and memory stays small.
type capture struct {
	o  options
	mu sync.Mutex
	st stats
	// seen holds the hash of every acknowledged X-Hookrouter-Event-Id (or of
	// the body, when a sender sets no id).
	seen map[uint64]struct{}
}

func newCapture(o options) *capture {
	return &capture{o: o, seen: make(map[uint64]struct{}, 1<<16)}
}

func (c *capture) snapshot() stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

func (c *capture) handle(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/stats":
		if ctx.IsGet() {
			b, err := json.Marshal(c.snapshot())
			if err != nil {
				ctx.Error(err.Error(), fasthttp.StatusInternalServerError)
				return
			}
			ctx.SetContentType("application/json")
			ctx.SetBody(b)
			return
		}
	case "/reset":
		if ctx.IsPost() {
			c.mu.Lock()
			c.st = stats{}
			clear(c.seen)
			c.mu.Unlock()
			ctx.SetBodyString("OK")
			return
		}
	}

	body := ctx.PostBody()
	invalid := c.o.check && fastjson.ValidateBytes(body) != nil
	status := c.o.status
	if c.o.failRatio > 0 && rand.Float64() < c.o.failRatio {
		status = c.o.failStatus
	}
	var key uint64
	if id := ctx.Request.Header.Peek("X-Hookrouter-Event-Id"); len(id) > 0 {
		key = xxhash.Sum64(id)
	} else {
		key = xxhash.Sum64(body)
	}
	if c.o.delay > 0 {
		time.Sleep(c.o.delay)
	}
	acked := status >= 200 && status < 300

	c.mu.Lock()
	c.st.Received++
	if invalid {
		c.st.Invalid++
	}
	switch {
	case !acked:
		c.st.Failed++
	default:
		if _, dup := c.seen[key]; dup {
			c.st.Duplicates++
		} else {
			c.seen[key] = struct{}{}
			c.st.Unique++
			c.st.LastAt = time.Now().UnixNano()
		}
	}
	c.mu.Unlock()

	ctx.SetStatusCode(status)
	if acked {
		ctx.SetBodyString("OK")
	}
}
