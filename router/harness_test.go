package router

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router/config"
)

const testSecret = "s3cret-for-tests"

// capture is a real HTTP destination that records every request and what
// the 2xx ones carried. A test scripts its answers: a status (or a sequence of
// them), a Retry-After, a delay, or holding requests until released. It is
// the one recording sink of the router tests.
type capture struct {
	*httptest.Server
	mu         sync.Mutex
	status     int   // answer once script is used up; 0 = 200
	script     []int // answers for the next requests, in order
	retryAfter string
	delay      time.Duration
	hold       chan struct{}  // non-nil: requests wait until it is closed
	arrivals   []arrival      // every request
	delivered  []arrival      // requests answered 2xx
	byMessage  map[string]int // message.id of the payload → deliveries answered 2xx
}

// arrival is one request a capture received.
type arrival struct {
	at     time.Time
	id     string // X-Hookrouter-Event-Id
	body   []byte
	header http.Header
	status int // what it was answered
}

// newCapture starts a capture that answers 200; script, retryAfter and
// delay may be set before the first request.
func newCapture(t *testing.T) *capture {
	c := &capture{byMessage: map[string]int{}}
	c.Server = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(func() {
		c.release() // a held request would block Close
		c.Close()
	})
	return c
}

func (c *capture) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a := arrival{at: time.Now(), id: r.Header.Get("X-Hookrouter-Event-Id"), body: body, header: r.Header.Clone()}
	c.mu.Lock()
	a.status = c.status
	if len(c.script) > 0 {
		a.status, c.script = c.script[0], c.script[1:]
	}
	if a.status == 0 {
		a.status = 200
	}
	hold, delay, retryAfter := c.hold, c.delay, c.retryAfter
	c.arrivals = append(c.arrivals, a)
	n := len(c.arrivals) - 1
	c.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
		// The answer is the one in force when released.
		c.mu.Lock()
		if a.status = c.status; a.status == 0 {
			a.status = 200
		}
		c.arrivals[n].status = a.status
		c.mu.Unlock()
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if a.status < 300 {
		var p struct {
			Message struct {
				ID string `json:"id"`
			} `json:"message"`
		}
		_ = json.Unmarshal(body, &p)
		c.mu.Lock()
		c.delivered = append(c.delivered, a)
		c.byMessage[p.Message.ID]++
		c.mu.Unlock()
	}
	if retryAfter != "" && a.status >= 400 {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(a.status)
}

// setStatus sets the answer to the next requests (and to held ones when
// released); 0 is 200.
func (c *capture) setStatus(s int) {
	c.mu.Lock()
	c.status = s
	c.mu.Unlock()
}

// holdRequests makes the next requests wait until release.
func (c *capture) holdRequests() {
	c.mu.Lock()
	if c.hold == nil {
		c.hold = make(chan struct{})
	}
	c.mu.Unlock()
}

func (c *capture) release() {
	c.mu.Lock()
	if c.hold != nil {
		close(c.hold)
		c.hold = nil
	}
	c.mu.Unlock()
}

// count is the number of deliveries answered 2xx.
func (c *capture) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.delivered)
}

// requestCount is the number of requests, whatever their answer.
func (c *capture) requestCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.arrivals)
}

// deliveries is the number of 2xx deliveries of the payload whose
// message.id is id.
func (c *capture) deliveries(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byMessage[id]
}

// messages counts the 2xx deliveries per message.id of the payload.
func (c *capture) messages() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.byMessage)
}

// requests returns every request so far.
func (c *capture) requests() []arrival {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.arrivals)
}

// got returns the deliveries answered 2xx so far.
func (c *capture) got() []arrival {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.delivered)
}

// snapshot returns the bodies and event ids of the 2xx deliveries so far.
func (c *capture) snapshot() (bodies [][]byte, ids []string) {
	for _, a := range c.got() {
		bodies, ids = append(bodies, a.body), append(ids, a.id)
	}
	return bodies, ids
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

// settle waits until no delivery is owed to any sink: none due, waiting for a
// retry or in flight (/health's depth). A capture records a delivery before it
// answers, so after settle what the captures hold is final: a wrong extra
// delivery would already show, and none can come later.
func (s *server) settle() {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		owed := map[string]int{}
		for name, h := range s.health().Sinks {
			if h.Depth != 0 {
				owed[name] = h.Depth
			}
		}
		if len(owed) == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("deliveries still owed after 10s: %v", owed)
		}
		time.Sleep(5 * time.Millisecond)
	}
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
