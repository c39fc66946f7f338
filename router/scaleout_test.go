package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/dedup"
	"github.com/hookrouter/hookrouter/router/queue/natsq"
)

// The scale-out tests (spec §6) run two routers against the real Redis and
// NATS JetStream that .ci/run starts.
const (
	scaleRedisAddr = "127.0.0.1:6379"
	scaleNatsAddr  = "127.0.0.1:4222"
)

// shared is one test's part of Redis and NATS: a dedup key prefix and a
// stream (with its own subjects) that no other test or CI run uses, handed
// to the routers through Options and removed at cleanup.
type shared struct {
	prefix string // Redis keys
	stream string
	js     jetstream.JetStream
	rc     *redis.Client
}

// newShared skips t if Redis or NATS is not listening, and otherwise
// reserves a key prefix and a stream for t. Call it before starting the
// routers: cleanups run last-in first-out, so the routers stop before their
// stream and keys are deleted.
func newShared(t *testing.T) *shared {
	t.Helper()
	for _, addr := range []string{scaleRedisAddr, scaleNatsAddr} {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Skipf("scale-out tests need Redis on %s and NATS with JetStream on %s (.ci/run starts both): %v",
				scaleRedisAddr, scaleNatsAddr, err)
		}
		c.Close()
	}
	id := rand.Text() // base32: letters and digits, valid in stream names and subjects
	sh := &shared{prefix: "hookrouter-test:" + id + ":", stream: "HOOKROUTER_TEST_" + id}
	nc, err := nats.Connect("nats://" + scaleNatsAddr)
	if err != nil {
		t.Fatalf("nats: %v", err)
	}
	if sh.js, err = jetstream.New(nc); err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	rc := redis.NewClient(&redis.Options{Addr: scaleRedisAddr})
	sh.rc = rc
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sh.js.DeleteStream(ctx, sh.stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("delete stream %s: %v", sh.stream, err)
		}
		nc.Close()
		var keys []string
		iter := rc.Scan(ctx, 0, sh.prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("scan redis keys %s*: %v", sh.prefix, err)
		}
		for chunk := range slices.Chunk(keys, 500) {
			if err := rc.Del(ctx, chunk...).Err(); err != nil {
				t.Errorf("delete redis keys: %v", err)
			}
		}
		rc.Close()
	})
	return sh
}

// options are the Options seams that point a router at this test's share.
func (sh *shared) options() Options { return shareOptions(sh.prefix, sh.stream) }

// scaleAckWait is the consumers' AckWait in these tests: a delivery held by
// an instance that died is handed to another one after it.
const scaleAckWait = 2 * time.Second

func shareOptions(prefix, stream string) Options {
	return Options{
		DedupOptions: []dedup.Option{dedup.WithPrefix(prefix)},
		NatsOptions: []natsq.Option{
			natsq.WithStream(stream, "hookrouter-test."+strings.ToLower(stream)),
			natsq.WithAckWait(scaleAckWait),
		},
	}
}

// keys lists the dedup keys in Redis under this test's prefix.
func (sh *shared) keys(t *testing.T) []string {
	t.Helper()
	keys, err := sh.rc.Keys(t.Context(), sh.prefix+"*").Result()
	if err != nil {
		t.Fatalf("redis keys: %v", err)
	}
	return keys
}

// owed is the number of deliveries the stream still holds: in a work-queue
// stream a message lives until it is acked, so 0 means nothing can be
// delivered any more, by any instance.
func (sh *shared) owed(t *testing.T) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := sh.js.Stream(ctx, sh.stream)
	if err != nil {
		t.Fatalf("stream %s: %v", sh.stream, err)
	}
	return s.CachedInfo().State.Msgs
}

// scaleConfig is the one config every instance runs: shared dedup and queue,
// and one http sink to dest. Breaker, backoff and timeout are short so that
// a sink that heals is retried within the test.
func scaleConfig(dest string) string { return scaleConfigTimeout(dest, "2s") }

func scaleConfigTimeout(dest, timeout string) string {
	return baseConfig("{backend: nats, nats_url: nats://"+scaleNatsAddr+"}",
		fmt.Sprintf(`  crm: {type: http, url: %q, workers: 8, timeout: %s,
         retry: {max_attempts: 1000, initial_backoff: 10ms, max_backoff: 100ms},
         breaker: {failures: 3, open_for: 200ms}}`, dest, timeout),
		"  - {name: all, when: 'true', to: [crm]}") +
		"dedup: {store: redis, redis_url: redis://" + scaleRedisAddr + "/0}\n"
}

// writeConfig writes cfg ("DATA" replaced by a data dir of its own) to a
// temp dir and loads it.
func writeConfig(t *testing.T, cfg string) (f *config.File, path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "rules.yaml")
	cfg = strings.ReplaceAll(cfg, "DATA", filepath.Join(dir, "data"))
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return f, path, dir
}

// startInstance is startServer with Options: one instance of a scaled-out
// deployment, with a data dir of its own.
func startInstance(t *testing.T, cfg string, opts Options) *server {
	t.Helper()
	f, path, dir := writeConfig(t, cfg)
	opts.ConfigPath, opts.Version, opts.Log = path, "test", slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		opts.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	r, err := New(f, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s := &server{t: t, dir: dir, config: path}
	s.serve(r)
	t.Cleanup(s.stop)
	return s
}

// postEvent posts body to s's source; unlike server.post it is safe on any
// goroutine (it reports errors instead of failing the test).
func postEvent(s *server, body []byte) (answer, error) {
	req, err := http.NewRequest(http.MethodPost, s.url+"/webhook", bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", testSecret)
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: string(b), header: resp.Header}, err
}

func isDuplicate(a answer) bool { return a.header.Get("X-Hookrouter-Duplicate") == "true" }

// forEach runs fn(i) for i in [0, n) on at most conc goroutines.
func forEach(n, conc int, fn func(i int)) {
	work := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := range work {
				fn(i)
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

// checkDeliveredOnce waits until dest has a delivery of every message id in
// want and the stream owes nothing, then checks each was delivered exactly
// once, under one event id each, and that nothing else arrived.
func checkDeliveredOnce(t *testing.T, sh *shared, dest *capture, want []string) {
	t.Helper()
	waitFor(t, 15*time.Second, fmt.Sprintf("%d deliveries and an empty stream", len(want)), func() bool {
		return dest.count() >= len(want) && sh.owed(t) == 0
	})
	bodies, ids := dest.snapshot()
	got := map[string]int{}
	for _, b := range bodies {
		var p struct {
			Message struct {
				ID string `json:"id"`
			} `json:"message"`
		}
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatalf("delivered body %q: %v", b, err)
		}
		got[p.Message.ID]++
	}
	lost, twice := 0, 0
	for _, id := range want {
		switch n := got[id]; {
		case n == 0:
			lost++
		case n > 1:
			twice++
			t.Errorf("message %s delivered %d times", id, n)
		}
		delete(got, id)
	}
	if lost > 0 || len(got) > 0 || twice > 0 {
		t.Errorf("%d events sent: %d lost, %d delivered more than once, %d unexpected", len(want), lost, twice, len(got))
	}
	eventIDs := map[string]bool{}
	for _, id := range ids {
		if id == "" || eventIDs[id] {
			t.Errorf("event id %q missing or delivered twice", id)
		}
		eventIDs[id] = true
	}
}

// TestScaleOutStartupUnreachable: an instance whose Redis or NATS does not
// answer refuses to start, with an error naming the URL (password hidden),
// rather than answering 503 to every event later.
func TestScaleOutStartupUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	dest := "http://127.0.0.1:9/events"
	sinkYAML := fmt.Sprintf("  crm: {type: http, url: %q}", dest)
	rules := "  - {name: all, when: 'true', to: [crm]}"
	for _, tc := range []struct {
		name, cfg, want string
	}{
		{
			name: "redis",
			cfg: baseConfig("{backend: memory}", sinkYAML, rules) +
				"dedup: {store: redis, redis_url: 'redis://hookrouter:hunter2@" + closed + "/0'}\n",
			want: "dedup redis_url redis://REDACTED@" + closed + "/0: ",
		},
		{
			name: "nats",
			cfg:  baseConfig("{backend: nats, nats_url: 'nats://hookrouter:hunter2@"+closed+"'}", sinkYAML, rules),
			want: "nats connect nats://redacted@" + closed + ": ",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, path, _ := writeConfig(t, tc.cfg)
			start := time.Now()
			r, err := New(f, Options{ConfigPath: path, Version: "test"})
			if err == nil {
				r.Shutdown(t.Context())
				t.Fatal("New succeeded with nothing listening")
			}
			if took := time.Since(start); took > storeCheckTimeout {
				t.Errorf("New took %v to fail", took)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, "hunter2") {
				t.Errorf("error %q: want it to contain %q and no password", msg, tc.want)
			}
		})
	}
}

// TestScaleOutSameEventBothInstances: 200 events, each posted to A and to B
// at the same moment: exactly one of the two answers is not a duplicate,
// and each event is delivered once.
func TestScaleOutSameEventBothInstances(t *testing.T) {
	sh := newShared(t)
	dest := newCapture(t)
	cfg := scaleConfig(dest.URL)
	pair := []*server{startInstance(t, cfg, sh.options()), startInstance(t, cfg, sh.options())}

	const n = 200
	want := make([]string, n)
	answers := make([][2]answer, n)
	errs := make([][2]error, n)
	forEach(n, 16, func(i int) {
		want[i] = fmt.Sprintf("same-%d", i)
		body := message(want[i])
		start := make(chan struct{})
		var both sync.WaitGroup
		for j, s := range pair {
			both.Go(func() {
				<-start
				answers[i][j], errs[i][j] = postEvent(s, body)
			})
		}
		close(start)
		both.Wait()
	})
	for i, a := range answers {
		if errs[i][0] != nil || errs[i][1] != nil {
			t.Fatalf("event %d: %v %v", i, errs[i][0], errs[i][1])
		}
		if a[0].status != 200 || a[1].status != 200 {
			t.Fatalf("event %d: answers %d %q, %d %q", i, a[0].status, a[0].body, a[1].status, a[1].body)
		}
		if isDuplicate(a[0]) == isDuplicate(a[1]) {
			t.Errorf("event %d: duplicate answers A=%v B=%v, want exactly one", i, isDuplicate(a[0]), isDuplicate(a[1]))
		}
	}
	checkDeliveredOnce(t, sh, dest, want)
}

// TestScaleOutSpread: 500 distinct events spread over A and B are all
// delivered, each once, by whichever instance pulls them.
func TestScaleOutSpread(t *testing.T) {
	sh := newShared(t)
	dest := newCapture(t)
	cfg := scaleConfig(dest.URL)
	pair := []*server{startInstance(t, cfg, sh.options()), startInstance(t, cfg, sh.options())}

	const n = 500
	want := make([]string, n)
	var mu sync.Mutex
	var failures []string
	forEach(n, 32, func(i int) {
		want[i] = fmt.Sprintf("spread-%d", i)
		a, err := postEvent(pair[i%2], message(want[i]))
		if err != nil || a.status != 200 || isDuplicate(a) {
			mu.Lock()
			failures = append(failures, fmt.Sprintf("event %d: %v %d dup=%v %s", i, err, a.status, isDuplicate(a), a.body))
			mu.Unlock()
		}
	})
	if len(failures) > 0 {
		t.Fatalf("%d posts failed, first: %s", len(failures), failures[0])
	}
	checkDeliveredOnce(t, sh, dest, want)
	t.Logf("delivered by A: %d, by B: %d", pair[0].r.dispatcher.Status()["crm"].Delivered, pair[1].r.dispatcher.Status()["crm"].Delivered)
}

// gate is a destination in front of a capture that holds every request
// until it is opened, then passes it on; a request whose sender went away
// meanwhile (a router shut down or killed) ends unrecorded.
type gate struct {
	*httptest.Server
	held   atomic.Int32 // requests waiting
	opened chan struct{}
	once   sync.Once
}

func newGate(t *testing.T, dest *capture) *gate {
	g := &gate{opened: make(chan struct{})}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.held.Add(1)
		defer g.held.Add(-1)
		// Read the body first: net/http notices that the client went away
		// (and cancels r's context) only once the body is read.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		select {
		case <-g.opened:
			dest.Config.Handler.ServeHTTP(w, r)
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(g.Close)
	t.Cleanup(g.open) // first: a held request would block Close
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.opened) }) }

// TestScaleOutFailover: A accepts events while its sink fails (503) or
// hangs, and is shut down with a short deadline with all of them owed; they
// stay in the stream, and B, started after A is gone, recognises them as
// duplicates and delivers every one once the sink heals.
func TestScaleOutFailover(t *testing.T) {
	for _, tc := range []struct {
		name string
		// sink returns the URL the instances send to, how to tell that A's
		// workers are busy with it, and how to heal it.
		sink func(t *testing.T, dest *capture) (url string, busy func() bool, heal func())
		// timeout is the sink's. The http sink notices a cancelled send
		// only when its request ends, so with a hanging sink whose timeout
		// outlasts Shutdown's deadline (1s) and the dispatcher's grace after
		// it (1s), Shutdown reports "sends still running" (tolerated when
		// slowShutdown is set); those deliveries stay owed, their nak fails
		// on the closed connection, and JetStream hands them out again
		// after AckWait.
		timeout      string
		slowShutdown bool
	}{
		{name: "failing", timeout: "2s", sink: func(t *testing.T, dest *capture) (string, func() bool, func()) {
			dest.setStatus(http.StatusServiceUnavailable)
			return dest.URL, func() bool { return dest.requestCount() >= 3 }, func() { dest.setStatus(0) }
		}},
		{name: "hanging", timeout: "3s", slowShutdown: true, sink: func(t *testing.T, dest *capture) (string, func() bool, func()) {
			g := newGate(t, dest)
			return g.URL, func() bool { return g.held.Load() == 8 }, func() {
				// Shutdown cut A's sends short: they end unrecorded.
				waitFor(t, 5*time.Second, "A's requests to end", func() bool { return g.held.Load() == 0 })
				g.open()
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sh := newShared(t)
			dest := newCapture(t)
			url, busy, heal := tc.sink(t, dest)
			cfg := scaleConfigTimeout(url, tc.timeout)
			a := startInstance(t, cfg, sh.options())

			const n = 50
			want := make([]string, n)
			for i := range n {
				want[i] = fmt.Sprintf("failover-%d", i)
				if ans := a.post("/webhook", message(want[i])); ans.status != 200 || isDuplicate(ans) {
					t.Fatalf("A, event %d: %d dup=%v %s", i, ans.status, isDuplicate(ans), ans.body)
				}
			}
			waitFor(t, 5*time.Second, "A's attempts", busy)

			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			err := a.r.Shutdown(ctx)
			cancel()
			if err != nil && (!tc.slowShutdown || !strings.Contains(err.Error(), "sends still running after shutdown deadline")) {
				t.Errorf("A shutdown: %v", err)
			} else if err != nil {
				t.Logf("A shutdown: %v", err)
			}
			<-a.done
			a.r = nil
			if owed := sh.owed(t); owed != n {
				t.Errorf("after A stopped the stream owes %d deliveries, want %d", owed, n)
			}
			if dl := a.deadLetters(); len(dl) != 0 {
				t.Errorf("A dead-lettered %d deliveries, first: %+v", len(dl), dl[0])
			}

			heal()
			b := startInstance(t, cfg, sh.options())
			for i, id := range want {
				if ans := b.post("/webhook", message(id)); ans.status != 200 || !isDuplicate(ans) {
					t.Errorf("B, A's event %d again: %d dup=%v, want a duplicate", i, ans.status, isDuplicate(ans))
				}
			}
			checkDeliveredOnce(t, sh, dest, want)
			if got := b.r.dispatcher.Status()["crm"].Delivered; got != n {
				t.Errorf("B delivered %d, want all %d", got, n)
			}
		})
	}
}

// TestScaleOutDuplicateAcrossInstances: an event A accepted is answered as a
// duplicate by B (and by A), and delivered once.
func TestScaleOutDuplicateAcrossInstances(t *testing.T) {
	sh := newShared(t)
	dest := newCapture(t)
	cfg := scaleConfig(dest.URL)
	a, b := startInstance(t, cfg, sh.options()), startInstance(t, cfg, sh.options())

	const n = 20
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprintf("dup-%d", i)
		if ans := a.post("/webhook", message(want[i])); ans.status != 200 || isDuplicate(ans) {
			t.Fatalf("A, event %d: %d dup=%v %s", i, ans.status, isDuplicate(ans), ans.body)
		}
	}
	for i, id := range want {
		for name, s := range map[string]*server{"B": b, "A": a} {
			if ans := s.post("/webhook", message(id)); ans.status != 200 || !isDuplicate(ans) {
				t.Errorf("%s, event %d again: %d %q, want 200 with X-Hookrouter-Duplicate: true", name, i, ans.status, ans.header.Get("X-Hookrouter-Duplicate"))
			}
		}
	}
	checkDeliveredOnce(t, sh, dest, want)
	// The keys are under this test's prefix, one per event, committed.
	if keys := sh.keys(t); len(keys) != n {
		t.Errorf("%d keys under %s, want %d: %q", len(keys), sh.prefix, n, keys)
	} else if v, err := sh.rc.Get(t.Context(), keys[0]).Result(); err != nil || v != "committed" {
		t.Errorf("key %s = %q, %v; want committed", keys[0], v, err)
	}
}

// Environment of TestScaleOutInstanceProcess: the config file, and the key
// prefix and stream of the share, separated by a space.
const (
	instanceConfigEnv = "HOOKROUTER_SCALEOUT_INSTANCE_CONFIG"
	instanceShareEnv  = "HOOKROUTER_SCALEOUT_INSTANCE_SHARE"
)

// TestScaleOutInstanceProcess is not a test: run by TestScaleOutCrash as a
// child process, it serves one router instance, prints "listening URL", and
// runs until it is killed (or for a minute at most).
func TestScaleOutInstanceProcess(t *testing.T) {
	path := os.Getenv(instanceConfigEnv)
	if path == "" {
		t.Skip("helper process for TestScaleOutCrash")
	}
	f, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "config:", err)
		os.Exit(2)
	}
	// Without a share, the config's own keys (queue.nats_stream,
	// dedup.redis_prefix) and the defaults (AckWait) are in force.
	var opts Options
	if share := os.Getenv(instanceShareEnv); share != "" {
		prefix, stream, _ := strings.Cut(share, " ")
		opts = shareOptions(prefix, stream)
	}
	opts.ConfigPath, opts.Version = path, "test"
	opts.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r, err := New(f, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "New:", err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(2)
	}
	go r.Serve(ln, nil)
	fmt.Println("listening http://" + ln.Addr().String())
	time.Sleep(time.Minute)
	os.Exit(3)
}

// TestScaleOutCrash: A accepts events while the sink hangs and is killed
// (SIGKILL) with deliveries in its hands. Nothing is acked, so JetStream
// hands the ones A held to B after AckWait and B delivers every event once.
func TestScaleOutCrash(t *testing.T) {
	sh := newShared(t)
	dest := newCapture(t)
	g := newGate(t, dest)
	cfg := scaleConfig(g.URL)
	_, path, _ := writeConfig(t, cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleOutInstanceProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), instanceConfigEnv+"="+path, instanceShareEnv+"="+sh.prefix+" "+sh.stream)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(kill)
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				urlc <- u
			}
		}
		close(urlc)
	}()
	a := &server{t: t}
	select {
	case a.url = <-urlc:
	case <-time.After(10 * time.Second):
	}
	if a.url == "" {
		kill()
		t.Fatalf("instance A did not start: %s", stderr.String())
	}

	const n = 50
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprintf("crash-%d", i)
		if ans := a.post("/webhook", message(want[i])); ans.status != 200 || isDuplicate(ans) {
			t.Fatalf("A, event %d: %d dup=%v %s", i, ans.status, isDuplicate(ans), ans.body)
		}
	}
	// All 8 of A's workers are sending, and wait on the sink.
	waitFor(t, 5*time.Second, "A's workers to hold deliveries", func() bool { return g.held.Load() == 8 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	kill()
	killedAt := time.Now()
	// A's connections are gone: let its requests end unrecorded before the
	// sink heals (a destination that completes a dying sender's request is
	// the at-least-once duplicate receivers deduplicate on the event id).
	waitFor(t, 5*time.Second, "A's requests to end", func() bool { return g.held.Load() == 0 })
	if owed := sh.owed(t); owed != n {
		t.Errorf("after A died the stream owes %d deliveries, want %d", owed, n)
	}

	g.open()
	b := startInstance(t, cfg, sh.options())
	for i, id := range want {
		if ans := b.post("/webhook", message(id)); ans.status != 200 || !isDuplicate(ans) {
			t.Errorf("B, A's event %d again: %d dup=%v, want a duplicate", i, ans.status, isDuplicate(ans))
		}
	}
	checkDeliveredOnce(t, sh, dest, want)
	// The deliveries A held come back only when AckWait runs out (A never
	// held them for long, so they are not due before about AckWait after
	// the kill): sooner would mean this test is not testing a crash.
	if took := time.Since(killedAt); took < scaleAckWait/2 {
		t.Errorf("every delivery was done %v after A died, before AckWait (%v) could have run out", took, scaleAckWait)
	}
	if got := b.r.dispatcher.Status()["crm"].Delivered; got != n {
		t.Errorf("B delivered %d, want all %d", got, n)
	}
}
