package render

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"text/template/parse"
	"unicode/utf8"
)

// Names of the functions the parse-tree rewrite inserts; they are registered
// with the template like the user-visible helpers but are not documented.
const (
	fnGet  = "_get"
	fnText = "_text"
)

// Template is a parsed text template over an event's payload. It is safe for
// concurrent use.
//
// Beside text/template's built-ins it offers these helpers:
//
//	json        the value as compact JSON: {{ json .message }}
//	default D   D when the value is nil, "" or an empty list or object:
//	            {{ .message.sender_name | default "n/a" }} (0 and false are kept)
//	truncate N  at most N characters (runes), cut without a marker
//	upper       upper case
//	lower       lower case
//
// A field that is absent, null, or looked up on something that is not an
// object renders as the empty string (and is nil for default, json and
// comparisons), never as "<no value>" or an error: payloads differ between
// event types and one template usually serves several.
type Template struct {
	name   string
	tmpl   *template.Template // nil when static
	static string
}

// ParseTemplate parses src as the template called name (a field name such as
// "text" or "headers.X-Api-Key"). Its error is one line for a config problem
// placed at that field: "template does not parse: …".
func ParseTemplate(name, src string) (*Template, error) {
	return parseTemplate(name, src, funcs)
}

// ParseTemplateEscaped is ParseTemplate for a destination with a markup of
// its own: every value an action prints passes through escape, while the
// template's own text does not, so the operator's markup works and a
// payload's cannot (a chat message containing "<!channel>" stays text).
func ParseTemplateEscaped(name, src string, escape func(string) string) (*Template, error) {
	fm := template.FuncMap{}
	for k, v := range funcs {
		fm[k] = v
	}
	fm[fnText] = func(v any) any { return escape(str(v)) }
	return parseTemplate(name, src, fm)
}

func parseTemplate(name, src string, fm template.FuncMap) (*Template, error) {
	if !strings.Contains(src, "{{") {
		// No action: the text is sent as is, and executing it costs nothing.
		return &Template{name: name, static: src}, nil
	}
	t, err := template.New(name).Funcs(fm).Parse(src)
	if err != nil {
		return nil, templateError(name, err)
	}
	for _, tt := range t.Templates() {
		if tt.Tree != nil && tt.Tree.Root != nil {
			rewriteList(tt.Tree.Root)
		}
	}
	return &Template{name: name, tmpl: t}, nil
}

// Static reports whether the template has no actions, and so renders the same
// text for every payload.
func (t *Template) Static() bool { return t.tmpl == nil }

// Execute renders the template for payload (Event.Payload(); nil is allowed).
func (t *Template) Execute(payload map[string]any) (string, error) {
	if t.tmpl == nil {
		return t.static, nil
	}
	buf := getBuffer()
	defer putBuffer(buf)
	if err := t.tmpl.Execute(buf, payload); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// AppendExecute appends the rendering for payload to dst.
func (t *Template) AppendExecute(dst []byte, payload map[string]any) ([]byte, error) {
	if t.tmpl == nil {
		return append(dst, t.static...), nil
	}
	buf := getBuffer()
	defer putBuffer(buf)
	if err := t.tmpl.Execute(buf, payload); err != nil {
		return dst, err
	}
	return append(dst, buf.Bytes()...), nil
}

// funcs are the helpers every template gets. None of them performs I/O or
// reads process state, so a template can be run anywhere, including in
// `hookrouter test`.
var funcs = template.FuncMap{
	"json":     jsonString,
	"default":  defaultValue,
	"truncate": truncate,
	"upper":    func(v any) string { return strings.ToUpper(str(v)) },
	"lower":    func(v any) string { return strings.ToLower(str(v)) },
	fnGet:      get,
	fnText:     text,
}

// get looks keys up one after the other, yielding nil as soon as a value is
// missing or is not an object.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// text ends every printing action so that nil prints as nothing rather than
// text/template's "<nil>" or "<no value>".
func text(v any) any {
	if v == nil {
		return ""
	}
	return v
}

func jsonString(v any) (string, error) {
	buf := getBuffer()
	defer putBuffer(buf)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return string(bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})), nil
}

func defaultValue(def, v any) any {
	switch t := v.(type) {
	case nil:
		return def
	case string:
		if t == "" {
			return def
		}
	case map[string]any:
		if len(t) == 0 {
			return def
		}
	case []any:
		if len(t) == 0 {
			return def
		}
	}
	return v
}

func truncate(n int, v any) string {
	s := str(v)
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s // n bytes hold at least n runes
	}
	i := 0
	for count := 0; i < len(s) && count < n; count++ {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i]
}

// str is how helpers see a value as text: nil is empty, strings are
// themselves, anything else prints as text/template would print it.
func str(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	case int:
		return strconv.Itoa(t)
	default:
		return fmt.Sprint(v)
	}
}

// rewriteList makes field lookups nil-safe throughout a parsed template: each
// `.a.b` (or `$x.a.b`, `(pipe).a.b`) becomes `(_get . "a" "b")`, and each
// printing action gets a final `| _text`. html/template rewrites its trees the
// same way to add escapers.
func rewriteList(l *parse.ListNode) {
	if l == nil {
		return
	}
	for _, n := range l.Nodes {
		switch n := n.(type) {
		case *parse.ActionNode:
			rewritePipe(n.Pipe)
			if len(n.Pipe.Decl) == 0 {
				// An action that declares or assigns a variable prints nothing;
				// its value must stay what the user wrote.
				n.Pipe.Cmds = append(n.Pipe.Cmds, &parse.CommandNode{
					NodeType: parse.NodeCommand,
					Pos:      n.Pos,
					Args:     []parse.Node{ident(fnText, n.Pos)},
				})
			}
		case *parse.IfNode:
			rewriteBranch(&n.BranchNode)
		case *parse.RangeNode:
			rewriteBranch(&n.BranchNode)
		case *parse.WithNode:
			rewriteBranch(&n.BranchNode)
		case *parse.TemplateNode:
			rewritePipe(n.Pipe)
		}
	}
}

func rewriteBranch(b *parse.BranchNode) {
	rewritePipe(b.Pipe)
	rewriteList(b.List)
	rewriteList(b.ElseList)
}

func rewritePipe(p *parse.PipeNode) {
	if p == nil {
		return
	}
	for _, c := range p.Cmds {
		for i, a := range c.Args {
			if i == 0 && len(c.Args) > 1 {
				// A field in function position is a method call; payload
				// values have no methods, so leave it to fail as it would.
				if _, ok := a.(*parse.FieldNode); ok {
					continue
				}
			}
			c.Args[i] = rewriteArg(a)
		}
	}
}

func rewriteArg(a parse.Node) parse.Node {
	switch n := a.(type) {
	case *parse.FieldNode:
		return getCall(n.Pos, &parse.DotNode{NodeType: parse.NodeDot, Pos: n.Pos}, n.Ident)
	case *parse.VariableNode:
		if len(n.Ident) > 1 {
			v := &parse.VariableNode{NodeType: parse.NodeVariable, Pos: n.Pos, Ident: n.Ident[:1]}
			return getCall(n.Pos, v, n.Ident[1:])
		}
	case *parse.ChainNode:
		return getCall(n.Pos, rewriteArg(n.Node), n.Field)
	case *parse.PipeNode:
		rewritePipe(n)
	}
	return a
}

func getCall(pos parse.Pos, from parse.Node, keys []string) parse.Node {
	args := make([]parse.Node, 0, 2+len(keys))
	args = append(args, ident(fnGet, pos), from)
	for _, k := range keys {
		args = append(args, &parse.StringNode{NodeType: parse.NodeString, Pos: pos, Quoted: strconv.Quote(k), Text: k})
	}
	return &parse.PipeNode{
		NodeType: parse.NodePipe,
		Pos:      pos,
		Cmds:     []*parse.CommandNode{{NodeType: parse.NodeCommand, Pos: pos, Args: args}},
	}
}

func ident(name string, pos parse.Pos) *parse.IdentifierNode {
	return parse.NewIdentifier(name).SetPos(pos)
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer { return bufPool.Get().(*bytes.Buffer) }

// putBuffer recycles buf unless it grew large, so that one huge payload does
// not pin memory for the life of the process.
func putBuffer(buf *bytes.Buffer) {
	if buf.Cap() > 64<<10 {
		return
	}
	buf.Reset()
	bufPool.Put(buf)
}
