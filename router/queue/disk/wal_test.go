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

const walHelperEnv = "HOOKROUTER_DISK_QUEUE_WAL_HELPER_DIR"

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
		// applier recycled an applied segment, or a spare was prepared.
		// Such a copy mixes two moments (queue.db from before the apply,
		// the segment gone after it), which no crash leaves: take it again.
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

// TestWALTornTail damages the end of the records of the last log segment
// of a crashed queue (a preallocated one: zeros follow the records): Open
// must recover every record before the damage, log a warning (not an
// error: a crash mid-write leaves this), and work afterwards. Undamaged,
// the zero tail ends the replay quietly.
func TestWALTornTail(t *testing.T) {
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
			q, err := openWith(dir, 1<<30, 1<<20, time.Hour, segmentBytes, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				put(t, q, event(fmt.Sprintf("e%02d", i), 500), "a")
			}
			crashed := snapshot(t, dir)
			q.Close()
			segs, _ := walFiles(t, crashed)
			if len(segs) != 1 {
				t.Fatalf("segments %v", segs)
			}
			if fi, err := os.Stat(segs[0]); err != nil || fi.Size() != segmentBytes {
				t.Fatalf("segment not preallocated: %v, %v", fi.Size(), err)
			}
			tc.damage(t, segs[0], recordsEnd(t, segs[0]))

			var logs logBuf
			q, err = Open(crashed, 1<<30, logs.logger())
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			ids := recoveredIDs(q)
			if len(ids) != tc.keep || (tc.keep > 0 && ids[tc.keep-1] != fmt.Sprintf("e%02d", tc.keep-1)) {
				t.Fatalf("recovered %v, want the first %d", ids, tc.keep)
			}
			l := logs.String()
			if strings.Contains(l, "level=ERROR") || strings.Contains(l, "torn or damaged") != tc.torn {
				t.Fatalf("log:\n%s", l)
			}
			put(t, q, event("after", 100), "a")
			if q.Depth("a") != tc.keep+1 {
				t.Fatalf("depth %d, want %d", q.Depth("a"), tc.keep+1)
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
	var end int64
	if err := readSegment(path, first, func(rec walRecord) { end += rec.n }); err != nil {
		t.Fatal(err)
	}
	return end
}

func segmentFirst(name string) (uint64, bool) {
	var first uint64
	n, err := fmt.Sscanf(name, walPrefix+"%016x"+walSuffix, &first)
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

// TestWALRecycledSegment replays a segment that holds, past this life's
// records, records of its previous life with valid checksums: laid out so
// that one starts exactly where the new records end, with no terminator
// between (the new batch's last sector written, the terminator's not).
// Replay must stop there, quietly, and a spare's name must raise the
// numbering past every seq the spare may hold.
func TestWALRecycledSegment(t *testing.T) {
	dir := t.TempDir()
	// Previous life: seqs 1..10, all the same size, as segment wal-1.
	var old []byte
	for seq := uint64(1); seq <= 10; seq++ {
		old, _ = appendWALRecord(old, seq, []string{"a"}, event(fmt.Sprintf("old%02d", seq), 300))
	}
	// This life, recycled as wal-21 (seqs 11..20 went to another segment,
	// since applied): three records of the same size over the old ones.
	var cur []byte
	for seq := uint64(21); seq <= 23; seq++ {
		cur, _ = appendWALRecord(cur, seq, []string{"a"}, event(fmt.Sprintf("new%02d", seq), 300))
	}
	if len(cur) != 3*len(old)/10 {
		t.Fatalf("records differ in size: %d vs %d", len(cur)/3, len(old)/10)
	}
	file := append(append([]byte{}, old...), make([]byte, 4096)...)
	copy(file, cur)
	if err := os.WriteFile(filepath.Join(dir, segmentName(21)), file, 0o600); err != nil {
		t.Fatal(err)
	}
	// A spare that held seqs up to 0x40.
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf(spareFile, 0x40)), old, 0o600); err != nil {
		t.Fatal(err)
	}

	var logs logBuf
	q, err := openWith(dir, 1<<30, 1<<20, time.Hour, 16<<10, logs.logger())
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
	if got := q.lastSeq.Load(); got != 0x41 {
		t.Fatalf("next seq %#x, want 0x41 (past the spare's name)", got)
	}
}

// TestWALSeqGap: a record with a valid checksum numbered past the next
// expected seq is not from an earlier life; the replay stops there with a
// warning rather than skip a seq.
func TestWALSeqGap(t *testing.T) {
	dir := t.TempDir()
	var b []byte
	for _, seq := range []uint64{5, 6, 8} {
		b, _ = appendWALRecord(b, seq, []string{"a"}, event(fmt.Sprint("e", seq), 100))
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
	if fmt.Sprint(ids) != "[e5 e6]" || !strings.Contains(logs.String(), "torn or damaged") {
		t.Fatalf("recovered %v\n%s", ids, logs.String())
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
	ids := recoveredIDs(q2)
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
	// Applied segments are recycled as spares. (Some are zero-filled too:
	// 64 KiB segments fill faster than a 5 ms applier recycles them.)
	q.wal.mu.Lock()
	recycled, zeroFilled := q.wal.recycled, q.wal.zeroFilled
	q.wal.mu.Unlock()
	t.Logf("spares: %d recycled, %d zero-filled", recycled, zeroFilled)
	if recycled < 10 {
		t.Fatalf("%d segments recycled, %d zero-filled", recycled, zeroFilled)
	}
	cancel()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	drain.Wait()
	if segs, _ := walFiles(t, dir); len(segs) != 0 {
		t.Fatalf("Close left %v", segs)
	}
	if spares, _ := filepath.Glob(filepath.Join(dir, "spare-*")); len(spares) != maxSpares {
		t.Fatalf("Close left spares %v, want %d", spares, maxSpares)
	}
}

// TestWALPutsFailedBeforeAppend: while the applier cannot write bbolt (a
// full disk) and maxUnapplied bytes are logged, the committer fails Puts
// without logging them, though they were numbered. The Puts acknowledged
// once the disk has room again must survive a crash all the same: their
// records must not follow a gap in seqs, which replay takes for a torn
// write. The disk is a tmpfs that a filler file fills while the active
// segment and the spare, preallocated (48 MiB each here), still take
// records.
func TestWALPutsFailedBeforeAppend(t *testing.T) {
	if testing.Short() {
		t.Skip("logs maxUnapplied bytes")
	}
	dir := mountTmpfs(t, "400m")
	// The applier runs at flushBytes, or applyDelay after a Put or a failure.
	const applyDelay = 5 * time.Second
	q, err := openWith(dir, 1<<30, 1<<20, applyDelay, 48<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var acked []string
	n := 0
	try := func() error {
		n++
		id := fmt.Sprint("e", n)
		err := q.Put(t.Context(), event(id, 32<<10), []string{"a"})
		if err == nil {
			acked = append(acked, id)
		}
		return err
	}
	// Past flushBytes: the applier applies and zero-fills the next spare.
	for range 320 {
		if err := try(); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); !q.wal.spareReady(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no spare segment prepared")
		}
	}
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for chunk := make([]byte, 1<<20); err == nil; {
		_, err = filler.Write(chunk)
	}
	filler.Close()
	// Log until the committer refuses Puts for the applier's failure (a
	// write past the preallocated segment fails before that).
	for {
		err := try()
		if err != nil && strings.Contains(err.Error(), "apply to") {
			break
		}
		if n > 10000 {
			t.Fatalf("no Put failed for the applier: %v", err)
		}
	}
	for range 3 {
		if err := try(); err == nil {
			t.Fatal("Put acknowledged with maxUnapplied logged and the applier failing")
		}
	}
	if err := os.Remove(filler.Name()); err != nil {
		t.Fatal(err)
	}
	// The applier's retry applies everything logged; then Puts succeed.
	for deadline := time.Now().Add(3 * applyDelay); try() != nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Puts still failing after the disk has room")
		}
	}
	for range 20 {
		if err := try(); err != nil {
			t.Fatal(err)
		}
	}
	// A crash now: these last Puts are in the log only.
	snap := snapshot(t, dir)
	var logs logBuf
	q2, err := Open(snap, 1<<30, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	got := map[string]bool{}
	for _, ev := range q2.Recovered() {
		got[ev.ID] = true
	}
	var lost []string
	for _, id := range acked {
		if !got[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged events lost after the crash: %v\n%s", len(lost), len(acked), lost, logs.String())
	}
}

// recoveredIDs lists the IDs of q's recovered events, in order.
func recoveredIDs(q *Queue) []string {
	var ids []string
	for _, ev := range q.Recovered() {
		ids = append(ids, ev.ID)
	}
	return ids
}
