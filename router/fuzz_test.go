package router

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzIngress feeds arbitrary bodies and headers to the ingress handler: it
// must never panic and never answer anything but the contract's statuses.
// CI runs the seed corpus; fuzz with `go test -fuzz FuzzIngress ./router/`.
func FuzzIngress(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("rules", "testdata", "*.json"))
	for _, p := range seeds {
		b, _ := os.ReadFile(p)
		f.Add(b, "X-Load-Test", "1")
	}
	for _, s := range []string{``, `{}`, `[]`, `null`, `{"event":1}`, `{"event":"channel.message_in","message":null}`,
		`{"event":"channel.message_in","message":{"channel":"wa","id":{"x":1}}}`, `{"device":{"id":[1]},"timestamp":{}}`,
		`{"a":"\ud800"}`, "{\"a\":\"\xff\"}", `{"need_human":1e999}`, `{"message":{"content":{"attachments":[null,{"type":7}]}}}`} {
		f.Add([]byte(s), "", "")
	}
	s := startServer(f, baseConfig("{backend: memory, max_bytes: 256MiB}", `  a: {type: file, path: DATA/a.jsonl}`, `
  - {name: all, when: "true", to: [a]}
  - {name: drop, when: 'header("X-Load-Test") == "1"', to: [], stop: true}
  - {name: wa, when: 'event == "channel.message_in" && message.channel.engine == "wa"', to: [a]}
  - {name: human, when: 'need_human == 1 && len(message?.content?.attachments ?? []) > 0', to: [a]}
  - {name: dev, when: 'device?.id startsWith "dev" && timestamp > 0', to: [a]}`))
	allowed := map[int]bool{200: true, 400: true, 401: true, 413: true, 503: true}
	post := func(body []byte, hname, hvalue string) *fasthttp.Response {
		var req fasthttp.Request
		req.Header.SetMethod("POST")
		req.SetRequestURI("/webhook")
		req.Header.Set("Authorization", testSecret)
		if hname != "" && fasthttpHeaderNameOK(hname) {
			req.Header.Set(hname, hvalue)
		}
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, nil, nil)
		// Ingress reads a body as a stream, as the server gives it: a body
		// set with SetBody would reach it empty (every input a 400).
		ctx.Request.SetBodyStream(bytes.NewReader(body), len(body))
		s.r.handle(&ctx)
		return &ctx.Response
	}
	// The harness itself: a real payload is accepted.
	if len(seeds) == 0 {
		f.Fatal("no sample payloads in rules/testdata")
	}
	if b, _ := os.ReadFile(seeds[0]); post(b, "", "").StatusCode() != 200 {
		f.Fatalf("%s: not accepted: the harness does not give the body as ingress reads it", seeds[0])
	}
	f.Fuzz(func(t *testing.T, body []byte, hname, hvalue string) {
		if resp := post(body, hname, hvalue); !allowed[resp.StatusCode()] {
			t.Fatalf("status %d for %q: %s", resp.StatusCode(), body, resp.Body())
		}
	})
}

func fasthttpHeaderNameOK(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}
