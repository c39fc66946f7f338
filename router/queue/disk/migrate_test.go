package disk

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestMigrateOldEngine opens a queue dir written by the engine before the
// log (testdata/old-engine: made by that engine, the old one's bbolt
// queue.db with a retrying, an in-flight and a delivered event and an
// unrouted key, and its wal-*.log holding two Puts it had not applied).
// Everything owed comes back with its retry state, every key is kept,
// queue.db is kept aside and not read again, and a restart is clean.
func TestMigrateOldEngine(t *testing.T) {
	dir := t.TempDir()
	if err := copyFiles("testdata/old-engine", dir); err != nil {
		t.Fatal(err)
	}
	var logs logBuf
	q, err := Open(dir, 1<<30, logs.logger(), KeepKeys(100))
	if err != nil {
		t.Fatal(err)
	}
	l := logs.String()
	if !strings.Contains(l, "queue migrated from the engine before the log") || !strings.Contains(l, "events=4") ||
		!strings.Contains(l, "from_old_wal=2") || strings.Contains(l, "level=ERROR") {
		t.Fatalf("log:\n%s", l)
	}
	if ids := recoveredIDs(q); fmt.Sprint(ids) != "[o1 o2 w1 w2]" {
		t.Fatalf("recovered %v", ids)
	}
	for _, ev := range q.Recovered() {
		if !bytes.Equal(ev.Body, event(ev.ID, 300).Body) || ev.DedupKey != "platform\x00"+ev.ID {
			t.Fatalf("event %s not intact: %+v", ev.ID, ev)
		}
	}
	if q.Depth("a") != 3 || q.Depth("b") != 2 {
		t.Fatalf("depth a=%d b=%d, want 3 and 2", q.Depth("a"), q.Depth("b"))
	}
	// o1's retry to a waits (until 2099) with its attempts.
	if d := take(t, q, "a"); d.Event.ID != "o2" || d.Attempts != 0 {
		t.Fatalf("first due for a: %s (%d attempts)", d.Event.ID, d.Attempts)
	}
	if d := take(t, q, "a"); d.Event.ID != "w1" {
		t.Fatalf("second due for a: %s", d.Event.ID)
	}
	nothingDue(t, q, "a")
	if o1 := q.recoveredEntries()[0]; o1.dels[0].r.retry == nil || o1.dels[0].r.retry.attempts != 3 || o1.dels[0].d.LastError != "http status 503" {
		t.Fatalf("o1's retry state %+v", o1.dels[0].r.retry)
	}
	want := []string{"platform\x00d1", "platform\x00unrouted", "platform\x00o1", "platform\x00o2", "platform\x00w1", "platform\x00w2"}
	if got := keysOf(t, q); !slices.Equal(got, want) {
		t.Fatalf("Keys = %q, want %q", got, want)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, oldFileName)); !os.IsNotExist(err) {
		t.Fatalf("queue.db still there: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, oldFileName+".migrated-*")); len(m) != 1 {
		t.Fatalf("old file kept as %v", m)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "wal-*")); len(m) != 0 {
		t.Fatalf("old log left: %v", m)
	}
	var logs2 logBuf
	q, err = Open(dir, 1<<30, logs2.logger(), KeepKeys(100))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if l := logs2.String(); strings.Contains(l, "migrated") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
		t.Fatalf("second start:\n%s", l)
	}
	if q.Depth("a") != 3 || q.Depth("b") != 2 {
		t.Fatalf("after a restart depth a=%d b=%d", q.Depth("a"), q.Depth("b"))
	}
}

// TestMigrateDamagedOldFile: an old queue.db that bbolt cannot read stops
// Open with an error naming it and saying what to do, rather than a crash
// or a start that drops its events silently.
func TestMigrateDamagedOldFile(t *testing.T) {
	dir := t.TempDir()
	if err := copyFiles("testdata/old-engine", dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, oldFileName)
	if err := os.Truncate(path, 4096+100); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, 1<<30, nil)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move it") {
		t.Fatalf("Open = %v", err)
	}
	if segs, _ := segFiles(t, dir); len(segs) != 0 {
		t.Fatalf("segments written: %v", segs)
	}
	t.Log(err)
}
