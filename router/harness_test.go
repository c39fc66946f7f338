package router

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router/config"
)

const testSecret = "s3cret-for-tests"

// capture is a real HTTP destination that records what it receives and can
// be told to fail.
type capture struct {
	*httptest.Server
	mu       sync.Mutex
	bodies   [][]byte
	ids      []string
	headers  []http.Header
	status   int // answer; 0 = 200
	requests int
}

func newCapture(t *testing.T) *capture {
	c := &capture{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.requests++
		status := c.status
		if status == 0 || status == 200 {
			c.bodies = append(c.bodies, body)
			c.ids = append(c.ids, r.Header.Get("X-Hookrouter-Event-Id"))
			c.headers = append(c.headers, r.Header.Clone())
		}
		c.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
		}
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *capture) setStatus(s int) {
	c.mu.Lock()
	c.status = s
	c.mu.Unlock()
}

func (c *capture) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.bodies)
}

func (c *capture) requestCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests
}

func (c *capture) snapshot() (bodies [][]byte, ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.bodies...), append([]string(nil), c.ids...)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// server is a real router on a real listener, on a config file in a temp dir.
type server struct {
	t      testing.TB
	r      *Router
	url    string // the ingress listener
	admin  string // the admin listener
	dir    string
	config string
	done   chan error
}

// startServer writes cfg (a YAML config; "DATA" is replaced by the temp data
// dir) and serves it on 127.0.0.1:0.
func startServer(t testing.TB, cfg string) *server {
	t.Helper()
	return startServerOpts(t, cfg, Options{})
}

// startServerOpts is startServer with Options (their ConfigPath, Version and
// Log are set here).
func startServerOpts(t testing.TB, cfg string, opts Options) *server {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	cfg = strings.ReplaceAll(cfg, "DATA", filepath.Join(dir, "data"))
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	opts.ConfigPath, opts.Version, opts.Log = path, "test", log
	r, err := New(f, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s := &server{t: t, dir: dir, config: path}
	s.serve(r)
	t.Cleanup(func() { s.stop() })
	return s
}

// serve serves r on two fresh listeners on 127.0.0.1: the ingress (s.url)
// and the admin listener (s.admin).
func (s *server) serve(r *Router) {
	s.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	s.r, s.url, s.admin, s.done = r, "http://"+ln.Addr().String(), "http://"+aln.Addr().String(), make(chan error, 1)
	go func() { s.done <- r.Serve(ln, aln) }()
}

func (s *server) stop() {
	if s.r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.r.Shutdown(ctx); err != nil {
		s.t.Errorf("shutdown: %v", err)
	}
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.t.Error("Serve did not return after Shutdown")
	}
	s.r = nil
}

var client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 100}}

type answer struct {
	status int
	body   string
	header http.Header
}

func (s *server) post(path string, body []byte, headers ...string) answer {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", testSecret)
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	return do(s.t, req)
}

func (s *server) get(path string) answer {
	req, _ := http.NewRequest(http.MethodGet, s.url+path, nil)
	return do(s.t, req)
}

// adminGet and adminPost send a request to the admin listener, with
// headers given as name, value pairs.
func (s *server) adminGet(path string, headers ...string) answer {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.admin+path, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return do(s.t, req)
}

func (s *server) adminPost(path string, body []byte, headers ...string) answer {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.admin+path, bytes.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return do(s.t, req)
}

func do(t testing.TB, req *http.Request) answer {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: string(b), header: resp.Header}
}

func (s *server) health() Health {
	s.t.Helper()
	a := s.adminGet("/health")
	var h Health
	if err := json.Unmarshal([]byte(a.body), &h); err != nil {
		s.t.Fatalf("health: %v: %s", err, a.body)
	}
	return h
}

func payloadFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("rules", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// baseConfig is a config with one source and the given sinks and rules.
func baseConfig(queue, sinksYAML, rulesYAML string) string {
	return fmt.Sprintf(`listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
data_dir: DATA
sources:
  - name: platform
    path: /webhook
    max_body_bytes: 64KiB
    auth: {type: header, secret: %s}
queue: %s
sinks:
%s
rules:
%s
`, testSecret, queue, sinksYAML, rulesYAML)
}
