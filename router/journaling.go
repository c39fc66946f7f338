package router

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/journal"
	"github.com/hookrouter/hookrouter/router/rules"
	"github.com/hookrouter/hookrouter/router/rules/explain"
)

// journalConfig is the journal's config from the file's journal: section.
func journalConfig(f *config.File) journal.Config {
	return journal.Config{
		Enabled:   f.Journal.Enabled,
		Retention: f.Journal.Retention.Std(),
		MaxBytes:  int64(f.Journal.MaxBytes),
		Bodies:    f.Journal.Bodies,
	}
}

// openJournal opens the journal in data_dir when the config enables it, and
// exports its counters. A journal that cannot be opened is an error at start:
// the operator asked for it.
func (r *Router) openJournal(f *config.File) error {
	cfg := journalConfig(f)
	if !cfg.Enabled {
		return nil
	}
	j, err := journal.Open(f.DataDir, cfg, r.opts.JournalOptions)
	if err != nil {
		return err
	}
	r.journal = j
	reg := r.metrics.Registry
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "hookrouter", Name: "journal_dropped_total",
			Help: "Journal records dropped because its writer was behind or failing; the events themselves are unaffected."},
			func() float64 { return float64(j.Stats().Dropped) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "hookrouter", Name: "journal_written_total",
			Help: "Journal records written."},
			func() float64 { return float64(j.Stats().Written) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "hookrouter", Name: "journal_rejected_unrecorded_total",
			Help: "Rejected requests counted but not journaled, under a flood of them."},
			func() float64 { return float64(j.Stats().Unsampled) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "hookrouter", Name: "journal_bytes",
			Help: "Size of the journal database in use."},
			func() float64 { return float64(j.Stats().Bytes) }),
	)
	return nil
}

// Journal returns the event journal, nil when it is off.
func (r *Router) Journal() *journal.Journal { return r.journal }

// journalAccepted records an event answered 200 and routed (to no sink if
// it is unrouted). body is not copied: it must stay as it is.
// storeKey is the dedup store's key (dedupStoreKey); header is the
// request's, read only during the call.
func (r *Router) journalAccepted(rt *Runtime, src *source, id string, at time.Time, in *rules.Input, key, storeKey string, res *rules.Result, to []string, body []byte, header *fasthttp.RequestHeader) {
	if r.journal == nil {
		return
	}
	ev := &journal.Event{
		ID: id, ReceivedAt: at, Source: src.name, Event: in.Event(), DedupKey: key,
		Verdict: journal.Accepted, Status: fasthttp.StatusOK, Sinks: to, Payload: body,
	}
	var errs map[int]string
	if len(res.Errors) > 0 {
		errs = make(map[int]string, len(res.Errors))
		for _, e := range res.Errors {
			errs[e.Rule] = e.Err.Error()
		}
		ev.ExplainErrors(explainer(rt, src.name, header, body))
	}
	ev.SetRules(rt.ruleNames, res.Matched, res.Shadow, errs)
	r.recent.put(storeKey, id)
	r.journal.RecordEvent(ev)
}

// explainer explains the rules of rt that failed for an event, for its
// journal record: the writer calls it, after the request is answered, so it
// holds a copy of the request's headers (for header()) and the event's body,
// which stays as it is. Failed rules are rare: the copy costs nothing to the
// others.
func explainer(rt *Runtime, source string, header *fasthttp.RequestHeader, body []byte) func(int) []explain.Part {
	h := new(fasthttp.RequestHeader)
	header.CopyTo(h)
	var x *explain.Explainer
	return func(rule int) []explain.Part {
		if x == nil {
			var err error
			if x, err = explain.New(body, func(name string) string { return string(h.Peek(name)) }, source); err != nil {
				return nil // the body parsed as an object when it was routed
			}
		}
		return x.Explain(rt.File.Rules[rule].When)
	}
}

// journalDuplicate records a duplicate and returns the id of the event it
// duplicates, "" if the journal does not know it.
func (r *Router) journalDuplicate(src *source, at time.Time, in *rules.Input, key, storeKey string, body []byte) string {
	if r.journal == nil {
		return ""
	}
	orig, ok := r.recent.get(storeKey)
	if !ok {
		// Older than the recent window: the journal's index has it, if
		// retention kept it. A read of the WAL database, never a sync.
		c, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		orig, _ = r.journal.Lookup(c, src.name, key)
		cancel()
	}
	ev := &journal.Event{
		ID: newEventID(at), ReceivedAt: at, Source: src.name, Event: in.Event(), DedupKey: key,
		Verdict: journal.Duplicate, Status: fasthttp.StatusOK, DuplicateOf: orig, Sinks: []string{},
		Payload: append([]byte(nil), body...),
	}
	r.journal.RecordEvent(ev)
	return orig
}

// journalRejected records a request answered with an error status. The
// journal keeps no body of it, and samples a flood of them.
func (r *Router) journalRejected(src *source, status int, reason string) {
	if r.journal == nil {
		return
	}
	now := time.Now()
	r.journal.RecordEvent(&journal.Event{
		ID: newEventID(now), ReceivedAt: now, Source: src.name,
		Verdict: journal.Rejected, Status: status, Reason: reason, Sinks: []string{},
	})
}

// recentKeys remembers the event id of the latest accepted events by dedup
// key, so that a duplicate arriving before the journal has written its
// original still names it. Two generations per shard bound its memory.
type recentKeys struct {
	seed   maphash.Seed
	shards [16]recentShard
}

type recentShard struct {
	mu       sync.Mutex
	cur, old map[string]string
}

// recentPerShard bounds a generation: 16 shards × 2 × 4096 ≈ 128k keys.
const recentPerShard = 4096

func (k *recentKeys) shard(key string) *recentShard {
	return &k.shards[maphash.String(k.seed, key)%uint64(len(k.shards))]
}

// put remembers id under sk, the dedup store's key (dedupStoreKey).
func (k *recentKeys) put(sk, id string) {
	s := k.shard(sk)
	s.mu.Lock()
	if s.cur == nil || len(s.cur) >= recentPerShard {
		s.old, s.cur = s.cur, make(map[string]string, recentPerShard)
	}
	s.cur[sk] = id
	s.mu.Unlock()
}

func (k *recentKeys) get(sk string) (string, bool) {
	s := k.shard(sk)
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.cur[sk]; ok {
		return id, true
	}
	id, ok := s.old[sk]
	return id, ok
}
