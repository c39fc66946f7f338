package schema

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/expr-lang/expr/types"
)

// samples returns the platform's sample payloads (router/rules/testdata),
// decoded with UseNumber, by file name.
func samples(t *testing.T) map[string]any {
	t.Helper()
	files, err := filepath.Glob("../testdata/*.json")
	if err != nil || len(files) < 6 {
		t.Fatalf("sample payloads: %v (%d files)", err, len(files))
	}
	out := map[string]any{}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out[filepath.Base(file)] = v
	}
	return out
}

// TestPlatformSamples: every sample payload validates against the built-in
// schema (the JSON Schema itself, with the library that reads users' schema
// files), and the five events of the docs are all among the samples.
func TestPlatformSamples(t *testing.T) {
	events := map[string]bool{}
	for name, v := range samples(t) {
		if err := ValidatePlatform(v); err != nil {
			t.Errorf("%s fails the built-in schema: %v", name, err)
		}
		events[v.(map[string]any)["event"].(string)] = true
	}
	for _, ev := range []string{"channel.message_in", "agent.message_out", "ai.message_generated", "device.connected", "device.disconnected"} {
		if !events[ev] {
			t.Errorf("no sample of %s", ev)
		}
	}
}

// TestPlatformFields holds each field of the built-in schema to the samples:
// every field the schema declares appears in some sample with the declared
// kind, and every field of every sample is declared, so that the schema
// neither invents a field nor misses one the platform sends.
func TestPlatformFields(t *testing.T) {
	seen := map[string]bool{}
	for name, v := range samples(t) {
		walkSample(t, name, "", v, Platform(), seen)
	}
	var declared []string
	walkSchema("", Platform(), &declared)
	for _, path := range declared {
		if !seen[path] {
			t.Errorf("the built-in schema declares %s, which no sample payload has", path)
		}
	}
	if len(declared) < 30 {
		t.Errorf("only %d declared fields: %v", len(declared), declared)
	}
}

func walkSchema(path string, ty *Type, out *[]string) {
	switch ty.Kind {
	case Object:
		for _, name := range ty.FieldNames() {
			p := strings.TrimPrefix(path+"."+name, ".")
			*out = append(*out, p)
			walkSchema(p, ty.Fields[name], out)
		}
	case Array:
		walkSchema(path+"[]", ty.Items, out)
	}
}

func walkSample(t *testing.T, file, path string, v any, ty *Type, seen map[string]bool) {
	t.Helper()
	if path != "" {
		seen[path] = true
	}
	want := map[Kind]bool{}
	switch x := v.(type) {
	case map[string]any:
		want[Object] = true
		for _, k := range sortedKeys(x) {
			p := strings.TrimPrefix(path+"."+k, ".")
			ft, ok := ty.Fields[k]
			if !ok {
				t.Errorf("%s: field %s is not in the built-in schema", file, p)
				continue
			}
			walkSample(t, file, p, x[k], ft, seen)
		}
	case []any:
		want[Array] = true
		for _, e := range x {
			walkSample(t, file, path+"[]", e, ty.Items, seen)
		}
	case string:
		want[String] = true
	case bool:
		want[Bool] = true
	case json.Number:
		want[Number] = true
		if !strings.ContainsAny(x.String(), ".eE") {
			want[Integer] = true
		}
	}
	if !want[ty.Kind] {
		t.Errorf("%s: %s is %v in the sample, %v in the built-in schema", file, path, v, ty.Kind)
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestPlatformShape pins the field kinds the issue names.
func TestPlatformShape(t *testing.T) {
	p := Platform()
	for path, kind := range map[string]Kind{
		"event": String, "timestamp": Integer, "need_human": Integer, "conversation_id": String,
		"conversation_label": String, "message.channel.engine": String, "message.content.attachments": Array,
		"message.agent.name": String, "message.ai.id": String, "device.status": String, "message.bisnis.id": String,
		"message.user.name": String, "message.sender_name": String,
	} {
		ty := p
		for name := range strings.SplitSeq(path, ".") {
			f, ok := ty.Field(name)
			if !ok {
				t.Fatalf("%s: no field %s", path, name)
			}
			ty = f
		}
		if ty.Kind != kind {
			t.Errorf("%s is %v, want %v", path, ty.Kind, kind)
		}
	}
	if _, ok := p.Field("Event"); ok {
		t.Error("Event is a field")
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("orders.json", `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["kind"],
  "properties": {
    "kind": {"type": "string"},
    "total": {"type": ["number", "null"]},
    "customer": {"$ref": "#/$defs/customer"},
    "lines": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}},
    "meta": {"type": "object"},
    "tags": {"type": "object", "additionalProperties": {"type": "string"}},
    "either": {"oneOf": [{"type": "object", "properties": {"a": {"type": "string"}}}, {"type": "object", "properties": {"b": {"type": "integer"}}}]},
    "mixed": {"type": ["string", "integer"]},
    "tree": {"$ref": "#/$defs/node"}
  },
  "$defs": {
    "customer": {"type": "object", "properties": {"id": {"type": "string"}, "vip": {"type": "boolean"}}},
    "node": {"type": "object", "properties": {"name": {"type": "string"}, "child": {"$ref": "#/$defs/node"}}}
  }
}`)
	ty, err := Load("orders.json", dir)
	if err != nil {
		t.Fatal(err)
	}
	check := func(path string, kind Kind) {
		t.Helper()
		cur := ty
		for name := range strings.SplitSeq(path, ".") {
			if name == "[]" {
				cur = cur.Items
				continue
			}
			f, ok := cur.Field(name)
			if !ok {
				t.Fatalf("%s: no field %s (has %v)", path, name, cur.FieldNames())
			}
			cur = f
		}
		if cur.Kind != kind {
			t.Errorf("%s is %v, want %v", path, cur.Kind, kind)
		}
	}
	check("kind", String)
	check("total", Number)
	check("customer.vip", Bool)
	check("lines.[].qty", Integer)
	check("meta.anything", Any)
	check("tags.anything", String)
	check("either.a", String)
	check("either.b", Integer)
	check("mixed", Any)
	check("tree.child.child.name", String)
	if _, ok := ty.Field("custmer"); ok {
		t.Error("custmer is a field")
	}
	if _, ok := ty.Fields["customer"].Field("name"); ok {
		t.Error("customer.name is a field")
	}
	env, err := Env(ty, map[string]types.Type{"kind": types.TypeOf(func() string { return "" })})
	if err != nil {
		t.Fatal(err)
	}
	if got := env["kind"].String(); got != "func() string" {
		t.Errorf("the function does not hide the field kind: kind is %s", got)
	}
	customer, ok := env["customer"].(types.Map)
	if !ok || customer["vip"] != types.Bool || customer["id"] != types.String {
		t.Errorf("customer is %v, want a map of id string and vip bool", env["customer"])
	}
	if _, open := customer[types.Extra]; open {
		t.Error("customer, which lists its fields, takes any other field")
	}
	if tags := env["tags"].(types.Map); tags[types.Extra] != types.String {
		t.Errorf("tags is %v, want a map of strings", tags)
	}
	if env["total"] != types.Float64 || env["mixed"] != types.Any {
		t.Errorf("total is %v and mixed %v, want float64 and any", env["total"], env["mixed"])
	}
	if _, err := Env(ty.Fields["meta"], nil); err == nil {
		t.Error("a free-form top level gave an env")
	}

	for _, tc := range []struct{ ref, want string }{
		{"missing.json", "missing.json"},
		{"schema.yaml", `neither "platform" nor a JSON Schema file`},
		{"bad.json", "bad.json"},
		{"invalid.json", "invalid.json"},
	} {
		write("bad.json", `{"type": `)
		write("invalid.json", `{"type": "strin"}`)
		if _, err := Load(tc.ref, dir); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%q): %v, want an error with %q", tc.ref, err, tc.want)
		}
	}
}
