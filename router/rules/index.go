package rules

import (
	"slices"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
)

// eventConstraint returns the event values a `when` expression can possibly
// match, or nil when it does not constrain `event`. Only shapes whose meaning
// is certain are recognised: event == "x", "x" == event, event in ["x", "y"],
// and && / || of those. Skipping a rule the index rules out changes no
// routing: such a rule would have evaluated to false.
func eventConstraint(src string) []string {
	tree, err := parser.Parse(src)
	if err != nil {
		return nil
	}
	return constraint(tree.Node)
}

func constraint(n ast.Node) []string {
	b, ok := n.(*ast.BinaryNode)
	if !ok {
		return nil
	}
	switch b.Operator {
	case "==":
		if isEvent(b.Left) {
			if s, ok := b.Right.(*ast.StringNode); ok {
				return []string{s.Value}
			}
		}
		if isEvent(b.Right) {
			if s, ok := b.Left.(*ast.StringNode); ok {
				return []string{s.Value}
			}
		}
	case "in":
		arr, ok := b.Right.(*ast.ArrayNode)
		if !isEvent(b.Left) || !ok {
			return nil
		}
		var out []string
		for _, x := range arr.Nodes {
			s, ok := x.(*ast.StringNode)
			if !ok || s.Value == "" {
				// expr finds an absent event (nil) in a list holding
				// "": such a rule can match events of no event value.
				return nil
			}
			out = append(out, s.Value)
		}
		if out == nil {
			out = []string{} // `event in []` matches nothing
		}
		return out
	case "&&", "and":
		l, r := constraint(b.Left), constraint(b.Right)
		switch {
		case l == nil:
			return r
		case r == nil:
			return l
		}
		out := []string{}
		for _, x := range l {
			if slices.Contains(r, x) {
				out = append(out, x)
			}
		}
		return out
	case "||", "or":
		l, r := constraint(b.Left), constraint(b.Right)
		if l == nil || r == nil {
			return nil
		}
		out := slices.Clone(l)
		for _, x := range r {
			if !slices.Contains(out, x) {
				out = append(out, x)
			}
		}
		return out
	}
	return nil
}

func isEvent(n ast.Node) bool {
	id, ok := n.(*ast.IdentifierNode)
	return ok && id.Value == "event"
}
