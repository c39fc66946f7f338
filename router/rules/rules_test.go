package rules

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/expr-lang/expr"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// compileYAML builds a Set from a config whose sinks are named in rules.
func compileYAML(t testing.TB, rulesYAML string, sinkNames ...string) *Set {
	t.Helper()
	var b strings.Builder
	b.WriteString("sources:\n  - {name: platform, path: /webhook, auth: {type: none}}\nsinks:\n")
	for _, n := range sinkNames {
		fmt.Fprintf(&b, "  %s: {type: stdout}\n", n)
	}
	b.WriteString("rules:\n")
	b.WriteString(rulesYAML)
	return compileConfig(t, b.String())
}

// compileConfig builds a Set from a whole config file.
func compileConfig(t testing.TB, yaml string) *Set {
	t.Helper()
	f, err := config.Parse("rules.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	s, problems := Compile(f)
	if problems != nil {
		t.Fatalf("compile: %v", problems)
	}
	return s
}

// sampleFiles are the sample payloads the semantics tests parse.
var sampleFiles = []string{"channel.message_in.json", "channel.message_in.image.json", "device.connected.json", "agent.message_out.json"}

type hdr map[string]string

func (h hdr) Peek(k string) []byte {
	for name, v := range h {
		if strings.EqualFold(name, k) {
			return []byte(v)
		}
	}
	return nil
}

func payload(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func match(t *testing.T, s *Set, body []byte, h hdr) (Result, []string) {
	t.Helper()
	in := s.Acquire("platform", h)
	defer s.Release(in)
	if err := in.Parse(body); err != nil {
		t.Fatalf("parse: %v", err)
	}
	r := in.Match()
	var names []string
	for _, i := range r.Matched {
		names = append(names, s.Rules[i].Name)
	}
	for _, i := range r.Shadow {
		names = append(names, "shadow:"+s.Rules[i].Name)
	}
	for _, e := range r.Errors {
		names = append(names, "error:"+s.Rules[e.Rule].Name)
	}
	out := Result{To: slices.Clone(r.To)}
	return out, names
}

func TestMatchSemantics(t *testing.T) {
	const rules = `
  - {name: all, when: "true", to: [archive]}
  - {name: drop-load-tests, when: 'header("X-Load-Test") == "1"', to: [], stop: true}
  - {name: wa-in, when: 'event == "channel.message_in" && message.channel.engine == "wa"', to: [crm]}
  - {name: human, when: 'event == "channel.message_in" && need_human == 1', to: [support, crm]}
  - {name: vip, when: 'message?.bisnis?.id in ["biz_test"]', to: [crm], shadow: true}
  - {name: text-unsafe, when: 'message.content.text contains "butuh"', to: [support]}
  - {name: devices, when: 'event in ["device.connected", "device.disconnected"]', to: [ops]}
  - {name: images, when: 'any(message?.content?.attachments ?? [], .type == "image")', to: [media]}
  - {name: unicode, when: 'message?.content?.text matches "^Halo"', to: [greeting]}
  - {name: src, when: 'source() == "platform" && event == "device.disconnected"', to: [pager], stop: true}
  - {name: after-stop, when: "true", to: [never-for-disconnect]}
`
	s := compileYAML(t, rules, "archive", "crm", "support", "ops", "media", "greeting", "pager", "never-for-disconnect")
	tests := []struct {
		name    string
		file    string
		headers hdr
		to      []string
		rules   []string
	}{
		{"wa inbound", "channel.message_in.json", nil,
			[]string{"archive", "crm", "support", "greeting", "never-for-disconnect"},
			[]string{"all", "wa-in", "text-unsafe", "unicode", "after-stop", "shadow:vip"}},
		{"ig image needs human", "channel.message_in.image.json", nil,
			[]string{"archive", "support", "crm", "media", "never-for-disconnect"},
			[]string{"all", "human", "images", "after-stop", "shadow:vip"}},
		{"device event: field error is no match, not failure", "device.connected.json", nil,
			[]string{"archive", "ops", "never-for-disconnect"},
			[]string{"all", "devices", "after-stop", "error:text-unsafe"}},
		{"stop ends evaluation", "device.disconnected.json", nil,
			[]string{"archive", "ops", "pager"},
			[]string{"all", "devices", "src", "error:text-unsafe"}},
		{"drop rule with empty to and stop", "channel.message_in.json", hdr{"x-load-test": "1"},
			[]string{"archive"},
			[]string{"all", "drop-load-tests"}},
		{"agent out", "agent.message_out.json", nil,
			[]string{"archive", "never-for-disconnect"},
			[]string{"all", "after-stop", "shadow:vip"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, names := match(t, s, payload(t, tc.file), tc.headers)
			// Errors and shadows are reported after matches in names; compare as sets in order of kind.
			if !slices.Equal(r.To, tc.to) {
				t.Errorf("to = %v, want %v", r.To, tc.to)
			}
			if !sameSet(names, tc.rules) {
				t.Errorf("rules = %v, want %v", names, tc.rules)
			}
		})
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestMissingFieldsAndTypes(t *testing.T) {
	s := compileYAML(t, `
  - {name: nil-safe, when: 'message?.channel?.engine == nil', to: [a]}
  - {name: num, when: 'timestamp > 1738056000 && timestamp < 2000000000', to: [b]}
  - {name: float, when: 'score > 0.5', to: [c]}
  - {name: arr, when: 'len(tags) == 2 && tags[1] == "ü"', to: [d]}
  - {name: nested-arr, when: 'items[0].qty == 3', to: [e]}
  - {name: not-bool, when: 'flag', to: [f]}
`, "a", "b", "c", "d", "e", "f")
	body := []byte(`{"event":"x","timestamp":1738056001,"score":0.75,"tags":["a","ü"],"items":[{"qty":3}],"flag":"yes"}`)
	r, names := match(t, s, body, nil)
	if !slices.Equal(r.To, []string{"a", "b", "c", "d", "e"}) {
		t.Errorf("to = %v", r.To)
	}
	if !slices.Contains(names, "error:not-bool") {
		t.Errorf("a non-bool result must be a rule error, got %v", names)
	}
}

func TestParseRejects(t *testing.T) {
	s := compileYAML(t, `  - {name: a, when: "true", to: [a]}`, "a")
	for _, body := range []string{``, `[1,2]`, `"x"`, `{"a":`, `{"a":1}x`, `nul`,
		// Not JSON, though fastjson's parser alone takes them.
		"{\"a\":\"\x1e\"}", "{\"a\x01\":1}", `{"a":"\q"}`, `{"a":"\u12"}`, `{"a":nan}`, `{"a":1-2}`, `{"a":-inf}`} {
		in := s.Acquire("platform", nil)
		if err := in.Parse([]byte(body)); err == nil {
			t.Errorf("Parse(%q) = nil, want error", body)
		}
		s.Release(in)
	}
}

func TestDedupKeyDefault(t *testing.T) {
	s := compileYAML(t, `  - {name: a, when: "true", to: [a]}`, "a")
	tests := []struct{ body, want string }{
		{string(payload(t, "channel.message_in.json")), "channel.message_in_msg_test456"},
		{string(payload(t, "device.connected.json")), "device.connected_dev_wa_01_1738057000"},
		{`{"event":"e","message":{"id":42}}`, "e_42"},
		{`{"event":"e","message":{"id":null},"device":{"id":"d"},"timestamp":1.5}`, "e_d_1.5"},
	}
	for _, tc := range tests {
		in := s.Acquire("platform", nil)
		if err := in.Parse([]byte(tc.body)); err != nil {
			t.Fatal(err)
		}
		got, err := in.DedupKey()
		if err != nil || got != tc.want {
			t.Errorf("DedupKey(%s) = %q, %v; want %q", tc.body, got, err, tc.want)
		}
		s.Release(in)
	}
	// No ids: a hash of the body, different for different bodies.
	keys := map[string]bool{}
	for _, body := range []string{`{"a":1}`, `{"a":2}`, `{"a":1} `} {
		in := s.Acquire("platform", nil)
		_ = in.Parse([]byte(body))
		k, _ := in.DedupKey()
		if !strings.HasPrefix(k, "sha256:") {
			t.Errorf("key %q", k)
		}
		keys[k] = true
		s.Release(in)
	}
	if len(keys) != 3 {
		t.Errorf("body-hash keys collide: %v", keys)
	}
}

func TestDedupKeyCustom(t *testing.T) {
	s := compileConfig(t, `
sources:
  - {name: platform, path: /webhook, auth: {type: none}, dedup: {key: 'conversation_id + ":" + message?.id'}}
sinks: {a: {type: stdout}}
rules: [{name: a, when: "true", to: [a]}]
`)
	in := s.Acquire("platform", nil)
	defer s.Release(in)
	if err := in.Parse(payload(t, "channel.message_in.json")); err != nil {
		t.Fatal(err)
	}
	if k, err := in.DedupKey(); err != nil || k != "conv_test123:msg_test456" {
		t.Errorf("custom key = %q, %v", k, err)
	}
	in2 := s.Acquire("platform", nil)
	defer s.Release(in2)
	_ = in2.Parse(payload(t, "device.connected.json")) // no conversation_id: string + nil fails
	if k, err := in2.DedupKey(); err == nil || k != "device.connected_dev_wa_01_1738057000" {
		t.Errorf("failing custom key = %q, %v; want default key and an error", k, err)
	}
}

func TestCompileProblems(t *testing.T) {
	f, err := config.Parse("rules.yaml", []byte(`sources:
  - {name: platform, path: /webhook, auth: {type: none}, dedup: {key: 'event +'}}
sinks:
  crm: {type: stdout}
rules:
  - name: a
    when: 'event == '
    to: [crm]
  - name: b
    when: '1 + 2'
    to: [crm, crn]
  - name: c
    when: 'header(1) == ""'
    to: [crm]
  - name: d
    when: 'heder("X") == "" && lower(event) == "x" && len(message?.x ?? "") == 0'
    to: [crm]
  - name: e
    when: 'let f = 1; toUpper(event) == ""'
    to: [crm]
`), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	_, problems := Compile(f)
	problems.Sort()
	var got []string
	for _, p := range problems {
		got = append(got, p.String())
	}
	want := []string{
		`rules.yaml:2:71: sources[0].dedup.key: `,
		`rules.yaml:7:11: rules[0].when: `,
		`rules.yaml:10:11: rules[1].when: `,
		`rules.yaml:11:15: rules[1].to[1]: unknown sink "crn" (did you mean "crm"?)`,
		`rules.yaml:13:11: rules[2].when: `,
		`rules.yaml:16:11: rules[3].when: unknown function heder() (did you mean "header"?)`,
		`rules.yaml:19:11: rules[4].when: unknown function toUpper()`,
	}
	if len(got) != len(want) {
		t.Fatalf("problems:\n%s", strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("problem %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
}

func TestEventIndex(t *testing.T) {
	tests := []struct {
		when string
		want []string // nil = unconstrained
	}{
		{`event == "a"`, []string{"a"}},
		{`"a" == event`, []string{"a"}},
		{`event in ["a", "b"]`, []string{"a", "b"}},
		{`event == "a" && x == 1`, []string{"a"}},
		{`x == 1 and event == "a"`, []string{"a"}},
		{`event == "a" || event == "b"`, []string{"a", "b"}},
		{`event == "a" || x == 1`, nil},
		{`event == "a" && event == "b"`, []string{}},
		{`event != "a"`, nil},
		{`not (event == "a")`, nil},
		{`true`, nil},
	}
	for _, tc := range tests {
		got := eventConstraint(tc.when)
		if (got == nil) != (tc.want == nil) || !slices.Equal(got, tc.want) {
			t.Errorf("eventConstraint(%q) = %#v, want %#v", tc.when, got, tc.want)
		}
	}
}

// TestIndexPreservesOrder checks that the index changes no routing: every
// event gets the same result with and without it.
func TestIndexPreservesOrder(t *testing.T) {
	var b strings.Builder
	events := []string{"channel.message_in", "agent.message_out", "ai.message_generated", "device.connected", "device.disconnected"}
	for i := 0; i < 60; i++ {
		switch i % 4 {
		case 0:
			fmt.Fprintf(&b, "  - {name: r%d, when: 'event == %q', to: [s%d]}\n", i, events[i%5], i%7)
		case 1:
			fmt.Fprintf(&b, "  - {name: r%d, when: 'timestamp %% %d == 0', to: [s%d]}\n", i, i%5+1, i%7)
		case 2:
			fmt.Fprintf(&b, "  - {name: r%d, when: 'event in [%q, %q] && timestamp > 0', to: [s%d], stop: %v}\n", i, events[i%5], events[(i+1)%5], i%7, i == 42)
		case 3:
			if i%8 == 3 {
				fmt.Fprintf(&b, "  - {name: r%d, when: 'event == \"nope\"', to: [s%d]}\n", i, i%7)
			} else {
				// Fields read only by rules of some events.
				fmt.Fprintf(&b, "  - {name: r%d, when: 'event == %q && (message?.channel?.engine == \"wa\" || device.status == \"connected\")', to: [s%d]}\n", i, events[i%5], i%7)
			}
		}
	}
	s := compileYAML(t, b.String(), "s0", "s1", "s2", "s3", "s4", "s5", "s6")
	// One Input parses every payload: a value left over from the previous
	// event must not change a result.
	in := s.Acquire("platform", nil)
	defer s.Release(in)
	for _, name := range []string{"channel.message_in.json", "agent.message_out.json", "ai.message_generated.json", "device.connected.json", "device.disconnected.json", "channel.message_in.image.json", "device.connected.json"} {
		if err := in.Parse(payload(t, name)); err != nil {
			t.Fatal(err)
		}
		got := slices.Clone(in.Match().Matched)
		// Reference: evaluate every rule in order.
		var want []int
		for _, e := range in.Trace() {
			if e.Result {
				want = append(want, e.Rule)
				if s.Rules[e.Rule].Stop {
					break
				}
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: indexed %v, full %v", name, got, want)
		}
	}
}

func TestFieldsExtractedOnlyAsNeeded(t *testing.T) {
	s := compileYAML(t, `
  - {name: a, when: 'event == "channel.message_in" && message.channel.engine == "wa"', to: [a]}
  - {name: b, when: 'len(message?.content?.attachments ?? []) > 0', to: [a]}
  - {name: c, when: 'len(device) > 0 && header("X-Env") == "prod"', to: [a]}
  - {name: d, when: 'event == "other" && message.user.id == "u" && len(user) > 0', to: [a]}
`, "a")
	in := s.Acquire("platform", hdr{"x-env": "prod"})
	defer s.Release(in)
	if err := in.Parse(payload(t, "channel.message_in.image.json")); err != nil {
		t.Fatal(err)
	}
	if _, ok := in.env["message"]; ok {
		t.Errorf("message decoded though rules read only flattened paths of it")
	}
	if v := in.env["#p:message.channel.engine"]; v != "ig" {
		t.Errorf("flattened engine = %v", v)
	}
	atts := in.env["#p:message?.content?.attachments"].([]any)
	if atts[0].(map[string]any)["size"] != 182733 {
		t.Errorf("attachments not whole or numbers not int: %v", atts)
	}
	if _, ok := in.env["conversation_id"]; ok {
		t.Error("conversation_id extracted though unused")
	}
	if _, ok := in.env["#p:message.user.id"]; ok {
		t.Error("message.user.id flattened though only a rule for another event reads it")
	}
	if _, ok := in.env["user"]; ok {
		t.Error("user extracted though only a rule for another event reads it")
	}
	if in.env["#h:x-env"] != "prod" {
		t.Errorf("header not pre-read: %v", in.env)
	}
	if r := in.Match(); len(r.Matched) != 1 || r.Matched[0] != 1 {
		t.Errorf("matched %v", r.Matched)
	}
}

// TestFlatteningKeepsExprSemantics evaluates each expression two ways, the
// router's (flattened, extracted fields) and expr's own (whole payload
// decoded to maps), and requires the same result, error or not.
func TestFlatteningKeepsExprSemantics(t *testing.T) {
	exprs := semanticsExprs
	var bodies [][]byte
	for _, p := range sampleFiles {
		bodies = append(bodies, payload(t, p))
	}
	for _, b := range odd {
		bodies = append(bodies, []byte(b))
	}
	for i, e := range exprs {
		s := compileYAML(t, fmt.Sprintf("  - {name: r, when: %q, to: [a]}\n", e), "a")
		// One Input parses every body, forwards then backwards, so that a
		// value left over from the previous event would show.
		in := s.Acquire("platform", hdr{})
		for k := range 2 * len(bodies) {
			body := bodies[k%len(bodies)]
			if k >= len(bodies) {
				body = bodies[2*len(bodies)-1-k]
			}
			if err := in.Parse(body); err != nil {
				t.Fatal(err)
			}
			checkAgainstExpr(t, in, i, e, body)
		}
		s.Release(in)
	}
}

// semanticsExprs are the expressions TestFlatteningKeepsExprSemantics and
// FuzzFlatteningKeepsExprSemantics evaluate both ways.
var semanticsExprs = []string{
	`message.channel.engine == "wa"`,
	`message?.channel?.engine == "wa"`,
	`message?.channel.engine == "wa"`,
	`message.channel?.engine == "wa"`,
	`message.content.text contains "Halo"`,
	`device.id == "dev_wa_01"`,
	`device?.id == "dev_wa_01"`,
	`message.id.x == nil`,
	`message?.id?.x == nil`,
	`message.content.attachments[0].type == "image"`,
	`any(message?.content?.attachments ?? [], .mime_type == "image/jpeg")`,
	`let m = message; m?.channel?.engine == "ig"`,
	`message.bisnis == nil`,
	`len(message?.channel ?? {}) == 3`,
	`"engine" in message.channel`,
	`message.channel["engine"] == "wa"`,
	`event == "device.connected" || message.content.type == "image"`,
	`(message?.sender_name ?? "") matches "^R"`,
	`need_human == 1 && message.content.type == "image"`,
	`timestamp > 1738056000 ? message.id != "" : device.id != ""`,
	`source() == "platform" && header("X-A") == ""`,
	`$env.event == "channel.message_in"`,
	`nested.a.b.c == 1`,
	`nested?.a?.b?.c == 1`,
	`$env.need_human == 1 || "timestamp" in $env`,
	`lower(message?.content?.text ?? "") contains "komplain"`,
	`lower(message?.content?.text ?? "") contains "refund" || lower(message?.content?.text ?? "") contains "butuh"`,
	`lower(message.content.text) contains "halo"`,
	`lower(message?.content?.text) contains ""`,
	`lower(message?.content?.text ?? "") contains "i̇stanbul"`,
	`lower(message?.content?.text ?? "") contains "straße"`,
	`lower(message?.content?.text ?? "") contains "ⱥ"`,
	`lower(message?.content?.text ?? "") contains "\ufffd"`,
	`lower(message?.content?.text ?? "") contains "Halo"`,
	`not (lower(message?.content?.text ?? "") contains "halo")`,
	`lower(message?.content?.text ?? "") startsWith "halo"`,
	`lower(message?.content?.text ?? "") endsWith "bantuan"`,
	`lower(message?.content?.text ?? "") endsWith "😀 ⱥ"`,
	`lower(message?.sender_name ?? "") == "test user"`,
}

// checkAgainstExpr compares, for the one-rule set behind in (already parsed
// with body), Match and Trace with expr's own evaluation of e on the whole
// payload decoded to maps.
func checkAgainstExpr(t *testing.T, in *Input, i int, e string, body []byte) {
	t.Helper()
	// Match evaluates the rule only if the event index lets it, with what
	// Parse computed for this event; Trace always, with everything computed.
	r := in.Match()
	matched, matchErr := len(r.Matched) > 0, len(r.Errors) > 0
	tr := in.Trace()[0]
	got, gotErr := tr.Result, tr.Err

	env, err := sinks.DecodePayload(body)
	if err != nil {
		t.Fatalf("fastjson accepted what encoding/json did not: %v\n%q", err, body)
	}
	env["header"] = func(string) string { return "" }
	env["source"] = func() string { return "platform" }
	// Compiled as the router compiles (no payload types, bool result), but
	// without flattening.
	var want any
	prog, wantErr := expr.Compile(e, expr.Env(compileEnv), expr.AllowUndefinedVariables(), expr.AsBool())
	if wantErr == nil {
		want, wantErr = expr.Run(prog, env)
	}
	if (gotErr != nil) != (wantErr != nil) || (wantErr == nil && got != want) {
		t.Errorf("expr %d %q on %s: router (%v, %v), expr (%v, %v)", i, e, body, got, gotErr, want, wantErr)
	}
	if matched != (gotErr == nil && got) || matchErr != (gotErr != nil) {
		t.Errorf("expr %d %q on %s: Match (%v, error %v), Trace (%v, %v)", i, e, body, matched, matchErr, got, gotErr)
	}
}

// FuzzFlatteningKeepsExprSemantics is TestFlatteningKeepsExprSemantics on
// any payload: each expression's set keeps one Input across inputs, so a
// value left over from the previous event would show. Payloads on which the
// two JSON decoders are known to differ are skipped: invalid UTF-8 and
// surrogate escapes (encoding/json turns invalid ones into U+FFFD, fastjson
// keeps a lone "\ud800" as those six characters).
func FuzzFlatteningKeepsExprSemantics(f *testing.F) {
	for _, p := range sampleFiles {
		f.Add(payload(f, p))
	}
	for _, b := range odd {
		f.Add([]byte(b))
	}
	sets := make([]*Set, len(semanticsExprs))
	ins := make([]*Input, len(semanticsExprs))
	for i, e := range semanticsExprs {
		sets[i] = compileYAML(f, fmt.Sprintf("  - {name: r, when: %q, to: [a]}\n", e), "a")
		ins[i] = sets[i].Acquire("platform", hdr{})
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !utf8.Valid(body) || surrogateEscape.Match(body) {
			return
		}
		for i, e := range semanticsExprs {
			if ins[i].Parse(body) != nil {
				return
			}
			checkAgainstExpr(t, ins[i], i, e, body)
		}
	})
}

var surrogateEscape = regexp.MustCompile(`\\u[dD][89a-fA-F]`)

// odd are payloads of unusual shapes for TestFlatteningKeepsExprSemantics.
var odd = []string{
	`{}`,
	`{"event":"x","message":"a string","device":null}`,
	`{"message":{"channel":null,"content":{"text":"İSTANBUL KOMPLAIN"}}}`,
	`{"message":{"content":{"text":"STRAẞE \u212Aomplain"}},"nested":{"a":{"b":{"c":1}}}}`,
	`{"message":{"content":{"text":12}},"need_human":1}`,
	`{"message":{"content":{"text":""}},"timestamp":1738056001}`,
	`{"message":{"content":{"text":"Refund\u00e9 \ud83d\ude00 Ⱥ"}}}`,
	`{"message":{"content":{"text":"a\ufffdb\ud800"}}}`,
	`{"event":"x","message":{"channel":{"engine":"wa"},"channel":{"engine":"ig"}},"message":{"content":{"text":"refund"}}}`,
	`{"message":{"channel":{"engine":"wa","engine":"ig"},"content":{"text":"a","text":"refund"}},"need_human":0,"need_human":1}`,
}

// TestDedupKeyOutlivesRelease checks that a custom key that is a payload
// string is a copy: the env's strings alias the parser's buffer, which the
// next Parse overwrites.
func TestDedupKeyOutlivesRelease(t *testing.T) {
	s := compileConfig(t, `
sources:
  - {name: platform, path: /webhook, auth: {type: none}, dedup: {key: 'message.content.text'}}
sinks: {a: {type: stdout}}
rules: [{name: a, when: "true", to: [a]}]
`)
	in := s.Acquire("platform", nil)
	defer s.Release(in)
	if err := in.Parse([]byte(`{"message":{"content":{"text":"first key"}}}`)); err != nil {
		t.Fatal(err)
	}
	k, err := in.DedupKey()
	if err != nil || k != "first key" {
		t.Fatalf("key = %q, %v", k, err)
	}
	if err := in.Parse([]byte(`{"message":{"content":{"text":"other val"}}}`)); err != nil {
		t.Fatal(err)
	}
	if k != "first key" {
		t.Errorf("key changed to %q by the next Parse", k)
	}
}

// TestRepeatedKeyReadsLastEverywhere: of a key repeated in one JSON object,
// rules, dedup keys and templates all read the last value, as encoding/json
// (sinks.DecodePayload, which templates and bodies read) does.
func TestRepeatedKeyReadsLastEverywhere(t *testing.T) {
	body := []byte(`{"event":"first","message":{"id":"m1","channel":{"engine":"wa"},"id":"m2","channel":{"engine":"ig"}},` +
		`"event":"last","n":1,"n":2}`)
	tests := []struct{ when, template, want string }{
		{`event == "last"`, `{{ .event }}`, "last"},                                               // the event index
		{`message.id == "m2"`, `{{ .message.id }}`, "m2"},                                         // a flattened chain
		{`message?.channel?.engine == "ig"`, `{{ .message.channel.engine }}`, "ig"},               // an optional chain
		{`message.channel == {"engine": "ig"}`, `{{ json .message.channel }}`, `{"engine":"ig"}`}, // a whole value
		{`n == 2`, `{{ .n }}`, "2"},
		{`$env.event == "last"`, `{{ .event }}`, "last"},
	}
	payload, err := sinks.DecodePayload(body)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.when, func(t *testing.T) {
			tmpl, err := render.ParseTemplate("text", tc.template)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := tmpl.Execute(payload); err != nil || got != tc.want {
				t.Fatalf("template %s = %q, %v; want %q", tc.template, got, err, tc.want)
			}
			s := compileYAML(t, oneRule(t, tc.when), "a")
			in := s.Acquire("platform", nil)
			defer s.Release(in)
			if err := in.Parse(body); err != nil {
				t.Fatal(err)
			}
			if r := matchSummary(in.Match()); r != "matched [0] shadow [] to [a]" {
				t.Errorf("rule %s: %s, want a match", tc.when, r)
			}
			if in.Event() != "last" {
				t.Errorf("Event() = %q, want the last", in.Event())
			}
			if key, _ := in.DedupKey(); key != "last_m2" {
				t.Errorf("default dedup key %q, want last_m2", key)
			}
		})
	}
}
