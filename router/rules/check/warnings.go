package check

import (
	"fmt"
	"slices"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"

	"github.com/hookrouter/hookrouter/router/config"
)

// Warnings returns what in f is valid but cannot be what its author meant:
//
//   - a rule after a `stop` rule whose `when` is always true: it never runs;
//   - a sink that no rule sends to (shadow rules never deliver);
//   - a shadow rule with stop: true: a shadow rule never stops evaluation.
//
// They do not fail validation or a reload. Expressions that do not compile
// are skipped (they are problems).
func Warnings(f *config.File) config.Problems {
	var ws config.Problems
	stopper := -1
	for i, r := range f.Rules {
		path := fmt.Sprintf("rules[%d]", i)
		if stopper >= 0 {
			s := f.Rules[stopper]
			ws = append(ws, f.Problemf(path, "rule %q is never evaluated: rule %q (rules[%d]) before it has stop: true and a when that is always true",
				r.Name, s.Name, stopper))
			continue
		}
		if r.Shadow && r.Stop {
			ws = append(ws, f.Problemf(path+".stop", "rule %q is a shadow rule: it never stops evaluation, so stop: true has no effect", r.Name))
			continue
		}
		if r.Stop && alwaysTrue(r.When) {
			stopper = i
		}
	}
	sent := map[string]bool{}
	shadowOnly, unreachableOnly := map[string]bool{}, map[string]bool{}
	for i, r := range f.Rules {
		for _, name := range r.To {
			switch {
			case stopper >= 0 && i > stopper:
				unreachableOnly[name] = true
			case r.Shadow:
				shadowOnly[name] = true
			default:
				sent[name] = true
			}
		}
	}
	for _, name := range f.SinkNames() {
		switch {
		case sent[name]:
		case unreachableOnly[name]:
			ws = append(ws, f.Problemf("sinks."+name, "sink %q receives nothing: only rules that are never evaluated send to it", name))
		case shadowOnly[name]:
			ws = append(ws, f.Problemf("sinks."+name, "sink %q receives nothing: only shadow rules name it, and they never deliver", name))
		default:
			ws = append(ws, f.Problemf("sinks."+name, "sink %q receives nothing: no rule sends to it", name))
		}
	}
	ws.Sort()
	return ws
}

// alwaysTrue reports whether when is true for every event: expr's optimizer
// folds it to the constant true, or it is an || with such a side, an && of
// two, or the negation of an always false one.
func alwaysTrue(when string) bool {
	p, err := expr.Compile(when, expr.Env(shapeEnv), expr.AllowUndefinedVariables())
	if err != nil {
		return false
	}
	return constBool(p.Node(), true)
}

func constBool(n ast.Node, want bool) bool {
	switch n := n.(type) {
	case *ast.BoolNode:
		return n.Value == want
	case *ast.UnaryNode:
		if n.Operator == "!" || n.Operator == "not" {
			return constBool(n.Node, !want)
		}
	case *ast.BinaryNode:
		sides := []bool{constBool(n.Left, want), constBool(n.Right, want)}
		switch n.Operator {
		case "||", "or":
			if want {
				return slices.Contains(sides, true)
			}
			return sides[0] && sides[1]
		case "&&", "and":
			if want {
				return sides[0] && sides[1]
			}
			return slices.Contains(sides, true)
		}
	}
	return false
}
