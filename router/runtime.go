package router

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/hookrouter/hookrouter/router/auth"
	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/dispatch"
	"github.com/hookrouter/hookrouter/router/metrics"
	"github.com/hookrouter/hookrouter/router/rules"
	"github.com/hookrouter/hookrouter/router/rules/check"
	"github.com/hookrouter/hookrouter/sinks"
)

// Runtime is one compiled config: everything ingress and dispatch need,
// built, checked and provisioned before it is put in force, and never
// modified after (but for its count of users). A reload builds a new
// Runtime and swaps a pointer.
type Runtime struct {
	File       *config.File
	Generation uint64
	Rules      *rules.Set
	// Sinks by name, with the settings their dispatch lane uses.
	Sinks map[string]*Sink

	sources map[string]*source // by path
	trusted []netip.Prefix     // trusted_proxies
	// Counters by rule index, resolved by build for a router's runtime.
	ruleMatch, ruleError []prometheus.Counter
	// ruleNames are the rules' names in order, shared by every event the
	// journal records under this runtime.
	ruleNames []string
	// users counts the requests running with this runtime (Router.acquire).
	users atomic.Int64
}

// Sink is a built sink and the config it was built from; a reload reuses the
// instance when its config did not change, so its lane, breaker and
// connections survive.
type Sink struct {
	Name   string
	Type   string
	Sink   sinks.Sink
	Config config.Sink
}

type source struct {
	name     string
	maxBody  int
	verifier auth.Verifier
	ttl      int64 // dedup TTL in nanoseconds
	allow    []netip.Prefix
	// limiter is the source's rate_limit, nil without one. A reload that
	// keeps the rate_limit keeps the limiter, and so its bucket.
	limiter *rate.Limiter
	limit   config.RateLimit
	m       sourceMetrics
}

// sourceMetrics are one source's counters, resolved once per runtime so that
// the hot path does no label lookups.
type sourceMetrics struct {
	received, accepted, duplicate, unrouted prometheus.Counter
	latency                                 prometheus.Observer
}

func newSourceMetrics(m *metrics.Metrics, name string) sourceMetrics {
	return sourceMetrics{
		received:  m.EventsReceived.WithLabelValues(name),
		accepted:  m.EventsAccepted.WithLabelValues(name),
		duplicate: m.EventsDuplicate.WithLabelValues(name),
		unrouted:  m.EventsUnrouted.WithLabelValues(name),
		latency:   m.IngressSeconds.WithLabelValues(name),
	}
}

// Build compiles f into a Runtime. Every problem is reported, positioned in
// f's file. Sinks whose config is unchanged from prev are reused (prev may be
// nil). Build does no I/O: sinks open files and connections on first use, so
// validate and test may call it freely. Its Runtime counts nothing: it is for
// validating and dry runs; a Router builds the runtimes it serves with
// Router.newRuntime.
func Build(f *config.File, prev *Runtime, log *slog.Logger, version string) (*Runtime, config.Problems) {
	return build(f, prev, log, version, nil)
}

// build is Build, with the runtime's metric handles resolved in m when m is
// not nil. The Generation is one more than prev's (1 without prev).
func build(f *config.File, prev *Runtime, log *slog.Logger, version string, m *metrics.Metrics) (*Runtime, config.Problems) {
	set, problems := rules.Compile(f)
	rt := &Runtime{File: f, Generation: 1, Rules: set, Sinks: map[string]*Sink{}, sources: map[string]*source{}}
	if prev != nil {
		rt.Generation = prev.Generation + 1
	}
	for i, s := range f.Sources {
		v, err := auth.New(s.Auth)
		if err != nil {
			problems = append(problems, f.Problemf(fmt.Sprintf("sources[%d].auth", i), "%v", err))
			continue
		}
		src := &source{name: s.Name, maxBody: int(s.MaxBodyBytes), verifier: v, ttl: int64(s.Dedup.TTL)}
		if m != nil {
			src.m = newSourceMetrics(m, s.Name)
		}
		for _, c := range s.AllowIPs {
			p, _ := config.ParsePrefix(c) // checked by config
			src.allow = append(src.allow, p)
		}
		if rl := s.RateLimit; rl != nil && rl.Rate > 0 {
			src.limit = *rl
			if old := prevSource(prev, s.Path); old != nil && old.limiter != nil && old.limit == *rl {
				src.limiter = old.limiter
			} else {
				src.limiter = rate.NewLimiter(rate.Limit(rl.Rate), rl.Burst)
			}
		}
		rt.sources[s.Path] = src
	}
	for _, c := range f.TrustedProxies {
		p, _ := config.ParsePrefix(c) // checked by config
		rt.trusted = append(rt.trusted, p)
	}
	for _, name := range f.SinkNames() {
		c := f.Sinks[name]
		if prev != nil {
			if old, ok := prev.Sinks[name]; ok && reflect.DeepEqual(old.Config, *c) {
				rt.Sinks[name] = old
				continue
			}
		}
		s, ps := buildSink(f, name, c, log.With("sink", name), version)
		problems = append(problems, ps...)
		if s != nil {
			rt.Sinks[name] = &Sink{Name: name, Type: c.Type, Sink: s, Config: *c}
		}
	}
	problems = append(problems, typeProblems(f, problems)...)
	if len(problems) > 0 {
		problems.Sort()
		return nil, problems
	}
	rt.ruleNames = make([]string, len(set.Rules))
	for i, rule := range set.Rules {
		rt.ruleNames[i] = rule.Name
	}
	if m != nil {
		rt.ruleMatch = make([]prometheus.Counter, len(set.Rules))
		rt.ruleError = make([]prometheus.Counter, len(set.Rules))
		for i, rule := range set.Rules {
			rt.ruleMatch[i] = m.RuleMatches.WithLabelValues(rule.Name, fmt.Sprint(rule.Shadow))
			rt.ruleError[i] = m.RuleErrors.WithLabelValues(rule.Name)
		}
	}
	return rt, nil
}

// typeProblems are check.Check's problems (fields the schema lacks, types
// that do not fit) at paths that have no other problem: a compiler's message
// about an expression is the more basic one.
func typeProblems(f *config.File, reported config.Problems) config.Problems {
	var out config.Problems
	for _, p := range check.Check(f) {
		if !slices.ContainsFunc(reported, func(q config.Problem) bool { return q.Path == p.Path }) {
			out = append(out, p)
		}
	}
	return out
}

// provisionTimeout bounds opening every new sink's destination.
const provisionTimeout = 10 * time.Second

// provision opens the destinations of rt's sinks that are not prev's
// instances (prev may be nil), before rt is put in force: see
// sinks.Provisioner. If one fails, the sinks rt built are closed and every
// failure is returned, placed in rt's file; rt must then not be used.
func (rt *Runtime) provision(ctx context.Context, prev *Runtime) config.Problems {
	ctx, cancel := context.WithTimeout(ctx, provisionTimeout)
	defer cancel()
	var problems config.Problems
	for _, name := range rt.File.SinkNames() {
		s, ok := rt.Sinks[name]
		if !ok || prev != nil && prev.Sinks[name] == s {
			continue
		}
		if p, ok := s.Sink.(sinks.Provisioner); ok {
			if err := p.Provision(ctx); err != nil {
				problems = append(problems, sinkProblem(rt.File, name, err))
			}
		}
	}
	if problems == nil {
		return nil
	}
	rt.closeNew(prev)
	problems.Sort()
	return problems
}

// closeNew closes the sinks of rt that are not prev's instances, for an rt
// that will not be put in force.
func (rt *Runtime) closeNew(prev *Runtime) {
	ctx, cancel := context.WithTimeout(context.Background(), provisionTimeout)
	defer cancel()
	for name, s := range rt.Sinks {
		if prev == nil || prev.Sinks[name] != s {
			_ = s.Sink.Close(ctx)
		}
	}
}

// targets is what the dispatcher needs of the runtime's sinks.
func (rt *Runtime) targets() map[string]dispatch.Target {
	out := make(map[string]dispatch.Target, len(rt.Sinks))
	for name, s := range rt.Sinks {
		c := s.Config
		out[name] = dispatch.Target{Sink: s.Sink, Type: s.Type, Settings: dispatch.Settings{
			MaxAttempts:     c.Retry.MaxAttempts,
			InitialBackoff:  c.Retry.InitialBackoff.Std(),
			MaxBackoff:      c.Retry.MaxBackoff.Std(),
			BreakerFailures: c.Breaker.Failures,
			BreakerOpenFor:  c.Breaker.OpenFor.Std(),
			Workers:         c.Workers,
		}}
		if rl := c.RateLimit; rl != nil {
			t := out[name]
			t.Settings.Rate, t.Settings.Burst = float64(rl.Rate), rl.Burst
			out[name] = t
		}
	}
	return out
}

func prevSource(prev *Runtime, path string) *source {
	if prev == nil {
		return nil
	}
	return prev.sources[path]
}
