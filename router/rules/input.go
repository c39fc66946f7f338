package rules

import (
	"errors"
	"fmt"

	"github.com/expr-lang/expr/vm"
	"github.com/valyala/fastjson"
)

// Headers gives read access to the request's headers; fasthttp's
// *RequestHeader satisfies it. Lookups are case-insensitive.
type Headers interface {
	Peek(key string) []byte
}

// ErrNotObject is returned by Input.Parse for a body that is valid JSON but
// not a JSON object.
var ErrNotObject = errors.New("payload is not a JSON object")

// Input is the per-request state of evaluation: the parsed body, the fields
// extracted for expressions, a VM, and the match result. Get one from
// Set.Acquire and give it back with Set.Release; never share one between
// goroutines.
type Input struct {
	set    *Set
	parser fastjson.Parser
	numBuf []byte // scratch for strict
	root   *fastjson.Value
	body   []byte
	env    map[string]any
	vm     vm.VM
	hdr    Headers
	source string
	keyBuf []byte
	bits   []uint64

	obj   *fastjson.Object // the body's top level
	cands *candidates      // the rules this event can match
	// filled is the plan the env holds this event's values for, nil until
	// something reads the env (see Parse).
	filled *plan
	// okState caches, per chain (flatPath.id), the #ok value in the env:
	// a chain that succeeded last time usually does again, and a map write
	// is the dearest part of flattening.
	okState []okState

	// Made once per Input: a method value or a string stored in an
	// interface allocates each time it is made.
	headerFn, sourceFn, sourceBox any

	// Result of the latest Match; valid until the next Match or Release.
	Result Result
}

// Result is what Match decided for one event.
type Result struct {
	// Matched lists the indexes (into Set.Rules) of matching delivering rules.
	Matched []int
	// Shadow lists the indexes of matching shadow rules.
	Shadow []int
	// Errors holds the rules that failed at run time; each counts as no match.
	Errors []RuleError
	// To is the union of the matching rules' sinks, each once, in the order
	// the rules name them.
	To []string
}

// RuleError is a run-time failure of one rule's expression. Err may refer to
// the payload's bytes: like the rest of Result, it is valid until Release.
type RuleError struct {
	Rule int
	Err  error
}

func newInput(s *Set) *Input {
	in := &Input{set: s, env: make(map[string]any, 16), bits: make([]uint64, (len(s.Sinks)+63)/64), okState: make([]okState, s.nPaths)}
	in.headerFn, in.sourceFn = in.header, in.sourceName
	in.resetEnv()
	return in
}

// Acquire returns an Input for one request, from a pool.
func (s *Set) Acquire(source string, h Headers) *Input {
	in := s.pool.Get().(*Input)
	if in.sourceBox == nil || in.source != source {
		in.sourceBox = source
	}
	in.source, in.hdr = source, h
	return in
}

// Release returns in to its pool. Nothing obtained from it may be used after.
//
// The env is not cleared: unless the Set reads $env, every fill of a plan
// writes the same keys (absent fields as nil, which expr cannot tell from a
// missing key), so the previous event's values are overwritten, not left
// behind. An event that no rule can match and whose dedup key is the default
// fills nothing, and leaves an older event's values, which nothing reads:
// every reader of the env (the VM in Match, DedupKey, Trace) first fills it
// for this event with a plan covering what it reads.
func (s *Set) Release(in *Input) {
	in.hdr, in.body, in.root, in.obj, in.cands, in.filled = nil, nil, nil, nil, nil, nil
	s.pool.Put(in)
}

func (in *Input) resetEnv() {
	clear(in.env)
	clear(in.okState)
	in.setFuncs()
}

// okState is what the env holds at a chain's #ok key.
type okState uint8

const (
	okUnset okState = iota
	okTrue
	okFalse
)

// setOK sets a chain's #ok key in the env, unless it already holds ok.
func (in *Input) setOK(p *flatPath, ok bool) {
	st := okFalse
	if ok {
		st = okTrue
	}
	if in.okState[p.id] != st {
		in.env[p.okKey] = ok
		in.okState[p.id] = st
	}
}

// setFuncs puts the functions expressions call in the env, over payload
// fields of the same names if there were any.
func (in *Input) setFuncs() {
	in.env["header"], in.env["source"] = in.headerFn, in.sourceFn
}

func (in *Input) header(name string) string {
	if in.hdr == nil {
		return ""
	}
	return string(in.hdr.Peek(name))
}

func (in *Input) sourceName() string { return in.source }

// Parse validates body as a JSON object (RFC 8259) and picks the rules its
// event can match; the fields their expressions read are extracted when the
// VM first needs them. body must stay unmodified until Release.
//
// Strings in the env alias the parser's copy of the body (see toValue): they
// are valid until the next Parse of this Input, hence until Release. Nothing
// derived from them may outlive Release unless copied; DedupKey copies its
// result, and rule errors, which may quote the payload, are only valid until
// Release, like the rest of Result.
func (in *Input) Parse(body []byte) error {
	v, err := in.parser.ParseBytes(body)
	if err != nil {
		return err
	}
	// fastjson's parser is lenient where its validator is not: it takes raw
	// control characters in strings, unknown escapes and malformed numbers.
	// Such a body is not JSON; accepted, it would reach every sink (a file
	// sink's line that readers cannot parse) or fail only at delivery.
	if err := strict(body, v, &in.numBuf); err != nil {
		return err
	}
	obj, err := v.Object()
	if err != nil {
		return ErrNotObject
	}
	in.root, in.body, in.obj, in.filled = v, body, obj, nil
	s := in.set
	in.cands = s.anyEvent
	if ev := lookup(obj, "event"); ev != nil && ev.Type() == fastjson.TypeString {
		b, _ := ev.StringBytes()
		if c, ok := s.byEvent[string(b)]; ok {
			in.cands = c
		}
	}
	// The VM will read the env for the candidate rules: fill it now. An
	// event that no rule can match, with the default dedup key, never
	// builds it (ensureEnv fills it when something else reads it).
	if len(in.cands.rules) > 0 {
		in.fill(in.cands.plan)
	}
	return nil
}

// ensureEnv fills the env for this event's candidate rules and dedup key,
// unless it already holds this event's values (for them, or for all rules).
func (in *Input) ensureEnv() {
	if in.filled == nil {
		in.fill(in.cands.plan)
	}
}

// fill computes what p asks for into the env.
func (in *Input) fill(p *plan) {
	in.filled = p
	if p.all {
		// The payload's own keys are in the env: drop the last event's.
		in.resetEnv()
	}
	extract(in.env, in.obj, p.fields, p.all)
	// Chains are sorted, so chains from the same root are mostly adjacent.
	var rootName string
	var root *fastjson.Value
	for _, fp := range p.flat {
		if name := fp.steps[0].name; root == nil || name != rootName {
			rootName, root = name, lookup(in.obj, name)
		}
		in.flatten(fp, root)
	}
	for _, h := range p.headers {
		in.env[h[1]] = in.header(h[0])
	}
	in.env[sourceKey] = in.sourceBox
	if p.all {
		in.setFuncs()
	}
}

// flatten computes a flattened chain's value, or the error expr would
// raise evaluating it (see flatten.go), from v, the value of its root.
func (in *Input) flatten(p *flatPath, v *fastjson.Value) {
	for _, st := range p.steps[1:] {
		if v == nil || v.Type() == fastjson.TypeNull {
			if st.optional {
				v = nil
				break
			}
			in.setOK(p, false)
			in.env[p.errKey] = "cannot fetch " + st.name + " from <nil>"
			return
		}
		if v.Type() != fastjson.TypeObject {
			in.setOK(p, false)
			in.env[p.errKey] = "cannot fetch " + st.name + " from " + v.Type().String()
			return
		}
		o, _ := v.Object()
		v = lookup(o, st.name)
	}
	if v == nil {
		in.env[p.valueKey] = nil
	} else {
		in.env[p.valueKey] = toValue(v)
	}
	in.setOK(p, true)
}

// Event returns the payload's top-level "event" string, or "" if absent.
func (in *Input) Event() string {
	v := lookup(in.obj, "event")
	if v == nil || v.Type() != fastjson.TypeString {
		return ""
	}
	b, _ := v.StringBytes()
	return string(b)
}

// Match evaluates the rules that can match this event, in order, and fills
// in.Result. A rule failing at run time is recorded in Result.Errors and
// counts as no match; it never fails the event.
func (in *Input) Match() *Result {
	s := in.set
	r := &in.Result
	r.Matched, r.Shadow, r.Errors, r.To = r.Matched[:0], r.Shadow[:0], r.Errors[:0], r.To[:0]
	clear(in.bits)

	candidates := in.cands.rules
	if len(candidates) > 0 {
		in.ensureEnv()
	}
	for _, i := range candidates {
		rule := &s.Rules[i]
		ok, err := in.eval(rule)
		if err != nil {
			r.Errors = append(r.Errors, RuleError{Rule: int(i), Err: err})
			continue
		}
		if !ok {
			continue
		}
		if rule.Shadow {
			r.Shadow = append(r.Shadow, int(i))
			continue
		}
		r.Matched = append(r.Matched, int(i))
		for _, t := range rule.to {
			if in.bits[t/64]&(1<<(t%64)) == 0 {
				in.bits[t/64] |= 1 << (t % 64)
				r.To = append(r.To, s.Sinks[t])
			}
		}
		if rule.Stop {
			break
		}
	}
	return r
}

// eval runs a rule's program on the env, which must hold this event's
// values.
func (in *Input) eval(rule *Rule) (bool, error) {
	out, err := in.vm.Run(rule.program, in.env)
	if err != nil {
		return false, err
	}
	b, ok := out.(bool)
	if !ok {
		return false, fmt.Errorf("expected bool, got %T", out)
	}
	return b, nil
}

// TraceEntry is one rule's outcome in Trace.
type TraceEntry struct {
	Rule   int
	Result bool
	Err    error
}

// Trace evaluates every rule in order, ignoring the event index and `stop`,
// for `hookrouter test`'s per-rule report. Routing uses Match.
func (in *Input) Trace() []TraceEntry {
	if in.filled != in.set.full {
		in.fill(in.set.full)
	}
	out := make([]TraceEntry, len(in.set.Rules))
	for i := range in.set.Rules {
		ok, err := in.eval(&in.set.Rules[i])
		out[i] = TraceEntry{Rule: i, Result: ok, Err: err}
	}
	return out
}
