//go:build unix

package dedup

import (
	"syscall"
	"testing"
	"time"
)

// cpuClock measures the CPU time the whole process spends, for benchmarks
// whose work partly runs on background goroutines.
type cpuClock struct {
	b     *testing.B
	start time.Duration
}

// startCPU resets b's timer and starts a cpuClock.
func startCPU(b *testing.B) cpuClock {
	b.ResetTimer()
	return cpuClock{b: b, start: processCPU(b)}
}

// report adds the process's CPU time per op since startCPU as cpu-ns/op.
func (c cpuClock) report() {
	c.b.ReportMetric(float64(processCPU(c.b)-c.start)/float64(c.b.N), "cpu-ns/op")
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
