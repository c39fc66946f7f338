package rules

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"github.com/valyala/fastjson"

	"github.com/hookrouter/hookrouter/sinks"
)

// nativeCase is an expression and whether it must have a native form.
type nativeCase struct {
	when   string
	native bool
}

// nativeCases cover every node and operator of the native subset, with
// operands of every kind, and expressions just outside it.
var nativeCases = []nativeCase{
	{`true`, true},
	{`false`, true},
	{`event == "channel.message_in"`, true},
	{`"device.connected" == event`, true},
	{`event != "agent.message_out"`, true},
	{`event == nil`, true},
	{`event in ["device.connected", "device.disconnected"]`, true},
	{`event in []`, true},
	{`event in ["", "x"]`, true}, // nil is looked up as ""
	{`event not in ["channel.message_in"]`, true},
	{`need_human == 1`, true},
	{`need_human == 1.0`, true},
	{`need_human != 0`, true},
	{`need_human == true`, true},
	{`need_human == "1"`, true},
	{`need_human == nil`, true},
	{`need_human in [1, 2]`, true},
	{`need_human in [1.0, "1", true, nil]`, true},
	{`n == 1`, true},
	{`n == 1.0`, true},
	{`n == 0`, true},
	{`n == -0.0`, true},
	{`n == -1`, true},
	{`n == m`, true},
	{`n == 9223372036854775807`, true},
	{`n == 1.2345678901234567e19`, true},
	{`n in [0, 1, 100, -9223372036854775807, 9223372036854775807]`, true},
	{`n > 0`, true},
	{`n >= 1`, true},
	{`n < 1.5`, true},
	{`n <= -1`, true},
	{`timestamp > 1738056000 && timestamp < 2000000000`, true},
	{`score > 0.5`, true},
	{`event < "d"`, true},
	{`event >= timestamp`, true}, // string with number: an error
	{`message.channel.engine == "wa"`, true},
	{`message?.channel?.engine == "wa"`, true},
	{`message?.channel.engine == "wa"`, true},
	{`message.channel?.engine == "ig"`, true},
	{`message["channel"]?.engine == "wa"`, true},
	{`message?.channel?.engine in ["wa", "ig", "fb", "tg"]`, true},
	{`message?.channel?.engine == nil`, true},
	{`message.bisnis == nil`, true},
	{`message?.bisnis != nil`, true},
	{`message == nil`, true},
	{`message == "a string"`, true},
	{`message.content == message.content`, true}, // objects: the VM decides
	{`message?.content?.attachments == nil`, true},
	{`message?.bisnis?.id in ["biz_1", "biz_test"]`, true},
	{`nested.a.b.c == 1`, true},
	{`nested?.a?.b?.c == 1`, true},
	{`device?.status != "connected"`, true},
	{`event == "device.disconnected" || (event == "device.connected" && device?.status != "connected")`, true},
	{`header("X-Load-Test") == "1"`, true},
	{`header("x-load-test") != ""`, true},
	{`header("X-A") in ["é", "x"]`, true},
	{`source() == "platform"`, true},
	{`source() in ["other"]`, true},
	{`!(event == "x")`, true},
	{`not (need_human == 1)`, true},
	{`!need_human`, true},
	{`not event`, true},
	{`event == "nope" && message.no.such == 1`, true},
	{`event != "nope" || message.no.such == 1`, true},
	{`event == "channel.message_in" and message.channel.engine == "wa"`, true},
	{`event == "x" or need_human == 1`, true},
	{`true && event`, true}, // not bool: an error
	{`false || need_human`, true},
	{`need_human && true`, true},
	{`event ?? false`, true},
	{`need_human ?? false`, true},
	{`(message?.content?.text ?? "") contains "Halo"`, true},
	{`(message?.sender_name ?? "x") == "x"`, true},
	{`message?.content?.text contains "Halo"`, true},
	{`message.content.text startsWith "Halo"`, true},
	{`message?.content?.text endsWith ""`, true},
	{`message?.content?.type contains "age"`, true},
	{`need_human contains "1"`, true},
	{`message contains "a"`, true},
	{`event contains event`, true},
	{`lower(message?.content?.text ?? "") contains "komplain"`, true},
	{`lower(message?.content?.text ?? "") contains "refund" || lower(message?.content?.text ?? "") contains "butuh"`, true},
	{`lower(message?.content?.text ?? "") contains "i̇stanbul"`, true},
	{`lower(message?.content?.text ?? "") contains "straße"`, true},
	{`lower(message?.content?.text ?? "") contains "\ufffd"`, true},
	{`lower(message?.content?.text ?? "") startsWith "halo"`, true},
	{`lower(message?.content?.text ?? "") endsWith "😀 ⱥ"`, true},
	{`lower(message?.sender_name ?? "") == "test user"`, true},
	{`lower(message.content.text) contains "halo"`, true},
	{`lower(event) in ["device.connected"]`, true},
	{`lower(event) == lower("DEVICE.CONNECTED")`, true},
	{`lower(s) contains lower(t)`, true},
	{`lower(need_human) == "1"`, true},
	{`lower(message?.content?.text) contains ""`, true},
	{`need_human == 1 ? event == "channel.message_in" : message?.content?.type == "image"`, true},
	{`event ? true : false`, true},
	{`-1 == -n`, false}, // negation of a variable
	{`any(message?.content?.attachments ?? [], .type == "image")`, false},
	{`$env.event == "channel.message_in"`, false},
	{`let e = event; e == "device.connected"`, false},
	{`message?.content?.text matches "^Halo"`, false},
	{`message.content.attachments[0].type == "image"`, false},
	{`len(message?.channel ?? {}) == 3`, false},
	{`"engine" in message.channel`, false},
	{`event in [event]`, false},
	{`header(event) == ""`, false},
	{`event + "x" == "x"`, false},
	{`timestamp % 2 == 0`, false},
}

// nativeEdgeBodies are payloads of unusual shapes and values for the
// native table test: missing fields, nulls, members of non-objects, the
// spellings of numbers, escapes and non-ASCII text. The duplicate key is
// read as fastjson reads it, first one, by the native forms and the VM alike.
var nativeEdgeBodies = []string{
	`{}`,
	`{"event":null,"message":null,"need_human":null,"n":null}`,
	`{"event":"channel.message_in","message":"a string","device":[1,2],"need_human":"1"}`,
	`{"event":"channel.message_in","message":{"channel":5,"content":[]},"need_human":true}`,
	`{"event":"channel.message_in","message":{"channel":{"engine":["wa"]},"content":{"text":null,"type":{}}}}`,
	`{"event":"channel.message_in","message":{"channel":null,"bisnis":{"id":""}},"n":1}`,
	`{"event":"device.connected","device":"offline","nested":{"a":{"b":[]}}}`,
	`{"nested":{"a":{"b":{"c":1.0}}},"message":{"channel":{}}}`,
	`{"n":1.0,"m":1}`,
	`{"n":1e0,"m":1.0}`,
	`{"n":-0,"m":0}`,
	`{"n":-0.0,"m":-0}`,
	`{"n":1E2,"m":100}`,
	`{"n":-1,"m":-1.0}`,
	`{"n":12345678901234567890,"m":12345678901234567000}`,
	`{"n":9223372036854775807,"m":9223372036854775807.0}`,
	`{"n":-9223372036854775808}`,
	`{"n":1e400,"m":-1e400}`,
	`{"n":4.9e-324,"m":0.1}`,
	`{"n":"1","m":true}`,
	`{"event":true,"need_human":false,"n":false}`,
	`{"event":false,"need_human":true,"s":null}`,
	`{"ev\u0065nt":"channel.message_in","message":{"ch\u0061nnel":{"engine":"w\u0061"}}}`,
	`{"event":"device.connected","device":{"status":"conn\u0065cted"}}`,
	`{"event":"channel.message_in","message":{"content":{"text":"İSTANBUL \"KOMPLAIN\" \\ Refund\n\u00e9 \ud83d\ude00 Ⱥ"}}}`,
	`{"event":"channel.message_in","message":{"content":{"text":"STRAẞE \u212Aomplain","type":"image"},"sender_name":"TEST User"}}`,
	`{"event":"ai.message_generated","message":{"content":{"type":"text"},"bisnis":{"id":"biz_1"}}}`,
	`{"event":"device.connected","device":{"status":"disconnected"},"timestamp":1738056001,"score":0.75}`,
	`{"event":"","timestamp":"1738056001","score":"0.75"}`,
	`{"event":"x","s":"aBc","t":"B"}`,
	`{"event":"\ud800x","s":"\ud800X","t":"\ud800"}`,
	`{"event":"channel.message_in","message":{"content":{"text":"` + strings.Repeat("Komplain ", 8000) + `"}}}`,
	`{"event":"x","s":"","t":""}`,
	`{"event":"a","event":"channel.message_in","need_human":1}`,
	`{"event":"channel.message_in","message":{"content":{"text":"` + strings.Repeat("KOMPLAIN é ", 60) + `"}}}`,
}

// nativeBodies returns every sample payload and the edge payloads.
func nativeBodies(t testing.TB) [][]byte {
	var bodies [][]byte
	for _, name := range []string{"channel.message_in.json", "channel.message_in.image.json", "agent.message_out.json",
		"ai.message_generated.json", "device.connected.json", "device.disconnected.json"} {
		bodies = append(bodies, payload(t, name))
	}
	for _, b := range nativeEdgeBodies {
		bodies = append(bodies, []byte(b))
	}
	return bodies
}

// vmOnly takes away every rule's native form: s then evaluates as before
// native forms existed.
func vmOnly(s *Set) *Set {
	for i := range s.Rules {
		s.Rules[i].native = nil
	}
	return s
}

func oneRule(t testing.TB, when string) string {
	t.Helper()
	return fmt.Sprintf("  - {name: r, when: %q, to: [a]}\n", when)
}

// TestNativeAgreesWithVM evaluates each expression on every payload with
// and without its native form, and requires the same result, error or
// not; and that the native form decides, where it does, what the VM gives.
func TestNativeAgreesWithVM(t *testing.T) {
	bodies := nativeBodies(t)
	for _, tc := range nativeCases {
		t.Run(tc.when, func(t *testing.T) {
			nat := compileYAML(t, oneRule(t, tc.when), "a")
			ref := vmOnly(compileYAML(t, oneRule(t, tc.when), "a"))
			native := nat.Rules[0].native
			if (native != nil) != tc.native {
				t.Fatalf("native form: %v, want %v", native != nil, tc.native)
			}
			// Forwards then backwards, so that a value left over from the
			// previous event would show.
			seq := append(slices.Clone(bodies), bodies...)
			slices.Reverse(seq[len(bodies):])
			decided := 0
			for _, h := range []hdr{nil, {"X-Load-Test": "1", "X-A": "é"}} {
				decided += checkAgainstVM(t, nat, ref, h, seq)
			}
			if native != nil && decided == 0 {
				t.Errorf("the native form decides on no payload")
			}
		})
	}
}

// checkAgainstVM parses bodies in turn with one Input of nat and one of
// ref, the same single rule without native forms, and fails t where the
// Match results, or the native verdict and the VM's, differ. It returns
// how many verdicts the native form decided.
func checkAgainstVM(t *testing.T, nat, ref *Set, h hdr, bodies [][]byte) int {
	t.Helper()
	native := nat.Rules[0].native
	in, inRef := nat.Acquire("platform", h), ref.Acquire("platform", h)
	defer nat.Release(in)
	defer ref.Release(inRef)
	decided := 0
	for _, body := range bodies {
		if err := in.Parse(body); err != nil {
			t.Fatalf("parse %s: %v", body, err)
		}
		if err := inRef.Parse(body); err != nil {
			t.Fatal(err)
		}
		got, want := matchSummary(in.Match()), matchSummary(inRef.Match())
		if got != want {
			t.Errorf("on %s, headers %v: Match %s, without native form %s", body, h, got, want)
		}
		if native == nil {
			continue
		}
		v, ok := in.evalNative(native)
		if !ok {
			continue
		}
		decided++
		if tr := inRef.Trace()[0]; tr.Err != nil || tr.Result != v {
			t.Errorf("on %s, headers %v: native %v, VM (%v, %v)", body, h, v, tr.Result, tr.Err)
		}
	}
	return decided
}

// matchSummary is a Result as text: matched rules, errors with messages.
func matchSummary(r *Result) string {
	s := fmt.Sprintf("matched %v shadow %v to %v", r.Matched, r.Shadow, r.To)
	for _, e := range r.Errors {
		s += fmt.Sprintf(" error %d: %v", e.Rule, e.Err)
	}
	return s
}

// TestNativeFormsOfServeRules checks that every rule benchmarks/run.sh
// gives `hookrouter serve`, and every rule of the realistic set, has a
// native form, and that on the sample payloads none needs the VM, so that
// the env is never filled.
func TestNativeFormsOfServeRules(t *testing.T) {
	for _, rules := range []string{serveRules, realisticRules} {
		s := compileYAML(t, rules, realisticSinks...)
		for _, r := range s.Rules {
			if r.native == nil {
				t.Errorf("rule %s has no native form", r.Name)
			}
		}
		for _, body := range nativeBodies(t)[:6] {
			in := s.Acquire("platform", hdr{})
			if err := in.Parse(body); err != nil {
				t.Fatal(err)
			}
			in.Match()
			if in.filled != nil {
				t.Errorf("the env was filled for %s", body)
			}
			if _, err := in.DedupKey(); err != nil || in.filled != nil {
				t.Errorf("the default dedup key filled the env (err %v)", err)
			}
			s.Release(in)
		}
	}
}

// TestNativeWithEnvReader checks that rules keep their results when the
// Set reads $env, which fills the env with every payload key: with
// duplicate keys, $env, the VM and native forms all read the first.
func TestNativeWithEnvReader(t *testing.T) {
	for _, tc := range []struct{ config, want string }{{`
sources: [{name: platform, path: /webhook, auth: {type: none}}]
sinks: {a: {type: stdout}}
rules:
  - {name: env, when: '$env.n == 1 && $env.event == "first"', to: [a]}
  - {name: dup, when: 'event == "first"', to: [a]}
`, "matched [0 1] shadow [] to [a]"}, {`
sources: [{name: platform, path: /webhook, auth: {type: none}, dedup: {key: 'string($env.n)'}}]
sinks: {a: {type: stdout}}
rules:
  - {name: dup, when: 'event == "first"', to: [a]}
`, "matched [0] shadow [] to [a]"}} {
		s, ref := compileConfig(t, tc.config), vmOnly(compileConfig(t, tc.config))
		body := []byte(`{"event":"first","n":1,"event":"last"}`)
		for _, s := range []*Set{s, ref} {
			in := s.Acquire("platform", nil)
			if err := in.Parse(body); err != nil {
				t.Fatal(err)
			}
			if r := matchSummary(in.Match()); r != tc.want {
				t.Errorf("%s: %s, want %s", tc.config, r, tc.want)
			}
			s.Release(in)
		}
	}
}

// TestLazyEnv checks the env's reuse across events when it is filled only
// when read: one Input goes through events whose rules are decided
// natively, events that need the VM, and a custom dedup key, in every
// order, and must give what a fresh Input gives each event.
func TestLazyEnv(t *testing.T) {
	const config = `
sources:
  - {name: platform, path: /webhook, auth: {type: none}, dedup: {key: 'event + ":" + string(message?.id ?? device?.id)'}}
  - {name: plain, path: /plain, auth: {type: none}}
sinks: {a: {type: stdout}, b: {type: stdout}, c: {type: stdout}}
rules:
  - {name: native, when: 'event == "channel.message_in" && message.channel.engine == "wa"', to: [a]}
  - {name: vm-device, when: 'event == "device.connected" && len(device.status) > 3', to: [b]}
  - {name: vm-any, when: 'any(message?.content?.attachments ?? [], .type == "image")', to: [c]}
  - {name: undecided, when: 'event == "agent.message_out" && message.no.such == 1', to: [c]}
  - {name: native-2, when: 'message?.channel?.engine in ["ig"] || need_human == 1', to: [b]}
`
	s := compileConfig(t, config)
	bodies := nativeBodies(t)
	type outcome struct{ match, key, trace string }
	run := func(in *Input, body []byte) outcome {
		if err := in.Parse(body); err != nil {
			t.Fatal(err)
		}
		var o outcome
		o.match = matchSummary(in.Match())
		k, err := in.DedupKey()
		o.key = fmt.Sprint(k, err)
		o.trace = fmt.Sprint(in.Trace())
		return o
	}
	for _, source := range []string{"platform", "plain"} {
		want := make([]outcome, len(bodies))
		for i, body := range bodies {
			in := s.Acquire(source, nil)
			want[i] = run(in, body)
			s.Release(in)
		}
		in := s.Acquire(source, nil)
		for _, order := range [][]int{seq(len(bodies)), reversed(seq(len(bodies))), interleaved(len(bodies))} {
			for _, i := range order {
				if got := run(in, bodies[i]); got != want[i] {
					t.Errorf("%s on %s after other events: %+v, fresh Input %+v", source, bodies[i], got, want[i])
				}
			}
		}
		s.Release(in)
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func reversed(s []int) []int {
	s = slices.Clone(s)
	slices.Reverse(s)
	return s
}

// interleaved visits 0, n-1, 1, n-2, …: each event follows a different one.
func interleaved(n int) []int {
	var out []int
	for i, j := 0, n-1; i <= j; i, j = i+1, j-1 {
		out = append(out, i)
		if i != j {
			out = append(out, j)
		}
	}
	return out
}

// TestNativeAllocs keeps the native path free of allocations, lower()
// included, on payloads with numbers of every kind.
func TestNativeAllocs(t *testing.T) {
	s := compileYAML(t, `
  - {name: a, when: 'n == 1 || m > 0.5 || event in ["x", "y"] || need_human in [1, true]', to: [a]}
  - {name: b, when: 'lower(message?.content?.text ?? "") contains "komplain" && lower(event) in ["channel.message_in"]', to: [a]}
  - {name: c, when: 'header("X-A") == "1" && source() != "" ? true : message?.channel?.engine == nil', to: [a]}
`, "a")
	for _, body := range []string{`{"event":"channel.message_in","n":1.5,"m":100000000000000000000,"need_human":1,"message":{"content":{"text":"` + strings.Repeat("KOMPLAIN ", 100) + `"}}}`,
		`{"event":"y","n":-0,"m":0.25}`} {
		in := s.Acquire("platform", byteHdr{"X-A": []byte("1")})
		if err := in.Parse([]byte(body)); err != nil {
			t.Fatal(err)
		}
		in.Match()
		if in.filled != nil {
			t.Fatalf("a rule went to the VM: %s", matchSummary(&in.Result))
		}
		if n := testing.AllocsPerRun(100, func() { in.Match() }); n > 0 {
			t.Errorf("Match allocates %.1f times per event, want 0", n)
		}
		s.Release(in)
	}
}

// byteHdr is hdr without the allocation of each Peek.
type byteHdr map[string][]byte

func (h byteHdr) Peek(k string) []byte {
	for name, v := range h {
		if strings.EqualFold(name, k) {
			return v
		}
	}
	return nil
}

// TestParseInt checks parseInt against the conversion it stands for,
// fastjson's Value.Int, on the edges of int and beyond.
func TestParseInt(t *testing.T) {
	for _, text := range []string{"0", "-0", "1", "-1", "007", "123456789012345678", "1234567890123456789",
		"9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
		"18446744073709551615", "18446744073709551616", "99999999999999999999999", "0000000000000000000000000001",
		"1.0", "1e2", "-", "", "1-", "--1", "+1"} {
		var p fastjson.Parser
		v, err := p.Parse(text)
		want, wantErr := 0, error(nil)
		if err == nil {
			want, wantErr = v.Int()
		}
		got, ok := parseInt([]byte(text))
		if ok != (err == nil && wantErr == nil) || got != want {
			t.Errorf("parseInt(%q) = %d, %v; fastjson %d, %v, %v", text, got, ok, want, err, wantErr)
		}
	}
}

// FuzzNativeKeepsExprSemantics compares, on any payload, each native
// verdict with expr's own evaluation of the original expression (neither
// flattened nor patched) on the payload decoded by encoding/json. The
// reference is compiled as the rules are, payload fields untyped: compiled
// with the decoded payload as its env (expr.Eval), expr would reject at
// type-checking what the router accepts, need_human == "1" with an integral
// need_human. Payloads the two JSON decoders read differently are skipped,
// as in FuzzFlatteningKeepsExprSemantics.
func FuzzNativeKeepsExprSemantics(f *testing.F) {
	for _, b := range nativeBodies(f) {
		f.Add(b)
	}
	for _, b := range odd {
		f.Add([]byte(b))
	}
	type target struct {
		when   string
		native nexpr
		ref    *vm.Program
	}
	var rules strings.Builder
	for i, tc := range nativeCases {
		fmt.Fprintf(&rules, "  - {name: r%d, when: %q, to: [a]}\n", i, tc.when)
	}
	s := compileYAML(f, rules.String(), "a")
	var targets []target
	refEnv := map[string]any{"header": func(string) string { return "" }, "source": func() string { return "" }}
	for i, tc := range nativeCases {
		if s.Rules[i].native == nil {
			continue
		}
		prog, err := expr.Compile(tc.when, expr.Env(refEnv), expr.AllowUndefinedVariables())
		if err != nil {
			f.Fatalf("%s: %v", tc.when, err)
		}
		targets = append(targets, target{tc.when, s.Rules[i].native, prog})
	}
	in := s.Acquire("platform", hdr{})
	f.Fuzz(func(t *testing.T, body []byte) {
		if !utf8.Valid(body) || surrogateEscape.Match(body) || hasDuplicateKey(body) {
			return
		}
		if in.Parse(body) != nil {
			return
		}
		env, err := sinks.DecodePayload(body)
		if err != nil {
			t.Fatalf("fastjson accepted what encoding/json did not: %v\n%q", err, body)
		}
		env["header"] = func(string) string { return "" }
		env["source"] = func() string { return "platform" }
		for _, tg := range targets {
			got, ok := in.evalNative(tg.native)
			if !ok {
				continue
			}
			want, err := expr.Run(tg.ref, env)
			if err != nil || want != got {
				t.Errorf("%s on %s: native %v, expr (%v, %v)", tg.when, body, got, want, err)
			}
		}
	})
}
