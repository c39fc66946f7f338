package file

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/hookrouter/hookrouter/sinks/sinktest"
)

// TestCompactMatchesEncodingJSON: the fast compaction gives json.Compact's
// bytes for valid objects, and still rejects what is not JSON.
func TestCompactMatchesEncodingJSON(t *testing.T) {
	inputs := []string{
		`{"a":1}`,
		"{ \"a\" : [ 1 , 2 ],\n\t\"b\" : \"x y\\\" z\\\\\" }\n",
		`{"s":"  spaces  inside\n  ", "e":"\"", "u":"ü 😀 漢字"}`,
		"  {\"a\":{\"b\":{\"c\":null}}}  ",
		`{"a" : "x\\\\" , "b" : "\\\"" , "c":"\\\\\\\"q" }`,
		`{"": "", "k" :"\\u0022 \\\\"}`,
	}
	for _, b := range sinktest.Samples() {
		inputs = append(inputs, string(b))
	}
	for _, in := range inputs {
		var want, got bytes.Buffer
		if err := json.Compact(&want, []byte(in)); err != nil {
			t.Fatalf("json.Compact(%q): %v", in, err)
		}
		if err := compact(&got, []byte(in)); err != nil || got.String() != want.String() {
			t.Errorf("compact(%q) = %q, %v; want %q", in, got.String(), err, want.String())
		}
	}
	for _, bad := range []string{``, `nope`, `[1`} {
		// Object-shaped input is trusted (ingress validated it); the rest is checked.
		var buf bytes.Buffer
		if err := compact(&buf, []byte(bad)); err == nil {
			t.Errorf("compact(%q) accepted", bad)
		}
	}
}

// FuzzCompact: for every valid JSON object, compact gives json.Compact's
// bytes.
func FuzzCompact(f *testing.F) {
	for _, b := range sinktest.Samples() {
		f.Add(b)
	}
	f.Add([]byte(`{"a" : "x\\" , "b":"\"" }`))
	f.Fuzz(func(t *testing.T, in []byte) {
		trimmed := bytes.TrimSpace(in)
		if !json.Valid(in) || len(trimmed) == 0 || trimmed[0] != '{' {
			return
		}
		var want, got bytes.Buffer
		if err := json.Compact(&want, in); err != nil {
			t.Fatal(err)
		}
		if err := compact(&got, in); err != nil || got.String() != want.String() {
			t.Fatalf("compact(%q) = %q, %v; want %q", in, got.String(), err, want.String())
		}
	})
}

func BenchmarkCompact(b *testing.B) {
	var bodies [][]byte
	for _, body := range sinktest.Samples() {
		var c bytes.Buffer
		if err := json.Compact(&c, body); err != nil {
			b.Fatal(err)
		}
		bodies = append(bodies, body, c.Bytes()) // as sent: indented, and compact
	}
	var buf bytes.Buffer
	n := 0
	for _, body := range bodies {
		n += len(body)
	}
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		for _, body := range bodies {
			buf.Reset()
			if err := compact(&buf, body); err != nil {
				b.Fatal(err)
			}
		}
	}
}
