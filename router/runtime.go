package router

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/hookrouter/hookrouter/router/auth"
	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/dispatch"
	"github.com/hookrouter/hookrouter/router/rules"
	"github.com/hookrouter/hookrouter/router/rules/check"
	"github.com/hookrouter/hookrouter/sinks"
)

// Runtime is one compiled config: everything ingress and dispatch need,
// built and checked before it is put in force, and never modified after.
// A reload builds a new Runtime and swaps a pointer.
type Runtime struct {
	File       *config.File
	Generation uint64
	Rules      *rules.Set
	// Sinks by name, with the settings their dispatch lane uses.
	Sinks map[string]*Sink

	sources map[string]*source // by path
	trusted []netip.Prefix     // trusted_proxies
	// Counters by rule index, set by Router.install.
	ruleMatch, ruleError []prometheus.Counter
	// ruleNames are the rules' names in order, for the journal (install).
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

// Build compiles f into a Runtime. Every problem is reported, positioned in
// f's file. Sinks whose config is unchanged from prev are reused (prev may be
// nil). Build does no I/O: sinks open files and connections on first use, so
// validate and test may call it freely.
func Build(f *config.File, prev *Runtime, log *slog.Logger, version string) (*Runtime, config.Problems) {
	set, problems := rules.Compile(f)
	rt := &Runtime{File: f, Rules: set, Sinks: map[string]*Sink{}, sources: map[string]*source{}}
	for i, s := range f.Sources {
		v, err := auth.New(s.Auth)
		if err != nil {
			problems = append(problems, f.Problemf(fmt.Sprintf("sources[%d].auth", i), "%v", err))
			continue
		}
		src := &source{name: s.Name, maxBody: int(s.MaxBodyBytes), verifier: v, ttl: int64(s.Dedup.TTL)}
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
	for i := range problems {
		problems[i].Msg = exprPosition(problems[i].Msg)
	}
	problems = append(problems, typeProblems(f, problems)...)
	if len(problems) > 0 {
		problems.Sort()
		return nil, problems
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

// exprAt matches the "(LINE:COL)" that expr puts at the end of its errors.
var exprAt = regexp.MustCompile(` \((\d+):(\d+)\)$`)

// exprWording rewrites expr's messages that read oddly in a config problem.
var exprWording = strings.NewReplacer(
	"expected bool, but got ", "must return bool, but returns ",
	"unexpected token EOF", "unexpected end",
)

// exprPosition spells out expr's "(1:14)": in a problem that already has a
// file position, a bare pair reads as a second, contradictory one. It also
// rewords the messages of exprWording.
func exprPosition(msg string) string {
	m := exprAt.FindStringSubmatchIndex(msg)
	if m == nil {
		return exprWording.Replace(msg)
	}
	line, col := msg[m[2]:m[3]], msg[m[4]:m[5]]
	head := exprWording.Replace(strings.TrimRight(msg[:m[0]], " "))
	if line == "1" {
		return head + " (at column " + col + " of the expression)"
	}
	return head + " (at line " + line + ", column " + col + " of the expression)"
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
