// Package config loads hookrouter's YAML config file strictly.
//
// Load parses the file into a yaml.Node tree, substitutes ${VAR} and
// ${VAR:-default} in scalar values (so positions stay exact and a secret can
// never break the YAML), decodes the tree by walking it against the Go types
// (so every unknown key and every wrongly typed value is found with its line
// and column), fills in defaults and checks the schema. Every problem is
// reported at once, sorted, as FILE:LINE:COL: path: message. Expressions and
// templates are compiled by the router, which places its own problems in the
// file with File.Problemf.
package config

import (
	"crypto/sha256"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Load reads path and returns the checked file, or a Problems error listing
// every problem found. Variables are looked up with os.LookupEnv.
//
// When the error is a Problems, the returned File is still non-nil, so that a
// caller can add its own problems to the list; such a File must not be run.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse is Load on bytes: name is used in problem positions and env looks
// variables up (a nil env has no variables set). Like Load, it returns a
// non-nil File along with a Problems error.
func Parse(name string, data []byte, env func(string) (string, bool)) (*File, error) {
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	f := &File{Name: name, Hash: sha256.Sum256(data), positions: map[string]Pos{}, data: data}
	d := newDecoder(f, env)
	if d.decodeFile(data) {
		d.check()
	}
	if len(d.problems) == 0 {
		return f, nil
	}
	d.problems.Sort()
	return f, d.problems
}

// Resolve returns the config file to use: name when it is not empty (the
// -config flag was given), else $HOOKROUTER_CONFIG when set, else rules.yaml
// when it exists in the working directory, else rules.example.yaml.
func Resolve(name string) string {
	if name != "" {
		return name
	}
	if env := os.Getenv("HOOKROUTER_CONFIG"); env != "" {
		return env
	}
	if _, err := os.Stat("rules.yaml"); err == nil {
		return "rules.yaml"
	}
	return "rules.example.yaml"
}

// Problem is one thing wrong in a config file, at a 1-based line and column.
type Problem struct {
	File      string
	Line, Col int
	// Path names the offending node, e.g. "rules[3].to[0]" or
	// "sinks.crm.timeout"; empty for problems of the file as a whole.
	Path string
	Msg  string
}

// String formats p as "FILE:LINE:COL: PATH: MSG", without "PATH: " when
// Path is empty.
func (p Problem) String() string {
	if p.Path == "" {
		return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Col, p.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", p.File, p.Line, p.Col, p.Path, p.Msg)
}

// Problems is every problem found in a config file. As an error it prints
// one problem per line, sorted by line, column and path.
type Problems []Problem

// Error implements error. It does not reorder ps.
func (ps Problems) Error() string {
	sorted := slices.Clone(ps)
	sorted.Sort()
	lines := make([]string, len(sorted))
	for i, p := range sorted {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Sort orders ps by line, column, path and message, and drops exact
// duplicates (an anchor used twice can yield the same problem twice).
func (ps *Problems) Sort() {
	slices.SortStableFunc(*ps, func(a, b Problem) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		if a.Col != b.Col {
			return a.Col - b.Col
		}
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		if c := strings.Compare(a.Msg, b.Msg); c != 0 {
			return c
		}
		return strings.Compare(a.File, b.File)
	})
	*ps = slices.Compact(*ps)
}

// Pos returns the position of the node at path, such as "rules[3].to[0]",
// "sinks.crm.url", "sources[0].auth.secret" or "sinks.crm.headers.X-Api-Key".
// A scalar's position is its value's; a mapping's or list's is its key's.
// For a path not in the file it falls back to the nearest ancestor that is,
// else to line 1, column 1.
func (f *File) Pos(path string) Pos {
	if f == nil {
		return Pos{1, 1}
	}
	for p := path; p != ""; p = parentPath(p) {
		if pos, ok := f.positions[p]; ok {
			return pos
		}
	}
	return Pos{1, 1}
}

// parentPath strips the last ".key" or "[i]" from path.
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// Problemf returns a Problem about the node at path, positioned at Pos(path).
func (f *File) Problemf(path, format string, args ...any) Problem {
	pos := f.Pos(path)
	name := ""
	if f != nil {
		name = f.Name
	}
	return Problem{File: name, Line: pos.Line, Col: pos.Col, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// SinkNames returns the names of f's sinks, sorted.
func (f *File) SinkNames() []string {
	names := make([]string, 0, len(f.Sinks))
	for name := range f.Sinks {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// indexPath returns path[i].
func indexPath(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// keyPath returns path.key, or key at the top level.
func keyPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
