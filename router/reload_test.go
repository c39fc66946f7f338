package router

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router/config"
)

// The reload tests run a real router on a real config file with a client
// posting unique events throughout. Each event records the generations in
// force before its request and after its answer; once traffic stops, every
// event must have reached, exactly once, the sinks that one of those
// generations' rules chose.

// reloadRetry keeps deliveries out of the dead-letter file while a test
// destination is slow or failing on purpose.
const reloadRetry = `retry: {max_attempts: 100, initial_backoff: 5ms, max_backoff: 20ms}`

// maxReloadLatency is the bar of the issue: routing changes within a
// second of the save.
const maxReloadLatency = time.Second

// logBuffer keeps a router's log for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if testing.Verbose() {
		os.Stderr.Write(p)
	}
	return l.b.Write(p)
}

// lines returns the log lines containing every one of subs.
func (l *logBuffer) lines(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for line := range strings.Lines(l.b.String()) {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// startAt serves the config file already written at path, watching it when
// watch is set.
func startAt(t *testing.T, path string, watch bool) (*server, *logBuffer) {
	t.Helper()
	f, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &logBuffer{}
	r, err := New(f, Options{ConfigPath: path, Version: "test",
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s := &server{t: t, dir: filepath.Dir(path), config: path}
	s.serve(r)
	t.Cleanup(s.stop)
	// Runs before stop: fasthttp's Shutdown waits up to 5 s for a
	// connection the client dialed but never used.
	t.Cleanup(client.CloseIdleConnections)
	if watch {
		if err := r.Watch(); err != nil {
			t.Fatalf("Watch: %v", err)
		}
	}
	return s, logs
}

// sent is one event the traffic had answered 200.
type sent struct {
	id string
	n  int
	// from and to are the generations in force before the request was sent
	// and after its answer came back.
	from, to uint64
}

// traffic posts unique events, one after the other, until halted. Odd and
// even events ("p") are what the test configs route differently.
type traffic struct {
	t    *testing.T
	url  string
	gen  func() uint64
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu   sync.Mutex
	sent []sent
	errs []string
}

// maxTraffic bounds a test's traffic.
const maxTraffic = 20000

func startTraffic(t *testing.T, url string, gen func() uint64) *traffic {
	tr := &traffic{t: t, url: url, gen: gen, stop: make(chan struct{}), done: make(chan struct{})}
	go tr.run()
	t.Cleanup(func() { tr.halt() })
	return tr
}

func trafficEvent(n int) (id string, body []byte) {
	id = fmt.Sprintf("m-%d", n)
	p := "even"
	if n%2 == 1 {
		p = "odd"
	}
	return id, fmt.Appendf(nil, `{"event":"channel.message_in","p":%q,"message":{"id":%q,"content":{"type":"text","text":"hi"}}}`, p, id)
}

func (tr *traffic) run() {
	defer close(tr.done)
	for n := range maxTraffic {
		select {
		case <-tr.stop:
			return
		default:
		}
		id, body := trafficEvent(n)
		from := tr.gen()
		status, err := postWebhook(tr.url, body)
		to := tr.gen()
		tr.mu.Lock()
		if err != nil || status != http.StatusOK {
			tr.errs = append(tr.errs, fmt.Sprintf("event %s: status %d, error %v", id, status, err))
		} else {
			tr.sent = append(tr.sent, sent{id: id, n: n, from: from, to: to})
		}
		tr.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

func postWebhook(url string, body []byte) (int, error) {
	req, _ := http.NewRequest(http.MethodPost, url+"/webhook", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", testSecret)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func (tr *traffic) count() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.sent)
}

// more waits until n more events were answered 200.
func (tr *traffic) more(n int) {
	tr.t.Helper()
	want := tr.count() + n
	waitFor(tr.t, 5*time.Second, fmt.Sprintf("%d more events", n), func() bool { return tr.count() >= want })
}

// halt stops the traffic, fails the test for every answer that was not a
// 200, and returns the events that were accepted.
func (tr *traffic) halt() []sent {
	tr.once.Do(func() {
		close(tr.stop)
		<-tr.done
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for i, e := range tr.errs {
			if i == 10 {
				tr.t.Errorf("... and %d more failed requests", len(tr.errs)-10)
				break
			}
			tr.t.Error(e)
		}
	})
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.sent)
}

// routing says which sinks generation gen sends traffic event n to.
type routing func(gen uint64, n int) []string

// checkDelivered waits until every event reached the sinks of one of the
// generations in force during its request, and fails if any did not, or
// reached a sink more than once. A sink may have several destinations (its
// URL changed): they count as one.
func checkDelivered(t *testing.T, s *server, events []sent, sinks map[string][]*capture, want routing) {
	t.Helper()
	gens := map[uint64]int{}
	for _, ev := range events {
		if ev.from == ev.to {
			gens[ev.from]++
		}
	}
	t.Logf("%d events accepted; by generation (straddlers excluded): %v", len(events), gens)
	var problems []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		problems = routingProblems(events, sinks, want)
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(problems) == 0 {
		// Nothing owed: a late second copy would show now.
		s.settle()
		problems = routingProblems(events, sinks, want)
	}
	for i, p := range problems {
		if i == 10 {
			t.Errorf("... and %d more", len(problems)-10)
			break
		}
		t.Error(p)
	}
}

func routingProblems(events []sent, sinks map[string][]*capture, want routing) []string {
	names := make([]string, 0, len(sinks))
	for name := range sinks {
		names = append(names, name)
	}
	slices.Sort(names)
	var out []string
	for _, ev := range events {
		var got []string
		for _, name := range names {
			c := 0
			for _, d := range sinks[name] {
				c += d.deliveries(ev.id)
			}
			if c > 1 {
				out = append(out, fmt.Sprintf("%s delivered %d times to %s", ev.id, c, name))
			}
			if c > 0 {
				got = append(got, name)
			}
		}
		var wants []string
		match := false
		for g := ev.from; g <= ev.to; g++ {
			w := slices.Sorted(slices.Values(want(g, ev.n)))
			match = match || slices.Equal(w, got)
			wants = append(wants, fmt.Sprint(w))
		}
		if !match {
			out = append(out, fmt.Sprintf("%s (accepted during generations %d..%d) went to %v, want %s",
				ev.id, ev.from, ev.to, got, strings.Join(wants, " or ")))
		}
	}
	return out
}

// reloadTo runs save and waits until generation gen is in force, within
// maxReloadLatency of the start of the save.
func reloadTo(t *testing.T, s *server, gen uint64, save func()) time.Duration {
	t.Helper()
	start := time.Now()
	save()
	for s.r.Runtime().Generation < gen {
		if time.Since(start) > maxReloadLatency {
			h := s.health()
			t.Fatalf("generation %d not in force %v after the save (generation %d, last_reload_error %q)",
				gen, time.Since(start), h.ConfigGeneration, h.LastReloadError)
		}
		time.Sleep(500 * time.Microsecond)
	}
	d := time.Since(start)
	if g := s.r.Runtime().Generation; g != gen {
		t.Fatalf("generation %d, want %d: one save applied more than once", g, gen)
	}
	t.Logf("reload latency (save → routing changed): %v", d.Round(time.Millisecond))
	// The new routing is in force before the reload ends: it then waits for
	// the requests of the old config, drains the sinks it removed and
	// records its pending restarts. Wait for that end, which /health tells.
	waitFor(t, 10*time.Second, "the reload finished", func() bool { return !s.r.Health().ConfigLoadedAt.Before(start) })
	return d
}

// metricValue reads one sample of the router's /metrics, 0 when absent.
func metricValue(t *testing.T, s *server, sample string) float64 {
	t.Helper()
	a := s.adminGet("/metrics")
	for line := range strings.Lines(a.body) {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sample, err)
			}
			return v
		}
	}
	return 0
}

func reloadsTotal(t *testing.T, s *server, result string) float64 {
	return metricValue(t, s, `hookrouter_config_reloads_total{result="`+result+`"}`)
}

// Ways to save a config file.

func saveInPlace(t *testing.T, path, content string) {
	t.Helper()
	// Truncate, then write: what most editors' "write in place" does.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func saveByRename(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".swp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// configMapSave updates dir the way the kubelet updates a mounted
// ConfigMap: a new timestamped directory, a temporary "..data" symlink to
// it renamed over the old one, then the old directory removed. The file
// itself, rules.yaml -> ..data/rules.yaml, is never touched.
func configMapSave(t *testing.T, dir, content string) {
	t.Helper()
	ts := fmt.Sprintf("..%d", time.Now().UnixNano())
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ts, "rules.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func configMapSetup(t *testing.T, dir, content string) string {
	t.Helper()
	configMapSave(t, dir, content)
	path := filepath.Join(dir, "rules.yaml")
	if err := os.Symlink(filepath.Join("..data", "rules.yaml"), path); err != nil {
		t.Fatal(err)
	}
	return path
}

// Configs.

func reloadSink(name string, d *capture, extra string) string {
	return fmt.Sprintf("  %s: {type: http, url: %q, %s%s}\n", name, d.URL, reloadRetry, extra)
}

// parityConfig sends even events to a and odd ones to b, or the reverse
// when swapped: the rules' conditions are what changes.
func parityConfig(dataDir, queue string, a, b *capture, swapped bool, extraSinks, extraRules string) string {
	toA, toB := `p == "even"`, `p == "odd"`
	if swapped {
		toA, toB = toB, toA
	}
	cfg := baseConfig(queue, reloadSink("a", a, "")+reloadSink("b", b, "")+extraSinks,
		fmt.Sprintf("  - {name: to-a, when: '%s', to: [a]}\n  - {name: to-b, when: '%s', to: [b]}\n%s", toA, toB, extraRules))
	return strings.ReplaceAll(cfg, "DATA", dataDir)
}

// parityRouting is the routing of parityConfig, swapped in the generations
// for which swapped says so.
func parityRouting(swapped func(gen uint64) bool) routing {
	return func(gen uint64, n int) []string {
		if (n%2 == 0) != swapped(gen) {
			return []string{"a"}
		}
		return []string{"b"}
	}
}

// TestReloadTriggers saves a new config in each way an operator or a
// platform does, under traffic, and checks that routing changes within a
// second, that no request fails and that every event follows the rules in
// force when it was accepted.
func TestReloadTriggers(t *testing.T) {
	tests := []struct {
		name  string
		queue string
		// setup writes the first config in dir and returns the config path.
		setup func(t *testing.T, dir, content string) string
		save  func(t *testing.T, s *server, dir, path, content string)
		watch bool
		// noise keeps writing another file in the config's directory.
		noise bool
	}{
		{name: "rename save", queue: "{backend: disk}", watch: true,
			save: func(t *testing.T, _ *server, _, path, c string) { saveByRename(t, path, c) }},
		{name: "in-place save", queue: "{backend: memory}", watch: true,
			save: func(t *testing.T, _ *server, _, path, c string) { saveInPlace(t, path, c) }},
		{name: "configmap symlink swap", queue: "{backend: memory}", watch: true, setup: configMapSetup,
			save: func(t *testing.T, _ *server, dir, _, c string) { configMapSave(t, dir, c) }},
		{name: "symlink to a file elsewhere, saved in place", queue: "{backend: memory}", watch: true,
			setup: func(t *testing.T, dir, c string) string {
				elsewhere := filepath.Join(t.TempDir(), "real.yaml")
				if err := os.WriteFile(elsewhere, []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(dir, "rules.yaml")
				if err := os.Symlink(elsewhere, path); err != nil {
					t.Fatal(err)
				}
				return path
			},
			save: func(t *testing.T, _ *server, _, path, c string) { saveInPlace(t, path, c) }},
		{name: "rename save, busy directory", queue: "{backend: memory}", watch: true, noise: true,
			save: func(t *testing.T, _ *server, _, path, c string) { saveByRename(t, path, c) }},
		{name: "POST /-/reload", queue: "{backend: memory}",
			save: func(t *testing.T, s *server, _, path, c string) {
				saveInPlace(t, path, c)
				want := fmt.Sprintf("ok: generation %d\n", s.r.Runtime().Generation+1)
				if a := s.adminPost("/-/reload", nil); a.status != 200 || a.body != want {
					t.Fatalf("POST /-/reload: %d %q, want 200 %q", a.status, a.body, want)
				}
			}},
		{name: "SIGHUP (in process)", queue: "{backend: memory}",
			save: func(t *testing.T, s *server, _, path, c string) {
				saveByRename(t, path, c)
				if err := s.r.Reload("sighup"); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newCapture(t), newCapture(t)
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			v1 := parityConfig(data, tc.queue, a, b, false, "", "")
			v2 := parityConfig(data, tc.queue, a, b, true, "", "")
			var path string
			if tc.setup != nil {
				path = tc.setup(t, dir, v1)
			} else {
				path = filepath.Join(dir, "rules.yaml")
				if err := os.WriteFile(path, []byte(v1), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s, _ := startAt(t, path, tc.watch)
			if tc.noise {
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() {
					defer close(done)
					log := filepath.Join(dir, "events.jsonl")
					for range 2000 {
						select {
						case <-stop:
							return
						case <-time.After(10 * time.Millisecond):
						}
						f, err := os.OpenFile(log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
						if err == nil {
							f.WriteString("{}\n")
							f.Close()
						}
					}
				}()
				t.Cleanup(func() { close(stop); <-done })
			}
			r := s.r
			tr := startTraffic(t, s.url, func() uint64 { return r.Runtime().Generation })

			tr.more(20)
			reloadTo(t, s, 2, func() { tc.save(t, s, dir, path, v2) })
			tr.more(20)
			reloadTo(t, s, 3, func() { tc.save(t, s, dir, path, v1) })
			tr.more(20)
			events := tr.halt()
			checkDelivered(t, s, events, map[string][]*capture{"a": {a}, "b": {b}},
				parityRouting(func(gen uint64) bool { return gen == 2 }))
			if h := s.health(); h.ConfigGeneration != 3 || h.LastReloadError != "" {
				t.Errorf("health: generation %d, last_reload_error %q; want 3, none", h.ConfigGeneration, h.LastReloadError)
			}
			if got := reloadsTotal(t, s, "failure"); got != 0 {
				t.Errorf("reloads_total{failure} = %v, want 0: a save was read half-written", got)
			}
		})
	}
}

// problemLine matches one "FILE:LINE:COL: message" problem.
var problemLine = regexp.MustCompile(`rules\.yaml:\d+:\d+: `)

// TestReloadInvalidThenFixed saves a broken config, then a fixed one: the
// broken one changes nothing and is reported (log, /health, metrics, POST
// /-/reload); the fixed one applies.
func TestReloadInvalidThenFixed(t *testing.T) {
	a, b := newCapture(t), newCapture(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	v1 := parityConfig(data, "{backend: memory}", a, b, false, "", "")
	v2 := parityConfig(data, "{backend: memory}", a, b, true, "", "")
	// Two problems: an unknown sink and an expression that does not compile.
	bad := strings.Replace(v2, "to: [b]", "to: [nosuch]", 1)
	bad = strings.Replace(bad, `when: 'p == "even"'`, `when: 'p == '`, 1)
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte(v1), 0o644); err != nil {
		t.Fatal(err)
	}
	s, logs := startAt(t, path, true)
	r := s.r
	tr := startTraffic(t, s.url, func() uint64 { return r.Runtime().Generation })
	tr.more(20)

	successAt := metricValue(t, s, "hookrouter_config_last_reload_success_timestamp_seconds")
	saveByRename(t, path, bad)
	waitFor(t, maxReloadLatency, "last_reload_error", func() bool { return s.health().LastReloadError != "" })
	h := s.health()
	if n := len(problemLine.FindAllString(h.LastReloadError, -1)); n != 2 {
		t.Errorf("last_reload_error has %d FILE:LINE:COL problems, want 2:\n%s", n, h.LastReloadError)
	}
	if h.ConfigGeneration != 1 {
		t.Errorf("generation %d after a bad save, want 1", h.ConfigGeneration)
	}
	// The reload logs its problems just after it records the error.
	waitFor(t, 5*time.Second, "the rejection logged", func() bool {
		return len(logs.lines("level=ERROR", "config reload rejected")) >= 2
	})
	rejected := logs.lines("level=ERROR", "config reload rejected")
	if len(rejected) != 2 {
		t.Errorf("%d error log lines, want one per problem (2):\n%s", len(rejected), strings.Join(rejected, "\n"))
	}
	for _, l := range rejected {
		if !problemLine.MatchString(l) {
			t.Errorf("log line without FILE:LINE:COL: %s", l)
		}
	}
	if got := reloadsTotal(t, s, "failure"); got != 1 {
		t.Errorf("reloads_total{failure} = %v, want 1", got)
	}
	tr.more(20)

	// The API says the same, as text, with a 400.
	a400 := s.adminPost("/-/reload", nil)
	if a400.status != 400 || len(problemLine.FindAllString(a400.body, -1)) != 2 ||
		!strings.Contains(a400.body, `unknown sink "nosuch"`) {
		t.Errorf("POST /-/reload with a bad file: %d %q, want 400 with both problems", a400.status, a400.body)
	}
	if got := reloadsTotal(t, s, "failure"); got != 2 {
		t.Errorf("reloads_total{failure} = %v, want 2", got)
	}

	reloadTo(t, s, 2, func() { saveByRename(t, path, v2) })
	h = s.health()
	if h.LastReloadError != "" {
		t.Errorf("last_reload_error %q after a good save, want none", h.LastReloadError)
	}
	if got := metricValue(t, s, "hookrouter_config_last_reload_success_timestamp_seconds"); got <= successAt && successAt != 0 {
		t.Errorf("last reload success time %v not after %v", got, successAt)
	}
	if got := reloadsTotal(t, s, "success"); got != 1 {
		t.Errorf("reloads_total{success} = %v, want 1", got)
	}
	tr.more(20)

	// Broken again, then back to the bytes in force: nothing to apply, but
	// the error is no longer true and must go.
	saveByRename(t, path, bad)
	waitFor(t, maxReloadLatency, "last_reload_error", func() bool { return s.health().LastReloadError != "" })
	saveByRename(t, path, v2)
	waitFor(t, maxReloadLatency, "last_reload_error cleared", func() bool { return s.health().LastReloadError == "" })
	if g := s.health().ConfigGeneration; g != 2 {
		t.Errorf("generation %d, want 2", g)
	}
	tr.more(20)

	events := tr.halt()
	checkDelivered(t, s, events, map[string][]*capture{"a": {a}, "b": {b}},
		parityRouting(func(gen uint64) bool { return gen == 2 }))
}

// TestReloadSinks adds, removes and changes sinks under traffic. The
// removed sink's destination is slow, so that deliveries are queued for it
// when it goes: they must still reach it.
func TestReloadSinks(t *testing.T) {
	a1, a2 := newCapture(t), newCapture(t)
	b, c := newCapture(t), newCapture(t)
	slow := newCapture(t)
	// 15 owed take 750ms to send: still owed when the reload has ended.
	slow.delay = 50 * time.Millisecond
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	q := "{backend: memory}"
	v1 := parityConfig(data, q, a1, b, false, reloadSink("slow", slow, ", workers: 1"),
		"  - {name: slow-odd, when: 'p == \"odd\"', to: [slow]}\n")
	v2 := parityConfig(data, q, a2, b, false, reloadSink("c", c, ""),
		"  - {name: c-odd, when: 'p == \"odd\"', to: [c]}\n")
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte(v1), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _ := startAt(t, path, true)
	r := s.r
	tr := startTraffic(t, s.url, func() uint64 { return r.Runtime().Generation })
	waitFor(t, 5*time.Second, "deliveries queued for the slow sink", func() bool {
		return r.Health().Sinks["slow"].Depth >= 15
	})

	reloadTo(t, s, 2, func() { saveByRename(t, path, v2) })
	st, ok := r.Health().Sinks["slow"]
	if !ok || !st.Draining || st.Depth == 0 {
		t.Errorf("removed sink right after the reload: %+v (present %v), want draining with deliveries owed", st, ok)
	}
	if _, ok := r.Health().Sinks["c"]; !ok {
		t.Error("added sink c not in /health")
	}
	tr.more(40)
	events := tr.halt()

	checkDelivered(t, s, events, map[string][]*capture{"a": {a1, a2}, "b": {b}, "slow": {slow}, "c": {c}},
		func(gen uint64, n int) []string {
			switch {
			case n%2 == 0:
				return []string{"a"}
			case gen == 1:
				return []string{"b", "slow"}
			default:
				return []string{"b", "c"}
			}
		})
	// a's URL changed: what was accepted after the swap goes to the new one.
	newURL := 0
	for _, ev := range events {
		if ev.from >= 2 && ev.n%2 == 0 {
			newURL++
			if a1.deliveries(ev.id) != 0 {
				t.Errorf("%s accepted in generation %d went to a's old URL", ev.id, ev.from)
			}
		}
	}
	if newURL == 0 {
		t.Error("no event for a accepted after the reload: the test proved nothing")
	}
	waitFor(t, 5*time.Second, "drained sink gone from /health", func() bool {
		_, ok := r.Health().Sinks["slow"]
		return !ok
	})
}

// TestReloadKeepsBreaker trips an unchanged sink's breaker open and reloads:
// it must still be open. Changing the sink then replaces its lane, and the
// delivery its old breaker held back goes out through the new one.
func TestReloadKeepsBreaker(t *testing.T) {
	a, b := newCapture(t), newCapture(t)
	flaky := newCapture(t)
	flaky.setStatus(500)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	q := "{backend: memory}"
	flakyRule := "  - {name: flaky, when: 'p == \"flaky\"', to: [flaky]}\n"
	v1 := parityConfig(data, q, a, b, false, reloadSink("flaky", flaky, ", breaker: {failures: 1, open_for: 1m}"), flakyRule)
	v2 := parityConfig(data, q, a, b, true, reloadSink("flaky", flaky, ", breaker: {failures: 1, open_for: 1m}"), flakyRule)
	v3 := parityConfig(data, q, a, b, true, reloadSink("flaky", flaky, ", breaker: {failures: 1, open_for: 50ms}"), flakyRule)
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte(v1), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _ := startAt(t, path, true)
	r := s.r
	tr := startTraffic(t, s.url, func() uint64 { return r.Runtime().Generation })

	if a := s.post("/webhook", []byte(`{"event":"x","p":"flaky","message":{"id":"f-1"}}`)); a.status != 200 {
		t.Fatalf("flaky event: %d %s", a.status, a.body)
	}
	waitFor(t, 5*time.Second, "flaky breaker open", func() bool { return r.Health().Sinks["flaky"].Breaker == "open" })
	tried := flaky.requestCount()

	reloadTo(t, s, 2, func() { saveByRename(t, path, v2) })
	tr.more(20)
	// A new breaker would let the held delivery through, fail, and open
	// again: the open state alone would not tell.
	if st := r.Health().Sinks["flaky"]; st.Breaker != "open" || st.Depth != 1 || flaky.requestCount() != tried {
		t.Errorf("unchanged sink after a reload: breaker %s, depth %d, %d new attempts; want open, 1, none",
			st.Breaker, st.Depth, flaky.requestCount()-tried)
	}

	flaky.setStatus(0)
	reloadTo(t, s, 3, func() { saveByRename(t, path, v3) })
	waitFor(t, 5*time.Second, "held delivery sent through the changed sink", func() bool { return flaky.deliveries("f-1") == 1 })
	if st := r.Health().Sinks["flaky"]; st.Breaker != "closed" {
		t.Errorf("changed sink: breaker %s, want closed (a new lane)", st.Breaker)
	}
	tr.more(20)
	events := tr.halt()
	checkDelivered(t, s, events, map[string][]*capture{"a": {a}, "b": {b}, "flaky": {flaky}},
		parityRouting(func(gen uint64) bool { return gen >= 2 }))
	if n := flaky.deliveries("f-1"); n != 1 {
		t.Errorf("f-1 delivered %d times, want 1", n)
	}
}

// TestReloadUnchangedAndRestartOnly checks that a save of the same bytes is
// a counted no-op, and that restart-only settings are kept, reported and
// do not hold back the rest of the file.
func TestReloadUnchangedAndRestartOnly(t *testing.T) {
	a, b := newCapture(t), newCapture(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	v1 := parityConfig(data, "{backend: memory}", a, b, false, "", "")
	v2 := parityConfig(data, "{backend: disk}", a, b, true, "", "")
	v2 = strings.Replace(v2, `listen: "127.0.0.1:0"`, `listen: "127.0.0.1:1"`, 1)
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte(v1), 0o644); err != nil {
		t.Fatal(err)
	}
	s, logs := startAt(t, path, true)
	r := s.r
	tr := startTraffic(t, s.url, func() uint64 { return r.Runtime().Generation })
	tr.more(10)

	saveInPlace(t, path, v1)
	waitFor(t, maxReloadLatency, `reloads_total{result="unchanged"}`, func() bool { return reloadsTotal(t, s, "unchanged") >= 1 })
	before := reloadsTotal(t, s, "unchanged")
	if a := s.adminPost("/-/reload", nil); a.status != 200 || a.body != "ok: generation 1\n" {
		t.Errorf("POST /-/reload, file unchanged: %d %q", a.status, a.body)
	}
	if got := reloadsTotal(t, s, "unchanged"); got != before+1 {
		t.Errorf("reloads_total{unchanged} = %v, want %v", got, before+1)
	}
	if got := reloadsTotal(t, s, "success"); got != 0 {
		t.Errorf("reloads_total{success} = %v after saves of the same bytes, want 0", got)
	}
	if g := r.Runtime().Generation; g != 1 {
		t.Errorf("generation %d after saves of the same bytes, want 1", g)
	}
	tr.more(10)

	reloadTo(t, s, 2, func() { saveByRename(t, path, v2) })
	h := s.health()
	if !slices.Equal(h.PendingRestart, []string{"listen", "queue"}) {
		t.Errorf("pending_restart %v, want [listen queue]", h.PendingRestart)
	}
	if h.QueueBackend != "memory" || r.Runtime().File.Listen != "127.0.0.1:0" {
		t.Errorf("running queue %q, listen %q: restart-only settings changed without a restart", h.QueueBackend, r.Runtime().File.Listen)
	}
	if l := logs.lines("needs a restart", "setting=listen"); len(l) != 1 {
		t.Errorf("log lines about listen needing a restart: %q, want 1", l)
	}
	tr.more(20)
	events := tr.halt()
	checkDelivered(t, s, events, map[string][]*capture{"a": {a}, "b": {b}},
		parityRouting(func(gen uint64) bool { return gen == 2 }))
}

// TestReloadSIGHUPBinary runs the real binary and reloads it with SIGHUP.
// Without a change SIGHUP is a counted no-op: that proves the signal
// reaches Reload, since no file event happened. With a change, the new
// routing applies.
func TestReloadSIGHUPBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "hookrouter")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/hookrouter").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	a, b := newCapture(t), newCapture(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	v1 := parityConfig(data, "{backend: disk}", a, b, false, "", "")
	v2 := parityConfig(data, "{backend: disk}", a, b, true, "", "")
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte(v1), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "-config", path)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PORT=") })
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	listen := make(chan [2]string, 1)
	logs := &logBuffer{}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			logs.Write([]byte(line + "\n"))
			var rec struct {
				Msg         string `json:"msg"`
				Listen      string `json:"listen"`
				AdminListen string `json:"admin_listen"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "hookrouter started" {
				listen <- [2]string{rec.Listen, rec.AdminListen}
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	var addr [2]string
	select {
	case addr = <-listen:
	case err := <-exited:
		t.Fatalf("hookrouter exited: %v\n%s", err, strings.Join(logs.lines(""), "\n"))
	case <-time.After(10 * time.Second):
		t.Fatal("hookrouter did not start")
	}
	s := &server{t: t, url: "http://" + addr[0], admin: "http://" + addr[1], dir: dir, config: path}
	gen := func() uint64 {
		resp, err := client.Get(s.admin + "/health")
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		var h Health
		_ = json.NewDecoder(resp.Body).Decode(&h)
		return h.ConfigGeneration
	}
	sighup := func() {
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	tr := startTraffic(t, s.url, gen)
	tr.more(10)

	sighup()
	waitFor(t, maxReloadLatency, "SIGHUP counted as an unchanged reload", func() bool { return reloadsTotal(t, s, "unchanged") == 1 })
	if g := gen(); g != 1 {
		t.Errorf("generation %d after SIGHUP without a change, want 1", g)
	}
	tr.more(10)

	start := time.Now()
	saveByRename(t, path, v2)
	sighup()
	waitFor(t, maxReloadLatency, "generation 2", func() bool { return gen() == 2 })
	t.Logf("reload latency (save + SIGHUP → generation 2 in /health): %v", time.Since(start).Round(time.Millisecond))
	tr.more(20)
	events := tr.halt()
	checkDelivered(t, s, events, map[string][]*capture{"a": {a}, "b": {b}},
		parityRouting(func(gen uint64) bool { return gen == 2 }))

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("hookrouter exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("hookrouter did not stop on SIGTERM")
	}
	if l := logs.lines("config reloaded", `"generation":2`); len(l) != 1 {
		t.Errorf("log lines for the reload to generation 2: %q, want 1", l)
	}
}
