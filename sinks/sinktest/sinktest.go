// Package sinktest is the conformance suite every hookrouter sink runs in its
// tests: delivery of sample events exactly as the sink's Render shows them,
// concurrent Sends arriving intact, prompt failure on a done context, Send
// after Close, idempotent Close, classification of a failing destination's
// errors, and no secret in any error text.
package sinktest

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

//go:embed testdata/*.json
var samples embed.FS

// Harness tells Run how to build the sink under test and how to observe its
// destination.
type Harness struct {
	// Healthy builds a sink delivering to a fresh, working destination, and
	// returns with it a function reporting what has arrived there so far: the
	// bytes delivered for each event, in arrival order (a line-based
	// destination may return lines with or without their newline). The
	// sink must implement sinks.Renderer; what arrives must equal Render's
	// result, and be JSON.
	Healthy func(t *testing.T) (sinks.Sink, func() [][]byte)
	// Failing lists sinks pointed at broken destinations, one per kind of
	// failure worth checking.
	Failing []Failing
	// Secret is a marker the harness placed everywhere the sink's config
	// holds a secret (URL user info and query, header values, signing
	// secret), and that a failing destination may echo back; no error may
	// contain it. Empty skips that check.
	Secret string
}

// Failing is a sink whose destination fails in one way.
type Failing struct {
	Name string
	New  func(t *testing.T) sinks.Sink
	// Permanent says whether the error must be marked sinks.Permanent;
	// otherwise it must be retryable.
	Permanent bool
	// RetryAfter, when non-zero, is the delay the error must ask for
	// (sinks.RetryAfterOf).
	RetryAfter time.Duration
}

// Samples returns the sample payloads by file name: a message event, a
// device event, and a message full of characters that need escaping.
func Samples() map[string][]byte {
	out := map[string][]byte{}
	entries, _ := fs.ReadDir(samples, "testdata")
	for _, e := range entries {
		b, _ := samples.ReadFile("testdata/" + e.Name())
		out[e.Name()] = b
	}
	return out
}

// Event returns an event carrying body, received from source "test".
func Event(id string, body []byte) *sinks.Event {
	return &sinks.Event{ID: id, Source: "test", ReceivedAt: time.Date(2025, 1, 28, 9, 20, 0, 123456789, time.UTC), Body: body}
}

// Variant returns a message event unique to n: the escaping sample with its
// message id and text changed, so that concurrent deliveries can be told
// apart and each carries quotes, newlines and non-ASCII text.
func Variant(n int) *sinks.Event {
	var p map[string]any
	if err := json.Unmarshal(Samples()["escaping.json"], &p); err != nil {
		panic(err) // embedded data
	}
	msg := p["message"].(map[string]any)
	msg["id"] = fmt.Sprintf("msg_%04d", n)
	msg["content"].(map[string]any)["text"] = fmt.Sprintf("variant %d: \"quoted\"\nnext line ü 🚀", n)
	body, err := json.MarshalIndent(p, "", "  ") // not compact: sinks that compact must do it
	if err != nil {
		panic(err)
	}
	return Event(fmt.Sprintf("ev_%04d", n), body)
}

// Run runs the conformance suite against h.
func Run(t *testing.T, h Harness) {
	t.Helper()
	t.Run("delivers samples", func(t *testing.T) { testDeliver(t, h) })
	t.Run("concurrent sends arrive intact", func(t *testing.T) { testConcurrent(t, h) })
	t.Run("done context", func(t *testing.T) { testDoneContext(t, h) })
	t.Run("send after close", func(t *testing.T) { testSendAfterClose(t, h) })
	t.Run("close is idempotent", func(t *testing.T) { testCloseTwice(t, h) })
	for _, f := range h.Failing {
		t.Run("failing/"+f.Name, func(t *testing.T) { testFailing(t, h, f) })
	}
}

func renderer(t *testing.T, s sinks.Sink) sinks.Renderer {
	t.Helper()
	r, ok := s.(sinks.Renderer)
	if !ok {
		t.Fatalf("%T does not implement sinks.Renderer", s)
	}
	return r
}

func closeSink(t *testing.T, s sinks.Sink) {
	t.Helper()
	if err := s.Close(context.WithoutCancel(t.Context())); err != nil {
		t.Errorf("close: %v", err)
	}
}

// normalize drops the newline a line-based destination may keep.
func normalize(b []byte) string { return string(bytes.TrimSuffix(b, []byte{'\n'})) }

func testDeliver(t *testing.T, h Harness) {
	s, received := h.Healthy(t)
	defer closeSink(t, s)
	r := renderer(t, s)
	names := slices.Sorted(func(yield func(string) bool) {
		for name := range Samples() {
			if !yield(name) {
				return
			}
		}
	})
	var want []string
	for i, name := range names {
		ev := Event(fmt.Sprintf("ev_sample_%d", i), Samples()[name])
		rendered, err := r.Render(ev)
		if err != nil {
			t.Fatalf("render %s: %v", name, err)
		}
		want = append(want, normalize(rendered))
		if err := s.Send(t.Context(), ev); err != nil {
			checkSecret(t, h, err)
			t.Fatalf("send %s: %v", name, err)
		}
		got := received()
		if len(got) != i+1 {
			t.Fatalf("after sending %s, %d deliveries arrived, want %d", name, len(got), i+1)
		}
	}
	got := received()
	for i := range want {
		if g := normalize(got[i]); g != want[i] {
			t.Errorf("delivery %d (%s):\n got  %q\n want %q (Render)", i, names[i], g, want[i])
		}
		if !json.Valid(got[i]) {
			t.Errorf("delivery %d (%s) is not JSON: %q", i, names[i], got[i])
		}
	}
}

func testConcurrent(t *testing.T, h Harness) {
	const goroutines, each = 16, 8
	s, received := h.Healthy(t)
	defer closeSink(t, s)
	r := renderer(t, s)
	var want []string
	for n := range goroutines * each {
		b, err := r.Render(Variant(n))
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		want = append(want, normalize(b))
	}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if err := s.Send(t.Context(), Variant(g*each+i)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		checkSecret(t, h, err)
		t.Errorf("send: %v", err)
	}
	var got []string
	for _, b := range received() {
		got = append(got, normalize(b))
	}
	slices.Sort(want)
	slices.Sort(got)
	if len(got) != len(want) {
		t.Fatalf("%d deliveries arrived, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("deliveries differ from renders (interleaved or altered?):\n got  %q\n want %q", got[i], want[i])
		}
	}
}

func testDoneContext(t *testing.T, h Harness) {
	tests := []struct {
		name string
		ctx  func() context.Context
		want error
	}{
		{"cancelled", func() context.Context {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			return ctx
		}, context.Canceled},
		{"deadline passed", func() context.Context {
			ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
			t.Cleanup(cancel)
			return ctx
		}, context.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, received := h.Healthy(t)
			defer closeSink(t, s)
			start := time.Now()
			err := s.Send(tc.ctx(), Variant(1))
			if elapsed := time.Since(start); elapsed > time.Second {
				t.Errorf("send took %v", elapsed)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("send = %v, want an error wrapping %v", err, tc.want)
			}
			checkSecret(t, h, err)
			if n := len(received()); n != 0 {
				t.Errorf("%d deliveries arrived for a refused send", n)
			}
		})
	}
}

func testSendAfterClose(t *testing.T, h Harness) {
	s, received := h.Healthy(t)
	if err := s.Send(t.Context(), Variant(1)); err != nil {
		t.Fatalf("send: %v", err)
	}
	closeSink(t, s)
	err := s.Send(t.Context(), Variant(2))
	if !errors.Is(err, sinks.ErrClosed) {
		t.Fatalf("send after close = %v, want an error wrapping sinks.ErrClosed", err)
	}
	if sinks.IsPermanent(err) {
		t.Errorf("send after close is permanent; the delivery belongs to the sink that replaced this one")
	}
	checkSecret(t, h, err)
	if n := len(received()); n != 1 {
		t.Errorf("%d deliveries arrived, want 1", n)
	}
}

func testCloseTwice(t *testing.T, h Harness) {
	t.Run("used", func(t *testing.T) {
		s, _ := h.Healthy(t)
		if err := s.Send(t.Context(), Variant(1)); err != nil {
			t.Fatalf("send: %v", err)
		}
		closeSink(t, s)
		closeSink(t, s)
	})
	t.Run("never used", func(t *testing.T) {
		s, received := h.Healthy(t)
		closeSink(t, s)
		closeSink(t, s)
		if n := len(received()); n != 0 {
			t.Errorf("%d deliveries arrived from an unused sink", n)
		}
	})
}

func testFailing(t *testing.T, h Harness, f Failing) {
	s := f.New(t)
	defer closeSink(t, s)
	err := s.Send(t.Context(), Variant(7))
	if err == nil {
		t.Fatal("send to a failing destination succeeded")
	}
	t.Logf("error: %v", err)
	checkSecret(t, h, err)
	if got := sinks.IsPermanent(err); got != f.Permanent {
		t.Errorf("IsPermanent = %v, want %v", got, f.Permanent)
	}
	if f.RetryAfter != 0 {
		// An HTTP-date Retry-After loses sub-second precision to the clock.
		if d, ok := sinks.RetryAfterOf(err); !ok || d < f.RetryAfter-2*time.Second || d > f.RetryAfter {
			t.Errorf("RetryAfterOf = %v, %v; want %v", d, ok, f.RetryAfter)
		}
	}
}

func checkSecret(t *testing.T, h Harness, err error) {
	t.Helper()
	if h.Secret != "" && err != nil && strings.Contains(err.Error(), h.Secret) {
		t.Errorf("error text carries the secret: %v", err)
	}
}
