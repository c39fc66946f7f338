package rules

import (
	"errors"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
)

// Flattening: the hot-path trick of this package.
//
// expr reads top-level variables of a map env with a plain map lookup, but
// reads nested members (message.channel.engine) through reflection, which
// allocates on every access. Before type-checking, the compiler rewrites
// every constant member chain into a top-level variable whose value Parse
// computes straight from the JSON:
//
//	message.channel.engine  →  #ok:K ? #p:K : $pathError(#e:K)   (K the chain)
//
// A chain can fail (a member of nil without ?., a member of a string), and
// expr reports that as an error, which makes the rule a non-match; Parse
// computes, per chain, its value (#p), whether it fails (#ok) and the error
// expr would give (#e), so the rewritten rule fails exactly where the
// original would, and only when evaluation reaches it. header("Name") with a constant name and
// source() become variables too. Chains that are not constant (message[k],
// items[0].x) and chains that are the whole expression are left to expr.

// step is one member access of a chain; step 0 is the root variable.
type step struct {
	name     string
	optional bool
}

// flatPath is a flattened chain and its env keys.
type flatPath struct {
	steps                   []step
	valueKey, okKey, errKey string
	id                      int // index among the Set's chains
}

func chainKey(steps []step) string {
	var b strings.Builder
	for i, s := range steps {
		if i > 0 {
			if s.optional {
				b.WriteString("?.")
			} else {
				b.WriteByte('.')
			}
		}
		b.WriteString(s.name)
	}
	return b.String()
}

func newFlatPath(steps []step) *flatPath {
	k := chainKey(steps)
	return &flatPath{steps: steps, valueKey: "#p:" + k, okKey: "#ok:" + k, errKey: "#e:" + k}
}

// headerKey is the env key of a header read with a constant name.
func headerKey(name string) string { return "#h:" + strings.ToLower(name) }

const sourceKey = "#source"

// constChain returns the steps of an identifier followed by member accesses
// with constant names (a.b?.c), rooted at a payload variable.
func constChain(n ast.Node, vars map[string]bool) ([]step, bool) {
	switch n := n.(type) {
	case *ast.IdentifierNode:
		if funcNames[n.Value] || vars[n.Value] || strings.HasPrefix(n.Value, "$") || strings.HasPrefix(n.Value, "#") {
			return nil, false
		}
		return []step{{name: n.Value}}, true
	case *ast.ChainNode:
		return constChain(n.Node, vars)
	case *ast.MemberNode:
		prop, ok := n.Property.(*ast.StringNode)
		if !ok || n.Method {
			return nil, false
		}
		s, ok := constChain(n.Node, vars)
		if !ok {
			return nil, false
		}
		return append(s, step{name: prop.Value, optional: n.Optional}), true
	}
	return nil, false
}

// constHeader reports the name of header("Name") with a constant name.
func constHeader(n ast.Node) (string, bool) {
	c, ok := n.(*ast.CallNode)
	if !ok || len(c.Arguments) != 1 {
		return "", false
	}
	id, ok := c.Callee.(*ast.IdentifierNode)
	if !ok || id.Value != "header" {
		return "", false
	}
	s, ok := c.Arguments[0].(*ast.StringNode)
	if !ok {
		return "", false
	}
	return s.Value, true
}

func isSourceCall(n ast.Node) bool {
	c, ok := n.(*ast.CallNode)
	if !ok || len(c.Arguments) != 0 {
		return false
	}
	id, ok := c.Callee.(*ast.IdentifierNode)
	return ok && id.Value == "source"
}

// slots calls f with every child position of n that holds a value, that is
// every child except the object of a member access (the rest of a chain).
func slots(n ast.Node, f func(*ast.Node)) {
	each := func(ns []ast.Node) {
		for i := range ns {
			f(&ns[i])
		}
	}
	switch n := n.(type) {
	case *ast.UnaryNode:
		f(&n.Node)
	case *ast.BinaryNode:
		f(&n.Left)
		f(&n.Right)
	case *ast.MemberNode:
		f(&n.Property)
	case *ast.SliceNode:
		f(&n.Node)
		if n.From != nil {
			f(&n.From)
		}
		if n.To != nil {
			f(&n.To)
		}
	case *ast.CallNode:
		each(n.Arguments)
	case *ast.BuiltinNode:
		each(n.Arguments)
	case *ast.PredicateNode:
		f(&n.Node)
	case *ast.ConditionalNode:
		f(&n.Cond)
		f(&n.Exp1)
		f(&n.Exp2)
	case *ast.VariableDeclaratorNode:
		f(&n.Value)
		f(&n.Expr)
	case *ast.SequenceNode:
		each(n.Nodes)
	case *ast.ArrayNode:
		each(n.Nodes)
	case *ast.MapNode:
		each(n.Pairs)
	case *ast.PairNode:
		f(&n.Key)
		f(&n.Value)
	}
}

// flattener is the expr.Patch visitor that performs the rewrite. ast.Walk
// visits children before parents, so each node rewrites its own slots: a
// chain is replaced whole, from its parent, never piece by piece.
type flattener struct {
	vars map[string]bool
}

func (f *flattener) Visit(node *ast.Node) {
	slots(*node, func(slot *ast.Node) {
		if name, ok := constHeader(*slot); ok {
			*slot = &ast.IdentifierNode{Value: headerKey(name)}
			return
		}
		if isSourceCall(*slot) {
			*slot = &ast.IdentifierNode{Value: sourceKey}
			return
		}
		steps, ok := constChain(*slot, f.vars)
		if !ok || len(steps) < 2 {
			return
		}
		p := newFlatPath(steps)
		*slot = &ast.ConditionalNode{
			Ternary: true,
			Cond:    &ast.IdentifierNode{Value: p.okKey},
			Exp1:    &ast.IdentifierNode{Value: p.valueKey},
			Exp2: &ast.CallNode{
				Callee:    &ast.IdentifierNode{Value: "$pathError"},
				Arguments: []ast.Node{&ast.IdentifierNode{Value: p.errKey}},
			},
		}
	})
}

// pathError raises, at evaluation, the error Parse found for a chain.
var pathError = expr.Function("$pathError", func(params ...any) (any, error) {
	msg, _ := params[0].(string)
	return nil, errors.New(msg)
}, new(func(any) any))

// letVars returns the names declared with `let` anywhere in n: chains rooted
// at them are not payload paths.
func letVars(n ast.Node) map[string]bool {
	vars := map[string]bool{}
	inspect(n, func(n ast.Node) bool {
		if v, ok := n.(*ast.VariableDeclaratorNode); ok {
			vars[v.Name] = true
		}
		return true
	})
	return vars
}

// inspect calls visit for n and then, while visit returns true, for the
// nodes below n: the object of a member access and every slot, not a call's
// callee.
func inspect(n ast.Node, visit func(ast.Node) bool) {
	if n == nil || !visit(n) {
		return
	}
	switch m := n.(type) {
	case *ast.MemberNode:
		inspect(m.Node, visit)
	case *ast.ChainNode:
		inspect(m.Node, visit)
	}
	slots(n, func(s *ast.Node) { inspect(*s, visit) })
}
