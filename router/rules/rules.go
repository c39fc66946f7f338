// Package rules compiles a config's rules and dedup keys into an immutable,
// type-checked Set, and evaluates events against it on the hot path.
//
// Every `when` is compiled once with expr-lang/expr (bool result) at load
// time. The Set also knows which rules can only match a given `event` value,
// so an event is evaluated against the rules that could match it and not the
// thousand others, and which payload paths those rules read, so the ingress
// extracts only those fields from the body (Input.Parse). expr's VM
// evaluates every rule.
package rules

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// Rule is one compiled rule.
type Rule struct {
	Name   string
	To     []string
	Stop   bool
	Shadow bool

	program *vm.Program
	to      []int // indexes into Set.Sinks
}

// Set is an immutable compiled rule set plus the dedup key of each source.
// It is safe for concurrent use; per-request state lives in an Input.
type Set struct {
	Rules []Rule
	// Sinks lists every sink name some non-shadow rule routes to, in order
	// of first mention.
	Sinks []string

	byEvent  map[string]*candidates // by event value
	anyEvent *candidates            // for event values outside byEvent
	full     *plan                  // every expression's reads, for Trace
	nPaths   int                    // flattened chains, all plans together
	dedup    map[string]*dedupKey   // by source name
	pool     sync.Pool
}

// candidates are the rules that can match an event value, in order, and the
// plan of what the env holds for them.
type candidates struct {
	rules []int32
	plan  *plan
}

// plan is what the env is filled with for an event: the reads of the candidate
// rules and of every dedup key. An expression reads only variables its plan
// computes; the others keep an older event's values, which nothing reads.
type plan struct {
	fields  *field
	all     bool
	flat    []*flatPath // sorted by key
	headers [][2]string // constant header names, and their env keys
}

// Compile builds the Set for f, or returns every problem found: expressions
// that do not parse, do not type-check or do not return bool, and `to`
// entries naming sinks that f does not define. Problems carry f's positions.
func Compile(f *config.File) (*Set, config.Problems) {
	s := &Set{dedup: map[string]*dedupKey{}}
	var problems config.Problems
	sinkIndex := map[string]int{}
	var constrained [][]string
	paths := map[string]*flatPath{}
	var ruleReads []*reads
	dedupReads := newReads()

	for i, r := range f.Rules {
		path := fmt.Sprintf("rules[%d]", i)
		rule := Rule{Name: r.Name, To: r.To, Stop: r.Stop, Shadow: r.Shadow}
		prog, err := compile(r.When, expr.AsBool())
		if err != nil {
			problems = append(problems, f.Problemf(path+".when", "%s", exprError(err)))
		} else {
			rule.program = prog
		}
		rr := newReads()
		collectReads(rr, paths, r.When)
		ruleReads = append(ruleReads, rr)
		for j, name := range r.To {
			if _, ok := f.Sinks[name]; !ok {
				problems = append(problems, f.Problemf(fmt.Sprintf("%s.to[%d]", path, j), "unknown sink %q%s", name, suggest(name, f.SinkNames())))
				continue
			}
			if r.Shadow {
				continue
			}
			idx, ok := sinkIndex[name]
			if !ok {
				idx = len(s.Sinks)
				sinkIndex[name] = idx
				s.Sinks = append(s.Sinks, name)
			}
			if !slices.Contains(rule.to, idx) {
				rule.to = append(rule.to, idx)
			}
		}
		constrained = append(constrained, eventConstraint(r.When))
		s.Rules = append(s.Rules, rule)
	}

	for i, src := range f.Sources {
		dk, err := compileDedupKey(src.Dedup.Key)
		if err != nil {
			problems = append(problems, f.Problemf(fmt.Sprintf("sources[%d].dedup.key", i), "%s", exprError(err)))
			continue
		}
		if src.Dedup.Key != "" {
			collectReads(dedupReads, paths, src.Dedup.Key)
		}
		s.dedup[src.Name] = dk
	}
	if len(problems) > 0 {
		return nil, problems
	}
	s.nPaths = len(paths)
	s.buildIndex(constrained, ruleReads, dedupReads)
	s.pool.New = func() any { return newInput(s) }
	return s, nil
}

// buildIndex precomputes, for every event value some rule requires, the
// ordered list of rules worth evaluating: those requiring that value plus
// those with no requirement; and the plan of each list.
func (s *Set) buildIndex(constrained [][]string, ruleReads []*reads, dedupReads *reads) {
	byEvent := map[string][]int32{}
	var anyEvent []int32
	for i, events := range constrained {
		if events == nil {
			anyEvent = append(anyEvent, int32(i))
			for ev := range byEvent {
				byEvent[ev] = append(byEvent[ev], int32(i))
			}
			continue
		}
		for _, ev := range events {
			list, ok := byEvent[ev]
			if !ok {
				list = slices.Clone(anyEvent)
			}
			if len(list) == 0 || list[len(list)-1] != int32(i) {
				list = append(list, int32(i))
			}
			byEvent[ev] = list
		}
	}
	planOf := func(list []int32) *plan {
		r := newReads()
		r.merge(dedupReads)
		for _, i := range list {
			r.merge(ruleReads[i])
		}
		return r.plan()
	}
	candidatesOf := func(list []int32) *candidates {
		return &candidates{rules: list, plan: planOf(list)}
	}
	s.byEvent = make(map[string]*candidates, len(byEvent))
	for ev, list := range byEvent {
		s.byEvent[ev] = candidatesOf(list)
	}
	s.anyEvent = candidatesOf(anyEvent)
	all := make([]int32, len(ruleReads))
	for i := range all {
		all[i] = int32(i)
	}
	s.full = planOf(all)
}

// collectReads records in r what src reads, its chains registered in paths.
func collectReads(r *reads, paths map[string]*flatPath, src string) {
	tree, err := parser.Parse(src)
	if err != nil {
		return
	}
	c := &fieldCollector{reads: r, vars: letVars(tree.Node), paths: paths}
	c.collect(tree.Node, false)
}

// plan freezes r.
func (r *reads) plan() *plan {
	p := &plan{fields: r.fields, all: r.all}
	for _, k := range slices.Sorted(maps.Keys(r.flat)) {
		p.flat = append(p.flat, r.flat[k])
	}
	for _, h := range slices.Sorted(maps.Keys(r.headers)) {
		p.headers = append(p.headers, [2]string{h, headerKey(h)})
	}
	return p
}

// funcNames are the functions every expression may call beside expr's
// built-ins; they shadow payload fields of the same name.
var funcNames = map[string]bool{"header": true, "source": true}

// compileEnv declares our functions for the type checker; payload fields are
// undeclared (any) and nil when absent.
var compileEnv = map[string]any{
	"header": func(string) string { return "" },
	"source": func() string { return "" },
}

func compile(src string, opts ...expr.Option) (*vm.Program, error) {
	vars := map[string]bool{}
	if tree, err := parser.Parse(src); err == nil {
		vars = letVars(tree.Node)
		// Payload fields are never functions, so with undefined variables
		// allowed, expr would accept heder("X") and fail at every event.
		if err := unknownFunction(tree.Node, vars); err != nil {
			return nil, err
		}
	}
	opts = append([]expr.Option{
		expr.Env(compileEnv),
		expr.AllowUndefinedVariables(),
		pathError,
		expr.Patch(&flattener{vars: vars}),
	}, opts...)
	return expr.Compile(src, opts...)
}

// exprError is a compile error of a rule or a dedup key as the message of a
// config problem (see render.ExprError).
func exprError(err error) string { return render.ExprError(err).Error() }

// suggest returns ` (did you mean "x"?)` for the closest known name, if close.
func suggest(name string, known []string) string {
	if best := config.Suggest(name, known); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

// unknownFunction reports the first call of a name that is neither one of
// our functions nor an expr built-in.
func unknownFunction(n ast.Node, vars map[string]bool) error {
	var err error
	inspect(n, func(n ast.Node) bool {
		if err != nil {
			return false
		}
		c, ok := n.(*ast.CallNode)
		if !ok {
			return true
		}
		if id, ok := c.Callee.(*ast.IdentifierNode); ok && !funcNames[id.Value] && !vars[id.Value] {
			if _, isBuiltin := builtin.Index[id.Value]; !isBuiltin {
				known := append(slices.Collect(maps.Keys(funcNames)), builtin.Names...)
				err = fmt.Errorf("unknown function %s()%s", id.Value, suggest(id.Value, known))
				return false
			}
		}
		return true
	})
	return err
}
