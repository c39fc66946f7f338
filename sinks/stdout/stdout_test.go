package stdout

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/file"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
)

// writes records each Write call as one delivery: a sink that split a line
// over two calls, or put two lines in one, shows up as a mismatch.
type writes struct {
	mu    sync.Mutex
	calls [][]byte
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, bytes.Clone(p))
	return len(p), nil
}

func (w *writes) all() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([][]byte(nil), w.calls...)
}

func TestConformance(t *testing.T) {
	for _, format := range []string{"payload", "envelope"} {
		t.Run(format, func(t *testing.T) {
			sinktest.Run(t, sinktest.Harness{
				Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
					w := &writes{}
					s, err := New(Config{Format: file.Format(format)}, w, nil)
					if err != nil {
						t.Fatal(err)
					}
					return s, w.all
				},
				Failing: []sinktest.Failing{{
					Name: "broken pipe",
					New: func(t *testing.T) sinks.Sink {
						r, w, err := os.Pipe()
						if err != nil {
							t.Fatal(err)
						}
						r.Close()
						t.Cleanup(func() { w.Close() })
						s, err := New(Config{Format: file.Format(format)}, w, nil)
						if err != nil {
							t.Fatal(err)
						}
						return s
					},
				}},
			})
		})
	}
}

func TestLines(t *testing.T) {
	ev := sinktest.Event("ev_1", []byte("{\n  \"event\": \"device.connected\",\n  \"n\": 1.50\n}"))
	tests := []struct{ format, want string }{
		{"", `{"event":"device.connected","n":1.50}` + "\n"},
		{"envelope", `{"id":"ev_1","source":"test","received_at":"2025-01-28T09:20:00.123456789Z","payload":{"event":"device.connected","n":1.50}}` + "\n"},
	}
	for _, tc := range tests {
		t.Run("format "+tc.format, func(t *testing.T) {
			var buf bytes.Buffer
			s, err := New(Config{Format: file.Format(tc.format)}, &buf, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tc.want {
				t.Errorf("wrote %q, want %q", buf.String(), tc.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	s, err := New(Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.w != os.Stdout {
		t.Errorf("writer %v, want os.Stdout", s.w)
	}
	if _, err := New(Config{Format: "xml"}, nil, nil); err == nil || err.Error() != `format: unknown format "xml" (use one of payload, envelope)` {
		t.Errorf("New = %v", err)
	}
	if err := s.Send(t.Context(), sinktest.Event("ev", []byte("not json"))); !sinks.IsPermanent(err) {
		t.Errorf("send of a non-JSON body = %v, want a permanent error", err)
	}
}

func TestSendBatch(t *testing.T) {
	var w writes
	s, err := New(Config{}, &w, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs := []*sinks.Event{
		sinktest.Event("1", []byte(`{"n": 1}`)),
		sinktest.Event("bad", []byte("{not json")),
		sinktest.Event("3", []byte(`{"n": 3}`)),
	}
	errs := s.SendBatch(t.Context(), evs)
	if len(errs) != 3 || errs[0] != nil || !sinks.IsPermanent(errs[1]) || errs[2] != nil {
		t.Errorf("errs = %v, want only the bad one, permanent", errs)
	}
	calls := w.all()
	if len(calls) != 1 || string(calls[0]) != "{\"n\":1}\n{\"n\":3}\n" {
		t.Errorf("writes = %q, want both good lines in one write", calls)
	}
	if errs := s.SendBatch(t.Context(), evs[:1]); errs != nil {
		t.Errorf("good batch: errs = %v, want nil", errs)
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	errs = s.SendBatch(t.Context(), evs[:1])
	if len(errs) != 1 || !errors.Is(errs[0], sinks.ErrClosed) {
		t.Errorf("after close: errs = %v, want ErrClosed", errs)
	}
}
