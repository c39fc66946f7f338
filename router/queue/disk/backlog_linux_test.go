package disk

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// The backlog benchmark: a sink down for hours while events keep coming.
// BenchmarkBacklog queues BACKLOG_EVENTS events (default 1,000,000, ~520
// bytes each like the platform's message events, one sink, a dedup key
// each) from 64 writers with nothing taking them, restarts, and drains.
// Each phase runs in a child process of its own, so that the memory
// figures are those of a process that did only that: one that filled the
// queue (memory while a million events are queued), and one that opened
// the backlog and drained it (memory after a restart). It reports, from
// /proc/self/status, RssAnon and RssFile, besides fill rate, restart time
// (Open), drain rate and the data_dir size.
//
//	go test -run '^$' -bench Backlog -benchtime 1x ./router/queue/disk/
//	BACKLOG_EVENTS=200000 go test -run '^$' -bench Backlog -benchtime 1x ./router/queue/disk/
//
// It is a benchmark, not a test: nothing is asserted beyond every event
// coming back.
func BenchmarkBacklog(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("BACKLOG_EVENTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	dir := filepath.Join(b.TempDir(), "queue")
	for b.Loop() {
		for _, phase := range []string{"fill", "drain"} {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBacklogHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), backlogDirEnv+"="+dir, backlogPhaseEnv+"="+phase, backlogNEnv+"="+strconv.Itoa(n))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				b.Fatalf("%s: %v\n%s\n%s", phase, err, out, stderr.String())
			}
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				// "metric VALUE UNIT" lines are reported; "log ..." lines logged.
				f := strings.Fields(sc.Text())
				switch {
				case len(f) == 3 && f[0] == "metric":
					v, err := strconv.ParseFloat(f[1], 64)
					if err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(v, f[2])
				case len(f) > 0 && f[0] == "log":
					b.Log(phase + ": " + strings.TrimPrefix(sc.Text(), "log "))
				}
			}
		}
	}
}

const (
	backlogDirEnv   = "HOOKROUTER_BACKLOG_DIR"
	backlogPhaseEnv = "HOOKROUTER_BACKLOG_PHASE"
	backlogNEnv     = "HOOKROUTER_BACKLOG_N"
)

// TestBacklogHelper is not a test: BenchmarkBacklog runs it as a child
// process for one phase.
func TestBacklogHelper(t *testing.T) {
	dir := os.Getenv(backlogDirEnv)
	if dir == "" {
		t.Skip("helper for BenchmarkBacklog")
	}
	n, _ := strconv.Atoi(os.Getenv(backlogNEnv))
	var err error
	switch os.Getenv(backlogPhaseEnv) {
	case "fill":
		err = backlogFill(dir, n)
	case "drain":
		err = backlogDrain(dir, n)
	default:
		err = fmt.Errorf("unknown phase")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Exit(0)
}

// procStatus reads a field of /proc/self/status, in KiB.
func procStatus(field string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			v, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return v
		}
	}
	return -1
}

// dirBytes is the space the files under dir take (allocated blocks).
func dirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512
				}
			}
		}
		return nil
	})
	return n
}

func metric(name string, v float64) { fmt.Printf("metric %g %s\n", v, name) }

func backlogEvent(i int, now time.Time) *sinks.Event {
	id := fmt.Sprintf("evt-%010d", i)
	body := fmt.Appendf(nil, `{"event":"channel.message_in","timestamp":%d,"message":{"id":"msg_%010d","sender_name":"Budi Santoso","content":{"type":"text","text":"Halo kak, pesanan saya nomor 12345 kapan dikirim ya? Terima kasih"},"channel":{"id":"ch_01","name":"WhatsApp Toko","engine":"wa"},"bisnis":{"id":"biz_1"}},"need_human":1,"pad":"`, now.Unix(), i)
	body = append(body, bytes.Repeat([]byte{'x'}, max(0, 510-len(body)))...)
	body = append(body, `"}`...)
	return &sinks.Event{ID: id, Source: "platform", ReceivedAt: now, Body: body,
		DedupKey: fmt.Sprintf("platform\x00channel.message_in_msg_%010d", i), DedupExpires: now.Add(24 * time.Hour)}
}

func backlogFill(dir string, n int) error {
	q, err := Open(dir, 4<<30, nil, KeepKeys(1_000_000))
	if err != nil {
		return err
	}
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i > n {
					return
				}
				if err := q.Put(context.Background(), backlogEvent(i, time.Now()), []string{"crm"}); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				if i%(n/10) == 0 {
					fmt.Printf("log %d queued: RssAnon %.0f MiB, RssFile %.0f MiB, heap in use %d MiB\n", i, procStatus("RssAnon")/1024, procStatus("RssFile")/1024, heapInUse()>>20)
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	el := time.Since(start)
	metric("fill-events/s", float64(n)/el.Seconds())
	metric("fill-RssAnon-MiB", procStatus("RssAnon")/1024)
	metric("fill-RssFile-MiB", procStatus("RssFile")/1024)
	cs := time.Now()
	if err := q.Close(); err != nil {
		return err
	}
	metric("close-s", time.Since(cs).Seconds())
	metric("full-data_dir-MiB", float64(dirBytes(dir))/(1<<20))
	return nil
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func backlogDrain(dir string, n int) error {
	base := procStatus("RssAnon")
	start := time.Now()
	q, err := Open(dir, 4<<30, nil, KeepKeys(1_000_000))
	if err != nil {
		return err
	}
	metric("restart-s", time.Since(start).Seconds())
	anon := procStatus("RssAnon")
	metric("restart-RssAnon-MiB", anon/1024)
	metric("restart-RssFile-MiB", procStatus("RssFile")/1024)
	metric("restart-anon-B/event", (anon-base)*1024/float64(n))
	runtime.GC()
	debug.FreeOSMemory()
	anonGC := procStatus("RssAnon")
	metric("restart-gc-anon-B/event", (anonGC-base)*1024/float64(n))
	fmt.Printf("log after Open: RssAnon %.0f MiB (%.0f before Open), after GC %.0f MiB, heap in use %d MiB\n", anon/1024, base/1024, anonGC/1024, heapInUse()>>20)
	if d := q.Depth("crm"); d != n {
		return fmt.Errorf("depth %d after restart, want %d", d, n)
	}
	keys := 0
	if err := q.Keys(func(string, time.Time) { keys++ }); err != nil {
		return err
	}
	if keys < n {
		return fmt.Errorf("%d keys after restart, want %d", keys, n)
	}
	var left atomic.Int64
	left.Store(int64(n))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var maxAnon atomic.Int64
	ds := time.Now()
	var failed error
	var failOnce sync.Once
	for range 4 {
		wg.Go(func() {
			for left.Load() > 0 {
				d, err := q.Take(ctx, "crm")
				if err != nil {
					return
				}
				if len(d.Event.Body) == 0 {
					failOnce.Do(func() { failed = fmt.Errorf("event %s taken without its body", d.Event.ID) })
				}
				if err := q.Done(d); err != nil {
					failOnce.Do(func() { failed = err })
					return
				}
				if m := left.Add(-1); m == 0 {
					cancel()
				} else if m%int64(max(n/10, 1)) == 0 {
					a := int64(procStatus("RssAnon"))
					for o := maxAnon.Load(); a > o && !maxAnon.CompareAndSwap(o, a); o = maxAnon.Load() {
					}
					q.files.mu.Lock()
					segs := len(q.files.segs)
					q.files.mu.Unlock()
					fmt.Printf("log %d left: RssAnon %d MiB, heap in use %d MiB, %d segments\n", m, a>>10, heapInUse()>>20, segs)
				}
			}
		})
	}
	wg.Wait()
	if failed != nil {
		return failed
	}
	metric("drain-deliveries/s", float64(n)/time.Since(ds).Seconds())
	metric("drain-max-RssAnon-MiB", float64(maxAnon.Load())/1024)
	if err := q.Close(); err != nil {
		return err
	}
	metric("drained-data_dir-MiB", float64(dirBytes(dir))/(1<<20))
	return nil
}
