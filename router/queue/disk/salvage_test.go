package disk

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestSalvageSkipsBadLeaf overwrites one leaf page in the middle of the
// events bucket: salvage must lose that page's events only, not every event
// after it in the bucket.
func TestSalvageSkipsBadLeaf(t *testing.T) {
	const n = 200
	dir := t.TempDir()
	q := mustOpen(t, dir, 1<<30)
	for i := range n {
		put(t, q, event(fmt.Sprintf("e%03d", i), 600), "a")
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)

	// The in-use leaf page holding event e100, from a copy (bbolt writes
	// to what it opens; Tx.Page needs a writable transaction).
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(cp, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ps := db.Info().PageSize
	tx, err := db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	page, onPage := -1, 0
	for off := 0; page < 0; off += ps {
		i := bytes.Index(b[off:], []byte(`{"id":"e100"`))
		if i < 0 {
			break
		}
		id := (off + i) / ps
		if p, err := tx.Page(id); err == nil && p != nil && p.Type == "leaf" {
			page, onPage = id, p.Count
		}
		off = id * ps
	}
	_ = tx.Rollback()
	db.Close()
	if page < 0 {
		t.Fatal("no in-use leaf page holds e100")
	}

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5, 0x5A, 0xFF, 0x00}, ps/4), int64(page*ps)); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var logs logBuf
	q, err = Open(dir, 1<<30, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	got := map[string]bool{}
	for _, ev := range q.Recovered() {
		got[ev.ID] = true
	}
	if len(got) < n-onPage || !got[fmt.Sprintf("e%03d", n-1)] {
		t.Fatalf("recovered %d of %d events (the damaged page held %d; last event recovered: %v)\n%s",
			len(got), n, onPage, got[fmt.Sprintf("e%03d", n-1)], logs.String())
	}
	if got["e100"] {
		t.Fatal("e100, on the damaged page, recovered")
	}
	t.Logf("page %d (%d records) damaged: %d of %d events recovered", page, onPage, len(got), n)
}
