package router

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawConn dials s's ingress for requests written by hand.
func rawConn(t *testing.T, s *server) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

// readAnswer reads one HTTP answer from br; its header has Connection:
// close when the server said it would close.
func readAnswer(t *testing.T, br *bufio.Reader) (int, string, http.Header) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Close {
		resp.Header.Set("Connection", "close")
	}
	return resp.StatusCode, string(b), resp.Header
}

// TestTooLargeIsReadable: a sender that writes its whole oversized body
// (up to 4 × max_body_bytes) before reading reads the 413, not a
// connection reset; with a declared length the connection stays usable.
func TestTooLargeIsReadable(t *testing.T) {
	s := startServer(t, baseConfig("{backend: memory}", "  crm: {type: stdout}", `  - {name: all, when: "true", to: [crm]}`))
	const limit = 64 << 10
	ok := fmt.Sprintf("POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Length: 13\r\n\r\n{\"event\":\"x\"}", testSecret)
	for _, tc := range []struct {
		name      string
		head      string
		body      []byte
		keepAlive bool
	}{
		{"declared length, 4 × limit", fmt.Sprintf("Content-Length: %d\r\n", 4*limit), bytes.Repeat([]byte(" "), 4*limit), true},
		{"declared length, just over", fmt.Sprintf("Content-Length: %d\r\n", limit+1), bytes.Repeat([]byte(" "), limit+1), true},
		{"chunked, 4 × limit", "Transfer-Encoding: chunked\r\n", chunked(bytes.Repeat([]byte(" "), 4*limit)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawConn(t, s)
			req := append([]byte(fmt.Sprintf("POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n%s\r\n", testSecret, tc.head)), tc.body...)
			if _, err := c.Write(req); err != nil {
				t.Fatalf("writing the body: %v", err)
			}
			status, body, _ := readAnswer(t, br)
			if status != 413 || body != `{"error":"Payload too large"}` {
				t.Fatalf("answer %d %q, want 413", status, body)
			}
			if !tc.keepAlive {
				return
			}
			if _, err := io.WriteString(c, ok); err != nil {
				t.Fatal(err)
			}
			if status, body, _ := readAnswer(t, br); status != 200 {
				t.Errorf("next request on the connection: %d %q", status, body)
			}
		})
	}
	// Far over the bound: answered at once from the headers, then closed.
	c, br := rawConn(t, s)
	fmt.Fprintf(c, "POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n{", testSecret, 100*limit)
	if status, _, h := readAnswer(t, br); status != 413 || h.Get("Connection") != "close" {
		t.Errorf("100 × limit: %d, Connection %q; want 413 and close", status, h.Get("Connection"))
	}
}

func chunked(b []byte) []byte {
	var out bytes.Buffer
	for len(b) > 0 {
		n := min(len(b), 8<<10)
		fmt.Fprintf(&out, "%x\r\n%s\r\n", n, b[:n])
		b = b[n:]
	}
	out.WriteString("0\r\n\r\n")
	return out.Bytes()
}

// TestAuthBeforeBody: header auth is decided from the headers, so a
// stranger who sends headers and no body is answered 401 at once; the
// server does not wait for (or buffer) a body it would refuse.
func TestAuthBeforeBody(t *testing.T) {
	s := startServer(t, baseConfig("{backend: memory}", "  crm: {type: stdout}", `  - {name: all, when: "true", to: [crm]}`))
	c, br := rawConn(t, s)
	c.SetDeadline(time.Now().Add(3 * time.Second)) // well under the 30 s read timeout
	// fasthttp hands a request over once the first byte of its body is in.
	fmt.Fprintf(c, "POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: wrong\r\nContent-Length: 60000\r\n\r\n{")
	if status, body, _ := readAnswer(t, br); status != 401 || body != `{"error":"Unauthorized"}` {
		t.Errorf("answer %d %q, want 401 before the body", status, body)
	}
}

// TestPlaceholderSecretWarns: a source with the docs' placeholder secret,
// or with no auth, is a WARN at start and at the reload that brings it.
func TestPlaceholderSecretWarns(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	good := strings.ReplaceAll(baseConfig("{backend: memory}", "  crm: {type: stdout}", `  - {name: all, when: "true", to: [crm]}`), "DATA", filepath.Join(dir, "data"))
	placeholder := strings.Replace(good, testSecret, "your_secret_key", 1)
	if err := os.WriteFile(path, []byte(placeholder), 0o644); err != nil {
		t.Fatal(err)
	}
	s, logs := startAt(t, path, false)
	if l := logs.lines("level=WARN", "placeholder", "source=platform"); len(l) != 1 {
		t.Errorf("WARN lines about the placeholder at start: %q, want 1", l)
	}
	none := strings.Replace(good, "auth: {type: header, secret: "+testSecret+"}", "auth: {type: none}", 1)
	if err := os.WriteFile(path, []byte(none), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.r.Reload("test"); err != nil {
		t.Fatal(err)
	}
	if l := logs.lines("level=WARN", "from anyone", "source=platform"); len(l) != 1 {
		t.Errorf("WARN lines about auth none after reload: %q, want 1", l)
	}
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.r.Reload("test"); err != nil {
		t.Fatal(err)
	}
	if l := logs.lines("level=WARN", "source=platform"); len(l) != 2 {
		t.Errorf("WARN lines in all: %q, want 2 (none for a real secret)", l)
	}
}
