package router

import (
	"encoding/hex"
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
	// Only from memory: the ack path never reads the database. An original
	// older than the recent window is found when the journey is read.
	orig, _ := r.recent.get(storeKey)
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
// key, so that a duplicate's answer and journal record name the event it
// duplicates without reading the journal on the ack path. Two generations
// per shard bound its memory; keys are 64-bit hashes and ids their 16
// bytes (24 bytes a slot; with the maps' spare slots, ~52 bytes an event). (Two keys with one hash would name the
// wrong original; with the window full, the odds per duplicate are 2^-45.)
type recentKeys struct {
	seed   maphash.Seed
	shards [16]recentShard
}

type recentShard struct {
	mu       sync.Mutex
	cur, old map[uint64][16]byte
}

// recentPerShard bounds a generation: each shard remembers between 16384 and
// 32768 keys, so the window holds about the last 256k–512k accepted events (at
// most ~27 MiB, measured full): 20 s of this machine's saturated disk queue, minutes at
// ordinary rates. A platform re-sends within that.
const recentPerShard = 16384

func (k *recentKeys) shard(key string) (*recentShard, uint64) {
	h := maphash.String(k.seed, key)
	return &k.shards[h%uint64(len(k.shards))], h
}

// put remembers id, an event id (newEventID), under sk, the dedup store's
// key (dedupStoreKey).
func (k *recentKeys) put(sk, id string) {
	var b [16]byte
	if n, err := hex.Decode(b[:], []byte(id)); err != nil || n != len(b) {
		return // not an id newEventID made
	}
	s, h := k.shard(sk)
	s.mu.Lock()
	if s.cur == nil || len(s.cur) >= recentPerShard {
		s.old, s.cur = s.cur, make(map[uint64][16]byte, recentPerShard)
	}
	s.cur[h] = b
	s.mu.Unlock()
}

func (k *recentKeys) get(sk string) (string, bool) {
	s, h := k.shard(sk)
	s.mu.Lock()
	b, ok := s.cur[h]
	if !ok {
		b, ok = s.old[h]
	}
	s.mu.Unlock()
	if !ok {
		return "", false
	}
	return hex.EncodeToString(b[:]), true
}
