package rules

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/valyala/fastjson"
)

// FuzzStrictMatchesValid: whatever fastjson's parser takes, strict accepts
// exactly what encoding/json's json.Valid accepts. (Not ValidateBytes: it
// takes a control character before an escape in the same string.)
func FuzzStrictMatchesValid(f *testing.F) {
	for _, p := range sampleFiles {
		f.Add(payload(f, p))
	}
	for _, b := range odd {
		f.Add([]byte(b))
	}
	for _, b := range []string{"{\"a\":\"\x1e\"}", "{\"a\x01\":1}", `{"a":"\q"}`, `{"a":"\u12"}`, `{"a":nan}`,
		`{"a":1-2}`, `{"a":-inf}`, `{"a":[1,2.5e3,-0,01]}`, "{\"a\":\n1}", `{"a":1.}`, `{"a":"\u00e9"}`,
		`{"a":"x\"y\\"}`, `{"a\n":"\\\\"}`, `{"a":"\\u12"}`, `{"a":"\u00g0"}`, `{"a":"\uABCD\/\b\f\r\t"}`, `{"a":"\\\q"}`,
		"{\"\":{\"\":{\"\":\"\x00\\b0000\"}}}", "{\"a\x1f\\n\":1}", "{\"a\":\"\\\"\x01\"}", "[\"\\\\\",\n\"x\"]"} {
		f.Add([]byte(b))
	}
	var p fastjson.Parser
	var buf []byte
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := p.ParseBytes(body)
		if err != nil {
			return
		}
		got, want := strict(body, v, &buf), json.Valid(body)
		if (got == nil) != want {
			t.Fatalf("strict(%q) = %v, json.Valid = %v", body, got, want)
		}
	})
}

// TestEscapesValid pins escapesValid on bodies the parser takes; the fuzz
// target above checks it against ValidateBytes on any input.
func TestEscapesValid(t *testing.T) {
	for body, want := range map[string]bool{
		`{"a":"plain"}`:              true,
		`{"a":"x\"y","b":"\\"}`:      true,
		`{"a":"\\\\n"}`:              true, // two escaped backslashes, then n
		`{"a":"\u00e9\/\b\f\n\r\t"}`: true,
		`{"a":"\uABCD\uabcd"}`:       true,
		`{"a":"\\q"}`:                true, // escaped backslash, then q
		`{"a":"\q"}`:                 false,
		`{"a":"\\\q"}`:               false, // escaped backslash, then \q
		`{"a":"\u12"}`:               false,
		`{"a":"\u00g0"}`:             false,
		`{"a\x":1}`:                  false, // keys too
	} {
		if got := escapesValid([]byte(body)); got != want {
			t.Errorf("escapesValid(%s) = %v, want %v", body, got, want)
		}
		var p fastjson.Parser
		if _, err := p.Parse(body); err != nil {
			t.Errorf("%s: the parser does not take it (%v): not a case strict sees", body, err)
		}
		if got := fastjson.Validate(body) == nil; got != want {
			t.Errorf("%s: ValidateBytes says %v, the table %v", body, got, want)
		}
	}
}

func TestHasControlByte(t *testing.T) {
	base := bytes.Repeat([]byte("ab\x7f\x80\xa0\xff \x20"), 3)
	if hasControlByte(base) {
		t.Fatalf("hasControlByte(%q) = true", base)
	}
	for i := range base {
		for _, c := range []byte{0x00, 0x01, 0x09, 0x0a, 0x1f} {
			b := bytes.Clone(base)
			b[i] = c
			if !hasControlByte(b) {
				t.Errorf("hasControlByte(%q) = false", b)
			}
		}
	}
}

// BenchmarkStrict compares strict with a second, full validation, on the
// samples as the platform sends them (compact) and indented.
func BenchmarkStrict(b *testing.B) {
	for _, form := range []string{"compact", "indented"} {
		var bodies [][]byte
		for _, p := range sampleFiles {
			body := payload(b, p)
			if form == "compact" {
				var c bytes.Buffer
				if err := json.Compact(&c, body); err != nil {
					b.Fatal(err)
				}
				body = c.Bytes()
			}
			bodies = append(bodies, body)
		}
		var parsers [4]fastjson.Parser
		roots := make([]*fastjson.Value, len(bodies))
		for i, body := range bodies {
			v, err := parsers[i].ParseBytes(body)
			if err != nil {
				b.Fatal(err)
			}
			roots[i] = v
		}
		var buf []byte
		b.Run(form+"/strict", func(b *testing.B) {
			for b.Loop() {
				for i, body := range bodies {
					if err := strict(body, roots[i], &buf); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(form+"/ValidateBytes", func(b *testing.B) {
			for b.Loop() {
				for _, body := range bodies {
					if err := fastjson.ValidateBytes(body); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
