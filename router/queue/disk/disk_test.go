package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

// logBuf collects a queue's log lines for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func event(id string, size int) *sinks.Event {
	body := []byte(fmt.Sprintf(`{"id":%q,"pad":"`, id))
	body = append(body, bytes.Repeat([]byte{'x'}, max(size-2-len(body), 0))...)
	body = append(body, `"}`...)
	return &sinks.Event{ID: id, Source: "platform", ReceivedAt: time.Unix(1700000000, 123456789), Body: body}
}

func mustOpen(t *testing.T, dir string, maxBytes int64) *Queue {
	t.Helper()
	q, err := Open(dir, maxBytes, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return q
}

func put(t *testing.T, q *Queue, ev *sinks.Event, to ...string) {
	t.Helper()
	if err := q.Put(t.Context(), ev, to); err != nil {
		t.Fatalf("Put %s: %v", ev.ID, err)
	}
}

// take takes the next due delivery for sink, failing after a second.
func take(t *testing.T, q *Queue, sink string) *queue.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	d, err := q.Take(ctx, sink)
	if err != nil {
		t.Fatalf("Take(%s): %v", sink, err)
	}
	return d
}

// nothingDue checks that no delivery for sink becomes due within 50ms.
func nothingDue(t *testing.T, q *Queue, sink string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if d, err := q.Take(ctx, sink); err == nil {
		t.Fatalf("Take(%s) = %s, want nothing due", sink, d.Event.ID)
	}
}

func TestPutTakeDoneRetry(t *testing.T) {
	q := mustOpen(t, t.TempDir(), 1<<20)
	defer q.Close()
	for i := range 3 {
		put(t, q, event(fmt.Sprint("e", i), 100), "a", "b")
	}
	if got := q.Pending(); fmt.Sprint(got) != "[a b]" {
		t.Fatalf("Pending = %v", got)
	}
	d0 := take(t, q, "a")
	if d0.Event.ID != "e0" || d0.Sink != "a" || d0.Attempts != 0 {
		t.Fatalf("first delivery = %s/%s/%d", d0.Event.ID, d0.Sink, d0.Attempts)
	}
	if !bytes.Equal(d0.Event.Body, event("e0", 100).Body) {
		t.Fatalf("body = %q", d0.Event.Body)
	}
	// A retry lets later events pass, then comes back first in line.
	d0.Attempts, d0.LastError = 1, "http status 503"
	if err := q.Retry(d0, 80*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := take(t, q, "a"); d.Event.ID != "e1" {
		t.Fatalf("during retry wait got %s, want e1", d.Event.ID)
	} else if err := q.Done(d); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	d := take(t, q, "a")
	if d.Event.ID != "e0" || d.Attempts != 1 || d.LastError != "http status 503" {
		t.Fatalf("after retry delay got %s attempts=%d err=%q", d.Event.ID, d.Attempts, d.LastError)
	}
	if err := q.Done(d); err != nil {
		t.Fatal(err)
	}
	if got := q.Depth("a"); got != 1 {
		t.Fatalf("Depth(a) = %d, want 1", got)
	}
	if got := q.Depth("b"); got != 3 {
		t.Fatalf("Depth(b) = %d, want 3 (sinks are independent)", got)
	}

	// Misuse is reported, not silently accepted.
	if err := q.Done(d); err == nil {
		t.Fatal("second Done of the same delivery succeeded")
	}
	if err := q.Retry(d, 0); err == nil {
		t.Fatal("Retry of a finished delivery succeeded")
	}
	if err := q.Done(&queue.Delivery{Event: event("x", 10), Sink: "a"}); err == nil {
		t.Fatal("Done of a foreign delivery succeeded")
	}
	if err := q.Put(t.Context(), event("none", 10), nil); err == nil {
		t.Fatal("Put with no sinks succeeded")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := q.Put(ctx, event("cancelled", 10), []string{"a"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a done ctx = %v", err)
	}
	// A repeated sink is owed once.
	put(t, q, event("dup", 10), "c", "c")
	if got := q.Depth("c"); got != 1 {
		t.Fatalf("Depth(c) = %d, want 1", got)
	}

	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Put(t.Context(), event("late", 10), []string{"a"}); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("Put after Close = %v, want ErrClosed", err)
	}
	if _, err := q.Take(t.Context(), "a"); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("Take after Close = %v, want ErrClosed", err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestReopen simulates a restart: whatever was not Done is owed again, in
// acceptance order, with its retry stage kept.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	q := mustOpen(t, dir, 1<<20)
	for i := range 6 {
		put(t, q, event(fmt.Sprint("e", i), 200), "a", "b")
	}
	// a: e0 done, e1 retrying soon (3 attempts), e2 retrying in an hour,
	// e3 taken but never finished (the crash case); b: e0 done.
	ds := map[string]*queue.Delivery{}
	for range 4 {
		d := take(t, q, "a")
		ds[d.Event.ID] = d
	}
	if err := q.Done(ds["e0"]); err != nil {
		t.Fatal(err)
	}
	ds["e1"].Attempts, ds["e1"].LastError = 3, "connection refused"
	if err := q.Retry(ds["e1"], 30*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ds["e2"].Attempts, ds["e2"].LastError = 5, "http status 500"
	if err := q.Retry(ds["e2"], time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := q.Done(take(t, q, "b")); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q = mustOpen(t, dir, 1<<20)
	defer q.Close()
	if got, want := q.Depth("a"), 5; got != want {
		t.Fatalf("Depth(a) = %d, want %d", got, want)
	}
	if got, want := q.Depth("b"), 5; got != want {
		t.Fatalf("Depth(b) = %d, want %d", got, want)
	}
	time.Sleep(40 * time.Millisecond) // e1's delay has passed
	type seen struct {
		id       string
		attempts int
		lastErr  string
	}
	var got []seen
	for range 4 {
		d := take(t, q, "a")
		got = append(got, seen{d.Event.ID, d.Attempts, d.LastError})
		if !bytes.Equal(d.Event.Body, event(d.Event.ID, 200).Body) || d.Event.Source != "platform" ||
			!d.Event.ReceivedAt.Equal(time.Unix(1700000000, 123456789)) {
			t.Fatalf("event %s not restored intact: %+v", d.Event.ID, d.Event)
		}
	}
	want := []seen{{"e1", 3, "connection refused"}, {"e3", 0, ""}, {"e4", 0, ""}, {"e5", 0, ""}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after reopen a got %v, want %v", got, want)
	}
	nothingDue(t, q, "a") // e2 waits for its hour
	if d := take(t, q, "b"); d.Event.ID != "e1" {
		t.Fatalf("b resumes at %s, want e1", d.Event.ID)
	}

	var ids []string
	for _, ev := range q.Recovered() {
		ids = append(ids, ev.ID)
		if !bytes.Equal(ev.Body, event(ev.ID, 200).Body) {
			t.Fatalf("Recovered %s body differs", ev.ID)
		}
	}
	if fmt.Sprint(ids) != "[e1 e2 e3 e4 e5]" {
		t.Fatalf("Recovered = %v", ids)
	}
}

// TestRetryStateSurvivesWithoutClose checks that Retry and Done records
// reach the log within ackDelay even when nothing else is written, so a
// crash loses at most the last moment's progress.
func TestRetryStateSurvivesWithoutClose(t *testing.T) {
	dir := t.TempDir()
	q := mustOpen(t, dir, 1<<20)
	defer q.Close()
	put(t, q, event("e0", 50), "a")
	put(t, q, event("e1", 50), "a")
	d := take(t, q, "a")
	d.Attempts = 2
	if err := q.Retry(d, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := q.Done(take(t, q, "a")); err != nil {
		t.Fatal(err)
	}
	// Read the files as a second process would after a crash, without
	// closing q, until both records are there (within ackDelay).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		q2 := mustOpen(t, snapshot(t, dir), 1<<20)
		depth := q2.Depth("a")
		var due *queue.Delivery
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		due, _ = q2.Take(ctx, "a")
		cancel()
		q2.Close()
		if depth == 1 && due == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a crash copy: depth %d, due %v; want e1's Done and e0's retry in an hour logged", depth, due != nil)
		}
	}
}

// TestErrFull: max_bytes bounds the log's disk use. Puts are refused with
// ErrFull at the bound, also while delivered to one sink of two; once
// delivered everywhere, the compactor frees the space and Puts are taken
// again; a restart counts what the log holds.
func TestErrFull(t *testing.T) {
	dir := t.TempDir()
	const bound = 1 << 20
	q := mustOpen(t, dir, bound)
	fill := func(prefix string) int {
		t.Helper()
		for i := 0; ; i++ {
			err := q.Put(t.Context(), event(fmt.Sprint(prefix, i), 1000), []string{"a", "b"})
			if errors.Is(err, queue.ErrFull) {
				return i
			}
			if err != nil {
				t.Fatal(err)
			}
			if i > bound/1000 {
				t.Fatalf("%d events of 1000 bytes taken by a %d byte queue", i, bound)
			}
		}
	}
	n := fill("e")
	rec := int64(firstPutLen([]string{"a", "b"}, event("e000", 1000)))
	if u := q.Used(); u > bound || u <= bound-rec {
		t.Fatalf("ErrFull with %d bytes used after %d events; want it within one record (%d) of the bound %d", u, n, rec, bound)
	}
	if reserve := int64(reservedSegments * segmentSize(bound)); int64(n)*rec > bound-reserve {
		t.Fatalf("%d events taken: more than the bound %d less the reserve %d", n, bound, reserve)
	}
	// Delivered to a only: b still owes every event.
	for range n {
		if err := q.Done(take(t, q, "a")); err != nil {
			t.Fatal(err)
		}
	}
	q.flush()
	if err := q.Put(t.Context(), event("x", 1000), []string{"a", "b"}); !errors.Is(err, queue.ErrFull) {
		t.Fatalf("Put while b owes everything = %v, want ErrFull", err)
	}
	for range n {
		if err := q.Done(take(t, q, "b")); err != nil {
			t.Fatal(err)
		}
	}
	// The compactor deletes the segments nothing is needed from.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		err := q.Put(t.Context(), event("after", 1000), []string{"a", "b"})
		if err == nil {
			break
		}
		if !errors.Is(err, queue.ErrFull) || time.Now().After(deadline) {
			t.Fatalf("Put after everything was delivered = %v (used %d)", err, q.Used())
		}
	}
	m := fill("f")
	if m < n*9/10 {
		t.Fatalf("after a drain %d events fit, %d before", m, n)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if size := dirSize(t, dir); size > bound {
		t.Fatalf("queue dir holds %d bytes, bound %d", size, bound)
	}
	// Refused events left nothing behind, and the bound is recounted.
	q = mustOpen(t, dir, bound)
	defer func() { q.Close() }()
	if got := len(recoveredIDs(q)); got != m+1 {
		t.Fatalf("%d events stored, want %d", got, m+1)
	}
	// The compactor may free what acknowledgements took, no more.
	if k := fill("g"); k > n/20 {
		t.Fatalf("%d more events taken after a restart at the bound: the log is not counted", k)
	}
}

// dirSize is the bytes the files in dir take (their length).
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, de := range ents {
		if fi, err := de.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n
}

// TestBodiesNotCached covers a backlog larger than the body cache: bodies
// are read back on Take, and dropped again while a delivery waits to retry.
func TestBodiesNotCached(t *testing.T) {
	for _, reopen := range []bool{false, true} {
		t.Run(fmt.Sprint("reopen=", reopen), func(t *testing.T) {
			dir := t.TempDir()
			const n, size = 40, 1000
			one := int64(firstPutLen([]string{"a", "b"}, event("e00", size)))
			q, err := open(dir, 100*one, 2*one, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				put(t, q, event(fmt.Sprintf("e%02d", i), size), "a", "b")
			}
			if reopen {
				q.Close()
				if q, err = open(dir, 100*one, 2*one, nil); err != nil {
					t.Fatal(err)
				}
			}
			defer q.Close()
			if c := q.cached.Load(); c > 2*one || c == 0 {
				t.Fatalf("cached %d bytes, budget %d", c, 2*one)
			}
			da := take(t, q, "a")
			db := take(t, q, "b")
			if !bytes.Equal(da.Event.Body, db.Event.Body) || da.Event.ID != "e00" {
				t.Fatal("deliveries of one event differ")
			}
			for i := 1; i < n; i++ {
				d := take(t, q, "a")
				want := event(fmt.Sprintf("e%02d", i), size)
				if d.Event.ID != want.ID || !bytes.Equal(d.Event.Body, want.Body) {
					t.Fatalf("delivery %d: %s %d bytes", i, d.Event.ID, len(d.Event.Body))
				}
				if i == n-1 {
					if err := q.Retry(d, 0); err != nil {
						t.Fatal(err)
					}
					if d.Event.Body != nil {
						t.Fatal("body of an uncached event kept while it waits")
					}
					d = take(t, q, "a")
					if !bytes.Equal(d.Event.Body, want.Body) {
						t.Fatal("body not read back after retry")
					}
				}
				if err := q.Done(d); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestSpaceReclaimed pushes 200 MB (60 MB under -race) through a 10 MB
// queue, filling it to the bound and draining it each round: the queue dir
// must stay within the bound, not grow with the traffic.
func TestSpaceReclaimed(t *testing.T) {
	if testing.Short() {
		t.Skip("pushes 200 MB")
	}
	dir := t.TempDir()
	const bound, size, writers = 10 << 20, 64 << 10, 16
	total := int64(200 << 20)
	if raceEnabled {
		// Still six times the bound: without page reuse the file would
		// outgrow the check below.
		total = 60 << 20
	}
	q := mustOpen(t, dir, bound)
	defer q.Close()
	ctx := t.Context()
	var maxFile int64
	var through int64
	for round := 0; through < total; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		n := 0
		for w := range writers {
			wg.Go(func() {
				for i := 0; ; i++ {
					err := q.Put(ctx, event(fmt.Sprintf("r%d-w%d-%d", round, w, i), size), []string{"a"})
					if errors.Is(err, queue.ErrFull) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					n++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		if used := q.Used(); used < bound-writers*2*size {
			t.Fatalf("round %d: ErrFull at %d bytes used, bound %d", round, used, bound)
		}
		maxFile = max(maxFile, dirSize(t, dir))
		for range n {
			if err := q.Done(take(t, q, "a")); err != nil {
				t.Fatal(err)
			}
		}
		through += int64(n) * size
	}
	t.Logf("%d MB through a %d MB queue: the queue dir peaked at %d bytes", through>>20, bound>>20, maxFile)
	// The bound counts every file of the log; one batch may pass it.
	if maxFile > bound+2*writers*size {
		t.Fatalf("queue dir grew to %d bytes for a %d byte bound", maxFile, bound)
	}
}

func TestConcurrent(t *testing.T) {
	q := mustOpen(t, t.TempDir(), 64<<20)
	defer q.Close()
	ctx := t.Context()
	const writers, each = 16, 100
	sinkNames := []string{"a", "b", "c"}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := q.Put(ctx, event(fmt.Sprintf("w%d-%d", w, i), 300), sinkNames); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	var mu sync.Mutex
	got := map[string]int{}
	var workers sync.WaitGroup
	for _, s := range sinkNames {
		for range 3 {
			workers.Go(func() {
				for {
					d, err := q.Take(ctx, s)
					if err != nil {
						return
					}
					mu.Lock()
					got[s+"/"+d.Event.ID]++
					n := got[s+"/"+d.Event.ID]
					mu.Unlock()
					// Every third first attempt fails once.
					if n == 1 && len(d.Event.ID)%3 == 0 {
						d.Attempts++
						if err := q.Retry(d, time.Millisecond); err != nil {
							t.Error(err)
						}
						continue
					}
					if err := q.Done(d); err != nil {
						t.Error(err)
					}
				}
			})
		}
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for q.Depth("a")+q.Depth("b")+q.Depth("c") > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	q.Close()
	workers.Wait()
	if len(got) != writers*each*len(sinkNames) {
		t.Fatalf("delivered %d distinct deliveries, want %d", len(got), writers*each*len(sinkNames))
	}
	if segs, _ := segFiles(t, q.dir); len(segs) != 0 {
		t.Fatalf("segments %v left after everything was delivered and Close", segs)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Run("file where the directory should be", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "data")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(filepath.Join(f, "queue"), 1<<20, nil)
		if err == nil || !strings.Contains(err.Error(), "queue dir") {
			t.Fatalf("Open under a file = %v", err)
		}
	})
	t.Run("directory where the lock file should be", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, lockName), 0o700); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, 1<<20, nil)
		if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, lockName)) {
			t.Fatalf("Open with a directory as the lock file = %v", err)
		}
	})
	t.Run("read-only directory", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root writes anywhere")
		}
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(dir, 0o700)
		_, err := Open(dir, 1<<20, nil)
		if err == nil || !strings.Contains(err.Error(), "not writable") {
			t.Fatalf("Open of a read-only dir = %v", err)
		}
	})
	t.Run("locked by another queue", func(t *testing.T) {
		dir := t.TempDir()
		q := mustOpen(t, dir, 1<<20)
		defer q.Close()
		_, err := Open(dir, 1<<20, nil)
		if err == nil || !strings.Contains(err.Error(), "locked") {
			t.Fatalf("second Open = %v", err)
		}
	})
}

// mountTmpfs mounts a tmpfs of size (mount's notation, e.g. "3m") in a
// temporary directory and returns its path, or skips the test where it
// cannot (not root, no mount).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a %s tmpfs (%v: %s)", size, err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// TestDiskFull fills a small tmpfs: Put must fail with the write error (not
// ErrFull, not a crash), and every Put that succeeded must be in the file
// after a restart, which must not find damage.
func TestDiskFull(t *testing.T) {
	dir := mountTmpfs(t, "3m")
	q := mustOpen(t, dir, 1<<30)
	var acked []string
	var putErr error
	for i := range 1000 {
		id := fmt.Sprint("e", i)
		if putErr = q.Put(t.Context(), event(id, 32<<10), []string{"a"}); putErr != nil {
			break
		}
		acked = append(acked, id)
	}
	if putErr == nil || errors.Is(putErr, queue.ErrFull) {
		t.Fatalf("Put on a full disk = %v", putErr)
	}
	if q.Depth("a") != len(acked) {
		t.Fatalf("a failed Put left a delivery: depth %d, acked %d", q.Depth("a"), len(acked))
	}
	q.Close()

	var logs logBuf
	q, err := Open(dir, 1<<30, logs.logger())
	if err != nil {
		t.Fatalf("reopen on a full disk: %v", err)
	}
	defer q.Close()
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("reopen after a full disk reports damage:\n%s", logs.String())
	}
	got := recoveredIDs(q)
	if fmt.Sprint(got) != fmt.Sprint(acked) {
		t.Fatalf("after reopen %d events, want the %d acknowledged ones", len(got), len(acked))
	}
	t.Logf("%d events acknowledged before: %v", len(acked), putErr)
	// Delivering frees space for new events.
	for range len(acked) {
		if err := q.Done(take(t, q, "a")); err != nil {
			t.Fatal(err)
		}
	}
	// The compactor frees the space; until then the disk may still be full.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		err := q.Put(t.Context(), event("after", 32<<10), []string{"a"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Put after the queue was drained: %v", err)
		}
	}
	// Puts acknowledged after the disk was full survive a crash.
	snap := snapshot(t, dir)
	q2 := mustOpen(t, snap, 1<<30)
	defer q2.Close()
	if ids := recoveredIDs(q2); fmt.Sprint(ids) != "[after]" {
		t.Fatalf("after a crash: %v, want [after]", ids)
	}
}

// TestPutRacingClose checks that a Put racing Close is all or nothing: each
// either returned nil and is in the file after a restart, or returned
// ErrClosed and is not.
func TestPutRacingClose(t *testing.T) {
	dir := t.TempDir()
	q := mustOpen(t, dir, 1<<30)
	var mu sync.Mutex
	ok := map[string]bool{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 10_000 {
				id := fmt.Sprintf("w%d-%d", w, i)
				err := q.Put(context.Background(), event(id, 200), []string{"a"})
				if errors.Is(err, queue.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ok[id] = true
				mu.Unlock()
			}
		})
	}
	time.Sleep(30 * time.Millisecond)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	q = mustOpen(t, dir, 1<<30)
	defer q.Close()
	stored := q.Recovered()
	for _, ev := range stored {
		if !ok[ev.ID] {
			t.Fatalf("%s is stored but its Put failed", ev.ID)
		}
	}
	if len(stored) != len(ok) || len(ok) == 0 {
		t.Fatalf("%d stored, %d Puts succeeded", len(stored), len(ok))
	}
}

// TestTakeBatch: batch takes come in acceptance order with their bodies,
// from the cache or the file, and a due-only take never waits.
func TestTakeBatch(t *testing.T) {
	for _, reopen := range []bool{false, true} {
		t.Run(fmt.Sprint("reopen=", reopen), func(t *testing.T) {
			dir := t.TempDir()
			const n, size = 30, 1000
			one := int64(firstPutLen([]string{"a"}, event("e00", size)))
			q, err := open(dir, 100*one, 2*one, nil) // most bodies only in the file
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				put(t, q, event(fmt.Sprintf("e%02d", i), size), "a")
			}
			if reopen {
				q.Close()
				if q, err = open(dir, 100*one, 2*one, nil); err != nil {
					t.Fatal(err)
				}
			}
			defer q.Close()
			var got []*queue.Delivery
			ds, err := q.TakeBatch(t.Context(), "a", 20)
			if err != nil || len(ds) != 20 {
				t.Fatalf("TakeBatch = %d, %v; want 20", len(ds), err)
			}
			got = append(got, ds...)
			got = append(got, q.TakeDue("a", 100)...)
			if len(got) != n {
				t.Fatalf("took %d, want %d", len(got), n)
			}
			if extra := q.TakeDue("a", 10); len(extra) != 0 {
				t.Fatalf("TakeDue on an empty lane = %d", len(extra))
			}
			for i, d := range got {
				want := event(fmt.Sprintf("e%02d", i), size)
				if d.Event.ID != want.ID || !bytes.Equal(d.Event.Body, want.Body) {
					t.Fatalf("delivery %d: %s, %d bytes", i, d.Event.ID, len(d.Event.Body))
				}
				if err := q.Done(d); err != nil {
					t.Fatal(err)
				}
			}
			if q.Depth("a") != 0 {
				t.Fatalf("depth %d after Done", q.Depth("a"))
			}
		})
	}
}
