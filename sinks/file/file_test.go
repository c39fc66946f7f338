package file

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
)

// readLines returns the lines of path, newline included; none if it does
// not exist.
func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Errorf("file does not end with a newline: %q", b[max(0, len(b)-40):])
	}
	var lines [][]byte
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n') + 1
		if i == 0 {
			i = len(b)
		}
		lines = append(lines, b[:i])
		b = b[i:]
	}
	return lines
}

func newSink(t *testing.T, cfg Config) *Sink {
	t.Helper()
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	for _, format := range []string{"payload", "envelope"} {
		t.Run(format, func(t *testing.T) {
			sinktest.Run(t, sinktest.Harness{
				Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
					path := filepath.Join(t.TempDir(), "nested", "dir", "events.jsonl")
					return newSink(t, Config{Path: path, Format: Format(format)}), func() [][]byte { return readLines(t, path) }
				},
				Failing: []sinktest.Failing{{
					Name: "parent is a file",
					New: func(t *testing.T) sinks.Sink {
						blocker := filepath.Join(t.TempDir(), "blocker")
						if err := os.WriteFile(blocker, nil, 0o644); err != nil {
							t.Fatal(err)
						}
						return newSink(t, Config{Path: filepath.Join(blocker, "events.jsonl"), Format: Format(format)})
					},
				}},
			})
		})
	}
}

func TestFormats(t *testing.T) {
	body := sinktest.Samples()["escaping.json"]
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		t.Fatal(err)
	}
	ev := sinktest.Event("ev_\"1\"", body)
	tests := []struct {
		format string
		check  func(t *testing.T, line []byte)
	}{
		{"", func(t *testing.T, line []byte) {
			if string(line) != compact.String()+"\n" {
				t.Errorf("line %q, want the compacted payload", line)
			}
		}},
		{"payload", func(t *testing.T, line []byte) {
			if string(line) != compact.String()+"\n" {
				t.Errorf("line %q, want the compacted payload", line)
			}
		}},
		{"envelope", func(t *testing.T, line []byte) {
			var env struct {
				ID         string          `json:"id"`
				Source     string          `json:"source"`
				ReceivedAt string          `json:"received_at"`
				Payload    json.RawMessage `json:"payload"`
			}
			dec := json.NewDecoder(bytes.NewReader(line))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&env); err != nil {
				t.Fatalf("%v: %q", err, line)
			}
			at, err := time.Parse(time.RFC3339Nano, env.ReceivedAt)
			if env.ID != ev.ID || env.Source != "test" || err != nil || !at.Equal(ev.ReceivedAt) ||
				env.ReceivedAt != "2025-01-28T09:20:00.123456789Z" || string(env.Payload) != compact.String() {
				t.Errorf("envelope %q", line)
			}
		}},
	}
	for _, tc := range tests {
		t.Run("format "+tc.format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.jsonl")
			s := newSink(t, Config{Path: path, Format: Format(tc.format)})
			if err := s.Send(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(t.Context()); err != nil {
				t.Fatal(err)
			}
			lines := readLines(t, path)
			if len(lines) != 1 {
				t.Fatalf("%d lines", len(lines))
			}
			tc.check(t, lines[0])
		})
	}
}

func TestLazyOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not", "yet")
	path := filepath.Join(dir, "events.jsonl")
	s := newSink(t, Config{Path: path})
	defer s.Close(t.Context())
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("New touched the file system: %v", err)
	}
	if err := s.Send(t.Context(), sinktest.Variant(1)); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm&^0o644 != 0 || perm&0o600 != 0o600 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
}

func TestAppendsToExisting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, []byte("{\"old\":1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, Config{Path: path})
	if err := s.Send(t.Context(), sinktest.Variant(1)); err != nil {
		t.Fatal(err)
	}
	s.Close(t.Context())
	lines := readLines(t, path)
	if len(lines) != 2 || string(lines[0]) != "{\"old\":1}\n" {
		t.Errorf("lines %q", lines)
	}
}

func TestInvalidPayloadIsPermanent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	s := newSink(t, Config{Path: path})
	defer s.Close(t.Context())
	for _, body := range []string{"", "{not json", `{"a":1} trailing`} {
		err := s.Send(t.Context(), sinktest.Event("ev", []byte(body)))
		if !sinks.IsPermanent(err) {
			t.Errorf("body %q: send = %v, want a permanent error", body, err)
		}
	}
	if lines := readLines(t, path); len(lines) != 0 {
		t.Errorf("wrote %q", lines)
	}
}

// TestConcurrentGroupWrite checks that many writers at once produce whole,
// distinct lines, and reports how well they were batched.
func TestConcurrentGroupWrite(t *testing.T) {
	const goroutines, each = 32, 100
	path := filepath.Join(t.TempDir(), "events.jsonl")
	s := newSink(t, Config{Path: path, Format: "envelope"})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if err := s.Send(t.Context(), sinktest.Variant(g*each+i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != goroutines*each {
		t.Fatalf("%d lines, want %d", len(lines), goroutines*each)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		var env struct{ ID string }
		if err := json.Unmarshal(l, &env); err != nil {
			t.Fatalf("torn line %q: %v", l, err)
		}
		seen[env.ID] = true
	}
	if len(seen) != goroutines*each {
		t.Errorf("%d distinct events, want %d", len(seen), goroutines*each)
	}
	t.Logf("%d lines in %d writes", len(lines), s.writes)
}

func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.jsonl")
	s := newSink(t, Config{Path: path})
	defer s.Close(t.Context())
	if err := s.Reopen(); err != nil {
		t.Fatalf("reopen before any send: %v", err)
	}
	send := func(n int) {
		t.Helper()
		if err := s.Send(t.Context(), sinktest.Variant(n)); err != nil {
			t.Fatal(err)
		}
	}
	send(1)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	send(2) // still the renamed file: that is what logrotate's signal is for
	if err := s.Reopen(); err != nil {
		t.Fatal(err)
	}
	send(3)
	send(4)
	if got := readLines(t, path+".1"); len(got) != 2 {
		t.Errorf("rotated file has %d lines, want 2", len(got))
	}
	got := readLines(t, path)
	if len(got) != 2 || !bytes.Contains(got[0], []byte(`"msg_0003"`)) {
		t.Errorf("new file: %q", got)
	}
}

func TestReopenConcurrentWithSends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	s := newSink(t, Config{Path: path})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if err := s.Send(t.Context(), sinktest.Variant(g*50+i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for i := range 10 {
		os.Rename(path, fmt.Sprintf("%s.%d", path, i))
		if err := s.Reopen(); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	s.Close(t.Context())
	total := len(readLines(t, path))
	for i := range 10 {
		total += len(readLines(t, fmt.Sprintf("%s.%d", path, i)))
	}
	if total != 400 {
		t.Errorf("%d lines across files, want 400", total)
	}
}

func (s *Sink) counters() (writes, syncs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes, s.syncs
}

func TestFlushInterval(t *testing.T) {
	t.Run("fsync after the interval", func(t *testing.T) {
		const interval = 100 * time.Millisecond
		s := newSink(t, Config{Path: filepath.Join(t.TempDir(), "e.jsonl"), FlushInterval: interval})
		defer s.Close(t.Context())
		start := time.Now()
		for i := range 20 {
			if err := s.Send(t.Context(), sinktest.Variant(i)); err != nil {
				t.Fatal(err)
			}
		}
		burst := time.Since(start)
		if _, syncs := s.counters(); syncs != 0 && burst < interval {
			t.Fatalf("fsynced %d times before the interval", syncs)
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			_, syncs := s.counters()
			if syncs > 0 {
				if elapsed := time.Since(start); elapsed < interval {
					t.Errorf("fsync after %v", elapsed)
				}
				if limit := 1 + int(burst/interval); syncs > limit {
					t.Errorf("%d fsyncs for a burst of %v", syncs, burst)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no fsync within 2s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		// Idle: once the fsync owed for the burst's last write is done, no
		// further fsync.
		time.Sleep(2 * interval)
		_, before := s.counters()
		time.Sleep(250 * time.Millisecond)
		if _, after := s.counters(); after != before {
			t.Errorf("fsynced while idle: %d -> %d", before, after)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		s := newSink(t, Config{Path: filepath.Join(t.TempDir(), "e.jsonl"), FlushInterval: -1})
		defer s.Close(t.Context())
		if err := s.Send(t.Context(), sinktest.Variant(1)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(DefaultFlushInterval + 100*time.Millisecond)
		if _, syncs := s.counters(); syncs != 0 {
			t.Errorf("%d fsyncs", syncs)
		}
	})
}

func TestSendWaitsForClose(t *testing.T) {
	// Lines accepted before Close are written, never dropped, even when
	// Close races with the senders.
	path := filepath.Join(t.TempDir(), "events.jsonl")
	s := newSink(t, Config{Path: path})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for g := range 16 {
		wg.Go(func() {
			for i := range 20 {
				err := s.Send(t.Context(), sinktest.Variant(g*20+i))
				if errors.Is(err, sinks.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Millisecond)
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if n := len(readLines(t, path)); n != ok {
		t.Errorf("%d lines written, %d sends succeeded", n, ok)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, want string
		cfg        Config
	}{
		{"no path", "path: required: the file that events are appended to", Config{}},
		{"format", `format: unknown format "csv" (use one of payload, envelope)`, Config{Path: "x", Format: "csv"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg, nil); err == nil || err.Error() != tc.want {
				t.Errorf("New = %v, want %q", err, tc.want)
			}
		})
	}
}

func BenchmarkSend(b *testing.B) {
	for _, bc := range []struct {
		name    string
		format  string
		senders int
	}{
		{"payload 1 sender", "payload", 1},
		{"envelope 1 sender", "envelope", 1},
		{"payload 16 senders", "payload", 16},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := New(Config{Path: filepath.Join(b.TempDir(), "events.jsonl"), Format: Format(bc.format)}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(b.Context())
			ev := sinktest.Event("ev_bench", sinktest.Samples()["channel.message_in.json"])
			ctx := b.Context()
			b.ReportAllocs()
			b.SetParallelism(bc.senders) // × GOMAXPROCS goroutines
			if bc.senders == 1 {
				for b.Loop() {
					if err := s.Send(ctx, ev); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := s.Send(ctx, ev); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			writes, _ := s.counters()
			b.ReportMetric(float64(b.N)/float64(max(writes, 1)), "lines/write")
		})
	}
}

func TestSendBatch(t *testing.T) {
	good := func(id string) *sinks.Event { return sinktest.Event(id, []byte(`{"id":"`+id+`"}`)) }
	bad := sinktest.Event("bad", []byte("{not json"))
	tests := []struct {
		name      string
		evs       []*sinks.Event
		wantLines []string
		wantPerm  []bool // nil: SendBatch returns nil
	}{
		{name: "all good", evs: []*sinks.Event{good("1"), good("2"), good("3")},
			wantLines: []string{`{"id":"1"}`, `{"id":"2"}`, `{"id":"3"}`}},
		{name: "one bad", evs: []*sinks.Event{good("1"), bad, good("3")},
			wantLines: []string{`{"id":"1"}`, `{"id":"3"}`}, wantPerm: []bool{false, true, false}},
		{name: "all bad", evs: []*sinks.Event{bad, bad}, wantPerm: []bool{true, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.jsonl")
			s := newSink(t, Config{Path: path})
			defer s.Close(t.Context())
			errs := s.SendBatch(t.Context(), tc.evs)
			if tc.wantPerm == nil && errs != nil {
				t.Fatalf("errs = %v, want nil", errs)
			}
			if tc.wantPerm != nil {
				if len(errs) != len(tc.evs) {
					t.Fatalf("%d errors for %d events", len(errs), len(tc.evs))
				}
				for i, perm := range tc.wantPerm {
					if perm != sinks.IsPermanent(errs[i]) || !perm && errs[i] != nil {
						t.Errorf("errs[%d] = %v, want permanent %v", i, errs[i], perm)
					}
				}
			}
			var got []string
			for _, l := range readLines(t, path) {
				got = append(got, string(bytes.TrimSuffix(l, []byte("\n"))))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantLines) {
				t.Errorf("lines = %q, want %q", got, tc.wantLines)
			}
			wantWrites := 0
			if len(tc.wantLines) > 0 {
				wantWrites = 1
			}
			if writes, _ := s.counters(); writes != wantWrites {
				t.Errorf("%d writes, want %d", writes, wantWrites)
			}
		})
	}
}

func TestSendBatchRefused(t *testing.T) {
	evs := []*sinks.Event{sinktest.Event("1", []byte(`{}`)), sinktest.Event("2", []byte(`{}`))}
	t.Run("closed", func(t *testing.T) {
		s := newSink(t, Config{Path: filepath.Join(t.TempDir(), "events.jsonl")})
		if err := s.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		errs := s.SendBatch(t.Context(), evs)
		if len(errs) != 2 || !errors.Is(errs[0], sinks.ErrClosed) || !errors.Is(errs[1], sinks.ErrClosed) {
			t.Errorf("errs = %v, want ErrClosed for each", errs)
		}
	})
	t.Run("ctx done", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "events.jsonl")
		s := newSink(t, Config{Path: path})
		defer s.Close(t.Context())
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		errs := s.SendBatch(ctx, evs)
		if len(errs) != 2 || !errors.Is(errs[0], context.Canceled) || sinks.IsPermanent(errs[1]) {
			t.Errorf("errs = %v, want retryable context.Canceled for each", errs)
		}
		if lines := readLines(t, path); len(lines) != 0 {
			t.Errorf("wrote %q", lines)
		}
	})
	t.Run("write fails", func(t *testing.T) {
		// A directory where the file should be: open fails, retryably.
		path := t.TempDir()
		s := newSink(t, Config{Path: path})
		defer s.Close(t.Context())
		errs := s.SendBatch(t.Context(), append(evs, sinktest.Event("bad", []byte("x"))))
		if len(errs) != 3 || errs[0] == nil || sinks.IsPermanent(errs[0]) || errs[1] == nil || sinks.IsPermanent(errs[1]) || !sinks.IsPermanent(errs[2]) {
			t.Errorf("errs = %v, want two retryable and one permanent", errs)
		}
	})
}
