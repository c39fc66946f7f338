package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// dedupKey is the spec's default dedup key of a payload.
func dedupKey(t *testing.T, body []byte) string {
	t.Helper()
	var p struct {
		Event     string `json:"event"`
		Timestamp int64  `json:"timestamp"`
		Message   *struct {
			ID string `json:"id"`
		} `json:"message"`
		Device *struct {
			ID string `json:"id"`
		} `json:"device"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("body is not valid JSON: %v\n%s", err, body)
	}
	switch {
	case p.Message != nil && p.Message.ID != "":
		return p.Event + "_" + p.Message.ID
	case p.Device != nil && p.Device.ID != "":
		return fmt.Sprintf("%s_%s_%d", p.Event, p.Device.ID, p.Timestamp)
	}
	t.Fatalf("body has neither message.id nor device.id: %s", body)
	return ""
}

func TestGeneratorBodies(t *testing.T) {
	g, err := newGenerator(42, 4096, "t1")
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	keys := make(map[string]uint64, n)
	events := map[string]int{}
	var engines = map[string]bool{}
	var needHuman = map[float64]bool{}
	var images, nonASCII, newlines, quotes int
	var buf []byte
	for seq := range uint64(n) {
		buf = g.body(buf, seq)
		if !utf8.Valid(buf) {
			t.Fatalf("seq %d: body is not UTF-8", seq)
		}
		k := dedupKey(t, buf)
		if prev, dup := keys[k]; dup {
			t.Fatalf("seq %d and %d share dedup key %q", prev, seq, k)
		}
		keys[k] = seq

		var m map[string]any
		if err := json.Unmarshal(buf, &m); err != nil {
			t.Fatal(err)
		}
		events[m["event"].(string)]++
		if msg, ok := m["message"].(map[string]any); ok {
			engines[msg["channel"].(map[string]any)["engine"].(string)] = true
			content := msg["content"].(map[string]any)
			text := content["text"].(string)
			if _, ok := content["attachments"]; ok {
				images++
			}
			if strings.ContainsFunc(text, func(r rune) bool { return r > 127 }) {
				nonASCII++
			}
			if strings.Contains(text, "\n") {
				newlines++
			}
			if strings.Contains(text, `"`) {
				quotes++
			}
		}
		if nh, ok := m["need_human"].(float64); ok {
			needHuman[nh] = true
		}
		if d, ok := m["device"].(map[string]any); ok {
			if _, ok := d["id"].(string); !ok {
				t.Fatalf("device event without device.id: %s", buf)
			}
		}

		again := g.body(nil, seq)
		if !bytes.Equal(again, buf) {
			t.Fatalf("seq %d: bodies differ between calls", seq)
		}
	}
	for _, m := range eventMix {
		share := float64(events[m.event]) / n
		want := float64(m.weight) / 100
		if share < want*0.8 || share > want*1.2 {
			t.Errorf("event %s: share %.3f, want about %.2f", m.event, share, want)
		}
	}
	for _, e := range []string{"wa", "ig", "fb", "tg"} {
		if !engines[e] {
			t.Errorf("engine %s never generated", e)
		}
	}
	if !needHuman[0] || !needHuman[1] {
		t.Errorf("need_human values seen %v, want both 0 and 1", needHuman)
	}
	for name, c := range map[string]int{"image attachments": images, "non-ASCII text": nonASCII, "newlines": newlines, "quotes": quotes} {
		if c < n/100 {
			t.Errorf("%s in only %d of %d bodies", name, c, n)
		}
	}
}

func TestGeneratorSeedAndTag(t *testing.T) {
	a, _ := newGenerator(7, 64, "x")
	b, _ := newGenerator(7, 64, "x")
	c, _ := newGenerator(8, 64, "x")
	d, _ := newGenerator(7, 64, "y")
	for seq := range uint64(64) {
		if !bytes.Equal(a.body(nil, seq), b.body(nil, seq)) {
			t.Fatalf("same seed and tag, seq %d: bodies differ", seq)
		}
	}
	same := 0
	for seq := range uint64(64) {
		if bytes.Equal(a.body(nil, seq), c.body(nil, seq)) {
			same++
		}
		if dedupKey(t, a.body(nil, seq)) == dedupKey(t, d.body(nil, seq)) {
			t.Fatalf("different tags, seq %d: same dedup key", seq)
		}
	}
	if same > 8 {
		t.Errorf("different seeds: %d of 64 bodies identical", same)
	}
	if _, err := newGenerator(1, 1, `bad"tag`); err == nil {
		t.Error("tag with a quote accepted")
	}
}

func TestDupRatio(t *testing.T) {
	tests := []struct {
		name string
		dup  float64
	}{
		{"none", 0},
		{"ten percent", 0.1},
		{"half", 0.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &shared{dup: tc.dup, conc: 4}
			w := newWorker(9, 0)
			const n = 50000
			dups := 0
			for range n {
				seq, isDup := w.nextSeq(s)
				if isDup {
					dups++
					if seq >= s.nextUnique.Load()-uint64(s.conc) {
						t.Fatalf("duplicate of seq %d, not yet sent (next %d)", seq, s.nextUnique.Load())
					}
				} else if seq != s.nextUnique.Load()-1 {
					t.Fatalf("new event got seq %d, want %d", seq, s.nextUnique.Load()-1)
				}
			}
			got := float64(dups) / n
			if got < tc.dup-0.01 || got > tc.dup+0.01 {
				t.Errorf("dup share %.4f, want %.2f ± 0.01", got, tc.dup)
			}
		})
	}
}

// TestPhaseAgainstServer runs the workers against a real fasthttp listener
// and checks what arrived: every unique event once, every duplicate a byte
// copy of an event sent before it, the secret in Authorization.
func TestPhaseAgainstServer(t *testing.T) {
	var mu sync.Mutex
	seen := map[string][]byte{} // dedup key -> first body
	var uniques, dups, badAuth, mismatched int
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Request.Header.Peek("Authorization")) != "s3cret" {
			mu.Lock()
			badAuth++
			mu.Unlock()
			ctx.SetStatusCode(fasthttp.StatusUnauthorized)
			return
		}
		body := append([]byte(nil), ctx.PostBody()...)
		k := dedupKey(t, body)
		mu.Lock()
		if first, ok := seen[k]; ok {
			dups++
			if !bytes.Equal(first, body) {
				mismatched++
			}
		} else {
			seen[k] = body
			uniques++
		}
		mu.Unlock()
		if len(body)%10 == 0 {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			return
		}
		ctx.SetBodyString("OK")
	}}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown below
	t.Cleanup(func() { _ = srv.Shutdown() })

	o := &options{conc: 8, count: 4000, templates: 256, dup: 0.1, seed: 5, timeout: 5 * time.Second,
		url: "http://" + ln.Addr().String() + "/webhook", secret: "s3cret", contentType: "application/json",
		sinkWait: time.Second, sinkQuiet: time.Second}
	if err := o.validate(""); err != nil {
		t.Fatal(err)
	}
	g, err := newGenerator(o.seed, 256, "pt")
	if err != nil {
		t.Fatal(err)
	}
	res, err := execute(t.Context(), o, g, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if res.Requests != 4000 || uint64(uniques+dups) != 4000 {
		t.Fatalf("requests %d, server saw %d unique + %d dup, want 4000", res.Requests, uniques, dups)
	}
	if uint64(dups) != res.DuplicatesSent {
		t.Errorf("server saw %d duplicates, loadgen says it sent %d", dups, res.DuplicatesSent)
	}
	if dups < 300 || dups > 500 {
		t.Errorf("%d duplicates of 4000, want about 400", dups)
	}
	if mismatched > 0 || badAuth > 0 {
		t.Errorf("%d duplicates not byte-identical, %d requests with a wrong secret", mismatched, badAuth)
	}
	if res.Non2xx["503"] == 0 || res.Non2xxTotal+res.OK != res.Requests {
		t.Errorf("non-2xx %v + ok %d, want some 503s adding up to %d", res.Non2xx, res.OK, res.Requests)
	}
	if res.LatencyUS.P50 <= 0 || res.LatencyUS.Max < res.LatencyUS.P99 {
		t.Errorf("latency percentiles look wrong: %+v", res.LatencyUS)
	}
}

func TestLoopbackOnly(t *testing.T) {
	tests := []struct {
		url, want string
	}{
		{"http://127.0.0.1:3000/webhook", "127.0.0.1:3000"},
		{"http://localhost:8080/x", "127.0.0.1:8080"},
		{"http://example.com/webhook", ""},
		{"http://10.0.0.1:3000/", ""},
		{"https://127.0.0.1:3000/", ""},
	}
	for _, tc := range tests {
		got, err := loopbackAddr(tc.url)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%s accepted as %s", tc.url, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.url, got, err, tc.want)
		}
	}
}

func TestDump(t *testing.T) {
	g, err := newGenerator(3, 128, "d")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := dump(&out, g, 2000, 0.2, 3); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2000 {
		t.Fatalf("%d lines, want 2000", len(lines))
	}
	distinct := map[string]bool{}
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Fatalf("line is not JSON: %s", l)
		}
		distinct[dedupKey(t, []byte(l))] = true
	}
	if len(distinct) < 1550 || len(distinct) > 1650 {
		t.Errorf("%d distinct events of 2000 with -dup 0.2, want about 1600", len(distinct))
	}
}
