package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hookrouter/hookrouter/sinks"
)

// yaml.v3's short tags, as Node.ShortTag returns them.
const (
	nullTag  = "!!null"
	boolTag  = "!!bool"
	intTag   = "!!int"
	floatTag = "!!float"
	mergeTag = "!!merge"
)

// decodeBudget bounds the nodes visited while decoding, so that aliases
// referring to aliases cannot make a small file expensive to load.
const decodeBudget = 1 << 20

// decoder decodes a yaml.Node tree into a File by reflection over the yaml
// tags of its types. It does not use Node.Decode for structs, which ignores
// KnownFields: walking the tree finds every unknown key, records the position
// of every path and places type errors at their line and column.
type decoder struct {
	f        *File
	env      func(string) (string, bool)
	problems Problems
	// set holds the paths given a non-null value: a null or absent field
	// takes its default, an explicit zero is checked.
	set map[string]bool
	// bad holds the paths whose value was refused while decoding, so the
	// schema checks do not report the same mistake a second time.
	bad map[string]bool
	// origin holds the raw text of scalars that referred to variables, by
	// path, to explain a value that came out empty.
	origin map[string]string
	// interps memoizes substitution per node: an anchored scalar is decoded
	// once per alias but must be substituted, and reported, once.
	interps map[*yaml.Node]substitution
	// merging holds the mappings being merged with <<, to refuse a cycle.
	merging map[*yaml.Node]bool
	budget  int
}

func newDecoder(f *File, env func(string) (string, bool)) *decoder {
	return &decoder{
		f:       f,
		env:     env,
		set:     map[string]bool{},
		bad:     map[string]bool{},
		origin:  map[string]string{},
		interps: map[*yaml.Node]substitution{},
		merging: map[*yaml.Node]bool{},
		budget:  decodeBudget,
	}
}

// problemf adds a problem about path, placed at the path's position.
func (d *decoder) problemf(path, format string, args ...any) {
	d.problems = append(d.problems, d.f.Problemf(path, format, args...))
}

// problemAt adds a problem about path, placed at node n.
func (d *decoder) problemAt(n *yaml.Node, path, format string, args ...any) {
	d.problems = append(d.problems, Problem{
		File: d.f.Name, Line: n.Line, Col: n.Column, Path: path, Msg: fmt.Sprintf(format, args...),
	})
}

// decodeFile parses data and decodes it into d.f. It reports false when the
// YAML itself is broken, and there is no tree to check.
func (d *decoder) decodeFile(data []byte) bool {
	doc, extra, err := parseDoc(data)
	if err != nil {
		d.problems = append(d.problems, yamlProblem(d.f.Name, data, err))
		return false
	}
	if extra != nil {
		d.problemAt(extra, "", "a config file holds one YAML document: remove this one or the --- before it")
	}
	if doc == nil || len(doc.Content) == 0 {
		return true // empty: the checks say what is missing
	}
	d.value(nil, doc.Content[0], reflect.ValueOf(d.f).Elem(), "")
	return true
}

// value decodes n into v. key is n's key when n is a mapping's value; it
// positions mappings, lists and nulls, which are best shown at their key.
func (d *decoder) value(key, n *yaml.Node, v reflect.Value, path string) {
	if !d.spend(n, path) {
		return
	}
	orig := n
	for i := 0; n.Kind == yaml.AliasNode; i++ {
		if n.Alias == nil || i > 100 {
			d.problemAt(orig, path, "alias does not resolve to a value")
			return
		}
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode {
		d.interpolate(n, path)
	}
	null := n.Kind == yaml.ScalarNode && n.ShortTag() == nullTag
	if path != "" {
		pos := Pos{orig.Line, orig.Column}
		if key != nil && (null || n.Kind != yaml.ScalarNode) {
			pos = Pos{key.Line, key.Column}
		}
		if _, ok := d.f.positions[path]; !ok {
			d.f.positions[path] = pos
		}
	}
	if null {
		return // absent: the field keeps its zero value or takes its default
	}
	if path != "" {
		d.set[path] = true
	}
	d.into(n, v, path)
}

// spend takes one step from the decoding budget, reporting at n when the
// budget runs out.
func (d *decoder) spend(n *yaml.Node, path string) bool {
	d.budget--
	if d.budget == -1 {
		d.problemAt(n, path, "the file is too large once its aliases and merges are expanded")
		d.bad[""] = true // what was decoded is partial: check nothing else
	}
	return d.budget >= 0
}

// into decodes the non-null, non-alias node n into v by v's type.
func (d *decoder) into(n *yaml.Node, v reflect.Value, path string) {
	switch v.Type() {
	case reflect.TypeFor[Duration](), reflect.TypeFor[time.Duration]():
		d.duration(n, v, path)
		return
	case reflect.TypeFor[Size]():
		d.size(n, v, path)
		return
	case reflect.TypeFor[Rate]():
		d.rate(n, v, path)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.into(n, v.Elem(), path)
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Map:
		d.mapping(n, v, path)
	case reflect.Slice:
		d.sequence(n, v, path)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.typeProblem(n, path, "a string")
			return
		}
		v.SetString(n.Value)
	case reflect.Int, reflect.Int64, reflect.Int32:
		i, ok := scalarInt(n)
		if !ok {
			d.typeProblem(n, path, "a whole number")
			return
		}
		if v.OverflowInt(i) {
			d.bad[path] = true
			d.problemAt(n, path, "number %s is out of range", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		b, ok := scalarBool(n)
		if !ok {
			d.typeProblem(n, path, "true or false")
			return
		}
		v.SetBool(b)
	default:
		panic(fmt.Sprintf("config: no decoder for %s", v.Type())) // a field type this file does not handle
	}
}

// quoted reports whether n is a quoted scalar.
func quoted(n *yaml.Node) bool {
	return n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0
}

// scalarInt decodes an integer scalar. A quoted decimal integer is accepted
// too: workers: "${WORKERS}" is a common way to write it.
func scalarInt(n *yaml.Node) (int64, bool) {
	if n.Kind != yaml.ScalarNode {
		return 0, false
	}
	if quoted(n) {
		i, err := strconv.ParseInt(n.Value, 10, 64)
		return i, err == nil
	}
	if n.ShortTag() != intTag {
		return 0, false
	}
	var i int64
	if err := n.Decode(&i); err != nil {
		return 0, false
	}
	return i, true
}

// scalarBool decodes a boolean scalar, quoted "true" and "false" included.
func scalarBool(n *yaml.Node) (bool, bool) {
	if n.Kind != yaml.ScalarNode {
		return false, false
	}
	if quoted(n) {
		switch n.Value {
		case "true":
			return true, true
		case "false":
			return false, true
		}
		return false, false
	}
	if n.ShortTag() != boolTag {
		return false, false
	}
	var b bool
	err := n.Decode(&b)
	return b, err == nil
}

// typeProblem reports that n is not what path needs.
func (d *decoder) typeProblem(n *yaml.Node, path, want string) {
	d.bad[path] = true // at "" (the top level), check skips everything
	if path == "" {
		d.problemAt(n, path, "expected a mapping of settings (listen, sources, sinks, rules, ...) at the top level, got %s", describe(n))
		return
	}
	d.problemAt(n, path, "expected %s, got %s", want, describe(n))
}

// describe names what n is, for type problems.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "nothing"
}

func (d *decoder) duration(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.typeProblem(n, path, "a duration such as 30s")
		return
	}
	dur, err := parseDuration(n.Value)
	switch {
	case err != nil:
		d.bad[path] = true
		d.problemAt(n, path, "%s", err)
	case dur <= 0:
		d.bad[path] = true
		d.problemAt(n, path, "duration %q must be greater than zero", n.Value)
	default:
		v.SetInt(int64(dur))
	}
}

func (d *decoder) rate(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.typeProblem(n, path, "a rate such as 10/s")
		return
	}
	r, err := parseRate(n.Value)
	if err != nil {
		d.bad[path] = true
		d.problemAt(n, path, "%s", err)
		return
	}
	v.SetFloat(float64(r))
}

func (d *decoder) size(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.typeProblem(n, path, "a size such as 1MiB")
		return
	}
	size, err := parseSize(n.Value)
	switch {
	case err != nil:
		d.bad[path] = true
		d.problemAt(n, path, "%s", err)
	case size <= 0:
		d.bad[path] = true
		d.problemAt(n, path, "size %q must be greater than zero", n.Value)
	default:
		v.SetInt(int64(size))
	}
}

// substitution is what interpolation did to one scalar node.
type substitution struct {
	raw             string // the text before substitution
	changed, failed bool
}

// interpolate substitutes variables in the scalar n, once per node, and
// re-resolves a plain scalar's type from its new text.
func (d *decoder) interpolate(n *yaml.Node, path string) {
	sub, done := d.interps[n]
	if !done {
		r := interpolate(n.Value, d.env)
		sub = substitution{raw: n.Value, changed: r.changed, failed: len(r.errs) > 0}
		d.interps[n] = sub
		for _, msg := range r.errs {
			d.problemAt(n, path, "%s", msg)
		}
		if r.changed {
			n.Value = r.value
			if n.Style == 0 {
				n.Tag = "" // plain: ShortTag resolves the type again
			}
		}
	}
	if sub.changed {
		d.origin[path] = sub.raw
	}
	if sub.failed {
		d.bad[path] = true
	}
}

// entry is one key and value of a mapping, after merges.
type entry struct{ key, val *yaml.Node }

// entries returns n's keys and values, with the keys merged in by << after
// the explicit ones, which win. A repeated key is reported and skipped: unlike
// yaml.v3's Unmarshal, Node trees do not refuse duplicates themselves.
func (d *decoder) entries(n *yaml.Node, path string) []entry {
	noun := "key"
	if path == "sinks" {
		noun = "sink name"
	}
	seen := map[string]*yaml.Node{}
	var out, merged []entry
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !d.spend(k, path) {
			return nil
		}
		if k.Kind != yaml.ScalarNode {
			d.problemAt(k, path, "a key must be a plain string, not %s", describe(k))
			continue
		}
		if k.ShortTag() == mergeTag {
			merged = append(merged, d.merge(k, v, path)...)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.problemAt(k, keyPath(path, k.Value), "duplicate %s %q (first defined at line %d)", noun, k.Value, first.Line)
			continue
		}
		seen[k.Value] = k
		out = append(out, entry{k, v})
	}
	for _, e := range merged {
		if _, ok := seen[e.key.Value]; !ok {
			seen[e.key.Value] = e.key
			out = append(out, e)
		}
	}
	return out
}

// merge returns the entries that "<<: v" brings in: v is a mapping or a list
// of mappings, the earlier ones winning.
func (d *decoder) merge(k, v *yaml.Node, path string) []entry {
	for v.Kind == yaml.AliasNode && v.Alias != nil && v.Alias != v {
		v = v.Alias
	}
	switch v.Kind {
	case yaml.MappingNode:
		if d.merging[v] {
			d.problemAt(k, path, "<< merges a mapping into itself")
			return nil
		}
		d.merging[v] = true
		defer delete(d.merging, v)
		return d.entries(v, path)
	case yaml.SequenceNode:
		var out []entry
		for _, item := range v.Content {
			for item.Kind == yaml.AliasNode && item.Alias != nil && item.Alias != item {
				item = item.Alias
			}
			if item.Kind != yaml.MappingNode {
				d.problemAt(item, path, "<< takes a mapping or a list of mappings, got %s", describe(item))
				continue
			}
			out = append(out, d.merge(k, item, path)...)
		}
		return out
	}
	d.problemAt(v, path, "<< takes a mapping or a list of mappings, got %s", describe(v))
	return nil
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.typeProblem(n, path, "a mapping")
		return
	}
	if v.Type() == reflect.TypeFor[Sink]() {
		d.sink(n, v, path)
		return
	}
	fields := yamlFields(v.Type())
	for _, e := range d.entries(n, path) {
		i, ok := fields[e.key.Value]
		if !ok {
			d.unknownKey(e.key, path, yamlNames(v.Type()), nil)
			continue
		}
		d.value(e.key, e.val, v.FieldByIndex(i), keyPath(path, e.key.Value))
	}
}

// sink decodes a sink's mapping: its type first, which says what Config
// holds its other keys, then the keys every sink takes into v, a Sink, and
// the others into that Config. A key of another sink type is decoded into a
// Config of that type (so its value is still checked and positioned) and
// reported as not applying.
func (d *decoder) sink(n *yaml.Node, v reflect.Value, path string) {
	s := v.Addr().Interface().(*Sink)
	common := yamlFields(v.Type())
	entries := d.entries(n, path)
	for _, e := range entries {
		if e.key.Value == "type" {
			d.value(e.key, e.val, v.FieldByIndex(common["type"]), keyPath(path, "type"))
		}
	}
	s.Settings = newSinkConfig(s.Type)
	var own map[string][]int
	var settings reflect.Value
	if s.Settings != nil {
		settings = reflect.ValueOf(s.Settings).Elem()
		own = yamlFields(settings.Type())
	}
	for _, e := range entries {
		key, fp := e.key.Value, keyPath(path, e.key.Value)
		if i, ok := common[key]; ok {
			if key != "type" {
				d.value(e.key, e.val, v.FieldByIndex(i), fp)
			}
			continue
		}
		if i, ok := own[key]; ok {
			d.value(e.key, e.val, settings.FieldByIndex(i), fp)
			continue
		}
		other := otherSinkConfig(key)
		if other == nil {
			d.unknownKey(e.key, path, sinkKeys(s), allSinkKeys())
			continue
		}
		ov := reflect.ValueOf(other).Elem()
		d.value(e.key, e.val, ov.FieldByIndex(yamlFields(ov.Type())[key]), fp)
		if s.Settings != nil && d.set[fp] && !d.isBad(fp) {
			d.bad[fp] = true
			d.problemf(fp, "%s does not apply to %s sinks, which take %s",
				key, s.Type, strings.Join(append(yamlNames(settings.Type()), yamlNames(v.Type())[1:]...), ", "))
		}
	}
}

// sinkKeys returns the keys a sink of s's type takes, or, for an unknown
// type, every key some sink takes.
func sinkKeys(s *Sink) []string {
	if s.Settings == nil {
		return allSinkKeys()
	}
	return append(yamlNames(reflect.TypeFor[Sink]()), yamlNames(reflect.TypeOf(s.Settings).Elem())...)
}

// allSinkKeys returns every key some sink takes: the common ones, then each
// type's, once.
func allSinkKeys() []string {
	keys := yamlNames(reflect.TypeFor[Sink]())
	for _, typ := range sinkTypes() {
		for _, k := range yamlNames(reflect.TypeOf(newSinkConfig(typ)).Elem()) {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// otherSinkConfig returns an empty Config of the first sink type that takes
// key, or nil if none does.
func otherSinkConfig(key string) sinks.Config {
	for _, typ := range sinkTypes() {
		c := newSinkConfig(typ)
		if _, ok := yamlFields(reflect.TypeOf(c).Elem())[key]; ok {
			return c
		}
	}
	return nil
}

// yamlFields maps the yaml names of t's exported fields to their indexes;
// the fields of a struct tagged ",inline" count as t's own.
func yamlFields(t reflect.Type) map[string][]int {
	fields := map[string][]int{}
	for i := range t.NumField() {
		sf := t.Field(i)
		name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if !sf.IsExported() || name == "-" {
			continue
		}
		if name == "" && opts == "inline" && sf.Type.Kind() == reflect.Struct {
			for k, idx := range yamlFields(sf.Type) {
				fields[k] = append([]int{i}, idx...)
			}
			continue
		}
		if name != "" {
			fields[name] = []int{i}
		}
	}
	return fields
}

// yamlNames returns the yaml names of t's fields, in declaration order,
// inlined structs' in place.
func yamlNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		sf := t.Field(i)
		name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		switch {
		case !sf.IsExported() || name == "-":
		case name == "" && opts == "inline" && sf.Type.Kind() == reflect.Struct:
			names = append(names, yamlNames(sf.Type)...)
		case name != "":
			names = append(names, name)
		}
	}
	return names
}

// unknownKey reports key, which is not one of allowed, at path. It suggests
// the closest allowed key, else the closest of more (keys that belong
// elsewhere), else lists the allowed ones.
func (d *decoder) unknownKey(key *yaml.Node, path string, allowed, more []string) {
	p := keyPath(path, key.Value)
	d.bad[p] = true
	s := Suggest(key.Value, allowed)
	if s == "" {
		s = Suggest(key.Value, more)
	}
	if s == "" {
		d.problemAt(key, p, "unknown key %q (allowed here: %s)", key.Value, strings.Join(allowed, ", "))
		return
	}
	d.problemAt(key, p, "unknown key %q (did you mean %q?)", key.Value, s)
	// The misspelt field is most likely missing because of the typo: do
	// not also report it as required.
	d.bad[keyPath(path, s)] = true
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.typeProblem(n, path, "a mapping")
		return
	}
	t := v.Type()
	m := reflect.MakeMap(t)
	for _, e := range d.entries(n, path) {
		elem := reflect.New(t.Elem()).Elem()
		d.value(e.key, e.val, elem, keyPath(path, e.key.Value))
		m.SetMapIndex(reflect.ValueOf(e.key.Value).Convert(t.Key()), elem)
	}
	v.Set(m)
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.typeProblem(n, path, "a list")
		return
	}
	// Never nil, even when empty: `to: []` differs from a missing `to`.
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.value(nil, item, s.Index(i), indexPath(path, i))
	}
	v.Set(s)
}

// Suggest returns the entry of known closest to s, if it is within two edits
// (case aside) and not a complete rewrite of a short word, else "".
func Suggest(s string, known []string) string {
	best, bestDist := "", 3
	ls := strings.ToLower(s)
	for _, k := range known {
		dist := editDistance(ls, strings.ToLower(k))
		if dist < bestDist && dist < len(k) && dist < len(s) {
			best, bestDist = k, dist
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30 // keys are short; a long one suggests nothing
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
