package disk

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFdatasync is the floor under any durable Put: one small write
// and fdatasync on the same file system.
func BenchmarkFdatasync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "sync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 512)
	for b.Loop() {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFdatasyncOverwrite is BenchmarkFdatasync writing over a
// zero-filled, synced file instead of appending, as a preallocated WAL
// segment is written: the file's size does not change, so fdatasync need
// not commit it.
func BenchmarkFdatasyncOverwrite(b *testing.B) {
	path := filepath.Join(b.TempDir(), "sync")
	const size = 32 << 20
	if err := zeroFile(path, size); err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 512)
	var off int64
	for b.Loop() {
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
		if off += int64(len(buf)); off+int64(len(buf)) > size {
			off = 0
		}
	}
}

// BenchmarkLogAppend is the committer's write and sync of one batch of 64
// Puts of 600 bytes (~40 KB), into segments that grow as they are written
// (without a spare) or into spares. It reports the process CPU time per
// batch besides the wall time.
func BenchmarkLogAppend(b *testing.B) {
	for _, tc := range []struct {
		name     string
		prealloc bool
	}{{"growing", false}, {"preallocated", true}} {
		b.Run(tc.name, func(b *testing.B) {
			const seg = 32 << 20
			w := &segLog{dir: b.TempDir(), segBytes: seg, prepareAfter: time.Now().Add(time.Hour)}
			lsn := uint64(1)
			batch := func() []byte {
				var buf []byte
				for i := range 64 {
					buf, _ = appendPut(buf, lsn+uint64(i), lsn+uint64(i), []string{"a", "b"}, nil, event("bench", 600), nil)
				}
				return buf
			}
			// CPU spent with the timer stopped is left out.
			var cpuOff time.Duration
			pause := func() time.Duration { b.StopTimer(); return processCPU() }
			resume := func(t time.Duration) { cpuOff += processCPU() - t; b.StartTimer() }
			cpu0 := processCPU()
			for b.Loop() {
				t := pause()
				if tc.prealloc && !w.spareReady() {
					w.prepareAfter = time.Time{}
					if err := w.prepareSpare(); err != nil {
						b.Fatal(err)
					}
				}
				buf := batch()
				s, _, err := w.position(lsn)
				if err != nil {
					b.Fatal(err)
				}
				resume(t)
				if err := w.append(buf, lsn+63); err != nil {
					b.Fatal(err)
				}
				s.size += int64(len(buf))
				lsn += 64
				if w.off+int64(len(buf)) > seg {
					t := pause()
					w.off = seg // the next append starts the next segment
					if old, _ := w.oldest(); old != nil {
						_, _ = w.retire(old)
					}
					resume(t)
				}
			}
			b.ReportMetric(float64((processCPU()-cpu0-cpuOff).Microseconds())/float64(b.N), "cpu-µs/op")
			w.close()
		})
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
