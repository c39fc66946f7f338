package disk

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const logHelperEnv = "HOOKROUTER_DISK_QUEUE_LOG_HELPER_DIR"

// snapshot copies every file of dir, as a crash at this moment would
// leave them. The queue is open meanwhile and the copy holds no lock, so
// the tests only snapshot a queue that is not taking Puts; its background
// work may still rename or remove files, and a copy that missed one is
// taken again.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		snap := t.TempDir()
		err := copyFiles(dir, snap)
		if err == nil {
			return snap
		}
		// A file listed was renamed or removed before it was copied: the
		// compactor retired a segment, or a spare was prepared.
		if !errors.Is(err, fs.ErrNotExist) || attempt == 50 {
			t.Fatal(err)
		}
	}
}

// copyFiles copies the regular files of dir into snap.
func copyFiles(dir, snap string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, de := range ents {
		if de.Type().IsRegular() {
			if err := copyFile(filepath.Join(dir, de.Name()), filepath.Join(snap, de.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func segFiles(t *testing.T, dir string) (names []string, size int64) {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, segPrefix+"*"+segSuffix))
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

// TestLogHelperProcess is not a test: run by TestReplayAfterKill as a
// child process, it Puts events, prints "ok ID" for each acknowledged one,
// then "done", and waits to be killed.
func TestLogHelperProcess(t *testing.T) {
	dir := os.Getenv(logHelperEnv)
	if dir == "" {
		t.Skip("helper for TestReplayAfterKill")
	}
	q, err := Open(dir, 1<<30, nil)
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

// TestReplayAfterKill kills a process right after its Puts were
// acknowledged: the next Open must bring every one of them back, intact,
// from the log, in acceptance order per writer.
func TestReplayAfterKill(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLogHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), logHelperEnv+"="+dir)
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

	var logs logBuf
	q, err := Open(dir, 1<<30, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	got := 0
	last := map[int]int{}
	for _, ev := range q.Recovered() {
		if !acked[ev.ID] {
			t.Fatalf("recovered %s, never acknowledged", ev.ID)
		}
		var w, i int
		fmt.Sscanf(ev.ID, "w%d-%d", &w, &i)
		if !bytes.Equal(ev.Body, event(ev.ID, 300+i*40).Body) {
			t.Fatalf("event %s: body differs", ev.ID)
		}
		if p, ok := last[w]; ok && p >= i {
			t.Fatalf("event %s recovered after w%d-%03d", ev.ID, w, p)
		}
		last[w] = i
		got++
	}
	if got != len(acked) || q.Depth("a") != got || q.Depth("b") != got {
		t.Fatalf("recovered %d, depth a=%d b=%d, want %d", got, q.Depth("a"), q.Depth("b"), len(acked))
	}
	if !strings.Contains(logs.String(), "events=400") || strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("log:\n%s", logs.String())
	}
}

// TestTornTail damages the end of the records of the last log segment
// of a crashed queue (a preallocated one: zeros follow the records): Open
// must recover every record before the damage, log a warning (not an
// error: a crash mid-write leaves this), and work afterwards; the next
// start does not meet the damage again. Undamaged, the zero tail ends the
// reading quietly.
func TestTornTail(t *testing.T) {
	const n = 20
	cases := []struct {
		name   string
		damage func(t *testing.T, path string, end int64)
		keep   int
		torn   bool
	}{
		{"zero tail", func(t *testing.T, path string, end int64) {}, n, false},
		{"record cut short", func(t *testing.T, path string, end int64) {
			if err := os.Truncate(path, end-7); err != nil {
				t.Fatal(err)
			}
		}, n - 1, true},
		{"last record's end not written", func(t *testing.T, path string, end int64) {
			writeAt(t, path, end-7, make([]byte, 7))
		}, n - 1, true},
		{"only a partial header", func(t *testing.T, path string, end int64) {
			writeAt(t, path, end, []byte{0, 0, 1})
		}, n, true},
		{"garbage after the last record", func(t *testing.T, path string, end int64) {
			writeAt(t, path, end, bytes.Repeat([]byte{0xA5, 0x5A, 0xFF, 0x00, 0x13}, 300))
		}, n, true},
		{"bit flipped in the last record", func(t *testing.T, path string, end int64) {
			b := readAt(t, path, end-50, 1)
			writeAt(t, path, end-50, []byte{b[0] ^ 0x04})
		}, n - 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			q := mustOpen(t, dir, 1<<30)
			for i := range n {
				put(t, q, event(fmt.Sprintf("e%02d", i), 500), "a")
			}
			crashed := snapshot(t, dir)
			q.Close()
			segs, _ := segFiles(t, crashed)
			if len(segs) != 1 {
				t.Fatalf("segments %v", segs)
			}
			if fi, err := os.Stat(segs[0]); err != nil || fi.Size() != maxSegmentBytes {
				t.Fatalf("segment not preallocated: %v, %v", fi.Size(), err)
			}
			tc.damage(t, segs[0], recordsEnd(t, segs[0]))

			for start := range 2 {
				var logs logBuf
				q, err := Open(crashed, 1<<30, logs.logger())
				if err != nil {
					t.Fatal(err)
				}
				ids := recoveredIDs(q)
				want := make([]string, tc.keep)
				for i := range want {
					want[i] = fmt.Sprintf("e%02d", i)
				}
				if start == 1 {
					want = append(want, "after")
				}
				if fmt.Sprint(ids) != fmt.Sprint(want) {
					t.Fatalf("start %d: recovered %v, want %v", start, ids, want)
				}
				l := logs.String()
				if strings.Contains(l, "level=ERROR") || strings.Contains(l, "torn or damaged") != (tc.torn && start == 0) {
					t.Fatalf("start %d: log:\n%s", start, l)
				}
				if start == 0 {
					put(t, q, event("after", 100), "a")
					if q.Depth("a") != tc.keep+1 {
						t.Fatalf("depth %d, want %d", q.Depth("a"), tc.keep+1)
					}
				}
				if err := q.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// recordsEnd is the offset where the records of the segment at path end.
func recordsEnd(t *testing.T, path string) int64 {
	t.Helper()
	first, ok := segmentFirst(filepath.Base(path))
	if !ok {
		t.Fatalf("%s is not a segment", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res := scanSegment(b, first, func(int, record) {})
	if res.torn || len(res.skips) > 0 {
		t.Fatalf("segment %s damaged before the test damaged it", path)
	}
	return int64(res.end)
}

func segmentFirst(name string) (uint64, bool) {
	var first uint64
	n, err := fmt.Sscanf(name, segPrefix+"%016x"+segSuffix, &first)
	return first, n == 1 && err == nil
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// putRec is a first Put's record numbered lsn, for hand-made segments.
func putRec(b []byte, lsn uint64, id string, size int, to ...string) []byte {
	b, _ = appendPut(b, lsn, lsn, to, nil, event(id, size), nil)
	return b
}

// TestRecycledSegment reads a segment that holds, past this life's
// records, records of its previous life with valid checksums: laid out so
// that one starts exactly where the new records end, with no terminator
// between (the new batch's last sector written, the terminator's not).
// Reading must stop there, quietly, and a spare's name must raise the
// numbering past every lsn the spare may hold.
func TestRecycledSegment(t *testing.T) {
	dir := t.TempDir()
	// Previous life: lsns 1..10, all the same size, as segment seg-1.
	var old []byte
	for lsn := uint64(1); lsn <= 10; lsn++ {
		old = putRec(old, lsn, fmt.Sprintf("old%02d", lsn), 300, "a")
	}
	// This life, recycled as seg-21 (lsns 11..20 went to another segment,
	// since compacted): three records of the same size over the old ones.
	var cur []byte
	for lsn := uint64(21); lsn <= 23; lsn++ {
		cur = putRec(cur, lsn, fmt.Sprintf("new%02d", lsn), 300, "a")
	}
	if len(cur) != 3*len(old)/10 {
		t.Fatalf("records differ in size: %d vs %d", len(cur)/3, len(old)/10)
	}
	file := append(append([]byte{}, old...), make([]byte, 4096)...)
	copy(file, cur)
	if err := os.WriteFile(filepath.Join(dir, segmentName(21)), file, 0o600); err != nil {
		t.Fatal(err)
	}
	// A spare that held lsns up to 0x40.
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf(spareFile, 0x40)), old, 0o600); err != nil {
		t.Fatal(err)
	}

	var logs logBuf
	q, err := Open(dir, 1<<30, logs.logger(), withSegmentBytes(16<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ids := recoveredIDs(q)
	if fmt.Sprint(ids) != "[new21 new22 new23]" {
		t.Fatalf("recovered %v, want the three new records", ids)
	}
	if l := logs.String(); strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
		t.Fatalf("a recycled segment's old records were reported:\n%s", l)
	}
	put(t, q, event("next", 100), "a")
	q.mu.Lock()
	got := q.lastLSN
	q.mu.Unlock()
	if got != 0x41 {
		t.Fatalf("next lsn %#x, want 0x41 (past the spare's name)", got)
	}
}

// TestSeqGap: a record with a valid checksum numbered past the next
// expected lsn means records were lost in between (damage: a crash never
// leaves that inside a segment): the ones after the gap are kept and the
// damage is reported at error level.
func TestSeqGap(t *testing.T) {
	dir := t.TempDir()
	var b []byte
	for _, lsn := range []uint64{5, 6, 8} {
		b = putRec(b, lsn, fmt.Sprint("e", lsn), 100, "a")
	}
	if err := os.WriteFile(filepath.Join(dir, segmentName(5)), b, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs logBuf
	q, err := Open(dir, 1<<30, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ids := recoveredIDs(q)
	if fmt.Sprint(ids) != "[e5 e6 e8]" || !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "damaged") {
		t.Fatalf("recovered %v\n%s", ids, logs.String())
	}
}

// TestRewriteReplaces: a 'P' record logged again (by the compactor, with
// the event's state then) replaces what the records before it said, and
// the records after it apply to it. This is the state a crash leaves
// between a compaction's write and the deletion of the old segment.
func TestRewriteReplaces(t *testing.T) {
	dir := t.TempDir()
	hour := time.Now().Add(time.Hour).UnixNano()
	var a []byte
	a = putRec(a, 1, "e1", 200, "x", "y")
	a = putRec(a, 2, "e2", 200, "x", "y")
	a = appendRetry(a, 3, 1, "x", deliveryState{attempts: 1, lastError: "first"})
	a = appendDone(a, 4, 1, "y")
	a = appendDone(a, 5, 2, "x")
	var b []byte
	// e1 logged again: owed to x only, after 4 attempts, due in an hour.
	b, _ = appendPut(b, 6, 1, nil, []sinkState{{sink: "x", deliveryState: deliveryState{attempts: 4, nextAt: hour, lastError: "fourth"}}}, event("e1", 200), nil)
	// e2 logged again, then delivered to y.
	b, _ = appendPut(b, 7, 2, nil, []sinkState{{sink: "y"}}, event("e2", 200), nil)
	b = appendDone(b, 8, 2, "y")
	// An old record of e1 after its rewrite cannot exist; a Retry can.
	b = appendRetry(b, 9, 1, "x", deliveryState{attempts: 5, nextAt: hour, lastError: "fifth"})
	for name, data := range map[string][]byte{segmentName(1): a, segmentName(6): b} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var logs logBuf
	q, err := Open(dir, 1<<30, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if ids := recoveredIDs(q); fmt.Sprint(ids) != "[e1]" {
		t.Fatalf("recovered %v, want [e1]\n%s", ids, logs.String())
	}
	if q.Depth("x") != 1 || q.Depth("y") != 0 {
		t.Fatalf("depth x=%d y=%d, want 1 and 0", q.Depth("x"), q.Depth("y"))
	}
	nothingDue(t, q, "x") // due in an hour
	q.sched.Close()
	e := q.recoveredEntries()[0]
	if st := e.dels[0].r.retry; st == nil || st.attempts != 5 || st.lastError != "fifth" || e.dels[0].d.Attempts != 5 {
		t.Fatalf("retry state %+v", st)
	}
	if strings.Contains(logs.String(), "level=ERROR") || strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("log:\n%s", logs.String())
	}
}

// TestSegmentsCompacted runs steady traffic, delivered as it comes, with
// small segments: segments nothing is needed from must go (recycled as
// spares), so the log stays a few segments long, and Close leaves none.
func TestSegmentsCompacted(t *testing.T) {
	dir := t.TempDir()
	const seg = 64 << 10
	q, err := Open(dir, 1<<30, nil, withSegmentBytes(seg), withAckDelay(5*time.Millisecond))
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
					segs, size := segFiles(t, dir)
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
	t.Logf("log peaked at %d segments, %d bytes, for %d bytes of Puts", maxSegs, maxSize, total*1000)
	if maxSize > total*1000/4 || maxSegs > 12 {
		t.Fatalf("log grew to %d segments, %d bytes", maxSegs, maxSize)
	}
	q.files.mu.Lock()
	recycled, zeroFilled := q.files.recycled, q.files.zeroFilled
	q.files.mu.Unlock()
	t.Logf("spares: %d recycled, %d zero-filled", recycled, zeroFilled)
	if recycled < 10 {
		t.Fatalf("%d segments recycled, %d zero-filled", recycled, zeroFilled)
	}
	cancel()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	drain.Wait()
	if segs, _ := segFiles(t, dir); len(segs) != 0 {
		t.Fatalf("Close left %v", segs)
	}
	if spares, _ := filepath.Glob(filepath.Join(dir, "spare-*")); len(spares) != maxSpares {
		t.Fatalf("Close left spares %v, want %d", spares, maxSpares)
	}
}

// TestCompactionKeepsBacklog: one sink is down (nothing taken, some
// deliveries retrying with their attempts) while another drains
// everything: the log must not grow with the traffic (the stuck events
// are rewritten forward and the garbage behind them deleted), and after a
// restart every stuck delivery is owed with its retry state, its body
// intact.
func TestCompactionKeepsBacklog(t *testing.T) {
	dir := t.TempDir()
	const seg = 32 << 10
	q, err := Open(dir, 1<<30, nil, withSegmentBytes(seg), withAckDelay(time.Millisecond), KeepKeys(10))
	if err != nil {
		t.Fatal(err)
	}
	const stuck = 40
	for i := range stuck {
		put(t, q, event(fmt.Sprintf("s%02d", i), 700), "down", "up")
	}
	// Half of the stuck ones failed a few times, now due in an hour.
	for i := range stuck / 2 {
		d := take(t, q, "down")
		d.Attempts, d.LastError = i+1, fmt.Sprint("attempt ", i+1, " failed")
		if err := q.Retry(d, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for q.Depth("up") > 0 {
		if err := q.Done(take(t, q, "up")); err != nil {
			t.Fatal(err)
		}
	}
	// The other sink takes every event as it comes.
	var maxSize int64
	for i := range 3000 {
		put(t, q, event(fmt.Sprintf("f%04d", i), 700), "up")
		if err := q.Done(take(t, q, "up")); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			_, size := segFiles(t, dir)
			maxSize = max(maxSize, size)
		}
	}
	q.flush()
	// Until the compactor is done with the garbage.
	var size int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var segs []string
		segs, size = segFiles(t, dir)
		if len(segs) <= 4 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("%d bytes of Puts; log peaked at %d bytes, %d after the drain", 3000*700, maxSize, size)
	if size > 4*seg || maxSize > 3000*700/2 {
		t.Fatalf("log holds %d bytes after the drain (peak %d) for %d stuck events", size, maxSize, stuck)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q, err = Open(dir, 1<<30, nil, withSegmentBytes(seg))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Depth("down") != stuck || q.Depth("up") != 0 {
		t.Fatalf("depth down=%d up=%d, want %d and 0", q.Depth("down"), q.Depth("up"), stuck)
	}
	for range stuck / 2 {
		d := take(t, q, "down")
		var i int
		fmt.Sscanf(d.Event.ID, "s%d", &i)
		if i < stuck/2 || d.Attempts != 0 || !bytes.Equal(d.Event.Body, event(d.Event.ID, 700).Body) {
			t.Fatalf("due after the restart: %s attempts %d", d.Event.ID, d.Attempts)
		}
	}
	nothingDue(t, q, "down") // the retried half waits for its hour
	for _, e := range q.recoveredEntries() {
		var i int
		fmt.Sscanf(recoveredID(t, q, e), "s%d", &i)
		if i >= stuck/2 {
			continue
		}
		st := e.dels[0].r.retry
		if e.dels[0].d.Sink != "down" {
			st = e.dels[1].r.retry
		}
		if st == nil || st.attempts != i+1 || st.lastError != fmt.Sprint("attempt ", i+1, " failed") || st.nextAt < time.Now().Add(50*time.Minute).UnixNano() {
			t.Fatalf("s%02d: retry state %+v after compaction and a restart", i, st)
		}
	}
}

// recoveredID reads the ID of a recovered entry.
func recoveredID(t *testing.T, q *Queue, e *entry) string {
	t.Helper()
	if e.cached {
		return e.ev.ID
	}
	ev, err := q.load(e)
	if err != nil {
		t.Fatal(err)
	}
	return ev.ID
}

// recoveredIDs lists the IDs of q's recovered events, in order.
func recoveredIDs(q *Queue) []string {
	var ids []string
	for _, ev := range q.Recovered() {
		ids = append(ids, ev.ID)
	}
	return ids
}
