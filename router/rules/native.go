package rules

import (
	"maps"
	"math"
	"strings"
	"unsafe"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/parser"
	"github.com/valyala/fastjson"
)

// Native evaluation: the common predicates without the VM.
//
// Most rules are comparisons of payload paths, headers and literals joined
// by && and ||. For those, the env that the VM reads costs more than the
// rule: every path flattened into a map, every string boxed. A rule whose
// `when` uses only the nodes below also gets, at compile time, a tree of
// closures that reads its values straight from the parsed JSON.
//
// A native evaluation gives true, false, or undecided. It is undecided
// wherever expr would raise an error (a member of nil without ?., contains
// on a number, ! on a string, a result that is not bool) and wherever its
// result is not certain to be expr's (an object or array compared with
// anything but nil). An undecided rule is evaluated by the VM, as if it had
// no native form, so that its error, or its result, is expr's own. The
// expr program is compiled and type-checked exactly as without this, and a
// rule that fails type-checking never gets here.
//
// Values follow toValue, the conversion the VM's env is made with: a JSON
// number is int when fastjson's Int succeeds, else float64; strings are
// fastjson's unescaped bytes. Operators follow expr's runtime: ==
// (runtime.Equal), in (runtime.In, after the optimizer's rewrite of an array
// of strings into a set), contains, ?? and short-circuit && and || as the
// compiler emits them.

// nkind is the kind of a native value.
type nkind uint8

const (
	nNil nkind = iota
	nBool
	nInt
	nFloat
	nString
	nObject // a JSON object: a map in the VM
	nArray  // a JSON array: a slice in the VM
)

// nval is a value as the VM would see it, without its contents for objects
// and arrays, which native evaluation never looks into.
type nval struct {
	kind nkind
	b    bool
	i    int
	f    float64
	// s aliases the payload (see toValue), a header, or Input.lowerBuf:
	// it is only compared, never kept.
	s string
}

// nexpr evaluates a node for the event parsed into in; ok is false when the
// result is undecided.
type nexpr func(in *Input) (v nval, ok bool)

// undecided is the value that goes with ok == false; it means nothing.
var undecided = nval{}

// nativeBuilder builds the native forms of a Set's rules.
type nativeBuilder struct {
	// roots numbers the payload variables that native forms read: their
	// values are looked up once per event (see Input.rootValue).
	roots map[string]int
}

// build returns the native form of a `when` expression, or nil if some
// node of it is outside the subset.
func (b *nativeBuilder) build(src string) nexpr {
	tree, err := parser.Parse(src)
	if err != nil {
		return nil
	}
	// Number the roots of this expression only if it has a native form.
	nb := &nativeBuilder{roots: maps.Clone(b.roots)}
	f, ok := nb.node(tree.Node)
	if !ok {
		return nil
	}
	b.roots = nb.roots
	return f
}

// maxLowerBuf is the largest Input.lowerBuf kept between evaluations.
const maxLowerBuf = 64 << 10

// evalNative runs a rule's native form: (result, true), or (_, false) when
// the VM must decide.
func (in *Input) evalNative(f nexpr) (result, decided bool) {
	in.lowerBuf = in.lowerBuf[:0]
	v, ok := f(in)
	if cap(in.lowerBuf) > maxLowerBuf {
		// Do not keep, in every pooled Input, the size of the longest text
		// ever lowered.
		in.lowerBuf = nil
	}
	if !ok || v.kind != nBool {
		// expr fails a rule whose result is not bool.
		return false, false
	}
	return v.b, true
}

func constant(v nval) nexpr {
	return func(*Input) (nval, bool) { return v, true }
}

// node builds n's native form; false if n or a node below is outside the
// subset.
func (b *nativeBuilder) node(n ast.Node) (nexpr, bool) {
	if v, ok := literal(n); ok {
		return constant(v), true
	}
	switch n := n.(type) {
	case *ast.IdentifierNode, *ast.MemberNode, *ast.ChainNode:
		steps, ok := nativeChain(n)
		if !ok {
			return nil, false
		}
		return b.chain(steps), true
	case *ast.CallNode:
		if name, ok := constHeader(n); ok {
			return headerExpr(name), true
		}
		if isSourceCall(n) {
			return func(in *Input) (nval, bool) { return nval{kind: nString, s: in.source}, true }, true
		}
	case *ast.BuiltinNode:
		if n.Name == "lower" && len(n.Arguments) == 1 {
			if x, ok := b.node(n.Arguments[0]); ok {
				return lowerExpr(x), true
			}
		}
	case *ast.UnaryNode:
		return b.unary(n)
	case *ast.BinaryNode:
		return b.binary(n)
	case *ast.ConditionalNode:
		cond, ok1 := b.node(n.Cond)
		yes, ok2 := b.node(n.Exp1)
		no, ok3 := b.node(n.Exp2)
		if !ok1 || !ok2 || !ok3 {
			return nil, false
		}
		return func(in *Input) (nval, bool) {
			v, ok := cond(in)
			if !ok || v.kind != nBool {
				return undecided, false
			}
			if v.b {
				return yes(in)
			}
			return no(in)
		}, true
	}
	return nil, false
}

// literal returns the value of a literal node: nil, bool, number (signed
// or not: the optimizer folds -1 into a literal), string.
func literal(n ast.Node) (nval, bool) {
	switch n := n.(type) {
	case *ast.NilNode:
		return nval{}, true
	case *ast.BoolNode:
		return nval{kind: nBool, b: n.Value}, true
	case *ast.IntegerNode:
		return nval{kind: nInt, i: n.Value}, true
	case *ast.FloatNode:
		return nval{kind: nFloat, f: n.Value}, true
	case *ast.StringNode:
		return nval{kind: nString, s: n.Value}, true
	case *ast.UnaryNode:
		if v, ok := literal(n.Node); ok && (n.Operator == "-" || n.Operator == "+") {
			switch {
			case v.kind == nInt && n.Operator == "-":
				v.i = -v.i
			case v.kind == nFloat && n.Operator == "-":
				v.f = -v.f
			case v.kind != nInt && v.kind != nFloat:
				return nval{}, false
			}
			return v, true
		}
	}
	return nval{}, false
}

func (b *nativeBuilder) unary(n *ast.UnaryNode) (nexpr, bool) {
	switch n.Operator {
	case "!", "not":
		x, ok := b.node(n.Node)
		if !ok {
			return nil, false
		}
		return func(in *Input) (nval, bool) {
			v, ok := x(in)
			if !ok || v.kind != nBool {
				return undecided, false
			}
			return nval{kind: nBool, b: !v.b}, true
		}, true
	}
	// A signed number literal is one for literal(); a signed variable is
	// outside the subset.
	return nil, false
}

func (b *nativeBuilder) binary(n *ast.BinaryNode) (nexpr, bool) {
	if n.Operator == "in" {
		return b.in(n)
	}
	l, ok1 := b.node(n.Left)
	r, ok2 := b.node(n.Right)
	if !ok1 || !ok2 {
		return nil, false
	}
	switch n.Operator {
	case "&&", "and":
		// The VM jumps on the left operand, which must be bool, and
		// otherwise leaves the right one as the result, bool or not.
		return func(in *Input) (nval, bool) {
			v, ok := l(in)
			if !ok || v.kind != nBool {
				return undecided, false
			}
			if !v.b {
				return v, true
			}
			return r(in)
		}, true
	case "||", "or":
		return func(in *Input) (nval, bool) {
			v, ok := l(in)
			if !ok || v.kind != nBool {
				return undecided, false
			}
			if v.b {
				return v, true
			}
			return r(in)
		}, true
	case "??":
		return func(in *Input) (nval, bool) {
			v, ok := l(in)
			if !ok || v.kind != nNil {
				return v, ok
			}
			return r(in)
		}, true
	case "==", "!=":
		not := n.Operator == "!="
		// Equal is symmetric, and a literal can neither fail nor change.
		if lit, ok := literal(n.Right); ok {
			return b.equalLiteral(n.Left, l, lit, not), true
		}
		if lit, ok := literal(n.Left); ok {
			return b.equalLiteral(n.Right, r, lit, not), true
		}
		return operands(l, r, func(a, c nval) (nval, bool) {
			eq, ok := equal(a, c)
			return nval{kind: nBool, b: eq != not}, ok
		}), true
	case "<", "<=", ">", ">=":
		var holds func(c int) bool
		switch n.Operator {
		case "<":
			holds = func(c int) bool { return c < 0 }
		case "<=":
			holds = func(c int) bool { return c <= 0 }
		case ">":
			holds = func(c int) bool { return c > 0 }
		default:
			holds = func(c int) bool { return c >= 0 }
		}
		return operands(l, r, func(a, c nval) (nval, bool) {
			cmp, ok := compare(a, c)
			if !ok {
				return undecided, false
			}
			return nval{kind: nBool, b: holds(cmp)}, true
		}), true
	case "contains", "startsWith", "endsWith":
		var op func(s, x string) bool
		switch n.Operator {
		case "contains":
			op = strings.Contains
		case "startsWith":
			op = strings.HasPrefix
		default:
			op = strings.HasSuffix
		}
		return operands(l, r, func(a, c nval) (nval, bool) {
			// The VM's OpContains and its kin: false with a nil operand,
			// else both must be strings.
			if a.kind == nNil || c.kind == nNil {
				return nval{kind: nBool}, true
			}
			if a.kind != nString || c.kind != nString {
				return undecided, false
			}
			return nval{kind: nBool, b: op(a.s, c.s)}, true
		}), true
	}
	return nil, false
}

// operands evaluates l, then r, as the VM does, and gives both values to
// op; undecided if either is.
func operands(l, r nexpr, op func(a, c nval) (nval, bool)) nexpr {
	return func(in *Input) (nval, bool) {
		a, ok := l(in)
		if !ok {
			return undecided, false
		}
		c, ok := r(in)
		if !ok {
			return undecided, false
		}
		return op(a, c)
	}
}

// in builds x in [literals...]. expr's optimizer turns a non-empty
// array of strings into a set, which the VM indexes with x: a string is
// looked up, nil looks up "" (reflect's zero key), anything else panics.
// Any other array stays a slice, searched with runtime.Equal.
func (b *nativeBuilder) in(n *ast.BinaryNode) (nexpr, bool) {
	arr, ok := n.Right.(*ast.ArrayNode)
	if !ok {
		return nil, false
	}
	x, ok := b.node(n.Left)
	if !ok {
		return nil, false
	}
	elems := make([]nval, len(arr.Nodes))
	allStrings := len(arr.Nodes) > 0
	for i, e := range arr.Nodes {
		v, ok := literal(e)
		if !ok {
			return nil, false
		}
		if _, isString := e.(*ast.StringNode); !isString {
			allStrings = false
		}
		elems[i] = v
	}
	if allStrings {
		set := make(map[string]bool, len(elems))
		for _, e := range elems {
			set[e.s] = true
		}
		return func(in *Input) (nval, bool) {
			v, ok := x(in)
			if !ok {
				return undecided, false
			}
			switch v.kind {
			case nString:
				return nval{kind: nBool, b: set[v.s]}, true
			case nNil:
				return nval{kind: nBool, b: set[""]}, true
			}
			return undecided, false
		}, true
	}
	return func(in *Input) (nval, bool) {
		v, ok := x(in)
		if !ok {
			return undecided, false
		}
		for _, e := range elems {
			eq, ok := equal(e, v)
			if !ok {
				return undecided, false
			}
			if eq {
				return nval{kind: nBool, b: true}, true
			}
		}
		return nval{kind: nBool}, true
	}, true
}

// equalLiteral is x == lit (x != lit if not), the commonest comparison,
// without evaluating lit; and with a string, without equal's cases. n is
// x's node.
func (b *nativeBuilder) equalLiteral(n ast.Node, x nexpr, lit nval, not bool) nexpr {
	if lit.kind == nString {
		if steps, ok := nativeChain(n); ok {
			return chainEqualsString(b.chainRef(steps), lit.s, not)
		}
		return func(in *Input) (nval, bool) {
			v, ok := x(in)
			if !ok || v.kind >= nObject {
				return undecided, false
			}
			return nval{kind: nBool, b: (v.kind == nString && v.s == lit.s) != not}, true
		}
	}
	return func(in *Input) (nval, bool) {
		v, ok := x(in)
		if !ok {
			return undecided, false
		}
		eq, ok := equal(v, lit)
		return nval{kind: nBool, b: eq != not}, ok
	}
}

// equal is runtime.Equal on native values: numbers compare as numbers (int
// with float64 as float64), other different kinds are unequal, nil equals
// nil. An object or an array is unequal to nil (the VM's maps and slices
// are never nil) and undecided against anything else.
func equal(a, b nval) (eq, ok bool) {
	if a.kind >= nObject || b.kind >= nObject {
		if a.kind == nNil || b.kind == nNil {
			return false, true
		}
		return false, false
	}
	switch {
	case a.kind == nInt && b.kind == nInt:
		return a.i == b.i, true
	case isNumber(a) && isNumber(b):
		return a.float() == b.float(), true
	case a.kind != b.kind:
		return false, true
	}
	switch a.kind {
	case nString:
		return a.s == b.s, true
	case nBool:
		return a.b == b.b, true
	}
	return true, true // both nil
}

// compare orders two numbers, or two strings, as runtime.Less and its kin
// do; any other pair makes them panic.
func compare(a, b nval) (int, bool) {
	switch {
	case a.kind == nInt && b.kind == nInt:
		return cmpOf(a.i < b.i, a.i > b.i), true
	case isNumber(a) && isNumber(b):
		x, y := a.float(), b.float()
		return cmpOf(x < y, x > y), true
	case a.kind == nString && b.kind == nString:
		return strings.Compare(a.s, b.s), true
	}
	return 0, false
}

// cmpOf turns two comparisons into -1, 0 or 1; NaN, which JSON cannot
// hold, would compare equal.
func cmpOf(less, more bool) int {
	switch {
	case less:
		return -1
	case more:
		return 1
	}
	return 0
}

func isNumber(v nval) bool { return v.kind == nInt || v.kind == nFloat }

func (v nval) float() float64 {
	if v.kind == nInt {
		return float64(v.i)
	}
	return v.f
}

// nativeChain returns the steps of a payload variable followed by member
// accesses with constant names, as constChain, but stricter: a ChainNode
// only around the whole chain (where the parser puts it), no name that the
// env or the checker gives another meaning (our functions, expr's
// built-ins, $env, $ and # names), and no let variables (a let is not in
// the subset, so an expression with native form declares none).
func nativeChain(n ast.Node) ([]step, bool) {
	if c, ok := n.(*ast.ChainNode); ok {
		n = c.Node
	}
	return chainSteps(n)
}

func chainSteps(n ast.Node) ([]step, bool) {
	switch n := n.(type) {
	case *ast.IdentifierNode:
		name := n.Value
		if _, isBuiltin := builtin.Index[name]; isBuiltin || funcNames[name] || strings.HasPrefix(name, "$") || strings.HasPrefix(name, "#") {
			return nil, false
		}
		return []step{{name: name}}, true
	case *ast.MemberNode:
		prop, ok := n.Property.(*ast.StringNode)
		if !ok || n.Method {
			return nil, false
		}
		s, ok := chainSteps(n.Node)
		if !ok {
			return nil, false
		}
		return append(s, step{name: prop.Value, optional: n.Optional}), true
	}
	return nil, false
}

// chainRef is a chain that native forms read: its root variable, numbered
// among the Set's (see Input.rootValue), and its members.
type chainRef struct {
	root int
	name string
	rest []step
}

func (b *nativeBuilder) chainRef(steps []step) *chainRef {
	root, ok := b.roots[steps[0].name]
	if !ok {
		root = len(b.roots)
		b.roots[steps[0].name] = root
	}
	return &chainRef{root: root, name: steps[0].name, rest: steps[1:]}
}

// value reads the chain from the payload as flatten does: a member of nil
// is nil after ?. (the whole chain is) and an error without; a member of
// anything but an object is an error. ok is false for an error; v is nil
// for an absent value.
func (c *chainRef) value(in *Input) (v *fastjson.Value, ok bool) {
	v = in.rootValue(c.root, c.name)
	for _, st := range c.rest {
		if v == nil || v.Type() == fastjson.TypeNull {
			return nil, st.optional
		}
		o, err := v.Object()
		if err != nil {
			return nil, false
		}
		v = o.Get(st.name)
	}
	return v, true
}

func (b *nativeBuilder) chain(steps []step) nexpr {
	c := b.chainRef(steps)
	return func(in *Input) (nval, bool) {
		v, ok := c.value(in)
		if !ok {
			return undecided, false
		}
		return in.jsonValue(v), true
	}
}

// chainEqualsString is c == lit (c != lit if not): equalLiteral without
// making a value of c's.
func chainEqualsString(c *chainRef, lit string, not bool) nexpr {
	return func(in *Input) (nval, bool) {
		v, ok := c.value(in)
		if !ok {
			return undecided, false
		}
		eq := false
		if v != nil {
			switch v.Type() {
			case fastjson.TypeString:
				s, _ := v.StringBytes()
				eq = string(s) == lit
			case fastjson.TypeObject, fastjson.TypeArray:
				return undecided, false
			}
		}
		return nval{kind: nBool, b: eq != not}, true
	}
}

// rootValue returns the payload's top-level field name, number i among
// those native forms read, looked up once per event: most rules read event.
func (in *Input) rootValue(i int, name string) *fastjson.Value {
	if !in.rootRead[i] {
		in.roots[i], in.rootRead[i] = in.obj.Get(name), true
	}
	return in.roots[i]
}

// jsonValue is toValue for native evaluation: the same kinds and numbers,
// without allocating.
func (in *Input) jsonValue(v *fastjson.Value) nval {
	if v == nil {
		return nval{}
	}
	switch v.Type() {
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return nval{kind: nString, s: unsafe.String(unsafe.SliceData(b), len(b))}
	case fastjson.TypeNumber:
		// v.Int() succeeds exactly when the number's text is an integer
		// that fits in an int; asked of any other number, it allocates
		// its error.
		in.numBuf = v.MarshalTo(in.numBuf[:0])
		if i, ok := parseInt(in.numBuf); ok {
			return nval{kind: nInt, i: i}
		}
		f, _ := v.Float64()
		return nval{kind: nFloat, f: f}
	case fastjson.TypeTrue:
		return nval{kind: nBool, b: true}
	case fastjson.TypeFalse:
		return nval{kind: nBool}
	case fastjson.TypeObject:
		return nval{kind: nObject}
	case fastjson.TypeArray:
		return nval{kind: nArray}
	}
	return nval{}
}

// parseInt parses b, an optional minus and decimal digits only, into an
// int, which must hold it: the numbers fastjson's Value.Int takes.
func parseInt(b []byte) (int, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		if c < '0' || c > '9' || u > (math.MaxUint64-9)/10 {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
	}
	switch {
	case !neg && u <= math.MaxInt:
		return int(u), true
	case neg && u <= -math.MinInt:
		return int(-u), true // -u wraps to MinInt for u = -MinInt
	}
	return 0, false
}

// headerExpr reads a header as header() does: "" when absent.
func headerExpr(name string) nexpr {
	return func(in *Input) (nval, bool) {
		var b []byte
		if in.hdr != nil {
			b = in.hdr.Peek(name)
		}
		return nval{kind: nString, s: unsafe.String(unsafe.SliceData(b), len(b))}, true
	}
}

// lowerExpr is expr's lower(): strings.ToLower of a string, an error for
// anything else. The result is built in in.lowerBuf, emptied before each
// rule: appending never moves what an earlier string of the same rule
// points to (a grown buffer is a new array; the old one stays as it was).
func lowerExpr(x nexpr) nexpr {
	return func(in *Input) (nval, bool) {
		v, ok := x(in)
		if !ok || v.kind != nString {
			return undecided, false
		}
		start := len(in.lowerBuf)
		in.lowerBuf = appendLower(in.lowerBuf, v.s)
		b := in.lowerBuf[start:]
		return nval{kind: nString, s: unsafe.String(unsafe.SliceData(b), len(b))}, true
	}
}
