package rules

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// edgeBodies are payloads of unusual shapes and values: missing fields,
// nulls, members of non-objects, the spellings of numbers, escapes and
// non-ASCII text, a repeated key (read as its last value).
var edgeBodies = []string{
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

// sampleBodies returns every sample payload and the edge payloads.
func sampleBodies(t testing.TB) [][]byte {
	var bodies [][]byte
	for _, name := range []string{"channel.message_in.json", "channel.message_in.image.json", "agent.message_out.json",
		"ai.message_generated.json", "device.connected.json", "device.disconnected.json"} {
		bodies = append(bodies, payload(t, name))
	}
	for _, b := range edgeBodies {
		bodies = append(bodies, []byte(b))
	}
	return bodies
}

func oneRule(t testing.TB, when string) string {
	t.Helper()
	return fmt.Sprintf("  - {name: r, when: %q, to: [a]}\n", when)
}

// matchSummary is a Result as text: matched rules, errors with messages.
func matchSummary(r *Result) string {
	s := fmt.Sprintf("matched %v shadow %v to %v", r.Matched, r.Shadow, r.To)
	for _, e := range r.Errors {
		s += fmt.Sprintf(" error %d: %v", e.Rule, e.Err)
	}
	return s
}

// TestEnvReader checks that rules keep their results when the Set reads
// $env, which fills the env with every payload key: with a repeated key,
// $env and flattened chains both read the last.
func TestEnvReader(t *testing.T) {
	for _, tc := range []struct{ config, want string }{{`
sources: [{name: platform, path: /webhook, auth: {type: none}}]
sinks: {a: {type: stdout}}
rules:
  - {name: env, when: '$env.n == 1 && $env.event == "last"', to: [a]}
  - {name: dup, when: 'event == "last"', to: [a]}
`, "matched [0 1] shadow [] to [a]"}, {`
sources: [{name: platform, path: /webhook, auth: {type: none}, dedup: {key: 'string($env.n)'}}]
sinks: {a: {type: stdout}}
rules:
  - {name: dup, when: 'event == "last"', to: [a]}
`, "matched [0] shadow [] to [a]"}} {
		s := compileConfig(t, tc.config)
		body := []byte(`{"event":"first","n":1,"event":"last"}`)
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

// TestLazyEnv checks the env's reuse across events when it is filled only
// when read, each time with the plan of the event's candidate rules: one
// Input goes through events of different plans, events no rule can match,
// and a custom dedup key, in every order, and must give what a fresh Input
// gives each event.
func TestLazyEnv(t *testing.T) {
	const config = `
sources:
  - {name: platform, path: /webhook, auth: {type: none}, dedup: {key: 'event + ":" + string(message?.id ?? device?.id)'}}
  - {name: plain, path: /plain, auth: {type: none}}
sinks: {a: {type: stdout}, b: {type: stdout}, c: {type: stdout}}
rules:
  - {name: wa, when: 'event == "channel.message_in" && message.channel.engine == "wa"', to: [a]}
  - {name: vm-device, when: 'event == "device.connected" && len(device.status) > 3', to: [b]}
  - {name: vm-any, when: 'any(message?.content?.attachments ?? [], .type == "image")', to: [c]}
  - {name: undecided, when: 'event == "agent.message_out" && message.no.such == 1', to: [c]}
  - {name: ig, when: 'message?.channel?.engine in ["ig"] || need_human == 1', to: [b]}
`
	s := compileConfig(t, config)
	bodies := sampleBodies(t)
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
