package router

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReloadTypeChecks: with a schema, a reload type-checks the rules, sink
// bodies and templates as validate does. Each of the mistakes that used to
// pass and then never match, saved over a running router's file, is
// rejected with its FILE:LINE:COL in /health and the API's answer, and the
// running config stays in force: events are still routed by it.
func TestReloadTypeChecks(t *testing.T) {
	a := newCapture(t)
	dir := t.TempDir()
	config := func(when, body string) string {
		sink := reloadSink("a", a, "")
		if body != "" {
			sink = reloadSink("a", a, ", body: '"+body+"'")
		}
		cfg := baseConfig("{backend: memory}", sink, "  - name: wa\n    when: '"+when+"'\n    to: [a]\n")
		cfg = strings.ReplaceAll(cfg, "DATA", filepath.Join(dir, "data"))
		return strings.Replace(cfg, "    max_body_bytes: 64KiB\n", "    max_body_bytes: 64KiB\n    schema: platform\n", 1)
	}
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte(config(`message?.channel?.engine == "wa"`, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _ := startAt(t, path, true)

	sent := 0
	route := func() {
		t.Helper()
		sent++
		body := fmt.Sprintf(`{"event":"channel.message_in","timestamp":1,"message":{"id":"m%d","channel":{"engine":"wa"}}}`, sent)
		if an := s.post("/webhook", []byte(body)); an.status != 200 {
			t.Fatalf("POST: %d %s", an.status, an.body)
		}
		waitFor(t, 10*time.Second, "the event delivered by the config in force", func() bool { return a.count() == sent })
	}
	route()
	for _, tc := range []struct{ when, body, want string }{
		{`message.chanel.engine == "wa"`, "", `rules[0].when: message.chanel: message has no field "chanel" in the schema (did you mean "channel"?)`},
		{`message.channel.engine`, "", `rules[0].when: must return bool, but returns string`},
		{`event + "x"`, "", `rules[0].when: must return bool, but returns string`},
		{`need_human == "1"`, "", `rules[0].when: invalid operation: == (mismatched types int and string)`},
		{`source() == 1`, "", `rules[0].when: invalid operation: == (mismatched types string and int)`},
		{`Event == "x"`, "", `rules[0].when: Event: the payload has no field "Event" in the schema (did you mean "event"?)`},
		{`event == "x"`, `{"who": message.sender}`, `sinks.a.body: message.sender: message has no field "sender" in the schema (did you mean "sender_name"?)`},
	} {
		saveByRename(t, path, config(tc.when, tc.body))
		waitFor(t, maxReloadLatency, "the rejection in /health", func() bool { return strings.Contains(s.health().LastReloadError, tc.want) })
		h := s.health()
		if !problemLine.MatchString(h.LastReloadError) || !strings.HasPrefix(h.LastReloadError, path+":") {
			t.Errorf("%s: last_reload_error %q, want FILE:LINE:COL: …", tc.when, h.LastReloadError)
		}
		if h.ConfigGeneration != 1 {
			t.Errorf("%s: generation %d after a rejected reload, want 1", tc.when, h.ConfigGeneration)
		}
		if an := s.adminPost("/-/reload", nil); an.status != 400 || !strings.Contains(an.body, tc.want) {
			t.Errorf("%s: POST /-/reload: %d %q, want 400 with %q", tc.when, an.status, an.body, tc.want)
		}
		route()
	}
	if err := os.WriteFile(path, []byte(config(`message?.channel?.engine == "ig"`, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.r.Reload("test"); err != nil {
		t.Fatalf("reload of a fixed file: %v", err)
	}
	if g := s.r.Runtime().Generation; g != 2 {
		t.Errorf("generation %d, want 2", g)
	}
}
