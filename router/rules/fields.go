package rules

import (
	"maps"
	"slices"
	"unsafe"

	"github.com/expr-lang/expr/ast"
	"github.com/valyala/fastjson"
)

// field is a node of the tree of payload paths that expressions read. The
// ingress materializes only these paths, so that a rule reading
// message.channel.engine does not pay for decoding the whole message.
type field struct {
	name string
	// whole means the value at this path is used as a value (compared,
	// passed to a function, indexed dynamically): materialize all of it.
	whole    bool
	children []*field
}

func (f *field) child(name string) *field {
	for _, c := range f.children {
		if c.name == name {
			return c
		}
	}
	c := &field{name: name}
	f.children = append(f.children, c)
	return c
}

// add records that path is read as a whole value.
func (f *field) add(path []string) {
	n := f
	for _, p := range path {
		if n.whole {
			return
		}
		n = n.child(p)
	}
	n.whole = true
	n.children = nil
}

// reads is what one or more expressions read of an event: the tree of
// payload paths expr itself reads, flattened chains (see flatten.go), and
// constant header names.
type reads struct {
	fields  *field
	all     bool // $env: every field
	flat    map[string]*flatPath
	headers map[string]bool
}

func newReads() *reads {
	return &reads{fields: &field{}, flat: map[string]*flatPath{}, headers: map[string]bool{}}
}

// merge adds what o reads to r.
func (r *reads) merge(o *reads) {
	r.all = r.all || o.all
	r.fields.merge(o.fields, nil)
	maps.Copy(r.flat, o.flat)
	maps.Copy(r.headers, o.headers)
}

// merge adds g's whole paths, below path, to f.
func (f *field) merge(g *field, path []string) {
	for _, c := range g.children {
		p := append(slices.Clip(path), c.name)
		if c.whole {
			f.add(p)
		} else {
			f.merge(c, p)
		}
	}
}

// fieldCollector walks an expression's AST and records in reads what Parse
// must put in the env for it. It mirrors flattener exactly: a chain in a
// slot is flattened, any other use of a payload variable needs its value.
// $env marks everything.
type fieldCollector struct {
	*reads
	vars map[string]bool
	// paths holds every chain of the Set, so that each has one flatPath.
	paths map[string]*flatPath
}

func (c *fieldCollector) collect(n ast.Node, slot bool) {
	if n == nil {
		return
	}
	if slot {
		if name, ok := constHeader(n); ok {
			c.headers[name] = true
			return
		}
		if isSourceCall(n) {
			return
		}
	}
	if steps, ok := constChain(n, c.vars); ok {
		if slot && len(steps) > 1 {
			p := newFlatPath(steps)
			if q, ok := c.paths[p.valueKey]; ok {
				p = q
			} else {
				p.id = len(c.paths)
				c.paths[p.valueKey] = p
			}
			c.flat[p.valueKey] = p
			return
		}
		names := make([]string, len(steps))
		for i, s := range steps {
			names[i] = s.name
		}
		c.fields.add(names)
		return
	}
	switch n := n.(type) {
	case *ast.IdentifierNode:
		if n.Value == "$env" {
			c.all = true
		}
		return
	case *ast.MemberNode:
		c.collect(n.Node, false)
	case *ast.ChainNode:
		c.collect(n.Node, false)
	case *ast.CallNode:
		// The callee is not a slot: a method call's receiver (a?.b())
		// is read whole by the VM, never flattened.
		c.collect(n.Callee, false)
	}
	slots(n, func(s *ast.Node) { c.collect(*s, true) })
}

// extract fills env with the fields of obj that the tree asks for, absent
// ones as nil so that they replace the previous event's values.
func extract(env map[string]any, obj *fastjson.Object, root *field, all bool) {
	if all {
		// Our functions shadow payload keys of their names. Of a repeated
		// key, the last is kept (see lookup).
		obj.Visit(func(k []byte, v *fastjson.Value) {
			if !funcNames[string(k)] {
				env[string(k)] = toValue(v)
			}
		})
		return
	}
	for _, f := range root.children {
		v := lookup(obj, f.name)
		if v == nil {
			env[f.name] = nil
			continue
		}
		env[f.name] = pruned(v, f)
	}
}

// lookup returns the value of key in obj, nil if absent. Of a key repeated
// in one object, which RFC 8259 leaves to the reader, it returns the last, as
// encoding/json reads it, so that rules and dedup keys see the value that
// templates and bodies (sinks.DecodePayload) see; fastjson's Get returns
// the first.
func lookup(obj *fastjson.Object, key string) *fastjson.Value {
	var v *fastjson.Value
	obj.Visit(func(k []byte, x *fastjson.Value) {
		if string(k) == key {
			v = x
		}
	})
	return v
}

// lookupPath is lookup down a path of object keys: nil as soon as a value
// is absent or not an object.
func lookupPath(obj *fastjson.Object, keys ...string) *fastjson.Value {
	var v *fastjson.Value
	for i, k := range keys {
		if i > 0 {
			if obj, _ = v.Object(); obj == nil {
				return nil
			}
		}
		if v = lookup(obj, k); v == nil {
			return nil
		}
	}
	return v
}

func pruned(v *fastjson.Value, f *field) any {
	if f.whole || v.Type() != fastjson.TypeObject {
		return toValue(v)
	}
	obj, _ := v.Object()
	m := make(map[string]any, len(f.children))
	for _, c := range f.children {
		if cv := lookup(obj, c.name); cv != nil {
			m[c.name] = pruned(cv, c)
		}
	}
	return m
}

// toValue converts a parsed JSON value to the Go values expressions see:
// map[string]any, []any, string, int (integral numbers), float64, bool, nil.
// Of a repeated key, the last is kept, as lookup reads it.
//
// A string value is not copied: it aliases the bytes the fastjson Parser
// owns, its copy of the body (unescaped in place), which stay unchanged until
// that Parser parses again, that is until the Input is released (see
// Input.Parse). Map keys are copied: a map must never hold a key whose bytes
// change.
func toValue(v *fastjson.Value) any {
	switch v.Type() {
	case fastjson.TypeObject:
		obj, _ := v.Object()
		m := make(map[string]any, obj.Len())
		obj.Visit(func(k []byte, x *fastjson.Value) {
			m[string(k)] = toValue(x)
		})
		return m
	case fastjson.TypeArray:
		arr, _ := v.Array()
		s := make([]any, len(arr))
		for i, x := range arr {
			s[i] = toValue(x)
		}
		return s
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return unsafe.String(unsafe.SliceData(b), len(b))
	case fastjson.TypeNumber:
		if i, err := v.Int(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case fastjson.TypeTrue:
		return true
	case fastjson.TypeFalse:
		return false
	}
	return nil
}
