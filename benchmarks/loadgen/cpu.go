package main

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
)

// CPUPerRequest is the CPU time spent per request of the measured phase, in
// microseconds: by loadgen itself and, given -server-pid, by the server.
// Comparing the server's figure with bare's shows what the server adds per
// request, which throughput ratios on a shared machine blur.
type CPUPerRequest struct {
	Loadgen float64  `json:"loadgen"`
	Server  *float64 `json:"server,omitempty"`
}

// cpuSample is the CPU time used so far by loadgen and by the server.
type cpuSample struct {
	self, server time.Duration
	serverOK     bool
}

func sampleCPU(serverPID int) cpuSample {
	var s cpuSample
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if serverPID > 0 {
		s.server, s.serverOK = procCPU(serverPID)
	}
	return s
}

// procCPU reads a process's user + system time from /proc/PID/stat (Linux),
// whose fields 14 and 15 count clock ticks of 1/100 s (USER_HZ).
func procCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name, field 2, is in parentheses and may hold spaces: the
	// fields are counted after its closing one, which starts at field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, true
}

// perRequest turns two samples around a phase of n requests into µs per
// request.
func perRequest(before, after cpuSample, n uint64) *CPUPerRequest {
	if n == 0 {
		return nil
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	c := &CPUPerRequest{Loadgen: us(after.self - before.self)}
	if before.serverOK && after.serverOK {
		v := us(after.server - before.server)
		c.Server = &v
	}
	return c
}
