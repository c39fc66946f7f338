package disk

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDamagedLog damages the segments of a closed queue in the ways a disk
// or a power loss can, and checks that Open neither fails nor crashes:
// every record that is still readable is kept intact, the damage is logged
// at error level with a copy of the segment kept as it was found (a torn
// end of the last segment, which a crash leaves, is a warning), the queue
// works afterwards, and the start after that is clean.
func TestDamagedLog(t *testing.T) {
	const n = 60
	size := func(i int) int { return 100 + i*200 }
	cases := []struct {
		name string
		// damage changes the segments (in order) and returns the events
		// whose records it hit.
		damage func(t *testing.T, segs []string) []int
		// harmful: damage an ERROR must report; else a WARN.
		harmful bool
	}{
		{"one body flipped", func(t *testing.T, segs []string) []int {
			flipIn(t, segs, []byte(`{"id":"e17"`))
			return []int{17}
		}, true},
		{"garbage over records in the middle of a segment", func(t *testing.T, segs []string) []int {
			return overwrite(t, segs[1], 0.3, 0.6)
		}, true},
		{"a segment before the last cut in the middle of a record", func(t *testing.T, segs []string) []int {
			hit := eventsIn(t, segs[1], 0.5, 1)
			b, _ := os.ReadFile(segs[1])
			if err := os.Truncate(segs[1], int64(len(b)/2)); err != nil {
				t.Fatal(err)
			}
			return hit
		}, true},
		{"the last segment cut in the middle of a record", func(t *testing.T, segs []string) []int {
			last := segs[len(segs)-1]
			end := recordsEnd(t, last)
			hit := eventsIn(t, last, float64(end-5)/float64(fileSize(t, last)), 1)
			if err := os.Truncate(last, end-5); err != nil {
				t.Fatal(err)
			}
			return hit
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			q, err := Open(dir, 1<<30, nil, withSegmentBytes(32<<10))
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				// Bodies of a few KB, so that a segment holds a few.
				put(t, q, event(fmt.Sprint("e", i), size(i)), "a", "b")
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			segs, _ := segFiles(t, dir)
			if len(segs) < 4 {
				t.Fatalf("only %d segments", len(segs))
			}
			hit := tc.damage(t, segs)
			if len(hit) == 0 {
				t.Fatal("the damage hit no record")
			}
			lost := map[string]bool{}
			for _, i := range hit {
				lost[fmt.Sprint("e", i)] = true
			}

			var logs logBuf
			q, err = Open(dir, 1<<30, logs.logger(), withSegmentBytes(32<<10))
			if err != nil {
				t.Fatalf("Open of a damaged log: %v", err)
			}
			l := logs.String()
			kept, _ := filepath.Glob(filepath.Join(dir, "*.corrupt-*"))
			if tc.harmful {
				if !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "queue salvage finished") || len(kept) != 1 {
					t.Fatalf("damage not reported (kept %v):\n%s", kept, l)
				}
			} else if strings.Contains(l, "level=ERROR") || !strings.Contains(l, "level=WARN") || len(kept) != 0 {
				t.Fatalf("a torn end reported as damage (kept %v):\n%s", kept, l)
			}

			got := map[string]bool{}
			for _, ev := range q.Recovered() {
				var i int
				if _, err := fmt.Sscanf(ev.ID, "e%d", &i); err != nil || !bytes.Equal(ev.Body, event(ev.ID, size(i)).Body) {
					t.Fatalf("recovered event %q is not intact", ev.ID)
				}
				got[ev.ID] = true
			}
			for i := range n {
				id := fmt.Sprint("e", i)
				if got[id] == lost[id] {
					t.Fatalf("%s: recovered %v, its record damaged %v (damaged: %v)\n%s", id, got[id], lost[id], hit, l)
				}
			}
			t.Logf("%d of %d events recovered\n%s", len(got), n, l)
			if q.Depth("a") != len(got) || q.Depth("b") != len(got) {
				t.Fatalf("depth a=%d b=%d, want %d", q.Depth("a"), q.Depth("b"), len(got))
			}

			// The queue works, and a restart is clean.
			put(t, q, event("after", 100), "a")
			for range len(got) + 1 {
				if err := q.Done(take(t, q, "a")); err != nil {
					t.Fatal(err)
				}
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			var logs2 logBuf
			q, err = Open(dir, 1<<30, logs2.logger(), withSegmentBytes(32<<10))
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			if l := logs2.String(); strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
				t.Fatalf("second Open after the damage reports it again:\n%s", l)
			}
			if q.Depth("a") != 0 || q.Depth("b") != len(got) {
				t.Fatalf("after restart depth a=%d b=%d, want 0 and %d", q.Depth("a"), q.Depth("b"), len(got))
			}
		})
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// eventsIn returns the events whose records overlap the part of the
// segment at path from fraction from to fraction to of its length.
func eventsIn(t *testing.T, path string, from, to float64) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := segmentFirst(filepath.Base(path))
	lo, hi := int(from*float64(len(b))), int(to*float64(len(b)))
	var hit []int
	scanSegment(b, first, func(off int, r record) {
		if r.typ == recPut && off < hi && off+r.n > lo {
			f, _ := parseEvent(seqKey(r.seq), r.val)
			var i int
			fmt.Sscanf(string(f.id), "e%d", &i)
			hit = append(hit, i)
		}
	})
	return hit
}

// overwrite writes garbage over the part of the segment at path from
// fraction from to fraction to and returns the events it hit.
func overwrite(t *testing.T, path string, from, to float64) []int {
	t.Helper()
	hit := eventsIn(t, path, from, to)
	size := fileSize(t, path)
	lo, hi := int64(from*float64(size)), int64(to*float64(size))
	writeAt(t, path, lo, bytes.Repeat([]byte{0xA5, 0x5A, 0xFF, 0x00}, int(hi-lo)/4))
	return hit
}

// flipIn flips one bit a little after the occurrence of marker in one of
// the files.
func flipIn(t *testing.T, files []string, marker []byte) {
	t.Helper()
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, marker)
		if i < 0 {
			continue
		}
		pos := int64(i + len(marker) + 20)
		writeAt(t, path, pos, []byte{b[pos] ^ 0x10})
		return
	}
	t.Fatalf("marker %q in no file", marker)
}
