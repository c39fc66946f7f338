package router

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReloadTypeChecks: with a schema, a reload type-checks the rules as
// validate does; a typo is rejected with its position and the running
// config stays in force.
func TestReloadTypeChecks(t *testing.T) {
	a := newCapture(t)
	dir := t.TempDir()
	config := func(when string) string {
		cfg := baseConfig("{backend: memory}", reloadSink("a", a, ""), "  - name: wa\n    when: '"+when+"'\n    to: [a]\n")
		cfg = strings.ReplaceAll(cfg, "DATA", filepath.Join(dir, "data"))
		return strings.Replace(cfg, "    max_body_bytes: 64KiB\n", "    max_body_bytes: 64KiB\n    schema: platform\n", 1)
	}
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte(config(`message?.channel?.engine == "wa"`)), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _ := startAt(t, path, false)

	for _, tc := range []struct{ when, want string }{
		{`message?.chanel?.engine == "wa"`, `rules[0].when: message.chanel: message has no field "chanel" in the schema (did you mean "channel"?)`},
		{`need_human == "1"`, `rules[0].when: invalid operation: == (mismatched types int and string)`},
	} {
		if err := os.WriteFile(path, []byte(config(tc.when)), 0o644); err != nil {
			t.Fatal(err)
		}
		err := s.r.Reload("test")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), path+":") {
			t.Errorf("reload with %s: %v, want a FILE:LINE:COL problem with %q", tc.when, err, tc.want)
		}
		if g := s.r.Runtime().Generation; g != 1 {
			t.Errorf("generation %d after a rejected reload, want 1", g)
		}
	}
	if err := os.WriteFile(path, []byte(config(`message?.channel?.engine == "ig"`)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.r.Reload("test"); err != nil {
		t.Fatalf("reload of a fixed file: %v", err)
	}
	if g := s.r.Runtime().Generation; g != 2 {
		t.Errorf("generation %d, want 2", g)
	}
}
