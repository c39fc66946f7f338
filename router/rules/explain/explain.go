// Package explain says why a rule did or did not match an event: the value
// of each part of its `when`, e.g.
//
//	event == "channel.message_in" → true
//	message.channel.engine == "wa" → false (message.channel.engine is "ig")
//
// It walks the expression's syntax tree (expr-lang/expr's parser and ast
// packages) down its && / || / ! structure, and evaluates each part, and each
// side of a comparison that is not a literal, with expr over the payload —
// the same functions (header, source) and the same nil for an absent field
// as the router. It is for people: `hookrouter test -explain`, the journal's
// record of a rule that errored, the console's tester. Routing never uses it.
package explain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
)

// Part is one part of a `when` and its value for the event.
type Part struct {
	// Expr is the part, as expr prints it.
	Expr string `json:"expr"`
	// Value is its value (true, false, or what a non-bool part gives); nil
	// when it failed.
	Value any `json:"value"`
	// Error is why it failed, when it did.
	Error string `json:"error,omitempty"`
	// Depth is how deep in the && / || / ! structure the part is: 0 for the
	// operands of the top-level operator.
	Depth int `json:"depth"`
	// Operands are the values of the sides of a comparison (or the argument
	// of a function) that are not literals: what the part compared.
	Operands []Operand `json:"operands,omitempty"`
	// Text is the whole line for people: `EXPR → VALUE (OPERAND is VALUE)`.
	Text string `json:"text"`
}

// Operand is the value of one side of a comparison.
type Operand struct {
	Expr  string `json:"expr"`
	Value any    `json:"value"`
	Error string `json:"error,omitempty"`
}

// Explainer explains rules for one event. It is not safe for concurrent use.
type Explainer struct {
	env map[string]any
}

// New decodes the event's JSON object body once, for any number of rules.
// header looks a request header up (nil: none); source is the source's name.
// Integral numbers are ints and others float64, as the router's rules see
// them.
func New(body []byte, header func(name string) string, source string) (*Explainer, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid payload: %w", err)
	}
	obj, ok := numbers(v).(map[string]any)
	if !ok {
		return nil, errors.New("invalid payload: not a JSON object")
	}
	if header == nil {
		header = func(string) string { return "" }
	}
	// The functions hide payload fields of the same name, as in rules.
	obj["header"] = header
	obj["source"] = func() string { return source }
	return &Explainer{env: obj}, nil
}

// numbers turns json.Numbers into ints when integral, else float64.
func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil && int64(int(i)) == i {
			return int(i)
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	}
	return v
}

// compileEnv declares the functions for the type checker; payload fields
// are undeclared and nil when absent, as in the router.
var compileEnv = map[string]any{
	"header": func(string) string { return "" },
	"source": func() string { return "" },
}

// Explain returns the parts of when and their values. A `when` whose top is
// not &&, || or ! is one part. A `when` that does not parse is one part
// with the error.
func (x *Explainer) Explain(when string) []Part {
	tree, err := parser.Parse(when)
	if err != nil {
		p := Part{Expr: when, Error: firstLine(err.Error())}
		p.Text = text(p)
		return []Part{p}
	}
	var parts []Part
	x.walk(tree.Node, 0, &parts, "top")
	return parts
}

// walk appends the parts of n. outer is the logical operator n is an
// operand of: a && b && c is one level of three parts, not a nested pair;
// "top" for the whole `when`, whose value is the rule's result.
func (x *Explainer) walk(n ast.Node, depth int, out *[]Part, outer string) {
	switch n := n.(type) {
	case *ast.BinaryNode:
		if op := logical(n.Operator); op != "" {
			if outer != "top" && outer != op {
				*out = append(*out, x.part(n, depth))
				depth++
			}
			x.walk(n.Left, depth, out, op)
			x.walk(n.Right, depth, out, op)
			return
		}
	case *ast.UnaryNode:
		if n.Operator == "!" || n.Operator == "not" {
			*out = append(*out, x.part(n, depth))
			x.walk(n.Node, depth+1, out, "!")
			return
		}
	}
	*out = append(*out, x.leaf(n, depth))
}

// logical returns && or || for the operators that spell them, else "".
func logical(op string) string {
	switch op {
	case "&&", "and":
		return "&&"
	case "||", "or":
		return "||"
	}
	return ""
}

func (x *Explainer) part(n ast.Node, depth int) Part {
	p := Part{Expr: n.String(), Depth: depth}
	p.Value, p.Error = x.eval(p.Expr)
	p.Text = text(p)
	return p
}

// leaf is a part with the operands it compares.
func (x *Explainer) leaf(n ast.Node, depth int) Part {
	p := x.part(n, depth)
	var sides []ast.Node
	switch n := n.(type) {
	case *ast.BinaryNode:
		sides = []ast.Node{n.Left, n.Right}
	case *ast.BuiltinNode:
		sides = n.Arguments
	case *ast.CallNode:
		sides = n.Arguments
	}
	for _, s := range sides {
		if literal(s) {
			continue
		}
		if _, isPredicate := s.(*ast.PredicateNode); isPredicate {
			continue
		}
		o := Operand{Expr: s.String()}
		o.Value, o.Error = x.eval(o.Expr)
		if o.Error != "" && o.Error == p.Error {
			continue // the part's error says it already
		}
		p.Operands = append(p.Operands, o)
	}
	p.Text = text(p)
	return p
}

func literal(n ast.Node) bool {
	switch n := n.(type) {
	case *ast.StringNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.NilNode, *ast.ConstantNode, *ast.BytesNode:
		return true
	case *ast.UnaryNode:
		return (n.Operator == "-" || n.Operator == "+") && literal(n.Node)
	case *ast.ArrayNode:
		for _, e := range n.Nodes {
			if !literal(e) {
				return false
			}
		}
		return true
	}
	return false
}

func (x *Explainer) eval(src string) (any, string) {
	prog, err := expr.Compile(src, expr.Env(compileEnv), expr.AllowUndefinedVariables())
	if err != nil {
		return nil, firstLine(err.Error())
	}
	v, err := expr.Run(prog, x.env)
	if err != nil {
		return nil, firstLine(err.Error())
	}
	return v, ""
}

// exprAt is the "(LINE:COL)" expr ends its errors with: a position in the
// part, not in the rule, so it would mislead.
var exprAt = regexp.MustCompile(` \(\d+:\d+\)$`)

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return exprAt.ReplaceAllString(s, "")
}

// text is p as one line: `EXPR → VALUE (A is X, B is Y)`.
func text(p Part) string {
	var b strings.Builder
	b.WriteString(p.Expr)
	b.WriteString(" → ")
	if p.Error != "" {
		b.WriteString("error: " + p.Error)
	} else {
		b.WriteString(show(p.Value))
	}
	if len(p.Operands) > 0 {
		b.WriteString(" (")
		for i, o := range p.Operands {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(o.Expr)
			if o.Error != "" {
				b.WriteString(" fails: " + o.Error)
			} else {
				b.WriteString(" is " + show(o.Value))
			}
		}
		b.WriteString(")")
	}
	return b.String()
}

// show is a value as JSON, short: long values are cut.
func show(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	s := strings.TrimSuffix(b.String(), "\n")
	const limit = 120
	if r := []rune(s); len(r) > limit {
		return string(r[:limit]) + "…"
	}
	return s
}

// Text is parts as lines, indented by depth, for a terminal or a log.
func Text(parts []Part) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(strings.Repeat("  ", p.Depth))
		b.WriteString(p.Text)
		b.WriteByte('\n')
	}
	return b.String()
}
