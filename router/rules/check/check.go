// Package check finds the mistakes in a config's rules that would otherwise
// only show at run time, as rule errors and events that go nowhere.
//
// Check type-checks every `when`, http `body`, `dedup.key` and template
// field reference against the sources' payload schemas (router/rules/schema):
// a field the schema does not have, a comparison of incompatible types, a
// `when` that is not a bool. Each expression is compiled once against Go
// types built from the schema, only to check it; the router runs the program
// it compiles against the payload map, as without a schema. Without a
// schema, Check still catches what an expression's own shape proves (a
// `when` whose result is arithmetic or a string, a function called with the
// wrong types). Problems point at the offending token in the file.
//
// Warnings finds what is legal but surely not meant: rules that can never be
// reached, sinks no rule sends to, shadow rules with stop: true.
package check

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/types"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/rules/schema"
	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// Check returns the problems of f's expressions and templates against its
// sources' schemas. Expressions that do not parse are left to the rule and
// sink compilers, which report them.
func Check(f *config.File) config.Problems {
	c := &checker{f: f}
	c.loadSchemas()
	for i, r := range f.Rules {
		c.expr(fmt.Sprintf("rules[%d].when", i), r.When, c.shared, true)
	}
	for i, s := range f.Sources {
		if s.Dedup.Key != "" {
			path, n := fmt.Sprintf("sources[%d].dedup.key", i), len(c.problems)
			c.expr(path, s.Dedup.Key, c.own[i], false)
			if len(c.problems) == n {
				c.keyNotBool(path, s.Dedup.Key, c.own[i])
			}
		}
	}
	for _, name := range f.SinkNames() {
		for _, fld := range sinkFields(f.Sinks[name]) {
			path := "sinks." + name + "." + fld.path
			if fld.template {
				c.template(path, fld.src)
			} else {
				c.expr(path, fld.src, c.shared, false)
			}
		}
	}
	return c.problems
}

// field is one expression or template of a sink's config.
type field struct {
	path     string // below sinks.NAME
	src      string
	template bool
}

// sinkFields lists the expressions and templates of a sink's config, in a
// stable order: those its type's Config declares (sinks.PayloadFields).
func sinkFields(s *config.Sink) []field {
	pf, ok := s.Settings.(sinks.PayloadFields)
	if !ok {
		return nil
	}
	var out []field
	exprs, templates := pf.Expressions(), pf.Templates()
	for _, path := range sortedKeys(exprs) {
		out = append(out, field{path: path, src: exprs[path]})
	}
	for _, path := range sortedKeys(templates) {
		out = append(out, field{path: path, src: templates[path], template: true})
	}
	return out
}

type checker struct {
	f        *config.File
	problems config.Problems
	// own is each source's schema (nil: none).
	own []*schema.Type
	// shared is the schema rules and sinks are checked against: that of
	// every source at once (schema.Union), as an event of any source
	// reaches every rule; nil when some source has none (its events may
	// hold anything).
	shared *schema.Type
}

func (c *checker) loadSchemas() {
	dir := filepath.Dir(c.f.Name)
	all := true
	var loaded []*schema.Type
	for i, s := range c.f.Sources {
		if s.Schema == "" {
			c.own = append(c.own, nil)
			all = false
			continue
		}
		t, err := schema.Load(s.Schema, dir)
		if err != nil {
			c.problems = append(c.problems, c.f.Problemf(fmt.Sprintf("sources[%d].schema", i), "%v", err))
			all = false
		}
		c.own = append(c.own, t)
		loaded = append(loaded, t)
	}
	if all && len(loaded) > 0 {
		c.shared = schema.Union(loaded...)
	}
}

// at reports msg about the expression or template at path, at rune offset
// off of src when the file's text allows, else at the scalar with the
// offset spelled out.
func (c *checker) at(path, src string, off int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p := c.f.Problemf(path, "%s", msg)
	if pos, ok := c.f.ValuePos(path, src, off); ok {
		p.Line, p.Col = pos.Line, pos.Col
	} else if off > 0 {
		line, col := lineCol(src, off)
		if line == 1 {
			p.Msg += fmt.Sprintf(" (at column %d of the expression)", col)
		} else {
			p.Msg += fmt.Sprintf(" (at line %d, column %d of the expression)", line, col)
		}
	}
	c.problems = append(c.problems, p)
}

// lineCol is the 1-based line and column of rune offset off in s.
func lineCol(s string, off int) (line, col int) {
	line, col = 1, 1
	for i, r := range []rune(s) {
		if i == off {
			break
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

// finding is one problem in an expression, at a rune offset.
type finding struct {
	off int
	msg string
}

// expr checks one expression against t (nil: shape only).
func (c *checker) expr(path, src string, t *schema.Type, isWhen bool) {
	tree, err := parser.Parse(src)
	if err != nil {
		return // the compiler reports it
	}
	var fs []finding
	if t == nil {
		fs = checkShape(tree.Node, src, isWhen)
		if len(fs) > 1 {
			fs = fs[:1]
		}
	} else if fs = checkFields(tree.Node, t); len(fs) == 0 {
		fs = checkTypes(src, t, isWhen)
	}
	for _, fnd := range fs {
		c.at(path, src, fnd.off, "%s", fnd.msg)
	}
}

// keyNotBool reports a dedup key whose value is a bool (`message.id ==
// ""`): every event would have the key true or false, and within the TTL all
// but the first of each would be answered as duplicates and never routed.
func (c *checker) keyNotBool(path, src string, t *schema.Type) {
	opts := []expr.Option{expr.Env(shapeEnv), expr.AllowUndefinedVariables(), expr.Optimize(false)}
	if t != nil {
		env, err := schema.Env(t, funcs)
		if err == nil {
			opts = []expr.Option{expr.Env(env), expr.Optimize(false)}
		}
	}
	p, err := expr.Compile(src, opts...)
	if err != nil {
		return
	}
	if rt := p.Node().Type(); rt != nil && rt.Kind() == reflect.Bool {
		c.at(path, src, 0, "returns bool: every event would have the key true or false, and all but the first of each would be dropped as duplicates")
	}
}

// funcs are the functions every expression may call beside expr's
// built-ins, as the checker sees them; they hide payload fields of the same
// name.
var funcs = map[string]types.Type{
	"header": types.TypeOf(func(string) string { return "" }),
	"source": types.TypeOf(func() string { return "" }),
}

var funcNames = map[string]bool{"header": true, "source": true}

// checkTypes compiles src against t's types and reports the checker's
// error (a comparison of incompatible types, a result that is not a bool…).
func checkTypes(src string, t *schema.Type, isWhen bool) []finding {
	env, err := schema.Env(t, funcs)
	if err != nil {
		return nil // a free-form top level: nothing to check against
	}
	return compileCheck(src, env, isWhen, false)
}

// shapeEnv declares only the functions: payload fields are unknown.
var shapeEnv = types.Map(funcs)

// checkShape reports what src proves without a schema: a `when` whose
// result is arithmetic or a string, and the checker's errors about known
// types (our functions' results and arguments, literals).
func checkShape(n ast.Node, src string, isWhen bool) []finding {
	if isWhen {
		if kind := resultKind(n); kind != "" {
			return []finding{{off: 0, msg: "must return bool, but returns " + kind}}
		}
	}
	return compileCheck(src, shapeEnv, isWhen, true)
}

// resultKind is the kind of value n's top operator always produces, when it
// is not a bool and not known from types: arithmetic, string concatenation.
func resultKind(n ast.Node) string {
	switch n := n.(type) {
	case *ast.BinaryNode:
		switch n.Operator {
		case "+":
			if isString(n.Left) || isString(n.Right) {
				return "string"
			}
			return "a number (the result of +)"
		case "-", "*", "/", "%", "**", "^":
			return "a number (the result of " + n.Operator + ")"
		}
	case *ast.UnaryNode:
		if n.Operator == "-" || n.Operator == "+" {
			return "a number (the result of unary " + n.Operator + ")"
		}
	case *ast.StringNode:
		return "string"
	}
	return ""
}

func isString(n ast.Node) bool {
	switch n := n.(type) {
	case *ast.StringNode:
		return true
	case *ast.BinaryNode:
		return n.Operator == "+" && (isString(n.Left) || isString(n.Right))
	}
	return false
}

func compileCheck(src string, env any, isWhen, undefinedOK bool) []finding {
	opts := []expr.Option{expr.Env(env), expr.Optimize(false)}
	if isWhen {
		opts = append(opts, expr.AsBool())
	}
	if undefinedOK {
		opts = append(opts, expr.AllowUndefinedVariables())
	}
	_, err := expr.Compile(src, opts...)
	if err == nil {
		return nil
	}
	var fe *file.Error
	if errors.As(err, &fe) {
		off := fe.From
		msg := fe.Message
		if strings.HasPrefix(msg, "expected bool, but got ") {
			off = 0
		}
		return []finding{{off: off, msg: render.Wording(msg)}}
	}
	return []finding{{msg: render.Wording(firstLine(err.Error()))}}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// checkFields finds each field reference of n that t does not have: a chain
// of constant member accesses from a payload variable (message.channel.engine,
// message["channel"], message.content.attachments[0].url).
func checkFields(n ast.Node, t *schema.Type) []finding {
	v := &fieldVisitor{root: t, vars: map[string]bool{}, callees: map[ast.Node]bool{}, ptr: map[ast.Node]*schema.Type{}, reported: map[int]bool{}}
	ast.Walk(&n, collector{v})
	ast.Walk(&n, predicates{v})
	ast.Walk(&n, v)
	return v.found
}

type fieldVisitor struct {
	root    *schema.Type
	vars    map[string]bool   // let variables
	callees map[ast.Node]bool // identifiers that are called, not read
	// ptr types the element pointer (#, .field) of predicates over
	// arrays the schema types: any(message.content.attachments, .type == "image").
	ptr      map[ast.Node]*schema.Type
	reported map[int]bool
	found    []finding
}

// collector finds the let variables and the callees before fields are
// checked.
type collector struct{ v *fieldVisitor }

func (c collector) Visit(n *ast.Node) {
	switch n := (*n).(type) {
	case *ast.VariableDeclaratorNode:
		c.v.vars[n.Name] = true
	case *ast.CallNode:
		c.v.callees[n.Callee] = true
	}
}

// predicates types the element pointers of builtins' predicates. Walk
// visits inner predicates first, so a pointer belongs to the innermost one;
// a predicate over an array reached through another's pointer is not typed.
type predicates struct{ v *fieldVisitor }

func (p predicates) Visit(np *ast.Node) {
	b, ok := (*np).(*ast.BuiltinNode)
	if !ok || len(b.Arguments) != 2 {
		return
	}
	pred, ok := b.Arguments[1].(*ast.PredicateNode)
	if !ok {
		return
	}
	list := p.v.resolve(b.Arguments[0])
	if list == nil || list.Kind != schema.Array {
		return
	}
	ast.Walk(&pred.Node, pointers{p.v.ptr, list.Items})
}

type pointers struct {
	ptr  map[ast.Node]*schema.Type
	elem *schema.Type
}

func (p pointers) Visit(np *ast.Node) {
	if n, ok := (*np).(*ast.PointerNode); ok && n.Name == "" {
		if _, done := p.ptr[n]; !done {
			p.ptr[n] = p.elem
		}
	}
}

func (v *fieldVisitor) Visit(np *ast.Node) {
	switch n := (*np).(type) {
	case *ast.IdentifierNode, *ast.MemberNode:
		v.resolve(n)
	}
}

// resolve returns the type of the chain n, reporting the first segment the
// schema lacks; nil when n is not a chain from a payload variable or goes
// below a value of unknown type.
func (v *fieldVisitor) resolve(n ast.Node) *schema.Type {
	switch n := n.(type) {
	case *ast.ChainNode:
		return v.resolve(n.Node)
	case *ast.PointerNode:
		return v.ptr[n]
	case *ast.IdentifierNode:
		if v.vars[n.Value] || v.callees[n] || funcNames[n.Value] || n.Value == "$env" {
			return nil
		}
		t, ok := v.root.Field(n.Value)
		if !ok {
			v.report(n.Location().From, n.Value, n.Value, "the payload", v.root)
			return nil
		}
		return t
	case *ast.MemberNode:
		parent := v.resolve(n.Node)
		if parent == nil {
			return nil
		}
		switch p := n.Property.(type) {
		case *ast.StringNode:
			if n.Method {
				return nil
			}
			t, ok := parent.Field(p.Value)
			if !ok {
				path, owner := n.Node.String()+"."+p.Value, n.Node.String()
				if _, elem := n.Node.(*ast.PointerNode); elem {
					path, owner = "."+p.Value, "an element"
				}
				v.report(p.Location().From, path, p.Value, owner, parent)
				return nil
			}
			return t
		case *ast.IntegerNode:
			if parent.Kind == schema.Array {
				return parent.Items
			}
		}
	}
	return nil
}

func (v *fieldVisitor) report(off int, path, name, owner string, parent *schema.Type) {
	if v.reported[off] {
		return
	}
	v.reported[off] = true
	v.found = append(v.found, finding{off: off, msg: noField(path, name, owner, parent)})
}

// noField is the message for a field the schema does not have: path is the
// reference as written, name its last field, owner what holds it.
func noField(path, name, owner string, parent *schema.Type) string {
	if parent.Kind != schema.Object {
		return fmt.Sprintf("%s: %s is %s in the schema and has no fields", path, owner, article(parent.Kind))
	}
	return fmt.Sprintf("%s: %s has no field %q in the schema%s", path, owner, name, suggestion(name, parent.FieldNames()))
}

func article(k schema.Kind) string {
	switch k {
	case schema.Integer, schema.Array, schema.Object:
		return "an " + k.String()
	}
	return "a " + k.String()
}

// suggestion proposes the known name that starts with name when only one
// does (mime → mime_type), else the closest by edit distance.
func suggestion(name string, known []string) string {
	var prefixed []string
	for _, k := range known {
		if len(name) >= 3 && strings.HasPrefix(strings.ToLower(k), strings.ToLower(name)) {
			prefixed = append(prefixed, k)
		}
	}
	if len(prefixed) == 1 {
		return fmt.Sprintf(" (did you mean %q?)", prefixed[0])
	}
	if best := config.Suggest(name, known); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

// byteToRune converts a byte offset in s to a rune offset.
func byteToRune(s string, off int) int {
	if off > len(s) {
		off = len(s)
	}
	return utf8.RuneCountInString(s[:off])
}
