// Command loadgen posts seed-shaped webhook events at a hookrouter (or any
// receiver on 127.0.0.1) and reports throughput, status codes and latency
// percentiles, optionally with the deliveries capture sinks received.
//
// Closed loop (-rate 0) runs -c connections back to back for maximum
// throughput. Open loop (-rate R) schedules request k at start+k/R and
// measures latency from that intended time, so a stalled server shows up as
// latency instead of silently lowering the offered load (no coordinated
// omission).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// options are the parsed flags.
type options struct {
	url         string
	addr        string // 127.0.0.1:port derived from url
	secret      string
	conc        int
	duration    time.Duration
	count       int
	rate        float64
	seed        uint64
	dup         float64
	jsonOut     bool
	sinks       []string
	warmup      time.Duration
	tag         string
	templates   int
	timeout     time.Duration
	sinkWait    time.Duration
	sinkQuiet   time.Duration
	cpuProfile  string
	contentType string
	dump        int
	maxTime     time.Duration
	serverPID   int
}

// Exit codes: 0 all requests got a 2xx; 1 bad usage or setup; 3 the run
// completed but some requests failed or got a non-2xx, or it was cut short.
const (
	exitOK      = 0
	exitSetup   = 1
	exitFailure = 3
)

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var sinks string
	fs.StringVar(&o.url, "url", "http://127.0.0.1:3000/webhook", "target URL (127.0.0.1 or localhost only)")
	fs.StringVar(&o.secret, "secret", "", "sent raw in the Authorization header")
	fs.IntVar(&o.conc, "c", 64, "concurrency: connections, one worker each")
	fs.DurationVar(&o.duration, "d", 10*time.Second, "duration of the measured phase (ignored with -n)")
	fs.IntVar(&o.count, "n", 0, "number of requests in the measured phase (0 = use -d)")
	fs.Float64Var(&o.rate, "rate", 0, "requests/s, open loop; 0 = closed loop, as fast as possible")
	fs.Uint64Var(&o.seed, "seed", 1, "seed for event content")
	fs.Float64Var(&o.dup, "dup", 0, "fraction of requests that re-send an earlier event byte for byte")
	fs.BoolVar(&o.jsonOut, "json", false, "print the result as JSON")
	fs.StringVar(&sinks, "sinks", "", "comma-separated capture server base URLs to query for deliveries")
	fs.DurationVar(&o.warmup, "warmup", 0, "unmeasured warm-up phase before the measured one")
	fs.StringVar(&o.tag, "tag", "", "run tag inside every event id (default: derived from the clock)")
	fs.IntVar(&o.templates, "templates", 4096, "distinct event templates generated before the run")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.DurationVar(&o.sinkWait, "sink-wait", 60*time.Second, "longest wait for capture sinks to settle")
	fs.DurationVar(&o.sinkQuiet, "sink-quiet", 2*time.Second, "sinks are settled once their counts stop changing this long")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write loadgen's own CPU profile here")
	fs.StringVar(&o.contentType, "content-type", "application/json", "Content-Type header")
	fs.DurationVar(&o.maxTime, "max-time", 0, "hard bound on the measured phase (0 = 2×-d+30s, or 1h with -n)")
	fs.IntVar(&o.serverPID, "server-pid", 0, "also report this process's CPU time per request of the measured phase (Linux /proc)")
	fs.IntVar(&o.dump, "dump", 0, "print this many generated events as JSON lines (with -dup, duplicates too) and exit; no requests are sent")
	if err := fs.Parse(args); err != nil {
		return exitSetup
	}
	if err := o.validate(sinks); err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return exitSetup
	}
	if o.tag == "" {
		o.tag = strconv.FormatUint(uint64(time.Now().UnixNano())%2176782336, 36) // ≤ 6 base-36 digits
	}

	gen, err := newGenerator(o.seed, o.templates, o.tag)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return exitSetup
	}

	if o.dump > 0 {
		if err := dump(stdout, gen, o.dump, o.dup, o.seed); err != nil {
			fmt.Fprintf(stderr, "loadgen: %v\n", err)
			return exitSetup
		}
		return exitOK
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "loadgen: cpuprofile: %v\n", err)
			return exitSetup
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "loadgen: cpuprofile: %v\n", err)
			return exitSetup
		}
		defer pprof.StopCPUProfile()
	}

	res, err := execute(ctx, &o, gen, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return exitSetup
	}
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(stderr, "loadgen: %v\n", err)
			return exitSetup
		}
	} else {
		res.print(stdout)
	}
	if res.Non2xxTotal > 0 || res.ErrorsTotal > 0 || res.CutShort {
		return exitFailure
	}
	return exitOK
}

func (o *options) validate(sinks string) error {
	addr, err := loopbackAddr(o.url)
	if err != nil {
		return fmt.Errorf("-url: %w", err)
	}
	o.addr = addr
	if o.conc < 1 || o.conc > 10000 {
		return fmt.Errorf("-c %d: want 1..10000", o.conc)
	}
	if o.count < 0 {
		return fmt.Errorf("-n %d: must not be negative", o.count)
	}
	if o.count == 0 && (o.duration <= 0 || o.duration > 24*time.Hour) {
		return fmt.Errorf("-d %v: want a positive duration up to 24h", o.duration)
	}
	if o.rate < 0 || o.rate > 10_000_000 {
		return fmt.Errorf("-rate %v: want 0..1e7", o.rate)
	}
	if o.dup < 0 || o.dup > 0.9 {
		return fmt.Errorf("-dup %v: want 0..0.9", o.dup)
	}
	if o.warmup < 0 || o.warmup > time.Hour {
		return fmt.Errorf("-warmup %v: want 0..1h", o.warmup)
	}
	if o.maxTime < 0 {
		return fmt.Errorf("-max-time %v: must not be negative", o.maxTime)
	}
	if o.maxTime == 0 {
		o.maxTime = time.Hour
		if o.count == 0 {
			o.maxTime = 2*o.duration + 30*time.Second
		}
	}
	if o.dump < 0 || o.dump > 100_000_000 {
		return fmt.Errorf("-dump %d: want 0..1e8", o.dump)
	}
	if o.templates < 1 || o.templates > 1<<20 {
		return fmt.Errorf("-templates %d: want 1..1048576", o.templates)
	}
	if o.timeout <= 0 {
		return fmt.Errorf("-timeout %v: must be positive", o.timeout)
	}
	if o.sinkWait <= 0 || o.sinkWait > time.Hour || o.sinkQuiet <= 0 {
		return errors.New("-sink-wait and -sink-quiet must be positive, -sink-wait at most 1h")
	}
	for s := range strings.SplitSeq(sinks, ",") {
		s = strings.TrimRight(strings.TrimSpace(s), "/")
		if s == "" {
			continue
		}
		if _, err := loopbackAddr(s); err != nil {
			return fmt.Errorf("-sinks %q: %w", s, err)
		}
		o.sinks = append(o.sinks, s)
	}
	return nil
}

// loopbackAddr checks that raw is an http URL on 127.0.0.1 and returns its
// host:port: this tool is for local benchmarks, never for loading a remote host.
func loopbackAddr(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("parse url: %w", err)
	}
	if u.Scheme != "http" {
		return "", fmt.Errorf("scheme %q: only http is supported", u.Scheme)
	}
	host, port := u.Hostname(), u.Port()
	if host != "127.0.0.1" && host != "localhost" {
		return "", fmt.Errorf("host %q: only 127.0.0.1 targets are allowed", host)
	}
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort("127.0.0.1", port), nil
}

// dump writes n events as JSON lines, choosing duplicates as a run would,
// for feeding `hookrouter test` or `hookrouter diff` realistic traffic.
func dump(w io.Writer, gen *generator, n int, dup float64, seed uint64) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	s := &shared{gen: gen, dup: dup, conc: 1}
	wk := newWorker(seed, 0)
	for range n {
		seq, _ := wk.nextSeq(s)
		wk.buf = gen.body(wk.buf, seq)
		wk.buf = append(wk.buf, '\n')
		if _, err := bw.Write(wk.buf); err != nil {
			return fmt.Errorf("dump: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	return nil
}
