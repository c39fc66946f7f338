package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// dupWindow bounds how far back a duplicate reaches: the platform re-sends
// recent events (its retries), not ones from long ago.
const dupWindow = 100_000

// shared is the state all workers of one loadgen run share.
type shared struct {
	gen    *generator
	client *fasthttp.HostClient
	uri    []byte
	secret []byte
	ctype  []byte
	dup    float64
	conc   int

	// nextUnique hands out sequence numbers of new events, across phases so
	// warm-up and measured events never collide.
	nextUnique atomic.Uint64
}

// phase describes one run of the workers.
type phase struct {
	count    int // >0: stop after this many requests
	duration time.Duration
	rate     float64
	// maxTime bounds the phase however slow the server: an open loop
	// against a stalled server would otherwise take rate×duration×timeout/c.
	maxTime  time.Duration
	start    time.Time
	next     atomic.Uint64 // request index
	cutShort atomic.Bool   // maxTime ran out before every request was sent
}

// worker owns its buffers and counters, so the hot loop touches no shared
// memory except two atomic counters.
type worker struct {
	rng       *rand.Rand
	buf       []byte
	lat       *histogram // from intended send time (open loop) or send time
	svc       *histogram // from actual send time; open loop only
	slop      *histogram // timer overshoot past the intended time; open loop only
	requests  uint64
	ok        uint64
	okUnique  uint64
	dupsSent  uint64
	dupAnswer uint64
	status    [600]uint64
	errs      map[string]uint64
}

func newWorker(seed uint64, id int) *worker {
	return &worker{
		rng:  rand.New(rand.NewPCG(seed, uint64(id)+1)),
		buf:  make([]byte, 0, 4096),
		lat:  newHistogram(),
		svc:  newHistogram(),
		slop: newHistogram(),
		errs: map[string]uint64{},
	}
}

// nextSeq returns the sequence number of the event to send and whether it is
// a re-send. A duplicate is drawn from events handed out at least conc
// numbers ago, so it has been sent (not merely claimed by another worker).
func (w *worker) nextSeq(s *shared) (uint64, bool) {
	if s.dup > 0 && w.rng.Float64() < s.dup {
		handed := s.nextUnique.Load()
		if handed > uint64(s.conc) {
			hi := handed - uint64(s.conc)
			lo := uint64(0)
			if hi > dupWindow {
				lo = hi - dupWindow
			}
			return lo + w.rng.Uint64N(hi-lo), true
		}
	}
	return s.nextUnique.Add(1) - 1, false
}

func (w *worker) loop(ctx context.Context, s *shared, p *phase) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURIBytes(s.uri)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentTypeBytes(s.ctype)
	req.Header.SetBytesV(fasthttp.HeaderAuthorization, s.secret)

	var interval time.Duration
	if p.rate > 0 {
		interval = time.Duration(float64(time.Second) / p.rate)
	}
	end := p.start.Add(p.duration)
	hardEnd := p.start.Add(p.maxTime)
	for ctx.Err() == nil {
		k := p.next.Add(1) - 1
		if p.count > 0 && k >= uint64(p.count) {
			return
		}
		// from is when the request's latency starts counting. Open loop: the
		// intended send time if the worker was behind schedule (the server held
		// it up, so the wait is the server's latency: no coordinated omission);
		// the actual send time if the worker was early and only its own timer
		// woke it late (Go's timers can overshoot by up to ~1ms when the
		// process is idle, an artefact of the generator, not the server).
		var from, intended time.Time
		slept := false
		if interval > 0 {
			intended = p.start.Add(time.Duration(k) * interval)
			if p.count == 0 && !intended.Before(end) {
				return
			}
			if d := time.Until(intended); d > 0 {
				time.Sleep(d)
				slept = true
			}
		}
		sent := time.Now()
		if sent.After(hardEnd) {
			p.cutShort.Store(true)
			return
		}
		switch {
		case interval == 0:
			if p.count == 0 && !sent.Before(end) {
				return
			}
			from = sent
		case slept:
			w.slop.record(sent.Sub(intended))
			from = sent
		default:
			from = intended
		}

		seq, isDup := w.nextSeq(s)
		w.buf = s.gen.body(w.buf, seq)
		req.SetBodyRaw(w.buf)
		err := s.client.Do(req, resp)
		done := time.Now()
		w.requests++
		if isDup {
			w.dupsSent++
		}
		if err != nil {
			w.errs[errorKind(err)]++
			if interval == 0 {
				// A dead target fails in microseconds; don't spin a core on it.
				time.Sleep(time.Millisecond)
			}
			continue
		}
		w.lat.record(done.Sub(from))
		if interval > 0 {
			w.svc.record(done.Sub(sent))
		}
		code := resp.StatusCode()
		if code >= 200 && code < 300 {
			w.ok++
			if !isDup {
				w.okUnique++
			}
			if len(resp.Header.Peek("X-Hookrouter-Duplicate")) > 0 {
				w.dupAnswer++
			}
			continue
		}
		if code < 0 || code >= len(w.status) {
			code = 0
		}
		w.status[code]++
	}
}

func errorKind(err error) string {
	switch {
	case errors.Is(err, fasthttp.ErrTimeout):
		return "timeout"
	case errors.Is(err, fasthttp.ErrConnectionClosed):
		return "connection closed"
	}
	s := err.Error()
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

// phaseResult merges the workers of one phase.
type phaseResult struct {
	elapsed   time.Duration
	workers   []*worker
	lat, svc  *histogram
	slop      *histogram
	requests  uint64
	ok        uint64
	okUnique  uint64
	dupsSent  uint64
	dupAnswer uint64
	status    map[int]uint64
	errs      map[string]uint64
}

func runPhase(ctx context.Context, s *shared, p *phase, seed uint64) *phaseResult {
	ws := make([]*worker, s.conc)
	for i := range ws {
		ws[i] = newWorker(seed, i)
	}
	p.start = time.Now()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.loop(ctx, s, p) })
	}
	wg.Wait()
	r := &phaseResult{
		elapsed: time.Since(p.start),
		workers: ws,
		lat:     newHistogram(),
		svc:     newHistogram(),
		slop:    newHistogram(),
		status:  map[int]uint64{},
		errs:    map[string]uint64{},
	}
	for _, w := range ws {
		r.lat.merge(w.lat)
		r.svc.merge(w.svc)
		r.slop.merge(w.slop)
		r.requests += w.requests
		r.ok += w.ok
		r.okUnique += w.okUnique
		r.dupsSent += w.dupsSent
		r.dupAnswer += w.dupAnswer
		for code, c := range w.status {
			if c > 0 {
				r.status[code] += c
			}
		}
		for k, c := range w.errs {
			r.errs[k] += c
		}
	}
	return r
}

// Result is what loadgen prints: the measured phase only.
type Result struct {
	URL         string  `json:"url"`
	Mode        string  `json:"mode"` // closed | open
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate"`
	Dup         float64 `json:"dup"`
	Seed        uint64  `json:"seed"`
	Tag         string  `json:"tag"`
	ElapsedS    float64 `json:"elapsed_s"`
	Requests    uint64  `json:"requests"`
	RequestsPS  float64 `json:"requests_per_s"`
	OK          uint64  `json:"ok"`
	AcceptedPS  float64 `json:"accepted_per_s"`
	// UniqueAccepted counts new (non re-sent) events answered 2xx: what each
	// sink routed every event should receive.
	UniqueAccepted   uint64            `json:"unique_accepted"`
	DuplicatesSent   uint64            `json:"duplicates_sent"`
	DuplicateAnswers uint64            `json:"duplicate_answers"` // 2xx with X-Hookrouter-Duplicate
	Non2xx           map[string]uint64 `json:"non2xx"`
	Non2xxTotal      uint64            `json:"non2xx_total"`
	Errors           map[string]uint64 `json:"errors"`
	ErrorsTotal      uint64            `json:"errors_total"`
	LatencyUS        Percentiles       `json:"latency_us"`
	// ServiceUS is measured from the actual send, open loop only; the gap to
	// LatencyUS is time spent waiting for a free connection or a late timer.
	ServiceUS *Percentiles `json:"service_us,omitempty"`
	// PacingSlopUS is how late the generator's timer fired for requests it
	// sent on schedule, open loop only; large values mean the generator is
	// starved of CPU and its offered load is burstier than asked.
	PacingSlopUS *Percentiles `json:"pacing_slop_us,omitempty"`
	// OnSchedule is the fraction of open-loop requests whose worker was free
	// before the intended time; well under 1 means -c is too small for the
	// rate or the server fell behind.
	OnSchedule float64       `json:"on_schedule,omitempty"`
	Sinks      []*SinkResult `json:"sinks,omitempty"`
	// CPUUS is the CPU time per request of the measured phase (µs).
	CPUUS *CPUPerRequest `json:"cpu_us_per_request,omitempty"`
	// CutShort is true when -max-time or an interrupt ended the phase before
	// its requests were all sent; Unsent counts those never sent (-n, or -rate
	// with -d).
	CutShort bool   `json:"cut_short,omitempty"`
	Unsent   uint64 `json:"unsent,omitempty"`
}

// Percentiles summarizes a histogram in microseconds.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func percentiles(h *histogram) Percentiles {
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	return Percentiles{
		P50: us(h.quantile(0.50)), P90: us(h.quantile(0.90)), P99: us(h.quantile(0.99)),
		P999: us(h.quantile(0.999)), Max: us(h.quantile(1)), Mean: us(h.mean()),
	}
}

func execute(ctx context.Context, o *options, gen *generator, log io.Writer) (*Result, error) {
	u, err := url.Parse(o.url)
	if err != nil {
		return nil, fmt.Errorf("parse url: %w", err)
	}
	s := &shared{
		gen: gen,
		client: &fasthttp.HostClient{
			Addr:                          o.addr,
			MaxConns:                      o.conc,
			ReadTimeout:                   o.timeout,
			WriteTimeout:                  o.timeout,
			MaxIdleConnDuration:           time.Minute,
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
		},
		uri:    []byte("http://" + o.addr + u.RequestURI()),
		secret: []byte(o.secret),
		ctype:  []byte(o.contentType),
		dup:    o.dup,
		conc:   o.conc,
	}
	defer s.client.CloseIdleConnections()

	var base []sinkStats
	if o.warmup > 0 {
		w := runPhase(ctx, s, &phase{duration: o.warmup, rate: o.rate, maxTime: 2*o.warmup + 30*time.Second}, o.seed^0xabcdef)
		fmt.Fprintf(log, "loadgen: warm-up %d requests, %d ok\n", w.requests, w.ok)
		if len(o.sinks) > 0 {
			// Let the warm-up's deliveries land before taking the baseline, or
			// they would be counted as the measured phase's.
			base, err = waitSinks(ctx, o, w.okUnique, nil)
			if err != nil {
				return nil, err
			}
		}
	}
	if len(o.sinks) > 0 && base == nil {
		base, err = querySinks(o.sinks)
		if err != nil {
			return nil, err
		}
	}

	p := &phase{count: o.count, duration: o.duration, rate: o.rate, maxTime: o.maxTime}
	cpu0 := sampleCPU(o.serverPID)
	r := runPhase(ctx, s, p, o.seed)
	cpu1 := sampleCPU(o.serverPID)
	res := &Result{
		CPUUS: perRequest(cpu0, cpu1, r.requests),
		URL:   o.url, Mode: "closed", Concurrency: o.conc, Rate: o.rate, Dup: o.dup, Seed: o.seed, Tag: o.tag,
		ElapsedS:         r.elapsed.Seconds(),
		Requests:         r.requests,
		RequestsPS:       float64(r.requests) / r.elapsed.Seconds(),
		OK:               r.ok,
		AcceptedPS:       float64(r.ok) / r.elapsed.Seconds(),
		UniqueAccepted:   r.okUnique,
		DuplicatesSent:   r.dupsSent,
		DuplicateAnswers: r.dupAnswer,
		Non2xx:           map[string]uint64{},
		Errors:           r.errs,
		LatencyUS:        percentiles(r.lat),
	}
	if o.rate > 0 {
		res.Mode = "open"
		sv, sl := percentiles(r.svc), percentiles(r.slop)
		res.ServiceUS, res.PacingSlopUS = &sv, &sl
		if r.svc.total > 0 {
			res.OnSchedule = float64(r.slop.total) / float64(r.svc.total)
		}
	}
	for code, c := range r.status {
		res.Non2xx[strconv.Itoa(code)] += c
		res.Non2xxTotal += c
	}
	for _, c := range r.errs {
		res.ErrorsTotal += c
	}
	if p.cutShort.Load() || ctx.Err() != nil {
		res.CutShort = true
		planned := uint64(o.count)
		if o.count == 0 && o.rate > 0 {
			planned = uint64(o.duration.Seconds() * o.rate)
		}
		if planned > r.requests {
			res.Unsent = planned - r.requests
		}
	}
	if len(o.sinks) > 0 {
		final, err := waitSinks(ctx, o, r.okUnique, base)
		if err != nil {
			return nil, err
		}
		for i, f := range final {
			sr := &SinkResult{URL: o.sinks[i], Stats: f.Stats, Settled: f.settled}
			sr.Delivered = f.Unique - base[i].Unique
			if f.LastAt > 0 {
				sr.DrainS = time.Unix(0, f.LastAt).Sub(p.start).Seconds()
				if sr.DrainS > 0 {
					sr.DeliveredPS = float64(sr.Delivered) / sr.DrainS
				}
			}
			res.Sinks = append(res.Sinks, sr)
		}
	}
	return res, nil
}

func (r *Result) print(w io.Writer) {
	fmt.Fprintf(w, "target      %s  (%s loop, c=%d", r.URL, r.Mode, r.Concurrency)
	if r.Rate > 0 {
		fmt.Fprintf(w, ", rate=%.0f/s", r.Rate)
	}
	fmt.Fprintf(w, ", dup=%.2f)\n", r.Dup)
	fmt.Fprintf(w, "requests    %d in %.2fs  (%.0f/s)\n", r.Requests, r.ElapsedS, r.RequestsPS)
	fmt.Fprintf(w, "accepted    %d 2xx  (%.0f/s), %d unique, %d re-sent, %d answered as duplicate\n",
		r.OK, r.AcceptedPS, r.UniqueAccepted, r.DuplicatesSent, r.DuplicateAnswers)
	fmt.Fprintf(w, "non-2xx     %d %s\n", r.Non2xxTotal, sortedCounts(r.Non2xx))
	fmt.Fprintf(w, "errors      %d %s\n", r.ErrorsTotal, sortedCounts(r.Errors))
	if r.CutShort {
		fmt.Fprintf(w, "cut short   %d requests never sent (-max-time or interrupt)\n", r.Unsent)
	}
	pr := func(name string, p Percentiles) {
		fmt.Fprintf(w, "%-11s p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  mean %s\n", name,
			fmtUS(p.P50), fmtUS(p.P90), fmtUS(p.P99), fmtUS(p.P999), fmtUS(p.Max), fmtUS(p.Mean))
	}
	pr("latency", r.LatencyUS)
	if r.ServiceUS != nil {
		pr("service", *r.ServiceUS)
		pr("timer slop", *r.PacingSlopUS)
		fmt.Fprintf(w, "on schedule %.1f%% of requests (the rest waited for a free connection)\n", 100*r.OnSchedule)
	}
	if c := r.CPUUS; c != nil {
		fmt.Fprintf(w, "cpu         loadgen %.2f µs/request", c.Loadgen)
		if c.Server != nil {
			fmt.Fprintf(w, ", server %.2f µs/request", *c.Server)
		}
		fmt.Fprintln(w)
	}
	for _, s := range r.Sinks {
		fmt.Fprintf(w, "sink        %s: delivered %d (%.0f/s over %.2fs), received %d, duplicates %d, invalid %d, failed %d, settled %v\n",
			s.URL, s.Delivered, s.DeliveredPS, s.DrainS, s.Received, s.Duplicates, s.Invalid, s.Failed, s.Settled)
	}
}

func fmtUS(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	}
	return fmt.Sprintf("%.0fµs", us)
}

func sortedCounts(m map[string]uint64) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := "("
	for i, k := range keys {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%s: %d", k, m[k])
	}
	return out + ")"
}
