package router

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router/dispatch"
)

// readRecords reads a dead-letter file; a missing file has none.
func readRecords(t *testing.T, path string) []dispatch.Record {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := dispatch.ReadDeadLetters(f)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestDeadLetterFileLifecycle (issue 12 item 4): a dead-letter file moved
// aside or deleted gets a new one at its path, with or without SIGHUP (the
// reopen), and no record goes to the moved file or a deleted inode.
// Replaying the same file twice (and again after a restart) re-queues each
// record once.
func TestDeadLetterFileLifecycle(t *testing.T) {
	d := newCapture(t)
	d.setStatus(400) // permanent: dead-lettered at once
	s := startServer(t, oneSink(d, "workers: 1", "{backend: disk}"))
	path := filepath.Join(s.dir, "data", "dead-letter.jsonl")
	deadLetter := func(id string, want int) {
		t.Helper()
		if a := s.post("/webhook", message(id)); a.status != 200 {
			t.Fatalf("post %s: %d", id, a.status)
		}
		waitFor(t, 5*time.Second, fmt.Sprintf("%d dead letters in %s", want, path), func() bool {
			return len(readRecords(t, path)) == want
		})
	}
	deadLetter("dl-1", 1)

	// Moved aside, no SIGHUP: the next record goes to a new file at path.
	moved := filepath.Join(s.dir, "moved.jsonl")
	if err := os.Rename(path, moved); err != nil {
		t.Fatal(err)
	}
	deadLetter("dl-2", 1)
	if n := len(readRecords(t, moved)); n != 1 {
		t.Errorf("moved file has %d records, want only the one it had", n)
	}

	// The operator keeps what each file held before deleting it.
	var file []byte
	keep := func(p string) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		file = append(file, b...)
	}
	keep(moved)
	keep(path)

	// Deleted, then SIGHUP's reopen: the file is there again at once.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	s.r.ReopenFiles()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("dead-letter file after reopen: %v", err)
	}
	deadLetter("dl-3", 1)
	keep(path)
	// Deleted without a reopen: recreated at the next record, not written
	// into the deleted inode.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	deadLetter("dl-4", 1)

	// Replay: all four records in one file, replayed twice.
	keep(path)
	all, err := dispatch.ReadDeadLetters(strings.NewReader(string(file)))
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 {
		t.Fatalf("%d records in the two files, want 4", len(all))
	}
	d.setStatus(200)
	if a := s.adminPost("/-/replay", file); a.status != 200 || a.body != `{"requeued":4,"skipped":0}` {
		t.Fatalf("first replay: %d %s", a.status, a.body)
	}
	waitFor(t, 5*time.Second, "4 replayed deliveries", func() bool { return d.count() == 4 })
	a := s.adminPost("/-/replay", file)
	if a.status != 200 || !strings.HasPrefix(a.body, `{"requeued":0,"skipped":4,`) || !strings.Contains(a.body, "already replayed") {
		t.Fatalf("second replay of the same file: %d %s, want every record skipped as already replayed", a.status, a.body)
	}
	s.restart()
	if a := s.adminPost("/-/replay", file); !strings.HasPrefix(a.body, `{"requeued":0,"skipped":4,`) {
		t.Fatalf("replay after a restart: %d %s, want every record skipped", a.status, a.body)
	}
	s.settle() // nothing owed: no late second delivery can come
	got := map[string]int{}
	for _, a := range d.got() {
		got[a.id]++
	}
	for _, rec := range all {
		if got[rec.EventID] != 1 {
			t.Errorf("event %s delivered %d times after two replays, want 1", rec.EventID, got[rec.EventID])
		}
	}
}
