//go:build !unix

package dedup

import "testing"

// cpuClock is a no-op where getrusage is missing.
type cpuClock struct{}

func startCPU(b *testing.B) cpuClock {
	b.ResetTimer()
	return cpuClock{}
}

func (cpuClock) report() {}
