package main

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// TestProcCPU reads this process's CPU time from /proc and sees it grow
// with work, as getrusage does.
func TestProcCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/PID/stat is Linux's")
	}
	before, ok := procCPU(os.Getpid())
	if !ok {
		t.Fatal("procCPU of this process failed")
	}
	// Work until getrusage has counted 200ms more CPU (however busy the
	// machine), then /proc must show about as much (it counts 10ms ticks).
	s0 := sampleCPU(0)
	for deadline := time.Now().Add(20 * time.Second); sampleCPU(0).self-s0.self < 200*time.Millisecond; {
		if time.Now().After(deadline) {
			t.Fatal("getrusage did not count 200ms of CPU in 20s")
		}
	}
	after, _ := procCPU(os.Getpid())
	if d := after - before; d < 150*time.Millisecond {
		t.Errorf("procCPU grew by %v while getrusage counted 200ms", d)
	}
	if _, ok := procCPU(1 << 30); ok {
		t.Error("procCPU of a process that does not exist succeeded")
	}
	c := perRequest(cpuSample{self: time.Second, server: 2 * time.Second, serverOK: true},
		cpuSample{self: 3 * time.Second, server: 6 * time.Second, serverOK: true}, 1000)
	if c.Loadgen != 2000 || c.Server == nil || *c.Server != 4000 {
		t.Errorf("perRequest = %+v", c)
	}
}
