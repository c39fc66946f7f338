package disk

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

const (
	helperEnv      = "HOOKROUTER_DISK_QUEUE_HELPER_DIR"
	helperRoundEnv = "HOOKROUTER_DISK_QUEUE_HELPER_ROUND"
)

// TestHelperProcess is not a test: run by TestKill9 as a child process, it
// Puts events from several goroutines and prints "ok ID" for each Put that
// returned nil, until it is killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper for TestKill9")
	}
	q, err := Open(dir, 1<<30, nil, KeepKeys(1<<20))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := 0; i < 1_000_000; i++ {
				id := fmt.Sprintf("%s-w%02d-%06d", os.Getenv(helperRoundEnv), w, i)
				ev := event(id, 100+i%700)
				ev.DedupKey, ev.DedupExpires = "key-"+id, time.Now().Add(time.Hour)
				if err := q.Put(context.Background(), ev, []string{"a", "b"}); err != nil {
					fmt.Fprintln(os.Stderr, "put:", err)
					os.Exit(3)
				}
				// Flushed at once: a line only says what was acknowledged.
				mu.Lock()
				fmt.Fprintln(out, "ok", id)
				out.Flush()
				mu.Unlock()
				if i == 50 && w == 0 {
					fmt.Fprintln(os.Stderr, "started")
				}
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}

// TestKill9 kills a process in the middle of a stream of Puts and checks
// that every event whose Put returned is in the reopened queue, intact, and
// that the dedup key of every event acknowledged in any round is kept,
// whether its event is still owed or was delivered in an earlier round.
func TestKill9(t *testing.T) {
	dir := t.TempDir()
	onlyB := 0 // events left from earlier rounds, owed to b alone
	allAcked := map[string]bool{}
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"="+dir, fmt.Sprintf("%s=r%d", helperRoundEnv, round))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[string]bool{}
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if id, ok := strings.CutPrefix(sc.Text(), "ok "); ok {
					acked[id] = true
				}
			}
		}()
		started := make(chan string, 1)
		go func() {
			b := bufio.NewReader(stderr)
			line, _ := b.ReadString('\n')
			started <- line
			io.Copy(io.Discard, b)
		}()
		select {
		case line := <-started:
			if !strings.HasPrefix(line, "started") {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("helper: %s", line)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("helper did not start")
		}
		time.Sleep(time.Duration(100+100*round) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-readDone
		cmd.Wait()
		if len(acked) == 0 {
			t.Fatal("helper acknowledged nothing")
		}

		var logs logBuf
		q, err := Open(dir, 1<<30, logs.logger(), KeepKeys(1<<20))
		if err != nil {
			t.Fatalf("reopen after kill: %v", err)
		}
		kept := map[string]bool{}
		if err := q.Keys(func(key string, _ time.Time) { kept[key] = true }); err != nil {
			t.Fatal(err)
		}
		for id := range acked {
			allAcked[id] = true
		}
		var noKey []string
		for id := range allAcked {
			if !kept["key-"+id] {
				noKey = append(noKey, id)
			}
		}
		if len(noKey) > 0 {
			t.Fatalf("round %d: the dedup keys of %d of %d acknowledged events are not kept, e.g. %v", round, len(noKey), len(allAcked), noKey[:min(5, len(noKey))])
		}
		stored := map[string]bool{}
		err = q.EachRecovered(func(ev *sinks.Event) error {
			stored[ev.ID] = true
			if !bytes.Equal(ev.Body, event(ev.ID, len(ev.Body)).Body) {
				return fmt.Errorf("event %s: body damaged", ev.ID)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var missing []string
		for id := range acked {
			if !stored[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			t.Fatalf("round %d: %d of %d acknowledged events lost, e.g. %v", round, len(missing), len(acked), missing[:min(5, len(missing))])
		}
		if q.Depth("a") != len(stored)-onlyB || q.Depth("b") != len(stored) {
			t.Fatalf("depth a=%d b=%d, want %d and %d", q.Depth("a"), q.Depth("b"), len(stored)-onlyB, len(stored))
		}
		if fresh := len(stored) - onlyB; fresh > len(acked)+16 {
			t.Fatalf("%d stored but only %d acknowledged by 16 writers", fresh, len(acked))
		}
		if strings.Contains(logs.String(), "level=ERROR") {
			t.Fatalf("a clean kill was reported as damage:\n%s", logs.String())
		}
		t.Logf("round %d: %d acknowledged, %d stored (in-flight Puts may be stored too)", round, len(acked), len(stored)-onlyB)
		// Deliver to a, and half to b, so that the next round starts from a
		// file with free pages and events owed to b alone.
		for range q.Depth("a") {
			if err := q.Done(take(t, q, "a")); err != nil {
				t.Fatal(err)
			}
		}
		for range q.Depth("b") / 2 {
			if err := q.Done(take(t, q, "b")); err != nil {
				t.Fatal(err)
			}
		}
		onlyB = q.Depth("b")
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

const helperDrainEnv = "HOOKROUTER_DISK_QUEUE_DRAIN_DIR"

// TestHelperDrainProcess is not a test: run by TestKill9Drain as a child
// process, it drains sink "a" (Take, Done) from four workers and prints
// "done ID" before each Done, until it is killed.
func TestHelperDrainProcess(t *testing.T) {
	dir := os.Getenv(helperDrainEnv)
	if dir == "" {
		t.Skip("helper for TestKill9Drain")
	}
	q, err := Open(dir, 1<<30, nil, KeepKeys(1<<20))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	// Say "started" once a part of the backlog is drained, even when a late
	// kill in the previous round left fewer than 200 owed; the ticking
	// goroutine keeps the runtime from calling idle workers a deadlock.
	threshold := min(int64(200), int64(q.Depth("a"))/2)
	go func() {
		for {
			time.Sleep(time.Second)
		}
	}()
	if threshold == 0 {
		fmt.Fprintln(os.Stderr, "started")
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	var n atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				d, err := q.Take(context.Background(), "a")
				if err != nil {
					fmt.Fprintln(os.Stderr, "take:", err)
					os.Exit(3)
				}
				// Said before Done, which may reach the log before the
				// line is out: a kill in between must not look like a
				// delivery lost (one said but not logged is owed again).
				mu.Lock()
				fmt.Fprintln(out, "done", d.Event.ID)
				out.Flush()
				mu.Unlock()
				if err := q.Done(d); err != nil {
					fmt.Fprintln(os.Stderr, "done:", err)
					os.Exit(3)
				}
				if n.Add(1) == threshold {
					fmt.Fprintln(os.Stderr, "started")
				}
			}
		})
	}
	wg.Wait()
}

// TestKill9Drain kills a process in the middle of draining a backlog (and a
// second time after a restart): every event not yet delivered to a sink is
// still owed to it after the restart, with its body intact, and every
// event's dedup key is kept, delivered or not. Deliveries Done shortly
// before the kill may come back (at least once); nothing else may.
func TestKill9Drain(t *testing.T) {
	dir := t.TempDir()
	const total = 20000
	q, err := Open(dir, 1<<30, nil, KeepKeys(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	for i := range total {
		ev := event(fmt.Sprintf("d-%05d", i), 100+i%400)
		ev.DedupKey, ev.DedupExpires = "key-"+ev.ID, exp
		put(t, q, ev, "a", "b")
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	delivered := map[string]bool{}
	for round := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDrainProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperDrainEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if id, ok := strings.CutPrefix(sc.Text(), "done "); ok {
					delivered[id] = true
				}
			}
		}()
		started := make(chan string, 1)
		go func() {
			b := bufio.NewReader(stderr)
			line, _ := b.ReadString('\n')
			started <- line
			io.Copy(io.Discard, b)
		}()
		select {
		case line := <-started:
			if !strings.HasPrefix(line, "started") {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("helper: %s", line)
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("helper did not start")
		}
		time.Sleep(time.Duration(300+300*round) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-readDone
		cmd.Wait()

		var logs logBuf
		q, err := Open(dir, 1<<30, logs.logger(), KeepKeys(1<<20))
		if err != nil {
			t.Fatalf("reopen after kill: %v", err)
		}
		owedA := 0
		for q.Depth("a") > owedA {
			d := take(t, q, "a")
			if !bytes.Equal(d.Event.Body, event(d.Event.ID, len(d.Event.Body)).Body) {
				t.Fatalf("event %s: body damaged", d.Event.ID)
			}
			owedA++
			// Owed again, so delivered at least once more. Left in flight:
			// Close keeps it owed, as it was.
			delete(delivered, d.Event.ID)
		}
		if q.Depth("b") != total {
			t.Fatalf("round %d: %d deliveries owed to b, want %d", round, q.Depth("b"), total)
		}
		if owedA+len(delivered) != total {
			t.Fatalf("round %d: %d owed to a + %d delivered = %d, want %d: deliveries lost", round, owedA, len(delivered), owedA+len(delivered), total)
		}
		keys := map[string]bool{}
		if err := q.Keys(func(k string, _ time.Time) { keys[k] = true }); err != nil {
			t.Fatal(err)
		}
		if len(keys) != total {
			t.Fatalf("round %d: %d dedup keys kept, want %d", round, len(keys), total)
		}
		if strings.Contains(logs.String(), "level=ERROR") {
			t.Fatalf("a clean kill was reported as damage:\n%s", logs.String())
		}
		t.Logf("round %d: %d delivered to a before the kill, %d still owed", round, len(delivered), owedA)
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		if owedA == 0 {
			break
		}
	}
}
