// Package sinktest is the conformance suite every hookrouter sink runs in its
// tests: delivery of sample events exactly as the sink's Render shows them,
// concurrent Sends arriving intact, prompt failure on a done context, Send
// after Close, idempotent Close, classification of a failing destination's
// errors, and no secret in any error text; and, for a sink that implements
// sinks.BatchSender, the same for SendBatch (one error per event, an event
// that cannot be encoded failing alone).
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
	s, _ := h.Healthy(t)
	_, batches := s.(sinks.BatchSender)
	closeSink(t, s)
	if !batches {
		return
	}
	t.Run("batch/arrives intact", func(t *testing.T) { testBatch(t, h) })
	t.Run("batch/one bad event fails alone", func(t *testing.T) { testBatchBadEvent(t, h) })
	t.Run("batch/empty", func(t *testing.T) { testBatchEmpty(t, h) })
	t.Run("batch/done context", func(t *testing.T) { testBatchDoneContext(t, h) })
	t.Run("batch/after close", func(t *testing.T) { testBatchAfterClose(t, h) })
	for _, f := range h.Failing {
		t.Run("batch/failing/"+f.Name, func(t *testing.T) { testBatchFailing(t, h, f) })
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

// batchSize is larger than one round trip's worth for most clients, and
// smaller than the dispatcher's largest batch.
const batchSize = 40

func batcher(t *testing.T, s sinks.Sink) sinks.BatchSender {
	t.Helper()
	b, ok := s.(sinks.BatchSender)
	if !ok {
		t.Fatalf("%T does not implement sinks.BatchSender", s)
	}
	return b
}

// lines flattens what arrived: a batch may reach a line-based destination
// in one write, so a delivery that is not one JSON value is split into its
// lines (the line-based sinks write compact JSON, which holds no newline).
func lines(got [][]byte) []string {
	var out []string
	for _, b := range got {
		if json.Valid(b) {
			out = append(out, normalize(b))
			continue
		}
		for l := range strings.SplitSeq(string(b), "\n") {
			if l != "" {
				out = append(out, l)
			}
		}
	}
	return out
}

// variants returns n distinct events starting at Variant(from), and their renders.
func variants(t *testing.T, r sinks.Renderer, from, n int) ([]*sinks.Event, []string) {
	t.Helper()
	var evs []*sinks.Event
	var want []string
	for i := range n {
		ev := Variant(from + i)
		b, err := r.Render(ev)
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		evs = append(evs, ev)
		want = append(want, normalize(b))
	}
	return evs, want
}

func sameSet(t *testing.T, got, want []string) {
	t.Helper()
	got, want = slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if len(got) != len(want) {
		t.Fatalf("%d deliveries arrived, want %d:\n got  %q\n want %q", len(got), len(want), got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("deliveries differ from renders:\n got  %q\n want %q", got[i], want[i])
		}
	}
}

func testBatch(t *testing.T, h Harness) {
	s, received := h.Healthy(t)
	defer closeSink(t, s)
	evs, want := variants(t, renderer(t, s), 100, batchSize)
	if errs := batcher(t, s).SendBatch(t.Context(), evs); errs != nil {
		for _, err := range errs {
			checkSecret(t, h, err)
		}
		t.Fatalf("send batch: %v", errs)
	}
	// A second batch after the first: a sink keeping state between batches
	// (a prepared statement, a pending buffer) must not lose or repeat any.
	evs2, want2 := variants(t, renderer(t, s), 200, 3)
	if errs := batcher(t, s).SendBatch(t.Context(), evs2); errs != nil {
		t.Fatalf("second batch: %v", errs)
	}
	sameSet(t, lines(received()), append(want, want2...))
}

func testBatchBadEvent(t *testing.T, h Harness) {
	s, received := h.Healthy(t)
	defer closeSink(t, s)
	evs, want := variants(t, renderer(t, s), 300, 4)
	bad := Event("ev_bad", []byte(`{"event": not json`))
	evs = slices.Insert(evs, 2, bad)
	errs := batcher(t, s).SendBatch(t.Context(), evs)
	if len(errs) != len(evs) {
		t.Fatalf("send batch returned %d errors for %d events: %v", len(errs), len(evs), errs)
	}
	for i, err := range errs {
		checkSecret(t, h, err)
		switch {
		case i == 2 && (err == nil || !sinks.IsPermanent(err)):
			t.Errorf("event with a body that is not JSON: error %v, want a permanent one", err)
		case i != 2 && err != nil:
			t.Errorf("event %d failed with the bad one: %v", i, err)
		}
	}
	sameSet(t, lines(received()), want)
}

func testBatchEmpty(t *testing.T, h Harness) {
	s, received := h.Healthy(t)
	defer closeSink(t, s)
	if errs := batcher(t, s).SendBatch(t.Context(), nil); errs != nil {
		t.Fatalf("empty batch: %v", errs)
	}
	if n := len(received()); n != 0 {
		t.Errorf("%d deliveries arrived for an empty batch", n)
	}
}

func testBatchDoneContext(t *testing.T, h Harness) {
	s, received := h.Healthy(t)
	defer closeSink(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	evs, _ := variants(t, renderer(t, s), 400, 3)
	start := time.Now()
	errs := batcher(t, s).SendBatch(ctx, evs)
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("send batch took %v", elapsed)
	}
	if len(errs) != len(evs) {
		t.Fatalf("send batch returned %d errors for %d events: %v", len(errs), len(evs), errs)
	}
	for _, err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want one wrapping %v", err, context.Canceled)
		}
		checkSecret(t, h, err)
	}
	if n := len(received()); n != 0 {
		t.Errorf("%d deliveries arrived for a refused batch", n)
	}
}

func testBatchAfterClose(t *testing.T, h Harness) {
	s, received := h.Healthy(t)
	closeSink(t, s)
	evs, _ := variants(t, renderer(t, s), 500, 3)
	errs := batcher(t, s).SendBatch(t.Context(), evs)
	if len(errs) != len(evs) {
		t.Fatalf("send batch returned %d errors for %d events: %v", len(errs), len(evs), errs)
	}
	for _, err := range errs {
		if !errors.Is(err, sinks.ErrClosed) || sinks.IsPermanent(err) {
			t.Errorf("error %v, want a retryable one wrapping sinks.ErrClosed", err)
		}
		checkSecret(t, h, err)
	}
	if n := len(received()); n != 0 {
		t.Errorf("%d deliveries arrived after close", n)
	}
}

func testBatchFailing(t *testing.T, h Harness, f Failing) {
	s := f.New(t)
	defer closeSink(t, s)
	evs := []*sinks.Event{Variant(600), Variant(601), Variant(602)}
	errs := batcher(t, s).SendBatch(t.Context(), evs)
	if len(errs) != len(evs) {
		t.Fatalf("send batch returned %d errors for %d events: %v", len(errs), len(evs), errs)
	}
	for _, err := range errs {
		if err == nil {
			t.Fatal("an event of a batch to a failing destination was delivered")
		}
		checkSecret(t, h, err)
		if got := sinks.IsPermanent(err); got != f.Permanent {
			t.Errorf("IsPermanent(%v) = %v, want %v", err, got, f.Permanent)
		}
	}
}
