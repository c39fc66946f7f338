package dispatch

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/hookrouter/hookrouter/router/metrics"
	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// postSink is a minimal real HTTP sink for these tests: it POSTs the body to
// url and classifies the answer with sinks.CheckStatus, as the real http sink
// does.
type postSink struct {
	url    string
	client *http.Client
	closed atomic.Int32
}

func newPostSink(url string, timeout time.Duration) *postSink {
	return &postSink{url: url, client: &http.Client{Timeout: timeout, Transport: &http.Transport{}}}
}

func (s *postSink) Send(ctx context.Context, ev *sinks.Event) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(ev.Body))
	if err != nil {
		return sinks.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hookrouter-Event-Id", ev.ID)
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("post: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return sinks.CheckStatus(resp.StatusCode, resp.Header.Get("Retry-After"), body)
}

func (s *postSink) Close(context.Context) error {
	s.closed.Add(1)
	s.client.CloseIdleConnections()
	return nil
}

// noopSink accepts everything; it measures the dispatcher alone.
type noopSink struct {
	n      atomic.Int64
	target int64
	done   chan struct{}
}

func (s *noopSink) Send(context.Context, *sinks.Event) error {
	if s.n.Add(1) == s.target {
		close(s.done)
	}
	return nil
}

func (s *noopSink) Close(context.Context) error { return nil }

// server is an httptest destination whose answer the test controls and
// which records every request it sees.
type server struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []request
	answer func(r *http.Request, n int) (status int, retryAfter string)
}

type request struct {
	at      time.Time
	eventID string
	status  int
}

func newServer(t *testing.T, answer func(r *http.Request, n int) (int, string)) *server {
	s := &server{answer: answer}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		n := len(s.reqs)
		s.mu.Unlock()
		status, ra := s.answer(r, n)
		s.mu.Lock()
		s.reqs = append(s.reqs, request{at: time.Now(), eventID: r.Header.Get("X-Hookrouter-Event-Id"), status: status})
		s.mu.Unlock()
		if ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "answer %d", status)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) requests() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.reqs...)
}

// delivered counts the distinct events answered 2xx.
func (s *server) delivered() map[string]int {
	out := map[string]int{}
	for _, r := range s.requests() {
		if r.status < 300 {
			out[r.eventID]++
		}
	}
	return out
}

// logRecorder is a slog handler that keeps the records, so that tests can
// check what was logged (breaker transitions, dead letters).
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
	out  slog.Handler
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	if !h.out.Enabled(ctx, r.Level) {
		return nil
	}
	return h.out.Handle(ctx, r)
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

// find returns the records with message msg, as attribute maps plus time.
func (h *logRecorder) find(msg string) []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]string
	for _, r := range h.recs {
		if r.Message != msg {
			continue
		}
		m := map[string]string{"time": r.Time.Format(time.RFC3339Nano), "level": r.Level.String()}
		r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
		out = append(out, m)
	}
	return out
}

type harness struct {
	q      *queue.Memory
	dl     *DeadLetters
	dlPath string
	m      *metrics.Metrics
	logs   *logRecorder
	d      *Dispatcher
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{q: queue.NewMemory(64 << 20), m: metrics.New()}
	h.dlPath = filepath.Join(t.TempDir(), "dead-letter.jsonl")
	var err error
	if h.dl, err = OpenDeadLetters(h.dlPath); err != nil {
		t.Fatal(err)
	}
	h.logs = &logRecorder{out: slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})}
	h.d = New(h.q, h.dl, h.m, slog.New(h.logs))
	h.d.every = 20 * time.Millisecond
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := h.d.Close(ctx); err != nil {
			t.Errorf("dispatcher close: %v", err)
		}
		h.q.Close()
		h.dl.Close()
	})
	return h
}

func (h *harness) put(t *testing.T, n int, to ...string) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("ev-%s-%d-%d", t.Name(), time.Now().UnixNano(), i)
		ev := &sinks.Event{ID: id, Source: "platform", ReceivedAt: time.Now(),
			Body: fmt.Appendf(nil, `{"event":"channel.message_in","message":{"id":%q}}`, id)}
		if err := h.q.Put(t.Context(), ev, to); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func (h *harness) deadLetters(t *testing.T) []Record {
	t.Helper()
	f, err := os.ReadFile(h.dlPath)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ReadDeadLetters(bytes.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// eventually polls cond every few milliseconds until it holds or timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// counter reads a counter or gauge child.
func counter(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func always(status int) func(*http.Request, int) (int, string) {
	return func(*http.Request, int) (int, string) { return status, "" }
}
