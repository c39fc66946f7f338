package check

import (
	"maps"
	"slices"
	"strings"
	"text/template/parse"

	"github.com/hookrouter/hookrouter/router/rules/schema"
)

// template checks the field references of a Go template (Slack text, header
// values): {{ .message.chanel.name }} names a field the schema lacks. Inside
// {{ range }} over an array, dot is an element; inside {{ with }}, the value.
func (c *checker) template(path, src string) {
	if c.shared == nil || !strings.Contains(src, "{{") {
		return
	}
	tree := parse.New(path)
	tree.Mode = parse.SkipFuncCheck
	if _, err := tree.Parse(src, "", "", map[string]*parse.Tree{}); err != nil {
		return // the sink reports it
	}
	tc := &templateChecker{src: src, root: c.shared}
	tc.list(tree.Root, dot{c.shared, "the payload"})
	for _, f := range tc.found {
		c.at(path, src, f.off, "%s", f.msg)
	}
}

// dot is what dot holds: its type (nil: unknown) and how to name it.
type dot struct {
	t    *schema.Type
	name string
}

type templateChecker struct {
	src   string
	root  *schema.Type
	found []finding
}

// list checks the nodes of a list, dot having type dot (nil: unknown).
func (tc *templateChecker) list(l *parse.ListNode, d dot) {
	if l == nil {
		return
	}
	for _, n := range l.Nodes {
		tc.node(n, d)
	}
}

func (tc *templateChecker) node(n parse.Node, d dot) {
	switch n := n.(type) {
	case *parse.ActionNode:
		tc.pipe(n.Pipe, d)
	case *parse.IfNode:
		tc.pipe(n.Pipe, d)
		tc.list(n.List, d)
		tc.list(n.ElseList, d)
	case *parse.RangeNode:
		t := tc.pipe(n.Pipe, d)
		inner := dot{name: "an element"}
		if t != nil && t.Kind == schema.Array && len(n.Pipe.Decl) == 0 {
			inner = dot{t.Items, "an element of " + n.Pipe.String()}
		}
		tc.list(n.List, inner)
		tc.list(n.ElseList, d)
	case *parse.WithNode:
		inner := dot{tc.pipe(n.Pipe, d), n.Pipe.String()}
		if len(n.Pipe.Decl) > 0 {
			inner.t = nil
		}
		tc.list(n.List, inner)
		tc.list(n.ElseList, d)
	case *parse.TemplateNode:
		tc.pipe(n.Pipe, d)
	}
}

// pipe checks a pipeline and returns its type when it is a lone field
// reference.
func (tc *templateChecker) pipe(p *parse.PipeNode, d dot) *schema.Type {
	if p == nil {
		return nil
	}
	var last *schema.Type
	for _, cmd := range p.Cmds {
		last = nil
		for _, arg := range cmd.Args {
			t := tc.arg(arg, d)
			if len(cmd.Args) == 1 && len(p.Cmds) == 1 {
				last = t
			}
		}
	}
	return last
}

func (tc *templateChecker) arg(n parse.Node, d dot) *schema.Type {
	switch n := n.(type) {
	case *parse.FieldNode:
		return tc.fields(int(n.Pos), n.Ident, d, ".")
	case *parse.VariableNode:
		if n.Ident[0] == "$" && len(n.Ident) > 1 {
			return tc.fields(int(n.Pos)+1, n.Ident[1:], dot{tc.root, "the payload"}, "$.")
		}
	case *parse.ChainNode:
		if p, ok := n.Node.(*parse.PipeNode); ok {
			tc.pipe(p, d)
		}
	case *parse.PipeNode:
		return tc.pipe(n, d)
	case *parse.DotNode:
		return d.t
	}
	return nil
}

// fields resolves .a.b.c from t; pos is the byte offset of the first dot.
func (tc *templateChecker) fields(pos int, idents []string, d dot, prefix string) *schema.Type {
	t := d.t
	// The parser's position of a field node is its end for a field chain;
	// find the text itself from there back.
	text := prefix + strings.Join(idents, ".")
	if prefix == "$." {
		text = "." + strings.Join(idents, ".")
	}
	start := strings.LastIndex(tc.src[:min(len(tc.src), pos+len(text))], text)
	if start < 0 {
		start = pos
	}
	off := start
	for i, name := range idents {
		if t == nil {
			return nil
		}
		next, ok := t.Field(name)
		if !ok {
			shown := prefix + strings.Join(idents[:i+1], ".")
			owner := prefix + strings.Join(idents[:i], ".")
			if i == 0 {
				owner = d.name
			}
			tc.found = append(tc.found, finding{off: byteToRune(tc.src, off+1), msg: noField(shown, name, owner, t)})
			return nil
		}
		off += 1 + len(name)
		t = next
	}
	return t
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
