package rules

import (
	"fmt"
	"strings"
	"testing"
)

// realisticRules is a 10-rule config shaped like the platform's use-cases.
const realisticRules = `
  - {name: archive, when: "true", to: [archive]}
  - {name: drop-load-tests, when: 'header("X-Load-Test") == "1"', to: [], stop: true}
  - {name: wa-inbound, when: 'event == "channel.message_in" && message.channel.engine == "wa"', to: [crm]}
  - {name: needs-human, when: 'event == "channel.message_in" && need_human == 1', to: [support, crm]}
  - {name: ig-inbound, when: 'event == "channel.message_in" && message.channel.engine == "ig"', to: [crm]}
  - {name: agent-replies, when: 'event == "agent.message_out"', to: [crm]}
  - {name: ai-replies, when: 'event == "ai.message_generated" && message?.content?.type == "text"', to: [analytics]}
  - {name: devices, when: 'event in ["device.connected", "device.disconnected"]', to: [ops]}
  - {name: images, when: 'event == "channel.message_in" && message?.content?.type == "image"', to: [media]}
  - {name: vip, when: 'message?.bisnis?.id in ["biz_1", "biz_2"]', to: [crm], shadow: true}
`

var realisticSinks = []string{"archive", "crm", "support", "analytics", "ops", "media"}

func manyRules(n int) string {
	events := []string{"channel.message_in", "agent.message_out", "ai.message_generated", "device.connected", "device.disconnected"}
	var b strings.Builder
	b.WriteString(realisticRules)
	for i := 10; i < n; i++ {
		// Most rules compare event to a constant, as routing tables do; the
		// constants are mostly events this payload is not.
		fmt.Fprintf(&b, "  - {name: r%d, when: 'event == \"custom.event_%d\" && message?.bisnis?.id == \"b%d\"', to: [crm]}\n", i, i, i)
		if i%100 == 0 {
			fmt.Fprintf(&b, "  - {name: r%d-x, when: 'event == %q && need_human == %d', to: [support]}\n", i, events[i%5], i%2)
			i++
		}
	}
	return b.String()
}

func benchMatch(b *testing.B, rules string) {
	benchMatchSet(b, compileYAML(b, rules, realisticSinks...))
}

func benchMatchSet(b *testing.B, s *Set) {
	body := payload(b, "channel.message_in.json")
	in := s.Acquire("platform", hdr{})
	if err := in.Parse(body); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r := in.Match()
		if len(r.To) == 0 {
			b.Fatal("no match")
		}
	}
}

// BenchmarkMatch10 measures matching one parsed event against 10 rules.
func BenchmarkMatch10(b *testing.B) { benchMatch(b, realisticRules) }

// BenchmarkMatch1000 measures matching against 1,000 rules, most of which
// the event index rules out.
func BenchmarkMatch1000(b *testing.B) { benchMatch(b, manyRules(1000)) }

// BenchmarkParseMatch10 measures the whole per-request rules stage: parse,
// extract, dedup key, match.
func BenchmarkParseMatch10(b *testing.B) {
	benchParseMatch(b, compileYAML(b, realisticRules, realisticSinks...))
}

func benchParseMatch(b *testing.B, s *Set) {
	body := payload(b, "channel.message_in.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		in := s.Acquire("platform", hdr{})
		if err := in.Parse(body); err != nil {
			b.Fatal(err)
		}
		if _, err := in.DedupKey(); err != nil {
			b.Fatal(err)
		}
		in.Match()
		s.Release(in)
	}
}

// TestMatchAllocs keeps the allocation budget of the match path: nothing per
// rule once the event is parsed.
func TestMatchAllocs(t *testing.T) {
	s := compileYAML(t, realisticRules, realisticSinks...)
	in := s.Acquire("platform", hdr{})
	if err := in.Parse(payload(t, "channel.message_in.json")); err != nil {
		t.Fatal(err)
	}
	in.Match() // warm the result slices
	if n := testing.AllocsPerRun(100, func() { in.Match() }); n > 0 {
		t.Errorf("Match allocates %.1f times per event, want 0", n)
	}
}

// serveRules are the rules benchmarks/run.sh gives `hookrouter serve`, with
// every sink renamed to the one they all share there.
const serveRules = `
  - {name: archive-everything, when: "true", to: [archive]}
  - {name: drop-load-tests, when: 'header("X-Load-Test") == "1"', to: [], stop: true}
  - {name: whatsapp-inbound, when: 'event == "channel.message_in" && message.channel.engine == "wa"', to: [archive]}
  - {name: needs-human, when: 'event == "channel.message_in" && need_human == 1', to: [archive]}
  - {name: image-attachments, when: 'event == "channel.message_in" && message?.content?.type == "image"', to: [archive]}
  - {name: complaints, when: 'event == "channel.message_in" && (lower(message?.content?.text ?? "") contains "komplain" || lower(message?.content?.text ?? "") contains "refund")', to: [archive]}
  - {name: agent-replies, when: 'event == "agent.message_out" && message?.channel?.engine in ["wa", "ig", "fb", "tg"]', to: [archive]}
  - {name: ai-drafts, when: 'event == "ai.message_generated"', to: [archive]}
  - {name: device-offline, when: 'event == "device.disconnected" || (event == "device.connected" && device?.status != "connected")', to: [archive]}
  - {name: vip-candidate, when: 'message?.bisnis?.id in ["biz_1", "biz_2"]', to: [archive], shadow: true}
`

// BenchmarkParseMatchServe is BenchmarkParseMatch10 with the rules of
// benchmarks/run.sh and every sample payload in turn.
func BenchmarkParseMatchServe(b *testing.B) {
	benchParseMatchServe(b, compileYAML(b, serveRules, "archive"))
}

func benchParseMatchServe(b *testing.B, s *Set) {
	var bodies [][]byte
	for _, name := range []string{"channel.message_in.json", "channel.message_in.image.json", "agent.message_out.json",
		"ai.message_generated.json", "device.connected.json", "device.disconnected.json"} {
		bodies = append(bodies, payload(b, name))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		in := s.Acquire("platform", hdr{})
		if err := in.Parse(bodies[i%len(bodies)]); err != nil {
			b.Fatal(err)
		}
		if _, err := in.DedupKey(); err != nil {
			b.Fatal(err)
		}
		in.Match()
		s.Release(in)
		i++
	}
}

// TestMatchAllocsServe is TestMatchAllocs for the rules of benchmarks/run.sh,
// on every sample payload. Their complaints rule calls lower() twice on a
// channel.message_in: each call makes a string, which the VM boxes, so
// those events may allocate 4 times, the others not at all.
func TestMatchAllocsServe(t *testing.T) {
	s := compileYAML(t, serveRules, "archive")
	for _, name := range []string{"channel.message_in.json", "channel.message_in.image.json", "agent.message_out.json",
		"ai.message_generated.json", "device.connected.json", "device.disconnected.json"} {
		in := s.Acquire("platform", hdr{})
		if err := in.Parse(payload(t, name)); err != nil {
			t.Fatal(err)
		}
		in.Match()
		budget := 0.0
		if strings.HasPrefix(name, "channel.message_in") {
			budget = 4
		}
		if n := testing.AllocsPerRun(100, func() { in.Match() }); n > budget {
			t.Errorf("%s: Match allocates %.1f times per event, want at most %.0f", name, n, budget)
		}
		s.Release(in)
	}
}
