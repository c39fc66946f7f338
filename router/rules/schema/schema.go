// Package schema describes the payloads a source receives, so that rules can
// be type-checked against them before they ship.
//
// A source's `schema` is either "platform", the built-in description of the
// messaging platform's five events (platform.json, itself a JSON Schema), or
// the path of a JSON Schema file (draft 2020-12 unless the file says
// otherwise), compiled with github.com/santhosh-tekuri/jsonschema/v6. Either
// way the result is a Type tree: which fields exist and what they hold. The
// schema is for checking rules, not for rejecting events: payloads may carry
// fields the schema does not list.
//
// ExprType turns a Type into the type expr-lang/expr's checker works with
// (expr/types: a map with typed fields, as payloads are maps), so that an
// expression can be checked against it without the program ever running on
// it.
package schema

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/expr-lang/expr/types"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/hookrouter/hookrouter/router/config"
)

// Kind is the JSON type of a value.
type Kind int

// The kinds a Type can have. Any is a value of several or unknown JSON types.
const (
	Any Kind = iota
	Bool
	Integer
	Number
	String
	Array
	Object
)

var kindNames = [...]string{"any", "bool", "integer", "number", "string", "array", "object"}

func (k Kind) String() string { return kindNames[k] }

// Type is what a schema says of one value.
type Type struct {
	Kind Kind
	// Fields are an object's declared properties, by name.
	Fields map[string]*Type
	// Required lists the properties an object always has.
	Required map[string]bool
	// Extra is the type of an object's other properties, when the schema
	// gives one (additionalProperties: {…}); nil when it gives none.
	Extra *Type
	// Items is an array's element type (Any when the schema says nothing).
	Items *Type
}

// Open reports whether an object accepts any field name: it declares no
// properties (a free-form map) or types the others with additionalProperties.
func (t *Type) Open() bool {
	return t.Kind != Object || len(t.Fields) == 0 || t.Extra != nil
}

// Field returns the type of field name of an object, and whether the schema
// has it. Any other kind has no fields; an Any value may have any field.
func (t *Type) Field(name string) (*Type, bool) {
	switch {
	case t.Kind == Any:
		return anyType, true
	case t.Kind != Object:
		return nil, false
	}
	if f, ok := t.Fields[name]; ok {
		return f, true
	}
	if t.Extra != nil {
		return t.Extra, true
	}
	if len(t.Fields) == 0 {
		return anyType, true
	}
	return nil, false
}

// FieldNames returns an object's declared field names, sorted.
func (t *Type) FieldNames() []string {
	return slices.Sorted(maps.Keys(t.Fields))
}

var anyType = &Type{Kind: Any}

//go:embed platform.json
var platformJSON []byte

// PlatformName is the `schema` value naming the built-in schema.
const PlatformName = "platform"

// Platform returns the built-in schema of the platform's five events.
func Platform() *Type { return platform }

var platform, platformSchema = func() (*Type, *jsonschema.Schema) {
	s, err := compile("platform.json", platformJSON)
	if err != nil {
		panic("schema: built-in platform.json: " + err.Error())
	}
	return convert(s, map[*jsonschema.Schema]*Type{}, 0), s
}()

// ValidatePlatform validates a decoded JSON payload (as encoding/json
// decodes it, or with UseNumber) against the built-in schema. The router does
// not validate events; tests use it to hold the schema to the samples.
func ValidatePlatform(payload any) error { return platformSchema.Validate(payload) }

// Load returns the Type of a `schema` value: "platform", or a JSON Schema
// file, relative paths being relative to dir (the config file's directory).
func Load(ref, dir string) (*Type, error) {
	if ref == PlatformName {
		return platform, nil
	}
	if filepath.Ext(ref) != ".json" {
		hint := ""
		if config.Suggest(ref, []string{PlatformName}) != "" {
			hint = fmt.Sprintf(" (did you mean %q?)", PlatformName)
		}
		return nil, fmt.Errorf("%q is neither %q nor a JSON Schema file (FILE.json)%s", ref, PlatformName, hint)
	}
	path := ref
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", ref, errors.Unwrap(err))
	}
	s, err := compile(path, data)
	if err != nil {
		return nil, fmt.Errorf("schema %s: %s", ref, describe(err, path))
	}
	return convert(s, map[*jsonschema.Schema]*Type{}, 0), nil
}

// describe makes the library's error one line that names the file as the
// config does (not as an absolute file: URL), with the details of a schema
// that is not valid against its metaschema.
func describe(err error, path string) string {
	var invalid *jsonschema.SchemaValidationError
	var msg string
	var leaf *jsonschema.ValidationError
	if errors.As(err, &invalid) && errors.As(invalid.Err, &leaf) {
		// The first innermost cause is the one to fix; the others are the
		// alternatives the metaschema also rejected.
		for len(leaf.Causes) > 0 {
			leaf = leaf.Causes[0]
		}
		lines := strings.Split(strings.TrimSpace(leaf.Error()), "\n")
		msg = "not a valid JSON Schema: " + strings.TrimPrefix(strings.TrimSpace(lines[len(lines)-1]), "- ")
	} else {
		msg = err.Error()
	}
	abs, _ := filepath.Abs(path)
	msg = strings.ReplaceAll(msg, "file://"+filepath.ToSlash(abs), "")
	return strings.Join(strings.Fields(msg), " ")
}

// compile compiles the schema document data, known as name; a $ref to
// another file is read relative to it.
func compile(name string, data []byte) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if abs, err := filepath.Abs(name); err == nil && filepath.IsAbs(name) {
		name = abs
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(name, doc); err != nil {
		return nil, err
	}
	return c.Compile(name)
}

// maxDepth bounds how deep a recursive schema is followed: below it, values
// are Any (the checker's types are trees: a cycle must end somewhere).
const maxDepth = 16

// convert turns a compiled JSON Schema into a Type. $ref and allOf merge
// into the schema that uses them; anyOf and oneOf branches of one kind merge
// too (an object's fields are those of every branch), and branches of
// different kinds make Any.
func convert(s *jsonschema.Schema, seen map[*jsonschema.Schema]*Type, depth int) *Type {
	if s == nil || depth > maxDepth {
		return anyType
	}
	if t, ok := seen[s]; ok && t != nil {
		return t
	}
	seen[s] = nil // in progress: a cycle below this is cut by depth
	t := own(s, seen, depth)
	parts := []*jsonschema.Schema{s.Ref}
	parts = append(parts, s.AllOf...)
	for _, p := range parts {
		if p != nil {
			t = intersect(t, convert(p, seen, depth+1))
		}
	}
	for _, alts := range [][]*jsonschema.Schema{s.AnyOf, s.OneOf} {
		if len(alts) == 0 {
			continue
		}
		var u *Type
		for _, a := range alts {
			u = union(u, convert(a, seen, depth+1))
		}
		t = intersect(t, u)
	}
	if t == nil {
		t = anyType
	}
	seen[s] = t
	return t
}

// own is the Type of s's own keywords, nil when they say nothing about the
// value's type.
func own(s *jsonschema.Schema, seen map[*jsonschema.Schema]*Type, depth int) *Type {
	var kinds []Kind
	if s.Types != nil {
		for _, name := range s.Types.ToStrings() {
			switch name {
			case "boolean":
				kinds = append(kinds, Bool)
			case "integer":
				kinds = append(kinds, Integer)
			case "number":
				kinds = append(kinds, Number)
			case "string":
				kinds = append(kinds, String)
			case "array":
				kinds = append(kinds, Array)
			case "object":
				kinds = append(kinds, Object)
			}
			// "null" only makes the value optional.
		}
	} else if len(s.Properties) > 0 || s.AdditionalProperties != nil {
		kinds = []Kind{Object}
	} else if s.Items2020 != nil || s.Items != nil || len(s.PrefixItems) > 0 {
		kinds = []Kind{Array}
	}
	if slices.Equal(kinds, []Kind{Integer, Number}) {
		kinds = []Kind{Number}
	}
	if len(kinds) == 0 {
		return nil
	}
	if len(kinds) > 1 {
		return anyType
	}
	t := &Type{Kind: kinds[0]}
	switch t.Kind {
	case Object:
		t.Fields = map[string]*Type{}
		t.Required = map[string]bool{}
		for name, p := range s.Properties {
			t.Fields[name] = convert(p, seen, depth+1)
		}
		for _, name := range s.Required {
			t.Required[name] = true
		}
		if extra, ok := s.AdditionalProperties.(*jsonschema.Schema); ok {
			t.Extra = convert(extra, seen, depth+1)
		}
	case Array:
		t.Items = anyType
		if s.Items2020 != nil {
			t.Items = convert(s.Items2020, seen, depth+1)
		} else if items, ok := s.Items.(*jsonschema.Schema); ok {
			t.Items = convert(items, seen, depth+1)
		}
	}
	return t
}

// intersect merges two descriptions of the same value ($ref, allOf); nil
// says nothing.
func intersect(a, b *Type) *Type {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case a.Kind == Any:
		return b
	case b.Kind == Any:
		return a
	case a.Kind != b.Kind:
		return anyType // contradictory: no value matches; check nothing
	case a.Kind == Object:
		return mergeObjects(a, b, true)
	case a.Kind == Array:
		return &Type{Kind: Array, Items: intersect(a.Items, b.Items)}
	}
	return a
}

// Union is the type of a value of any of ts, as anyOf describes it: an
// object has the fields of each (a field known to one is nil in the
// others), a value whose types disagree is Any. Rules see the events of
// every source, so they are checked against the Union of the sources'
// schemas.
func Union(ts ...*Type) *Type {
	var u *Type
	for _, t := range ts {
		u = union(u, t)
	}
	if u == nil {
		return anyType
	}
	return u
}

// union is a value that is a or b (anyOf, oneOf); nil is no branch yet.
func union(a, b *Type) *Type {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case a.Kind == Any || b.Kind == Any || a.Kind != b.Kind:
		return anyType
	case a.Kind == Object:
		return mergeObjects(a, b, false)
	case a.Kind == Array:
		return &Type{Kind: Array, Items: union(a.Items, b.Items)}
	}
	return a
}

func mergeObjects(a, b *Type, both bool) *Type {
	t := &Type{Kind: Object, Fields: map[string]*Type{}, Required: map[string]bool{}}
	for name, f := range a.Fields {
		t.Fields[name] = f
	}
	for name, f := range b.Fields {
		if g, ok := t.Fields[name]; ok {
			if both {
				f = intersect(g, f)
			} else {
				f = union(g, f)
			}
		}
		t.Fields[name] = f
	}
	for name := range a.Required {
		if both || b.Required[name] {
			t.Required[name] = true
		}
	}
	for name := range b.Required {
		if both {
			t.Required[name] = true
		}
	}
	switch {
	case both && a.Extra != nil && b.Extra != nil:
		t.Extra = intersect(a.Extra, b.Extra)
	case !both && (a.Extra != nil || b.Extra != nil):
		t.Extra = union(a.Extra, b.Extra)
		if t.Extra == nil {
			t.Extra = anyType
		}
	}
	if !both && (len(a.Fields) == 0 || len(b.Fields) == 0) {
		// One branch is a free-form object: any name is allowed.
		t.Extra = anyType
	}
	return t
}

// ExprType returns the type expr-lang/expr's checker gives a value of type
// t: bool, int, float64, string, an array of its items' type, and for an
// object a types.Map, that is a map[string]any whose declared fields have
// their own types (other names are unknown fields unless the object is open,
// when they have additionalProperties' type, or any). Payloads run as
// map[string]any, so the checker must see maps too: keys(), len(), get(),
// a computed index and comparing two objects work on a map, not on a struct.
// Every field may be absent and nil at run time; expr's checker accepts a
// comparison with nil and `?.` on a value of any type, so optional fields
// need no type of their own.
func ExprType(t *Type) types.Type {
	switch t.Kind {
	case Bool:
		return types.Bool
	case Integer:
		return types.Int
	case Number:
		return types.Float64
	case String:
		return types.String
	case Array:
		return types.Array(ExprType(t.Items))
	case Object:
		if len(t.Fields) == 0 && t.Extra == nil {
			return types.TypeOf(map[string]any{})
		}
		m := types.Map{}
		for name, f := range t.Fields {
			m[name] = ExprType(f)
		}
		if t.Open() {
			m[types.Extra] = types.Any
			if t.Extra != nil {
				m[types.Extra] = ExprType(t.Extra)
			}
		}
		return m
	}
	return types.Any
}

// Env is the checker's env for payloads of type t: its top-level fields and
// the names in extra (the env's functions), which hide t's fields of the
// same name, as a function hides a payload field at run time.
func Env(t *Type, extra map[string]types.Type) (types.Map, error) {
	if t.Kind != Object || t.Open() {
		return nil, errors.New("the top level of a schema must be an object that lists its fields")
	}
	env := ExprType(t).(types.Map)
	maps.Copy(env, extra)
	return env, nil
}
