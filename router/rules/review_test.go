package rules

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

// reviewExprs are expressions found at the edges in review: `in` over
// arrays expr's optimiser turns into sets (of strings, of ints) or leaves as
// slices, needles of every kind, operands of the wrong kind, literals on the
// left, chains through non-objects, results that are not bool.
var reviewExprs = []string{
	`1 in [1, 2]`,
	`n in [1, 2]`,
	`(n == 1 ? 1 : 2) in [1, 2]`,
	`(n == 1 ? 1 : 2) in [1.0, 2]`,
	`(n == 1 ? "a" : 1) in ["a"]`,
	`(n == 1 ? "a" : "b") in ["a"]`,
	`nil in ["", "a"]`,
	`nil in ["a"]`,
	`n in ["1"]`,
	`message in ["a"]`,
	`message in [nil, 1]`,
	`device in [nil]`,
	`n in [1, "1", nil, true, 1.5, -0.0]`,
	`n not in [-1, -0.0]`,
	`event in ["", "x", "channel.message_in"]`,
	`n == -0`,
	`-0.0 == n`,
	`n == 12345678901234567000.0`,
	`n > 9223372036854775807`,
	`(a ?? b) == nil`,
	`(a?.b ?? c?.d) == 1`,
	`(a.b ?? 1) == 1`,
	`a?.b?.c == nil`,
	`a?.["b"] == 1`,
	`a["b"]?.c == 1`,
	`!(a?.b)`,
	`a?.b && true`,
	`a?.b || false`,
	`a.b`,
	`a?.b`,
	`true ? a : b`,
	`n == 1 ? a : b`,
	`if n == 1 { a?.b == 1 } else { b == nil }`,
	`n == 1 and m == 2 or not (s == t)`,
	`header("X-A") == source()`,
	`header("x-a") in ["é"]`,
	`header("X-Missing") == ""`,
	`source() contains "plat"`,
	`lower(header("X-A")) == "é"`,
	`lower(source()) startsWith "p"`,
	`lower(s) in ["abc", ""]`,
	`lower(s) == lower(t)`,
	`lower(n) == "1"`,
	`event == event`,
	`n < m`,
	`n >= m`,
	`s < t`,
	`s endsWith t`,
	`(a ?? "x") contains "x"`,
	`a == b`,
	`a != nil && b != nil`,
	`event not in ["x"] && !(n in [1])`,
}

// reviewBodies add to sampleBodies the values reviewExprs read: a and b of
// every kind, nulls on the way, numbers at the edges, invalid UTF-8.
var reviewBodies = []string{
	`{"a":{"b":1},"b":{"c":2},"c":{"d":1},"n":1,"m":2,"s":"ABC","t":"abc"}`,
	`{"a":{"b":null},"b":null,"c":null,"n":2,"m":2.0,"s":"","t":""}`,
	`{"a":null,"b":"x","c":{"d":null},"n":-0,"m":-0.0,"s":null,"t":"x"}`,
	`{"a":"str","b":[],"n":"1","m":"2","s":1,"t":2}`,
	`{"a":[1],"b":{},"n":true,"m":false,"s":true,"t":"true"}`,
	`{"a":{"b":true},"b":false,"n":1.0,"m":1e0}`,
	`{"a":{"b":{"c":null}},"n":12345678901234567890,"m":9223372036854775808}`,
	`{"a":{"b":"1"},"n":-9223372036854775808,"m":9223372036854775807}`,
	`{"a":1,"b":1.0,"n":0.5,"m":-0.5,"s":"\u00c9","t":"é"}`,
	"{\"a\":\"\xff\",\"b\":\"\xff\",\"s\":\"\xc3\",\"t\":\"\xff\xfe\",\"event\":\"\xe9\"}",
	`{"event":"x","n":1,"a":{"b":false}}`,
	`{"event":"channel.message_in","n":2,"message":{"a":1},"device":null}`,
}

// TestReviewExprsAgreeWithExpr holds the router's verdict on each of
// reviewExprs (flattened chains, extracted fields, the pooled env) to expr's
// own on the whole payload decoded to maps, reusing one Input per Set so
// that a leftover value would show. Bodies on which the two JSON decoders
// differ are left out, as in FuzzFlatteningKeepsExprSemantics.
func TestReviewExprsAgreeWithExpr(t *testing.T) {
	var bodies [][]byte
	for _, b := range append(sampleBodies(t), func() (out [][]byte) {
		for _, b := range reviewBodies {
			out = append(out, []byte(b))
		}
		return out
	}()...) {
		if utf8.Valid(b) && !surrogateEscape.Match(b) {
			bodies = append(bodies, b)
		}
	}
	for i, when := range reviewExprs {
		t.Run(when, func(t *testing.T) {
			s := compileYAML(t, oneRule(t, when), "a")
			in := s.Acquire("platform", hdr{})
			defer s.Release(in)
			for _, body := range bodies {
				if err := in.Parse(body); err != nil {
					t.Fatal(err)
				}
				checkAgainstExpr(t, in, i, when, body)
			}
		})
	}
}

// TestReviewStrict holds Parse to json.Valid on bodies at the edges of
// what fastjson's parser takes: Parse must accept exactly the valid JSON
// objects (but for depth beyond the parser's limit).
func TestReviewStrict(t *testing.T) {
	s := compileYAML(t, oneRule(t, "true"), "a")
	in := s.Acquire("platform", nil)
	defer s.Release(in)
	deep := strings.Repeat(`{"a":`, fastjson.MaxDepth-1) + "1" + strings.Repeat("}", fastjson.MaxDepth-1)
	for _, body := range []string{
		"\xef\xbb\xbf{}", "{}\xef\xbb\xbf", "{\"a\":\"\xef\xbb\xbf\"}",
		"{\"a\":\"\xff\xfe\x80\"}", "{\"\xc3\":1}", "{\"a\":\"\xed\xa0\x80\"}",
		"{\f}", "{\v}", "{\"a\":1\f}", "{\u00a0}", "{\"a\":1}\u00a0", "{\u2028}", "{\x00}", "{\"a\":1}\x00",
		"{\"a\":\"\f\"}", "{\"a\":\"\\f\"}", "{\"a\":\"\x7f\"}",
		`{"a":"\""}`, `{"a":"\\"}`, `{"a":"\\\""}`, `{"a":"\\\\"}`, `{"\"":1}`, `{"\\":"\\\"\\"}`,
		`{"a":"x\\", "b":"\q"}`, `{"a":"x\\\\", "b":"\\q"}`, `{"a":"\u0022"}`, `{"a":"\u005c"}`, `{"a":"\u005C\q"}`,
		"{\"a\":\"\\\\\x01\"}", "{\"a\":\"\x01\\\\\"}", "{\"a\x01\":\"\\n\"}", "{\"a\":\"\\n\",\"b\":\"\x1f\"}",
		"{\"a\":\"\\\"\x01\\\"\"}", "{\"a\":\"\\u00e9\x02\"}", "{\"a\":\"\x02\\u00e9\"}", "{\n\"a\"\t:\r\"\\t\"}",
		`{"a":1e999999999}`, `{"a":-1E-999999999}`, `{"a":123456789012345678901234567890}`, `{"a":-0}`,
		`{"a":0.0e+00}`, `{"a":1e}`, `{"a":1e+}`, `{"a":.5}`, `{"a":1.}`, `{"a":-}`, `{"a":-01}`, `{"a":00}`,
		`{"a":+1}`, `{"a":0x1}`, `{"a":1_000}`, `{"a":Infinity}`, `{"a":-inf}`, `{"a":NaN}`, `{"a":nan}`,
		`{"a":1.5e3.2}`, `{"a":1-2}`, `{"a":[1,2,]}`, `{"a":1,}`, `{"a":tru}`, `{"a":nul}`, `{"a":True}`,
		deep, "[" + deep + "]", "{\"a\":" + deep + "}",
	} {
		var p fastjson.Parser
		_, perr := p.Parse(body)
		err := in.Parse([]byte(body))
		var obj map[string]json.RawMessage
		want := json.Valid([]byte(body)) && json.Unmarshal([]byte(body), &obj) == nil && obj != nil
		if perr != nil && want && strings.Contains(perr.Error(), "too big depth") {
			continue // nesting beyond fastjson.MaxDepth: the parser's limit, not strict's
		}
		if (err == nil) != want {
			t.Errorf("Parse(%q) = %v, json.Valid and an object: %v", body, err, want)
		}
	}
}

// TestMethodReceiverIsFilled: a method call's receiver (a?.b()) is not a
// slot, so nothing flattens it and the VM reads it from the env; the plan
// must fill it, else the VM reads what an earlier event with another plan
// left in the pooled env (found in review; it predates native forms).
func TestMethodReceiverIsFilled(t *testing.T) {
	s := compileYAML(t, `  - {name: r1, when: 'event == "x" && a != nil', to: [a]}
  - {name: r2, when: 'a?.b() == nil', to: [a]}
`, "a")
	run := func(bodies ...string) string {
		in := s.Acquire("platform", nil)
		defer s.Release(in)
		var out string
		for _, b := range bodies {
			if err := in.Parse([]byte(b)); err != nil {
				t.Fatal(err)
			}
			out = matchSummary(in.Match())
		}
		return out
	}
	fresh := run(`{"event":"y"}`)
	after := run(`{"event":"x","a":{"b":1}}`, `{"event":"y"}`)
	if fresh != after {
		t.Errorf("fresh Input: %s; after another event: %s", fresh, after)
	}
}

// TestDuplicateKeysReadLast: a chain that is the whole `when` is read by
// the VM from its root's value, which toValue builds when another
// expression reads the root whole; it must keep the last of a repeated
// key, as flattened chains read (found in review).
func TestDuplicateKeysReadLast(t *testing.T) {
	const rules = `
  - {name: path, when: 'a.b', to: [a]}
  - {name: whole, when: 'len(a) > 5', to: [a]}
  - {name: alone, when: 'a.b == false', to: [a]}
`
	s := compileYAML(t, rules, "a")
	body := []byte(`{"a":{"b":false,"b":true}}`)
	in := s.Acquire("platform", nil)
	defer s.Release(in)
	if err := in.Parse(body); err != nil {
		t.Fatal(err)
	}
	if got, want := matchSummary(in.Match()), "matched [0] shadow [] to [a]"; got != want {
		t.Errorf("on %s: Match %s, want %s (the last b)", body, got, want)
	}
}
