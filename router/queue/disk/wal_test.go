package disk

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const walHelperEnv = "HOOKROUTER_DISK_QUEUE_WAL_HELPER_DIR"

// snapshot copies every file of dir, as a crash at this moment would
// leave them (the queue is open and writing meanwhile; the copy is taken
// between its writes by holding no lock, so the tests only snapshot a
// quiet queue).
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	snap := t.TempDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range ents {
		if de.Type().IsRegular() {
			if err := copyFile(filepath.Join(dir, de.Name()), filepath.Join(snap, de.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	return snap
}

func walFiles(t *testing.T, dir string) (names []string, size int64) {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, walPrefix+"*"+walSuffix))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m {
		if fi, err := os.Stat(p); err == nil {
			size += fi.Size()
		}
	}
	return m, size
}

// TestWALHelperProcess is not a test: run by TestWALReplayAfterKill as a
// child process, it Puts events with the applier held off for an hour,
// prints "ok ID" for each acknowledged one, then "done", and waits to be
// killed.
func TestWALHelperProcess(t *testing.T) {
	dir := os.Getenv(walHelperEnv)
	if dir == "" {
		t.Skip("helper for TestWALReplayAfterKill")
	}
	q, err := openWith(dir, 1<<30, 1<<20, time.Hour, segmentBytes, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				id := fmt.Sprintf("w%d-%03d", w, i)
				if err := q.Put(context.Background(), event(id, 300+i*40), []string{"a", "b"}); err != nil {
					fmt.Fprintln(os.Stderr, "put:", err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Println("ok", id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Println("done")
	time.Sleep(time.Minute)
	os.Exit(4)
}

// TestWALReplayAfterKill kills a process right after its Puts were
// acknowledged, before the applier ran: every event is only in the log,
// and the next Open must bring all of them back, intact, into bbolt.
func TestWALReplayAfterKill(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWALHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), walHelperEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	finished := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "ok "); ok {
				acked[id] = true
			} else if sc.Text() == "done" {
				finished <- true
				io.Copy(io.Discard, stdout)
				return
			}
		}
		finished <- false
	}()
	select {
	case ok := <-finished:
		if !ok {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("helper ended without finishing its Puts")
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("helper did not finish its Puts")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if len(acked) != 400 {
		t.Fatalf("%d acknowledged, want 400", len(acked))
	}
	if segs, size := walFiles(t, dir); len(segs) == 0 || size == 0 {
		t.Fatal("no log left by the killed process")
	}

	var logs logBuf
	q, err := Open(dir, 1<<30, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	got := 0
	for _, ev := range q.Recovered() {
		if !acked[ev.ID] {
			t.Fatalf("recovered %s, never acknowledged", ev.ID)
		}
		var w, i int
		fmt.Sscanf(ev.ID, "w%d-%d", &w, &i)
		if !bytes.Equal(ev.Body, event(ev.ID, 300+i*40).Body) {
			t.Fatalf("event %s: body differs", ev.ID)
		}
		got++
	}
	if got != len(acked) || q.Depth("a") != got || q.Depth("b") != got {
		t.Fatalf("recovered %d, depth a=%d b=%d, want %d", got, q.Depth("a"), q.Depth("b"), len(acked))
	}
	if !strings.Contains(logs.String(), "replayed_from_wal=400") || strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("log:\n%s", logs.String())
	}
	// Replayed into bbolt at Open: the log is gone.
	if segs, _ := walFiles(t, q.wal.dir); len(segs) != 0 {
		t.Fatalf("segments left after the replay: %v", segs)
	}
	if d := take(t, q, "a"); d.Event.ID != "w0-000" && !strings.HasSuffix(d.Event.ID, "-000") {
		t.Fatalf("first delivery %s, want a first Put", d.Event.ID)
	}
}

// TestWALTornTail damages the end of the last log segment of a crashed
// queue: Open must recover every record before the damage, log a warning
// (not an error: a crash mid-write leaves this), and work afterwards.
func TestWALTornTail(t *testing.T) {
	const n = 20
	cases := []struct {
		name   string
		damage func(t *testing.T, path string, size int64)
		keep   int
	}{
		{"record cut short", func(t *testing.T, path string, size int64) {
			if err := os.Truncate(path, size-7); err != nil {
				t.Fatal(err)
			}
		}, n - 1},
		{"only a partial header", func(t *testing.T, path string, size int64) {
			appendTo(t, path, []byte{0, 0, 1})
		}, n},
		{"garbage after the last record", func(t *testing.T, path string, size int64) {
			appendTo(t, path, bytes.Repeat([]byte{0xA5, 0x5A, 0xFF, 0x00, 0x13}, 300))
		}, n},
		{"bit flipped in the last record", func(t *testing.T, path string, size int64) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := []byte{0}
			f.ReadAt(b, size-50)
			b[0] ^= 0x04
			if _, err := f.WriteAt(b, size-50); err != nil {
				t.Fatal(err)
			}
		}, n - 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			q, err := openWith(dir, 1<<30, 1<<20, time.Hour, segmentBytes, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				put(t, q, event(fmt.Sprintf("e%02d", i), 500), "a")
			}
			crashed := snapshot(t, dir)
			q.Close()
			segs, size := walFiles(t, crashed)
			if len(segs) != 1 {
				t.Fatalf("segments %v", segs)
			}
			tc.damage(t, segs[0], size)

			var logs logBuf
			q, err = Open(crashed, 1<<30, logs.logger())
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			var ids []string
			for _, ev := range q.Recovered() {
				ids = append(ids, ev.ID)
			}
			if len(ids) != tc.keep || (tc.keep > 0 && ids[tc.keep-1] != fmt.Sprintf("e%02d", tc.keep-1)) {
				t.Fatalf("recovered %v, want the first %d", ids, tc.keep)
			}
			l := logs.String()
			if strings.Contains(l, "level=ERROR") || !strings.Contains(l, "torn or damaged") {
				t.Fatalf("log:\n%s", l)
			}
			put(t, q, event("after", 100), "a")
			if q.Depth("a") != tc.keep+1 {
				t.Fatalf("depth %d, want %d", q.Depth("a"), tc.keep+1)
			}
		})
	}
}

func appendTo(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// TestWALAppliedSeqSkip is a crash after the applier committed to bbolt
// but before the applied segment was deleted: the log still holds events
// since delivered, and Open must not bring them back.
func TestWALAppliedSeqSkip(t *testing.T) {
	dir := t.TempDir()
	q, err := openWith(dir, 1<<30, 1<<20, time.Hour, segmentBytes, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for i := range 6 {
		put(t, q, event(fmt.Sprint("e", i), 200), "a")
	}
	// e0..e3 delivered; e2 applied to bbolt first, e4 and e5 still owed.
	for i := range 4 {
		d := take(t, q, "a")
		if err := q.Done(d); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			if err := q.applyOnce(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := q.applyOnce(); err != nil {
		t.Fatal(err)
	}
	if segs, _ := walFiles(t, dir); len(segs) != 1 {
		t.Fatalf("want the active segment still there, got %v", segs)
	}
	crashed := snapshot(t, dir)

	var logs logBuf
	q2, err := Open(crashed, 1<<30, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	var ids []string
	for _, ev := range q2.Recovered() {
		ids = append(ids, ev.ID)
	}
	if fmt.Sprint(ids) != "[e4 e5]" || q2.Depth("a") != 2 {
		t.Fatalf("after the crash: %v owed (depth %d), want [e4 e5]\n%s", ids, q2.Depth("a"), logs.String())
	}
	if strings.Contains(logs.String(), "replayed_from_wal=2") == false && strings.Contains(logs.String(), "events=2") == false {
		t.Fatalf("log:\n%s", logs.String())
	}
	// Numbering goes on past the log: a new event is not taken for an
	// applied one at the next replay.
	put(t, q2, event("e6", 200), "a")
	if q2.lastSeq.Load() != 7 {
		t.Fatalf("next seq %d, want 7", q2.lastSeq.Load())
	}
}

// TestWALSegmentsDeleted runs steady traffic, delivered as it comes, with
// small segments: applied segments must be deleted, so the log stays a few
// segments long, and Close leaves none.
func TestWALSegmentsDeleted(t *testing.T) {
	dir := t.TempDir()
	const seg = 64 << 10
	q, err := openWith(dir, 1<<30, 1<<20, 5*time.Millisecond, seg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var drain sync.WaitGroup
	drain.Go(func() {
		for {
			d, err := q.Take(ctx, "a")
			if err != nil {
				return
			}
			if err := q.Done(d); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var maxSize int64
	var maxSegs int
	const total = 3000 // 3 MB through 64 KiB segments
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range total / 4 {
				if err := q.Put(ctx, event(fmt.Sprintf("w%d-%d", w, i), 1000), []string{"a"}); err != nil {
					t.Error(err)
					return
				}
				if w == 0 && i%50 == 0 {
					segs, size := walFiles(t, dir)
					maxSize, maxSegs = max(maxSize, size), max(maxSegs, len(segs))
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	for deadline := time.Now().Add(5 * time.Second); q.Depth("a") > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(30 * time.Millisecond)
	t.Logf("log peaked at %d segments, %d bytes, for %d bytes of Puts", maxSegs, maxSize, total*1000)
	if maxSize > total*1000/4 || maxSegs > 12 {
		t.Fatalf("log grew to %d segments, %d bytes", maxSegs, maxSize)
	}
	if segs, _ := walFiles(t, dir); len(segs) > 2 {
		t.Fatalf("idle queue keeps %d segments", len(segs))
	}
	cancel()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	drain.Wait()
	if segs, _ := walFiles(t, dir); len(segs) != 0 {
		t.Fatalf("Close left %v", segs)
	}
}
