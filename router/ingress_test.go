package router

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const fastRetry = `retry: {max_attempts: 3, initial_backoff: 10ms, max_backoff: 50ms}`

func twoSinkConfig(crm, ops *capture, queue string) string {
	return baseConfig(queue, fmt.Sprintf(`  crm: {type: http, url: %q, %s}
  ops: {type: http, url: %q, %s}`, crm.URL, fastRetry, ops.URL, fastRetry), `
  - {name: drop-load-tests, when: 'header("X-Load-Test") == "1"', to: [], stop: true}
  - {name: wa-inbound, when: 'event == "channel.message_in" && message.channel.engine == "wa"', to: [crm]}
  - {name: needs-human, when: 'event == "channel.message_in" && need_human == 1', to: [crm, ops]}
  - {name: replies, when: 'event in ["agent.message_out", "ai.message_generated"]', to: [crm]}
  - {name: devices, when: 'event in ["device.connected", "device.disconnected"]', to: [ops]}
  - {name: vip, when: 'message?.bisnis?.id == "biz_test"', to: [ops], shadow: true}`)
}

// TestHTTPAnswers checks every row of the contract's HTTP table.
func TestHTTPAnswers(t *testing.T) {
	crm, ops := newCapture(t), newCapture(t)
	s := startServer(t, twoSinkConfig(crm, ops, "{backend: memory}"))
	msg := payloadFile(t, "channel.message_in.json")

	a := s.post("/webhook", msg)
	if a.status != 200 || a.body != "OK" || a.header.Get("X-Hookrouter-Duplicate") != "" {
		t.Fatalf("first post: %d %q %v", a.status, a.body, a.header)
	}
	a = s.post("/webhook", msg)
	if a.status != 200 || a.body != "OK" || a.header.Get("X-Hookrouter-Duplicate") != "true" {
		t.Fatalf("duplicate: %d %q dup=%q", a.status, a.body, a.header.Get("X-Hookrouter-Duplicate"))
	}

	tests := []struct {
		name    string
		method  string
		path    string
		body    string
		headers []string
		status  int
		want    string
	}{
		{"no credentials", "POST", "/webhook", `{"event":"x"}`, []string{"Authorization", ""}, 401, `{"error":"Unauthorized"}`},
		{"wrong secret", "POST", "/webhook", `{"event":"x"}`, []string{"Authorization", "nope"}, 401, `{"error":"Unauthorized"}`},
		{"secret as prefix", "POST", "/webhook", `{"event":"x"}`, []string{"Authorization", testSecret + "x"}, 401, `{"error":"Unauthorized"}`},
		{"not json", "POST", "/webhook", `hello`, nil, 400, `"error":"Invalid payload"`},
		{"json array", "POST", "/webhook", `[1,2]`, nil, 400, `"detail":"payload is not a JSON object"`},
		{"json string", "POST", "/webhook", `"x"`, nil, 400, `"error":"Invalid payload"`},
		{"empty body", "POST", "/webhook", ``, nil, 400, `"detail":"empty body"`},
		{"truncated", "POST", "/webhook", `{"event":"x",`, nil, 400, `"error":"Invalid payload"`},
		// fastjson's parser alone would take these four.
		{"control char in string", "POST", "/webhook", "{\"event\":\"x\x1e\"}", nil, 400, `string cannot contain control char 0x1E`},
		// ... and fastjson's validator too: a control char before an escape.
		{"control char before escape", "POST", "/webhook", "{\"event\":\"x\x1e\\n\"}", nil, 400, `string cannot contain control char 0x1E`},
		{"unknown escape", "POST", "/webhook", `{"event":"\q"}`, nil, 400, `"error":"Invalid payload"`},
		{"nan", "POST", "/webhook", `{"n":nan}`, nil, 400, `"error":"Invalid payload"`},
		// RFC 8259 §8.1: JSON text is UTF-8.
		{"latin-1 in string", "POST", "/webhook", "{\"event\":\"caf\xe9\"}", nil, 400, `"detail":"body is not valid UTF-8 (byte 13)`},
		{"lone continuation byte", "POST", "/webhook", "{\"event\":\"x\"}\x80", nil, 400, `not valid UTF-8`},
		{"surrogate half", "POST", "/webhook", "{\"event\":\"\xed\xa0\x80\"}", nil, 400, `not valid UTF-8`},
		{"GET on source", "GET", "/webhook", ``, nil, 405, `{"error":"Method not allowed"}`},
		{"PUT on source", "PUT", "/webhook", `{}`, nil, 405, `{"error":"Method not allowed"}`},
		{"unknown path", "POST", "/nope", `{}`, nil, 404, `{"error":"Not found"}`},
		{"unroutable but valid", "POST", "/webhook", `{"event":"custom.thing","id":1}`, nil, 200, `OK`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, s.url+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Authorization", testSecret)
			for i := 0; i+1 < len(tc.headers); i += 2 {
				if tc.headers[i+1] == "" {
					req.Header.Del(tc.headers[i])
				} else {
					req.Header.Set(tc.headers[i], tc.headers[i+1])
				}
			}
			a := do(t, req)
			if a.status != tc.status || !strings.Contains(a.body, tc.want) {
				t.Errorf("%s %s: %d %s, want %d containing %s", tc.method, tc.path, a.status, a.body, tc.status, tc.want)
			}
			if tc.status == 405 && a.header.Get("Allow") != "POST" {
				t.Errorf("405 without Allow: POST: %v", a.header)
			}
			if tc.status == 400 && !json.Valid([]byte(a.body)) {
				t.Errorf("400 body is not JSON: %s", a.body)
			}
		})
	}

	// Too large: see TestTooLargeIsReadable.
	if a := s.post("/webhook", bytes.Repeat([]byte(" "), 64<<10+1)); a.status != 413 || a.body != `{"error":"Payload too large"}` {
		t.Errorf("oversized body: %d %q, want 413 {\"error\":\"Payload too large\"}", a.status, a.body)
	}

	h := s.health()
	if h.Status != "healthy" || h.ProcessedEvents != 2 || h.ConfigGeneration != 1 || h.Sinks["crm"].Breaker != "closed" {
		t.Errorf("health = %+v", h)
	}
	raw := s.adminGet("/health").body
	for _, field := range []string{`"status":"healthy"`, `"processed_events":2`, `"config_generation":1`, `"last_reload_error":""`} {
		if !strings.Contains(raw, field) {
			t.Errorf("health lacks %s: %s", field, raw)
		}
	}
	m := s.adminGet("/metrics")
	for _, want := range []string{
		`hookrouter_events_accepted_total{source="platform"} 2`,
		`hookrouter_events_duplicate_total{source="platform"} 1`,
		`hookrouter_events_rejected_total{reason="unauthorized",source="platform"} 3`,
		`hookrouter_events_rejected_total{reason="invalid_payload",source="platform"} 12`,
		`hookrouter_events_unrouted_total{source="platform"} 1`,
		`hookrouter_rule_matches_total{rule="wa-inbound",shadow="false"} 1`,
		`hookrouter_rule_matches_total{rule="vip",shadow="true"} 1`,
	} {
		if !strings.Contains(m.body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	waitFor(t, 5*time.Second, "crm delivery", func() bool { return crm.count() == 1 })
	if ops.count() != 0 {
		t.Errorf("shadow rule delivered: ops got %d", ops.count())
	}
}

// TestRoutingSamplePayloads sends every sample payload and checks where each
// one arrives, with the original bytes and the router's headers.
func TestRoutingSamplePayloads(t *testing.T) {
	crm, ops := newCapture(t), newCapture(t)
	s := startServer(t, twoSinkConfig(crm, ops, "{backend: memory}"))
	want := map[string][]string{
		"channel.message_in.json":       {"crm"},
		"channel.message_in.image.json": {"crm", "ops"},
		"agent.message_out.json":        {"crm"},
		"ai.message_generated.json":     {"crm"},
		"device.connected.json":         {"ops"},
		"device.disconnected.json":      {"ops"},
	}
	for name := range want {
		if a := s.post("/webhook", payloadFile(t, name)); a.status != 200 {
			t.Fatalf("%s: %d %s", name, a.status, a.body)
		}
	}
	// A load-test event is accepted and dropped by the stop rule.
	if a := s.post("/webhook", payloadFile(t, "agent.message_out.json"), "X-Load-Test", "1"); a.status != 200 {
		t.Fatalf("load test: %d", a.status)
	}
	waitFor(t, 5*time.Second, "deliveries", func() bool { return crm.count() == 4 && ops.count() == 3 })
	s.settle()
	if crm.count() != 4 || ops.count() != 3 {
		t.Fatalf("crm %d ops %d", crm.count(), ops.count())
	}
	got := map[string][]string{}
	for sink, c := range map[string]*capture{"crm": crm, "ops": ops} {
		for _, a := range c.got() {
			for name := range want {
				if bytes.Equal(a.body, payloadFile(t, name)) {
					got[name] = append(got[name], sink)
				}
			}
			if len(a.id) != 32 {
				t.Errorf("%s: X-Hookrouter-Event-Id = %q", sink, a.id)
			}
			if ua := a.header.Get("User-Agent"); ua != "hookrouter/test" {
				t.Errorf("User-Agent = %q", ua)
			}
		}
	}
	for name, sinks := range want {
		g := got[name]
		slices.Sort(g)
		if !slices.Equal(g, sinks) {
			t.Errorf("%s went to %v, want %v (bodies must be the original bytes)", name, g, sinks)
		}
	}
}

// TestDedupConcurrent: identical posts at the same moment route once.
func TestDedupConcurrent(t *testing.T) {
	crm, ops := newCapture(t), newCapture(t)
	s := startServer(t, twoSinkConfig(crm, ops, "{backend: memory}"))
	msg := payloadFile(t, "agent.message_out.json")
	var wg sync.WaitGroup
	var mu sync.Mutex
	dups := 0
	start := make(chan struct{})
	for range 40 {
		wg.Go(func() {
			<-start
			a := s.post("/webhook", msg)
			if a.status != 200 {
				t.Errorf("status %d", a.status)
			}
			if a.header.Get("X-Hookrouter-Duplicate") == "true" {
				mu.Lock()
				dups++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	waitFor(t, 5*time.Second, "one delivery", func() bool { return crm.count() >= 1 })
	s.settle()
	if crm.count() != 1 || dups != 39 {
		t.Errorf("delivered %d times, %d duplicates answered; want 1 and 39", crm.count(), dups)
	}
}

// TestDedupVolume: 10,000 events, each sent twice at the same moment, then
// all sent again: each is delivered exactly once.
func TestDedupVolume(t *testing.T) {
	if testing.Short() {
		t.Skip("volume test")
	}
	crm, ops := newCapture(t), newCapture(t)
	s := startServer(t, twoSinkConfig(crm, ops, "{backend: memory, max_bytes: 64MiB}"))
	const n = 10000
	body := func(i int) []byte {
		return fmt.Appendf(nil, `{"event":"agent.message_out","message":{"id":"m%d","content":{"text":"hi"}}}`, i)
	}
	send := func(i int) {
		if a := s.post("/webhook", body(i)); a.status != 200 {
			t.Errorf("event %d: %d %s", i, a.status, a.body)
		}
	}
	run := func(copies int) {
		var wg sync.WaitGroup
		work := make(chan int)
		for range 32 {
			wg.Go(func() {
				for i := range work {
					var same sync.WaitGroup
					for range copies {
						same.Go(func() { send(i) })
					}
					same.Wait()
				}
			})
		}
		for i := range n {
			work <- i
		}
		close(work)
		wg.Wait()
	}
	run(2) // each event twice at the same moment
	run(1) // then all of them again
	waitFor(t, 30*time.Second, "10,000 deliveries", func() bool { return crm.count() >= n })
	s.settle()
	bodies, ids := crm.snapshot()
	seen := map[string]int{}
	for _, b := range bodies {
		seen[string(b)]++
	}
	if len(ids) != n || len(seen) != n {
		t.Fatalf("delivered %d (%d distinct), want %d", len(ids), len(seen), n)
	}
}

// rawAnswer sends request as is on a new connection to baseURL's server and
// returns everything it answers until it closes the connection.
func rawAnswer(t *testing.T, baseURL, request string) string {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(baseURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading the answer: %v (got %q)", err, b)
	}
	return string(b)
}
