package main

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// floodConns and floodBody are the attack of issue 13: 500 connections that
// are not authenticated, each sending about 1 MB of body and then stalling.
const (
	floodConns = 500
	floodBody  = 1_000_000
)

// TestSlowBodyFlood is the attack against the real binary, on a source with
// header auth: the server's resident memory, read from /proc, may rise by at
// most 100 MiB and must come back afterwards, and an authenticated sender
// keeps being served meanwhile (its p99 is logged). Bounded: 500
// connections, under a minute.
func TestSlowBodyFlood(t *testing.T) {
	in := newCrashInstance(t, func(in *crashInstance, port int) string {
		return floodConfig(in, port, "{type: header, secret: "+crashSecret+"}", 0)
	})
	in.start()
	res := flood(t, in, func(i int) string { return fmt.Sprintf("Authorization: wrong-%d", i) }, 1, "127.0.0.1",
		func(req *http.Request, _ []byte) { req.Header.Set("Authorization", crashSecret) })
	if res.answered != floodConns {
		t.Errorf("%d of %d flood connections read a 401 before their body was read", res.answered, floodConns)
	}
	if rise := res.peak - res.before; rise > 100<<10 {
		t.Errorf("RSS rose by %d MiB during the flood, want at most 100", rise>>10)
	}
	res.check(t)
}

// TestSlowBodyFloodHMAC: hmac-sha256 must read a body to check it, so an
// unauthenticated request holds up to max_body_bytes while it is read. What
// the flood can hold is bounded by max_conns_per_ip × max_body_bytes per
// client address: 500 connections from 10 addresses, at most 10 each, hold
// at most 100 MiB; the connections beyond the limit are refused (429) at
// once, memory comes back once the flood ends, and a sender from another
// address is served meanwhile.
func TestSlowBodyFloodHMAC(t *testing.T) {
	const perIP, addrs = 10, 10
	in := newCrashInstance(t, func(in *crashInstance, port int) string {
		return floodConfig(in, port, "{type: hmac-sha256, secret: "+crashSecret+"}", perIP)
	})
	in.start()
	res := flood(t, in, func(i int) string { return fmt.Sprintf("X-Signature: sha256=%064x", i) }, addrs, "127.0.0.200",
		func(req *http.Request, body []byte) {
			m := hmac.New(sha256.New, []byte(crashSecret))
			m.Write(body)
			req.Header.Set("X-Signature", "sha256="+hex.EncodeToString(m.Sum(nil)))
		})
	if want := floodConns - perIP*addrs; res.refused < want {
		t.Errorf("%d flood connections refused by max_conns_per_ip, want at least %d", res.refused, want)
	}
	// The bound, and room for what any process grows by under load (the
	// header-auth flood's rise, 14 MiB measured).
	if rise, bound := res.peak-res.before, perIP*addrs*floodBody>>10; rise > bound+30<<10 {
		t.Errorf("RSS rose by %d MiB during the flood, want at most the bound (%d MiB) + 30", rise>>10, bound>>10)
	}
	res.check(t)
}

func floodConfig(in *crashInstance, port int, auth string, perIP int) string {
	return fmt.Sprintf(`listen: "127.0.0.1:%d"
max_conns_per_ip: %d
data_dir: %q
sources:
  - name: platform
    path: /webhook
    max_body_bytes: 1MiB
    auth: %s
queue: {backend: memory}
sinks:
  archive: {type: file, path: %q}
rules:
  - {name: all, when: "true", to: [archive]}
`, port, perIP, in.data, auth, in.data+"/events.jsonl")
}

// floodResult is what flood measured: RSS in KiB from /proc before, at the
// peak and after; the flood connections answered 401 and refused 429; the
// authenticated sender's latencies.
type floodResult struct {
	before, peak, after int
	answered, refused   int
	lat                 []time.Duration
}

// check asserts what every flood must leave: memory back near where it was,
// and the authenticated sender served meanwhile.
func (res floodResult) check(t *testing.T) {
	t.Helper()
	if res.after > res.before+20<<10 {
		t.Errorf("RSS after the flood %d MiB, before %d MiB: memory did not return", res.after>>10, res.before>>10)
	}
	// The target is p99 < 100 ms (12 ms measured, 155 ms before the fix);
	// asserted with room for a machine loaded by other tests, so that only
	// a sender starved by the flood fails it.
	if p99 := res.p(99); p99 > time.Second {
		t.Errorf("authenticated p99 %v during the flood, want under 100ms", p99)
	}
	if len(res.lat) < 100 {
		t.Errorf("only %d authenticated requests in 30 s", len(res.lat))
	}
}

func (res floodResult) p(q int) time.Duration {
	if len(res.lat) == 0 {
		return 0
	}
	return res.lat[len(res.lat)*q/100]
}

// flood opens floodConns connections to in, spread over addrs loopback
// addresses (127.0.0.1, .2, …), each sending the request headers with
// credential line cred(i), then floodBody bytes of a slightly longer body,
// then stalling. Meanwhile an authenticated sender (from address from, its
// request signed by sign) posts events. RSS is read before, during and after
// (polled until it returns, up to 20 s, once the flood connections close).
func flood(t *testing.T, in *crashInstance, cred func(i int) string, addrs int, from string, sign func(*http.Request, []byte)) floodResult {
	t.Helper()
	pid := in.proc.Pid
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4, DialContext: dialer.DialContext}}
	defer client.CloseIdleConnections()
	n := 0
	send := func() (time.Duration, error) {
		n++
		body := fmt.Appendf(nil, `{"event":"channel.message_in","message":{"id":"flood-%d"}}`, n)
		req, _ := http.NewRequest("POST", in.url()+"/webhook", bytes.NewReader(body))
		sign(req, body)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		return time.Since(start), nil
	}
	for range 50 { // warm up: pools, the file, the first connections
		if _, err := send(); err != nil {
			t.Fatal(err)
		}
	}
	var res floodResult
	res.before = rssKiB(t, pid)

	chunk := bytes.Repeat([]byte("x"), 64<<10)
	var wg, written sync.WaitGroup // written: the flood's bodies are sent
	var mu sync.Mutex
	var open []net.Conn
	stop := make(chan struct{})
	for i := range floodConns {
		wg.Add(1)
		written.Add(1)
		go func() {
			defer wg.Done()
			sent := false
			defer func() {
				if !sent {
					written.Done()
				}
			}()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%addrs))}}
			c, err := d.Dial("tcp", strings.TrimPrefix(in.url(), "http://"))
			if err != nil {
				t.Errorf("flood connection %d: %v", i, err)
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			fmt.Fprintf(c, "POST /webhook HTTP/1.1\r\nHost: x\r\n%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", cred(i), floodBody+100)
			c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			for sent := 0; sent < floodBody; sent += len(chunk) {
				if _, err := c.Write(chunk[:min(len(chunk), floodBody-sent)]); err != nil {
					break // refused and closed by the server
				}
			}
			sent = true
			written.Done()
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			mu.Lock()
			switch {
			case strings.HasPrefix(line, "HTTP/1.1 401"):
				res.answered++
			case strings.HasPrefix(line, "HTTP/1.1 429"):
				res.refused++
			}
			mu.Unlock()
			<-stop // stall with the connection open
		}()
	}

	// Meanwhile, an authenticated sender, until the flood's bodies are all
	// sent and at least 300 requests were timed.
	flooding := make(chan struct{})
	go func() { written.Wait(); close(flooding) }()
	done := func() bool {
		select {
		case <-flooding:
			return len(res.lat) >= 300
		default:
			return false
		}
	}
	res.peak = res.before
	deadline := time.Now().Add(30 * time.Second)
	for !done() && time.Now().Before(deadline) {
		d, err := send()
		if err != nil {
			t.Errorf("authenticated request during the flood: %v", err)
			break
		}
		res.lat = append(res.lat, d)
		if len(res.lat)%20 == 0 {
			res.peak = max(res.peak, rssKiB(t, pid))
		}
	}
	res.peak = max(res.peak, rssKiB(t, pid), hwmKiB(t, pid))
	close(stop)
	wg.Wait()
	for _, c := range open {
		c.Close()
	}
	// Memory returns: poll, the runtime gives pages back gradually.
	res.after = rssKiB(t, pid)
	for end := time.Now().Add(20 * time.Second); res.after > res.before+20<<10 && time.Now().Before(end); res.after = rssKiB(t, pid) {
		time.Sleep(200 * time.Millisecond)
	}
	slices.Sort(res.lat)
	t.Logf("RSS before %d MiB, peak %d MiB (+%d), after %d MiB; of %d flood connections %d read a 401, %d a 429; authenticated p50 %v p99 %v over %d requests",
		res.before>>10, res.peak>>10, (res.peak-res.before)>>10, res.after>>10, floodConns, res.answered, res.refused, res.p(50), res.p(99), len(res.lat))
	return res
}

// rssKiB and hwmKiB read the resident set size, current and peak, of pid
// from /proc.
func rssKiB(t *testing.T, pid int) int { return procStatus(t, pid, "VmRSS:") }
func hwmKiB(t *testing.T, pid int) int { return procStatus(t, pid, "VmHWM:") }

func procStatus(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
