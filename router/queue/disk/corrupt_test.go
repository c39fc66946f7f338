package disk

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDamagedFile damages a closed queue file in the ways a disk or a power
// loss can, and checks that Open neither fails nor crashes: the file is
// moved aside (kept), what is readable is carried over intact, the damage is
// logged at error level, and the queue works afterwards.
func TestDamagedFile(t *testing.T) {
	const n = 60
	newestMeta := func(t *testing.T, f *os.File) boltMeta {
		m0, ok0 := readMeta(f, 0)
		if !ok0 {
			t.Fatal("meta 0 unreadable before damage")
		}
		m1, ok1 := readMeta(f, int64(m0.pageSize))
		if ok1 && m1.txid > m0.txid {
			return m1
		}
		return m0
	}
	cases := []struct {
		name    string
		damage  func(t *testing.T, f *os.File)
		salvage bool
		// keep is how many of the n events must come back; -1: any number.
		keep int
	}{
		{
			name: "tail truncated below the last commit",
			damage: func(t *testing.T, f *os.File) {
				m := newestMeta(t, f)
				if err := f.Truncate(int64(m.pgid-2) * int64(m.pageSize)); err != nil {
					t.Fatal(err)
				}
			},
			salvage: true, keep: -1,
		},
		{
			name: "tail pages overwritten with garbage",
			damage: func(t *testing.T, f *os.File) {
				m := newestMeta(t, f)
				junk := bytes.Repeat([]byte{0xA5, 0x5A, 0xFF, 0x00}, int(m.pageSize)) // 4 pages
				if _, err := f.WriteAt(junk, int64(m.pgid-4)*int64(m.pageSize)); err != nil {
					t.Fatal(err)
				}
			},
			// The last pages may be free ones: then nothing is lost.
			salvage: false, keep: -1,
		},
		{
			name: "one body flipped",
			damage: func(t *testing.T, f *os.File) {
				flipIn(t, f, []byte(`{"id":"e17"`))
			},
			salvage: true, keep: n - 1,
		},
		{
			name: "both meta pages zeroed",
			damage: func(t *testing.T, f *os.File) {
				m := newestMeta(t, f)
				zero := make([]byte, m.pageSize)
				for _, off := range []int64{0, int64(m.pageSize)} {
					if _, err := f.WriteAt(zero, off); err != nil {
						t.Fatal(err)
					}
				}
			},
			salvage: true, keep: 0,
		},
		{
			name: "truncated to one page",
			damage: func(t *testing.T, f *os.File) {
				m := newestMeta(t, f)
				if err := f.Truncate(int64(m.pageSize)); err != nil {
					t.Fatal(err)
				}
			},
			salvage: true, keep: 0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			q := mustOpen(t, dir, 1<<30)
			for i := range n {
				// Bodies of a few pages, so that overflow pages are involved.
				put(t, q, event(fmt.Sprint("e", i), 100+i*200), "a", "b")
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, FileName)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(t, f)
			f.Close()
			damaged, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}

			var logs logBuf
			q, err = Open(dir, 1<<30, logs.logger())
			if err != nil {
				t.Fatalf("Open of a damaged file: %v", err)
			}
			defer q.Close()
			asides, _ := filepath.Glob(path + ".corrupt-*")
			salvaged := len(asides) == 1
			if tc.salvage && !salvaged {
				t.Fatalf("damage not detected; log:\n%s", logs.String())
			}
			if salvaged {
				kept, err := os.ReadFile(asides[0])
				if err != nil || !bytes.Equal(kept, damaged) {
					t.Fatalf("damaged file not kept as it was (%v)", err)
				}
				if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "moved_to=") {
					t.Fatalf("salvage not logged at error level:\n%s", l)
				}
			}

			got := 0
			for _, ev := range q.Recovered() {
				var i int
				if _, err := fmt.Sscanf(ev.ID, "e%d", &i); err != nil || !bytes.Equal(ev.Body, event(ev.ID, 100+i*200).Body) {
					t.Fatalf("recovered event %q is not intact", ev.ID)
				}
				got++
			}
			if tc.keep >= 0 && got != tc.keep {
				t.Fatalf("recovered %d events, want %d; log:\n%s", got, tc.keep, logs.String())
			}
			if !salvaged && got != n {
				t.Fatalf("no damage reported but %d of %d events recovered", got, n)
			}
			t.Logf("salvaged=%v, %d of %d events recovered\n%s", salvaged, got, n, logs.String())
			if q.Depth("a") != got || q.Depth("b") != got {
				t.Fatalf("depth a=%d b=%d, want %d", q.Depth("a"), q.Depth("b"), got)
			}

			// The queue works, and a restart is clean.
			put(t, q, event("after", 100), "a")
			for range got + 1 {
				if err := q.Done(take(t, q, "a")); err != nil {
					t.Fatal(err)
				}
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			var logs2 logBuf
			q, err = Open(dir, 1<<30, logs2.logger())
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(logs2.String(), "level=ERROR") {
				t.Fatalf("second Open after salvage reports damage:\n%s", logs2.String())
			}
			defer q.Close()
			if q.Depth("a") != 0 || q.Depth("b") != got {
				t.Fatalf("after restart depth a=%d b=%d, want 0 and %d", q.Depth("a"), q.Depth("b"), got)
			}
		})
	}
}

// flipIn flips one bit a little after each occurrence of marker (bbolt
// writes pages anew, so stale copies of a record may lie in free pages).
func flipIn(t *testing.T, f *os.File, marker []byte) {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, marker) {
		t.Fatalf("marker %q not in the file", marker)
	}
	for off := 0; ; {
		i := bytes.Index(b[off:], marker)
		if i < 0 {
			return
		}
		pos := int64(off + i + len(marker) + 20)
		if _, err := f.WriteAt([]byte{b[pos] ^ 0x10}, pos); err != nil {
			t.Fatal(err)
		}
		off += i + len(marker)
	}
}
