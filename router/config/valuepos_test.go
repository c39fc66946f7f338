package config

import (
	"strings"
	"testing"
)

// TestValuePos: a position inside an expression maps to the file for each
// scalar style, and to nothing where the value is not the file's text.
func TestValuePos(t *testing.T) {
	const file = `sources:
  - name: platform
    path: /webhook
    auth: {type: none}
sinks:
  out: {type: stdout}
rules:
  - name: plain
    when: message.chanel == "x"   # a comment
    to: [out]
  - name: double
    when: "message.chanel == 'x'"
    to: [out]
  - name: single
    when: 'message.chanel == "x"'
    to: [out]
  - name: literal
    when: |
      event == "a" &&
        message.chanel == "x"
    to: [out]
  - name: folded
    when: >-
      event == "a" &&
      message.chanel == "x"
    to: [out]
  - name: escaped
    when: "event == \"a\" && message.chanel == 'x'"
    to: [out]
  - name: env
    when: ${WHEN}
    to: [out]
`
	f, err := Parse("rules.yaml", []byte(file), func(k string) (string, bool) { return `message.chanel == "x"`, k == "WHEN" })
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		want Pos
		ok   bool
	}{
		{Pos{9, 19}, true},
		{Pos{12, 20}, true},
		{Pos{15, 20}, true},
		{Pos{20, 17}, true},
		{Pos{25, 15}, true},
		{Pos{}, false},
		{Pos{}, false},
	} {
		r := f.Rules[i]
		off := strings.Index(r.When, "chanel")
		got, ok := f.ValuePos(indexPath("rules", i)+".when", r.When, off)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: ValuePos = %v, %v; want %v, %v", r.Name, got, ok, tc.want, tc.ok)
		}
	}
	if _, ok := f.ValuePos("rules[0].when", f.Rules[0].When, len(f.Rules[0].When)+1); ok {
		t.Error("an offset past the value has a position")
	}
	if _, ok := f.ValuePos("rules[9].when", "x", 0); ok {
		t.Error("a path not in the file has a position")
	}
}
