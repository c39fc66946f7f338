package main

// End-to-end crash tests of the durable disk queue: the real binary is
// killed with SIGKILL in the middle of its work and restarted on the same
// data_dir, and every event it answered 200 must reach every sink its rules
// chose. These tests run processes, not the router in-process: only a real
// kill -9 leaves the files the way a crash does.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
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
)

// crashBin is the hookrouter binary the crash tests run: built once, on
// first use, by hookrouterBinary, and removed by TestMain.
var crashBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if crashBin.dir != "" {
		os.RemoveAll(crashBin.dir)
	}
	os.Exit(code)
}

// hookrouterBinary builds ./ (this package, the test's working directory)
// once and returns the binary's path. It is a plain build even under -race:
// the child is the product as shipped.
func hookrouterBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the hookrouter binary and kills it")
	}
	crashBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "hookrouter-crash-")
		if err != nil {
			crashBin.err = err
			return
		}
		crashBin.dir = dir
		bin := filepath.Join(dir, "hookrouter")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			crashBin.err = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		crashBin.path = bin
	})
	if crashBin.err != nil {
		t.Fatal(crashBin.err)
	}
	return crashBin.path
}

const crashSecret = "crash-secret"

// crashInstance is one hookrouter installation: a config, a data_dir and a port
// chosen by the test, run as a child process that can be killed and
// started again on the same files.
type crashInstance struct {
	t      *testing.T
	bin    string
	dir    string
	data   string
	cfg    string
	config func(port int) string // the config file's text for a port

	port    int
	admin   int // admin_listen's port, prepended to the config
	starts  int
	proc    *os.Process
	exited  chan struct{}
	state   *os.ProcessState // set when exited is closed
	logPath string           // stderr of the latest process
}

func newCrashInstance(t *testing.T, config func(inst *crashInstance, port int) string) *crashInstance {
	t.Helper()
	dir := t.TempDir()
	in := &crashInstance{t: t, bin: hookrouterBinary(t), dir: dir, data: filepath.Join(dir, "data"), cfg: filepath.Join(dir, "rules.yaml")}
	in.config = func(port int) string { return config(in, port) }
	t.Cleanup(func() {
		if in.running() {
			_ = in.proc.Signal(syscall.SIGKILL)
			<-in.exited
		}
	})
	return in
}

func (in *crashInstance) url() string { return fmt.Sprintf("http://127.0.0.1:%d", in.port) }

func (in *crashInstance) adminURL() string { return fmt.Sprintf("http://127.0.0.1:%d", in.admin) }

func (in *crashInstance) running() bool {
	if in.exited == nil {
		return false
	}
	select {
	case <-in.exited:
		return false
	default:
		return true
	}
}

// crashFreePort returns a port that was free a moment ago on 127.0.0.1.
func crashFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// crashChildEnv is the test's environment without the variables that would
// change what the child listens on or reads.
func crashChildEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "PORT=") || strings.HasPrefix(kv, "HOOKROUTER_CONFIG=")
	})
}

// start runs the binary on the instance's files and waits until /health
// answers. The port stays the same across restarts unless another process
// took it meanwhile.
func (in *crashInstance) start() {
	in.t.Helper()
	if in.running() {
		in.t.Fatal("start: hookrouter is already running")
	}
	for try := 1; ; try++ {
		if in.port == 0 {
			in.port, in.admin = crashFreePort(in.t), crashFreePort(in.t)
		}
		text := fmt.Sprintf("admin_listen: \"127.0.0.1:%d\"\n", in.admin) + in.config(in.port)
		if err := os.WriteFile(in.cfg, []byte(text), 0o644); err != nil {
			in.t.Fatal(err)
		}
		in.starts++
		in.logPath = filepath.Join(in.dir, fmt.Sprintf("stderr-%d.log", in.starts))
		logf, err := os.Create(in.logPath)
		if err != nil {
			in.t.Fatal(err)
		}
		cmd := exec.Command(in.bin, "serve", "-config", in.cfg)
		cmd.Env = crashChildEnv()
		cmd.Stdout, cmd.Stderr = logf, logf
		err = cmd.Start()
		logf.Close()
		if err != nil {
			in.t.Fatal(err)
		}
		in.proc, in.exited, in.state = cmd.Process, make(chan struct{}), nil
		exited := in.exited
		go func() {
			_ = cmd.Wait()
			in.state = cmd.ProcessState
			close(exited)
		}()
		err = in.waitHealthy(15 * time.Second)
		if err == nil {
			return
		}
		if !in.running() && strings.Contains(in.log(), "cannot listen") && try < 3 {
			in.port = 0 // taken since: pick another
			continue
		}
		in.t.Fatalf("start %d: %v\n%s", in.starts, err, crashTail(in.log(), 30))
	}
}

func (in *crashInstance) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if !in.running() {
			return fmt.Errorf("hookrouter exited: %v", in.state)
		}
		if _, err := in.health(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/health not answering after %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone. It does not
// touch t, so that a load's watcher goroutine can call it.
func (in *crashInstance) kill(proc *os.Process, exited chan struct{}) error {
	if err := proc.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("kill: process still there after 10s")
	}
}

func (in *crashInstance) killNow() {
	in.t.Helper()
	if err := in.kill(in.proc, in.exited); err != nil {
		in.t.Fatal(err)
	}
}

// log is the stderr of the latest process.
func (in *crashInstance) log() string {
	b, _ := os.ReadFile(in.logPath)
	return string(b)
}

func crashTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// crashSinkHealth is the part of a sink's /health entry the tests read.
type crashSinkHealth struct {
	Breaker   string `json:"breaker"`
	Depth     int    `json:"depth"`
	Delivered int64  `json:"delivered"`
	Failed    int64  `json:"failed"`
}

var crashClient = &http.Client{Timeout: 2 * time.Second}

func (in *crashInstance) health() (map[string]crashSinkHealth, error) {
	resp, err := crashClient.Get(in.adminURL() + "/health")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var h struct {
		Status string                     `json:"status"`
		Sinks  map[string]crashSinkHealth `json:"sinks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return nil, fmt.Errorf("health: %w", err)
	}
	// "degraded" is still serving: it lasts a while after a refusal (queue
	// full) that no accepted event has cleared, while the backlog drains.
	if resp.StatusCode != http.StatusOK || (h.Status != "healthy" && h.Status != "degraded") {
		return nil, fmt.Errorf("health: %d %q", resp.StatusCode, h.Status)
	}
	return h.Sinks, nil
}

// waitDrained waits until /health shows depth 0 for every sink, and
// returns how long that took.
func (in *crashInstance) waitDrained(timeout time.Duration) time.Duration {
	in.t.Helper()
	start := time.Now()
	var last map[string]crashSinkHealth
	for time.Since(start) < timeout {
		h, err := in.health()
		if err == nil {
			last = h
			drained := true
			for _, s := range h {
				drained = drained && s.Depth == 0
			}
			if drained {
				return time.Since(start)
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	in.t.Fatalf("queue not drained after %v: %+v\n%s", timeout, last, crashTail(in.log(), 20))
	return 0
}

// logLines returns the JSON log records of the latest process whose level
// is level (or any level when level is "").
func (in *crashInstance) logLines(level string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(in.log()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		if level == "" || rec["level"] == level {
			out = append(out, rec)
		}
	}
	return out
}

// crashEvent is one webhook the tests post: a channel.message_in with a unique
// message id, so that the default dedup key and the receivers can tell
// events apart.
type crashEvent struct {
	id     string
	engine string // "wa" or "tg": what the rules route on
	body   []byte
}

func newCrashEvent(id, engine string) crashEvent {
	body := fmt.Sprintf(`{"event":"channel.message_in","timestamp":1738056000,"conversation_id":"conv_%s",`+
		`"need_human":0,"message":{"id":%q,"sender_name":"Crash \"Test\" User",`+
		`"channel":{"id":"channel_test","name":"Channel","engine":%q},`+
		`"content":{"type":"text","text":"Halo, pesan nomor %s"}}}`, id, id, engine, id)
	return crashEvent{id: id, engine: engine, body: []byte(body)}
}

func crashEvents(prefix string, n int) []crashEvent {
	evs := make([]crashEvent, n)
	for i := range evs {
		engine := "tg"
		if i%2 == 0 {
			engine = "wa"
		}
		evs[i] = newCrashEvent(fmt.Sprintf("%s-%05d", prefix, i), engine)
	}
	return evs
}

// crashPosted remembers the bytes of every event a test sent, so that the
// receivers can check that what they get is exactly that.
type crashPosted struct{ m sync.Map }

func (p *crashPosted) add(evs []crashEvent) {
	for _, ev := range evs {
		p.m.Store(ev.id, ev.body)
	}
}

// crashRequest is one request a recorder received.
type crashRequest struct {
	at      time.Time
	phase   int32
	eventID string
	code    int
}

// crashRecorder is a real HTTP sink destination that records every request by
// the message id of its body and answers as the test says.
type crashRecorder struct {
	t      *testing.T
	srv    *httptest.Server
	posted *crashPosted
	// status is the answer when answer is nil.
	status atomic.Int32
	// phase tags the requests, so tests can count those after a restart.
	phase atomic.Int32
	total atomic.Int64

	mu       sync.Mutex
	answer   func(id string, n int, h http.Header) int // n: this id's request count, this one included
	reqs     map[string][]crashRequest
	ok       map[string]int // 2xx answers per message id
	problems []string
}

func newCrashRecorder(t *testing.T, p *crashPosted, status int) *crashRecorder {
	r := &crashRecorder{t: t, posted: p, reqs: map[string][]crashRequest{}, ok: map[string]int{}}
	r.status.Store(int32(status))
	r.srv = httptest.NewServer(r)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *crashRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return // the router died mid-request
	}
	var doc struct {
		Message struct {
			ID string `json:"id"`
		} `json:"message"`
	}
	_ = json.Unmarshal(body, &doc)
	id := doc.Message.ID
	eid := req.Header.Get("X-Hookrouter-Event-Id")

	r.mu.Lock()
	if want, ok := r.posted.m.Load(id); !ok {
		r.problems = append(r.problems, fmt.Sprintf("received an event nobody posted: %.200q", body))
	} else if !bytes.Equal(want.([]byte), body) {
		r.problems = append(r.problems, fmt.Sprintf("%s: body %.200q, posted %.200q", id, body, want))
	}
	if eid == "" {
		r.problems = append(r.problems, id+": no X-Hookrouter-Event-Id")
	}
	prev := r.reqs[id]
	if len(prev) > 0 && prev[0].eventID != eid {
		r.problems = append(r.problems, fmt.Sprintf("%s: X-Hookrouter-Event-Id %q, earlier %q", id, eid, prev[0].eventID))
	}
	n := len(prev) + 1
	idx := len(prev)
	r.reqs[id] = append(prev, crashRequest{at: time.Now(), phase: r.phase.Load(), eventID: eid})
	answer := r.answer
	r.mu.Unlock()
	r.total.Add(1)

	code := int(r.status.Load())
	if answer != nil {
		code = answer(id, n, w.Header())
	}
	r.mu.Lock()
	r.reqs[id][idx].code = code
	if code/100 == 2 {
		r.ok[id]++
	}
	r.mu.Unlock()
	w.WriteHeader(code)
}

func (r *crashRecorder) setAnswer(f func(id string, n int, h http.Header) int) {
	r.mu.Lock()
	r.answer = f
	r.mu.Unlock()
}

// requests returns a copy of the requests received for id.
func (r *crashRecorder) requests(id string) []crashRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs[id])
}

func (r *crashRecorder) delivered(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ok[id]
}

// check fails the test for what the recorder found wrong and returns the
// number of extra deliveries (an id delivered n > 1 times counts n-1).
func (r *crashRecorder) check(name string) (dups, dupIDs int) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, p := range r.problems {
		if i == 10 {
			r.t.Errorf("sink %s: … %d more problems", name, len(r.problems)-10)
			break
		}
		r.t.Errorf("sink %s: %s", name, p)
	}
	for _, n := range r.ok {
		if n > 1 {
			dups += n - 1
			dupIDs++
		}
	}
	return dups, dupIDs
}

// Outcomes of one posted event, as the sender saw it.
const (
	crashNotSent  = 0  // the load stopped before sending it
	crashInFlight = -1 // sent, no answer: it may or may not have been accepted
	crashRefused  = -2 // connection refused: it never reached a process
)

// crashLoad is what a load's senders saw: status[i] is events[i]'s answer.
type crashLoad struct {
	events   []crashEvent
	status   []int
	killed   bool // the kill point was reached during the load
	accepted int
}

func (lr crashLoad) count(status int) int {
	n := 0
	for _, s := range lr.status {
		if s == status {
			n++
		}
	}
	return n
}

// load posts evs from clients concurrent senders. When killWhen (polled
// every millisecond with the number of 200s so far) returns true, the
// process is killed with SIGKILL and the senders stop: requests whose
// answer had not arrived are counted as in flight. A 200 that arrives after
// the kill was still written by the process after its fsync, so it counts.
func (in *crashInstance) load(evs []crashEvent, clients int, killWhen func(accepted int) bool) crashLoad {
	in.t.Helper()
	res := crashLoad{events: evs, status: make([]int, len(evs))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	// Requests are not bound to ctx: cancelling one whose 200 is already on
	// the wire would hide an accepted event.
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var next, accepted atomic.Int64
	var wg sync.WaitGroup
	url := in.url() + "/webhook"
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(evs) || ctx.Err() != nil {
					return
				}
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(evs[i].body))
				if err != nil {
					panic(err)
				}
				req.Header.Set("Authorization", crashSecret)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if errors.Is(err, syscall.ECONNREFUSED) {
					res.status[i] = crashRefused
					continue
				}
				if err != nil {
					res.status[i] = crashInFlight
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				res.status[i] = resp.StatusCode
				if resp.StatusCode == http.StatusOK {
					accepted.Add(1)
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var killErr error
	if killWhen != nil {
		proc, exited := in.proc, in.exited
		tick := time.NewTicker(time.Millisecond)
	poll:
		for {
			select {
			case <-done:
				break poll
			case <-tick.C:
				if killWhen(int(accepted.Load())) {
					killErr = in.kill(proc, exited)
					res.killed = true
					cancel()
					break poll
				}
			}
		}
		tick.Stop()
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		in.t.Fatal("load: senders did not finish within 20s")
	}
	if killErr != nil {
		in.t.Fatal(killErr)
	}
	res.accepted = res.count(http.StatusOK)
	return res
}

// crashConfig routes every event to good and WhatsApp events also to
// flaky, both http sinks with short retries so that a test does not wait.
func crashConfig(good, flaky *crashRecorder, maxBytes string) func(*crashInstance, int) string {
	return func(in *crashInstance, port int) string {
		return fmt.Sprintf(`listen: "127.0.0.1:%d"
data_dir: %q
log: {level: info, format: json}
sources:
  - name: platform
    path: /webhook
    auth: {type: header, secret: %q}
queue: {backend: disk, max_bytes: %s}
sinks:
  good:
    type: http
    url: %q
    timeout: 2s
    retry: {max_attempts: 1000, initial_backoff: 10ms, max_backoff: 200ms}
    breaker: {failures: 3, open_for: 200ms}
    workers: 8
  flaky:
    type: http
    url: %q
    timeout: 2s
    retry: {max_attempts: 1000, initial_backoff: 10ms, max_backoff: 200ms}
    breaker: {failures: 3, open_for: 200ms}
    workers: 8
rules:
  - name: everything
    when: "true"
    to: [good]
  - name: whatsapp
    when: message?.channel?.engine == "wa"
    to: [flaky]
`, port, in.data, crashSecret, maxBytes, good.srv.URL+"/good", flaky.srv.URL+"/flaky")
	}
}

// crashCheckRouted checks that every event answered 200 was delivered to each
// sink its rules chose, that no sink got an event its rules did not choose,
// and reports the in-flight events that were delivered anyway.
func crashCheckRouted(t *testing.T, loads []crashLoad, good, flaky *crashRecorder) {
	t.Helper()
	var missing []string
	var required, inflight, inflightDelivered, notSentDelivered int
	for _, lr := range loads {
		for i, ev := range lr.events {
			gotGood, gotFlaky := good.delivered(ev.id), flaky.delivered(ev.id)
			if ev.engine != "wa" && len(flaky.requests(ev.id)) > 0 {
				t.Errorf("%s (engine %s) was sent to flaky, which its rules did not choose", ev.id, ev.engine)
			}
			switch lr.status[i] {
			case http.StatusOK:
				required++
				if gotGood == 0 {
					missing = append(missing, ev.id+"→good")
				}
				if ev.engine == "wa" && gotFlaky == 0 {
					missing = append(missing, ev.id+"→flaky")
				}
			case crashInFlight:
				inflight++
				if gotGood > 0 {
					inflightDelivered++
				}
			case crashNotSent, crashRefused:
				if gotGood+gotFlaky > 0 {
					notSentDelivered++
				}
			default:
				t.Errorf("%s: answered %d", ev.id, lr.status[i])
			}
		}
	}
	if notSentDelivered > 0 {
		t.Errorf("%d events never sent (or refused a connection) were delivered", notSentDelivered)
	}
	if len(missing) > 0 {
		t.Errorf("PROMISE BROKEN: %d of the deliveries owed for %d events answered 200 never arrived, e.g. %q",
			len(missing), required, missing[:min(len(missing), 10)])
	}
	t.Logf("events answered 200: %d, all delivered: %v; in flight at a kill: %d (delivered anyway: %d)",
		required, len(missing) == 0, inflight, inflightDelivered)
}

// crashDeadLetters reads <data_dir>/dead-letter.jsonl.
func crashDeadLetters(t *testing.T, data string) []crashDeadLetter {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "dead-letter.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []crashDeadLetter
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var rec crashDeadLetter
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("dead-letter line %q: %v", line, err)
		}
		var doc struct {
			Message struct {
				ID string `json:"id"`
			} `json:"message"`
		}
		_ = json.Unmarshal(rec.Event.Payload, &doc)
		rec.messageID = doc.Message.ID
		out = append(out, rec)
	}
	return out
}

type crashDeadLetter struct {
	Sink     string `json:"sink"`
	EventID  string `json:"event_id"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error"`
	Event    struct {
		ID      string          `json:"id"`
		Payload json.RawMessage `json:"payload"`
	} `json:"event"`
	messageID string
}

// TestCrashKill9 is the product's core promise: an event answered 200 is
// delivered to every sink its rules chose, even across kill -9. The
// process is killed three times: under load with one sink down, under load
// while it delivers the recovered backlog, and right after a restart; then
// it is restarted a last time and must deliver everything.
func TestCrashKill9(t *testing.T) {
	p := &crashPosted{}
	good := newCrashRecorder(t, p, http.StatusOK)
	flaky := newCrashRecorder(t, p, http.StatusServiceUnavailable)
	in := newCrashInstance(t, crashConfig(good, flaky, "1GiB"))

	rounds := []struct {
		name     string
		flaky    int // flaky's answer during the round
		events   int
		killWhen func(accepted int, flakySince int64) bool
	}{
		{"under load, flaky down", http.StatusServiceUnavailable, 1500,
			func(acc int, _ int64) bool { return acc >= 600 }},
		{"delivering the recovered backlog, under load", http.StatusOK, 1000,
			func(acc int, since int64) bool { return acc >= 200 && since >= 150 }},
		{"right after a restart, flaky down again", http.StatusServiceUnavailable, 500,
			func(acc int, _ int64) bool { return acc >= 50 }},
	}
	var loads []crashLoad
	for i, rd := range rounds {
		start := time.Now()
		flaky.status.Store(int32(rd.flaky))
		flaky.phase.Store(int32(i))
		good.phase.Store(int32(i))
		in.start()
		flakyBase := flaky.total.Load()
		evs := crashEvents(fmt.Sprintf("r%d", i), rd.events)
		p.add(evs)
		lr := in.load(evs, 16, func(acc int) bool { return rd.killWhen(acc, flaky.total.Load()-flakyBase) })
		if !lr.killed {
			// The kill point came after the load: kill now, still a crash.
			t.Logf("round %d (%s): kill point not reached during the load", i, rd.name)
			in.killNow()
		}
		loads = append(loads, lr)
		t.Logf("round %d (%s): %d posted, %d answered 200, %d in flight at the kill, %d refused a connection, %d not sent; flaky got %d requests; %v",
			i, rd.name, len(evs)-lr.count(crashNotSent), lr.accepted, lr.count(crashInFlight), lr.count(crashRefused), lr.count(crashNotSent),
			flaky.total.Load()-flakyBase, time.Since(start).Round(time.Millisecond))
		if lr.accepted == 0 {
			t.Fatalf("round %d: nothing accepted\n%s", i, crashTail(in.log(), 20))
		}
	}

	flaky.status.Store(http.StatusOK)
	flaky.phase.Store(int32(len(rounds)))
	good.phase.Store(int32(len(rounds)))
	in.start()
	drain := in.waitDrained(20 * time.Second)
	t.Logf("final restart: backlog delivered in %v", drain.Round(time.Millisecond))

	crashCheckRouted(t, loads, good, flaky)
	gd, gdIDs := good.check("good")
	fd, fdIDs := flaky.check("flaky")
	t.Logf("duplicates (extra deliveries of one X-Hookrouter-Event-Id): good %d (%d events), flaky %d (%d events)", gd, gdIDs, fd, fdIDs)
	if dl := crashDeadLetters(t, in.data); len(dl) > 0 {
		t.Errorf("%d dead letters, want none (max_attempts 1000): first %+v", len(dl), dl[0])
	}
	if errs := in.logLines("ERROR"); len(errs) > 0 {
		t.Errorf("error logs after the last restart: %v", errs)
	}
}

// crashStrictConfig has one http sink, strict, with three attempts: enough for
// a test to catch deliveries between their attempts.
func crashStrictConfig(strict *crashRecorder) func(*crashInstance, int) string {
	return func(in *crashInstance, port int) string {
		return fmt.Sprintf(`listen: "127.0.0.1:%d"
data_dir: %q
sources:
  - name: platform
    path: /webhook
    auth: {type: header, secret: %q}
sinks:
  strict:
    type: http
    url: %q
    timeout: 20s
    retry: {max_attempts: 3, initial_backoff: 10ms, max_backoff: 20ms}
    breaker: {failures: 100, open_for: 1s}
    workers: 16
rules:
  - name: everything
    when: "true"
    to: [strict]
`, port, in.data, crashSecret, strict.srv.URL+"/strict")
	}
}

// postAll posts evs one by one and fails the test unless each is answered
// 200 (and not as a duplicate).
func (in *crashInstance) postAll(evs []crashEvent) {
	in.t.Helper()
	for _, ev := range evs {
		code, h := in.post(ev)
		if code != http.StatusOK || h.Get("X-Hookrouter-Duplicate") != "" {
			in.t.Fatalf("%s: answered %d (duplicate %q), want 200", ev.id, code, h.Get("X-Hookrouter-Duplicate"))
		}
	}
}

func (in *crashInstance) post(ev crashEvent) (int, http.Header) {
	in.t.Helper()
	req, err := http.NewRequest(http.MethodPost, in.url()+"/webhook", bytes.NewReader(ev.body))
	if err != nil {
		in.t.Fatal(err)
	}
	req.Header.Set("Authorization", crashSecret)
	resp, err := crashClient.Do(req)
	if err != nil {
		in.t.Fatalf("%s: %v", ev.id, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header
}

// crashWaitFor polls cond every 10 ms for up to timeout.
func crashWaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCrashRetryStages kills the process while deliveries are at different
// stages of their retries and checks that a restart resumes each where it
// was: dead letters stay written, a delivery that failed twice of three
// attempts is dead-lettered after one more failure (its budget is not
// reset), one told to wait (Retry-After) is not sent before its time, and
// a delivered one is not owed again.
func TestCrashRetryStages(t *testing.T) {
	p := &crashPosted{}
	strict := newCrashRecorder(t, p, http.StatusOK)
	in := newCrashInstance(t, crashStrictConfig(strict))

	dead, mid, later, done := crashEvents("dead", 5), crashEvents("mid", 4), crashEvents("later", 3), crashEvents("done", 3)
	const retryAfter = 2 * time.Second
	release := make(chan struct{}) // unblocks the third attempts held until the kill
	var held atomic.Int32
	strict.setAnswer(func(id string, n int, h http.Header) int {
		switch {
		case strings.HasPrefix(id, "dead-"):
			return http.StatusBadRequest
		case strings.HasPrefix(id, "mid-") && n <= 2:
			return http.StatusServiceUnavailable
		case strings.HasPrefix(id, "mid-"):
			// The third attempt: hold it until the process is killed, so
			// that it never has an outcome.
			held.Add(1)
			<-release
			return http.StatusServiceUnavailable
		case strings.HasPrefix(id, "later-") && n == 1:
			h.Set("Retry-After", fmt.Sprint(int(retryAfter.Seconds())))
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	all := slices.Concat(dead, mid, later, done)
	p.add(all)

	in.start()
	in.postAll(all)
	crashWaitFor(t, 10*time.Second, "every delivery at its stage", func() bool {
		for _, ev := range dead {
			if len(strict.requests(ev.id)) < 1 {
				return false
			}
		}
		for _, ev := range done {
			if strict.delivered(ev.id) < 1 {
				return false
			}
		}
		for _, ev := range later {
			if len(strict.requests(ev.id)) < 1 {
				return false
			}
		}
		return held.Load() == int32(len(mid)) && len(crashDeadLetters(t, in.data)) >= len(dead)
	})
	// Done and Retry are committed lazily, within 100 ms (see
	// router/queue/disk): give them time, so that what the restart sees is
	// the stage each delivery reached.
	time.Sleep(400 * time.Millisecond)
	in.killNow()
	killedAt := time.Now()
	close(release)

	before := crashDeadLetters(t, in.data)
	if len(before) != len(dead) {
		t.Errorf("dead letters before the restart: %d, want %d: %+v", len(before), len(dead), before)
	}
	strict.phase.Store(1)
	strict.setAnswer(func(id string, n int, h http.Header) int {
		switch {
		case strings.HasPrefix(id, "dead-"):
			return http.StatusBadRequest
		case strings.HasPrefix(id, "mid-"):
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	in.start()
	in.waitDrained(10 * time.Second)

	after := crashDeadLetters(t, in.data)
	if len(after) < len(before) || !slices.EqualFunc(after[:len(before)], before, func(a, b crashDeadLetter) bool { return a.EventID == b.EventID }) {
		t.Errorf("dead letters written before the kill are not all still there: before %d, after %d", len(before), len(after))
	}
	byID := map[string][]crashDeadLetter{}
	for _, dl := range after {
		byID[dl.messageID] = append(byID[dl.messageID], dl)
	}
	sentAfter := func(id string) (n int, first time.Time) {
		for _, r := range strict.requests(id) {
			if r.phase == 1 {
				if n == 0 {
					first = r.at
				}
				n++
			}
		}
		return n, first
	}
	for _, ev := range dead {
		dls := byID[ev.id]
		if len(dls) == 0 {
			t.Errorf("%s: answered 400, no dead letter", ev.id)
			continue
		}
		if dls[0].Attempts != 1 || !strings.Contains(dls[0].Error, "400") || dls[0].Sink != "strict" {
			t.Errorf("%s: dead letter %+v, want sink strict, 1 attempt, a 400", ev.id, dls[0])
		}
		if n, _ := sentAfter(ev.id); n > 0 || len(dls) > 1 {
			t.Logf("%s: sent again after the restart %d times, %d dead letters (its Done was not committed before the kill)", ev.id, n, len(dls))
		}
	}
	for _, ev := range mid {
		dls := byID[ev.id]
		n, _ := sentAfter(ev.id)
		if len(dls) != 1 || dls[0].Attempts != 3 || !strings.Contains(dls[0].Error, "503") {
			t.Errorf("%s: dead letters %+v, want one with 3 attempts and a 503", ev.id, dls)
		}
		// Two failures were recorded before the kill, so one more attempt
		// spends the budget. Three would mean the count started over.
		if n != 1 {
			t.Errorf("%s: %d attempts after the restart, want 1 (two of three were spent before the kill)", ev.id, n)
		}
	}
	var laterGaps []time.Duration
	for _, ev := range later {
		if len(byID[ev.id]) > 0 {
			t.Errorf("%s: dead-lettered: %+v", ev.id, byID[ev.id])
		}
		reqs := strict.requests(ev.id)
		if strict.delivered(ev.id) == 0 {
			t.Errorf("%s: never delivered: %+v", ev.id, reqs)
			continue
		}
		// The next attempt time is stored: not sooner than Retry-After
		// asked, counted from the failed attempt, even across the restart.
		if len(reqs) < 2 {
			t.Errorf("%s: %d requests, want a failure and a retry: %+v", ev.id, len(reqs), reqs)
			continue
		}
		gap := reqs[1].at.Sub(reqs[0].at)
		laterGaps = append(laterGaps, gap.Round(time.Millisecond))
		if gap < retryAfter-50*time.Millisecond {
			t.Errorf("%s: retried %v after its failure, Retry-After asked for %v", ev.id, gap, retryAfter)
		}
		if killedAt.Before(reqs[0].at.Add(retryAfter)) && reqs[1].phase != 1 {
			t.Errorf("%s: retried before the kill, which came before its Retry-After", ev.id)
		}
	}
	for _, ev := range done {
		if len(byID[ev.id]) > 0 {
			t.Errorf("%s: dead-lettered: %+v", ev.id, byID[ev.id])
		}
		if n, _ := sentAfter(ev.id); n > 0 {
			t.Logf("%s: delivered before the kill and again %d times after it", ev.id, n)
		}
	}
	dups, _ := strict.check("strict")
	t.Logf("dead letters %d; Retry-After %v honoured across the restart (gaps %v); duplicates %d", len(after), retryAfter, laterGaps, dups)
}

// TestCrashQueueFull fills a small disk queue through ingress while a sink
// is down: events beyond max_bytes get 503 with Retry-After and are not
// queued; a crash while full keeps the queue full and the keys of its
// events claimed; once the sink heals and the queue drains, the refused
// events sent again are accepted as new, not as duplicates, and delivered.
func TestCrashQueueFull(t *testing.T) {
	p := &crashPosted{}
	good := newCrashRecorder(t, p, http.StatusOK)
	flaky := newCrashRecorder(t, p, http.StatusServiceUnavailable)
	in := newCrashInstance(t, crashConfig(good, flaky, "64KiB"))
	in.start()

	evs := crashEvents("full", 2000)
	p.add(evs)
	var accepted, refused []crashEvent
	for _, ev := range evs {
		code, h := in.post(ev)
		switch code {
		case http.StatusOK:
			accepted = append(accepted, ev)
		case http.StatusServiceUnavailable:
			refused = append(refused, ev)
			if ra := h.Get("Retry-After"); ra == "" || ra == "0" {
				t.Errorf("%s: 503 with Retry-After %q", ev.id, ra)
			}
		default:
			t.Fatalf("%s: answered %d", ev.id, code)
		}
		if len(refused) == 60 {
			break
		}
	}
	t.Logf("64KiB queue: %d events accepted before the first 503, %d refused", len(accepted), len(refused))
	if len(refused) < 60 || len(accepted) == 0 {
		t.Fatalf("accepted %d, refused %d: the queue never filled", len(accepted), len(refused))
	}

	// A crash while full: the recovered backlog still counts against
	// max_bytes, and the keys of the queued events are claimed again.
	in.killNow()
	in.start()
	owed := accepted[slices.IndexFunc(accepted, func(ev crashEvent) bool { return ev.engine == "wa" })]
	if code, h := in.post(owed); code != http.StatusOK || h.Get("X-Hookrouter-Duplicate") != "true" {
		t.Errorf("after a restart: %s, still queued, answered %d duplicate %q; want 200 and X-Hookrouter-Duplicate: true",
			owed.id, code, h.Get("X-Hookrouter-Duplicate"))
	}
	// The restarted process counts only the deliveries still owed, where
	// the running one counted each event's until its last was done: it may
	// take a few more before it refuses again.
	var moreAccepted int
	for len(refused) > 0 {
		code, _ := in.post(refused[0])
		if code == http.StatusServiceUnavailable {
			break
		}
		if code != http.StatusOK {
			t.Fatalf("%s: answered %d", refused[0].id, code)
		}
		accepted = append(accepted, refused[0])
		refused = refused[1:]
		moreAccepted++
	}
	t.Logf("after a restart with the queue full: %d more accepted before a 503", moreAccepted)
	if len(refused) == 0 {
		t.Fatal("after a restart with the queue full, no event was refused: the recovered backlog is not counted")
	}

	flaky.status.Store(http.StatusOK)
	in.waitDrained(15 * time.Second)
	for _, ev := range refused {
		if n := len(good.requests(ev.id)) + len(flaky.requests(ev.id)); n > 0 {
			t.Errorf("%s was answered 503 but delivered %d times", ev.id, n)
		}
	}
	in.postAll(refused) // 200, and not as duplicates
	in.waitDrained(15 * time.Second)

	all := slices.Concat(accepted, refused)
	status := make([]int, len(all))
	for i := range status {
		status[i] = http.StatusOK
	}
	crashCheckRouted(t, []crashLoad{{events: all, status: status}}, good, flaky)
	gd, _ := good.check("good")
	fd, _ := flaky.check("flaky")
	t.Logf("duplicates: good %d, flaky %d", gd, fd)
}

// crashSegments lists the disk queue's log segments, oldest first.
func crashSegments(t *testing.T, data string) []string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(data, "queue", "seg-*.log"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no log segments in %s (%v)", data, err)
	}
	slices.Sort(segs)
	return segs
}

// crashWrittenEnd is where the written part of a (preallocated, so
// zero-filled) segment ends: after its last non-zero byte. Records end in
// a JSON body's "}" or a Retry's error text, never a zero.
func crashWrittenEnd(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return int64(bytes.LastIndexFunc(b, func(r rune) bool { return r != 0 }) + 1)
}

// TestCrashTornTail kills the process with events owed, damages its log
// the way a torn write or a lying disk would, and restarts it: it must
// start (no crash loop), say at ERROR level which file was damaged (at
// WARN for a torn end of the last segment, which a crash mid-write
// leaves), deliver every event it could still read, with its exact bytes,
// and accept new events; the start after that must be clean.
func TestCrashTornTail(t *testing.T) {
	tests := []struct {
		name string
		// harmful: damage an ERROR must report; torn: a WARN.
		harmful, torn bool
		damage        func(t *testing.T, path string, end int64)
	}{
		{"preallocated tail cut", false, false, func(t *testing.T, path string, end int64) {
			if err := os.Truncate(path, end); err != nil {
				t.Fatal(err)
			}
		}},
		{"torn write: the last record cut", false, true, func(t *testing.T, path string, end int64) {
			if err := os.Truncate(path, end-10); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage over records in the middle", true, false, func(t *testing.T, path string, end int64) {
			junk := make([]byte, 4096)
			rnd := rand.New(rand.NewPCG(1, 2))
			for i := range junk {
				junk[i] = byte(rnd.Uint32())
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(junk, end/2); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &crashPosted{}
			good := newCrashRecorder(t, p, http.StatusServiceUnavailable)
			flaky := newCrashRecorder(t, p, http.StatusServiceUnavailable)
			in := newCrashInstance(t, crashConfig(good, flaky, "1GiB"))
			in.start()
			evs := crashEvents("torn", 300)
			p.add(evs)
			if lr := in.load(evs, 8, nil); lr.accepted != len(evs) {
				t.Fatalf("%d of %d accepted", lr.accepted, len(evs))
			}
			in.killNow()

			segs := crashSegments(t, in.data)
			path := segs[len(segs)-1]
			end := crashWrittenEnd(t, path)
			tc.damage(t, path, end)
			t.Logf("%d segments; the last one, %s, written up to %d bytes, damaged", len(segs), filepath.Base(path), end)

			good.status.Store(http.StatusOK)
			flaky.status.Store(http.StatusOK)
			in.start()
			in.waitDrained(15 * time.Second)

			errLogs := in.logLines("ERROR")
			salvaged, recovered := -1, -1
			warned := false
			for _, rec := range errLogs {
				b, _ := json.Marshal(rec)
				if !strings.Contains(string(b), filepath.Join(in.data, "queue")) {
					t.Errorf("ERROR log does not name the queue's files: %s", b)
				}
				if rec["msg"] == "queue salvage finished" {
					n, _ := rec["deliveries"].(float64)
					salvaged = int(n)
				}
			}
			for _, rec := range in.logLines("") {
				if rec["msg"] == "queue recovered" {
					n, _ := rec["deliveries"].(float64)
					recovered = int(n)
				}
				if rec["level"] == "WARN" && strings.Contains(fmt.Sprint(rec["msg"]), "torn") {
					warned = true
				}
			}
			switch {
			case tc.harmful && len(errLogs) == 0:
				t.Errorf("no ERROR log about the damaged log segment\n%s", crashTail(in.log(), 20))
			case !tc.harmful && len(errLogs) > 0:
				t.Errorf("ERROR logs for a torn or harmless end: %v", errLogs)
			case len(errLogs) > 0 && salvaged < 0:
				t.Errorf("damage logged but no salvage summary: %v", errLogs)
			case tc.torn != warned:
				t.Errorf("torn end warned %v, want %v\n%s", warned, tc.torn, crashTail(in.log(), 20))
			}
			if m, _ := filepath.Glob(filepath.Join(in.data, "queue", "*.corrupt-*")); len(m) != min(len(errLogs), 1) {
				t.Errorf("damaged segment kept as %q, want one *.corrupt-* copy when damage is logged", m)
			}

			// Every delivery the restarted process could read was made.
			owed, made := 0, 0
			for _, ev := range evs {
				owed++
				if good.delivered(ev.id) > 0 {
					made++
				}
				if ev.engine == "wa" {
					owed++
					if flaky.delivered(ev.id) > 0 {
						made++
					}
				}
			}
			switch {
			case made != recovered:
				t.Errorf("%d deliveries made after the restart, the queue recovered %d", made, recovered)
			case salvaged >= 0 && salvaged != recovered:
				t.Errorf("salvage found %d deliveries, the queue recovered %d", salvaged, recovered)
			case !tc.harmful && !tc.torn && made != owed:
				t.Errorf("PROMISE BROKEN: %d of %d deliveries made after a restart that reported no damage", made, owed)
			case tc.torn && owed-made > 2:
				t.Errorf("%d deliveries lost to a torn last record", owed-made)
			}
			t.Logf("deliveries owed %d, made after the restart %d, lost to the damage %d", owed, made, owed-made)

			fresh := crashEvents("after", 10)
			p.add(fresh)
			in.postAll(fresh)
			in.waitDrained(10 * time.Second)
			for _, ev := range fresh {
				if good.delivered(ev.id) == 0 {
					t.Errorf("%s, accepted after the restart, not delivered", ev.id)
				}
			}
			in.killNow()
			in.start()
			if errs := in.logLines("ERROR"); len(errs) > 0 {
				t.Errorf("the start after the damage logged errors: %v", errs)
			}
			good.check("good")
			flaky.check("flaky")
		})
	}
}

// TestServeUnwritableDataDir: a data_dir where files cannot be created
// stops serve at once with exit 1 and a message naming the path, rather
// than a process that accepts events it cannot keep.
func TestServeUnwritableDataDir(t *testing.T) {
	bin := hookrouterBinary(t)
	tests := []struct {
		name  string
		setup func(t *testing.T, data string) string // returns the path the message must name
	}{
		{"data_dir is a file", func(t *testing.T, data string) string {
			crashWriteFile(t, data, "")
			return data
		}},
		{"queue dir is a file", func(t *testing.T, data string) string {
			crashWriteFile(t, filepath.Join(data, "queue"), "")
			return filepath.Join(data, "queue")
		}},
		{"queue lock file is a directory", func(t *testing.T, data string) string {
			crashMkdir(t, filepath.Join(data, "queue", "lock"))
			return filepath.Join(data, "queue", "lock")
		}},
		{"dead-letter file is a directory", func(t *testing.T, data string) string {
			crashMkdir(t, filepath.Join(data, "dead-letter.jsonl"))
			return filepath.Join(data, "dead-letter.jsonl")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			want := tc.setup(t, data)
			cfg := filepath.Join(dir, "rules.yaml")
			crashWriteFile(t, cfg, fmt.Sprintf(`listen: "127.0.0.1:%d"
admin_listen: "127.0.0.1:0"
data_dir: %q
sources:
  - {name: platform, path: /webhook, auth: {type: none}}
sinks:
  out: {type: http, url: "http://127.0.0.1:1/"}
rules:
  - {name: all, when: "true", to: [out]}
`, crashFreePort(t), data))
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "serve", "-config", cfg)
			cmd.Env = crashChildEnv()
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			start := time.Now()
			err := cmd.Run()
			took := time.Since(start)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("serve: %v, want exit status 1", err)
			}
			if took > time.Second {
				t.Errorf("serve took %v to give up, want under a second", took.Round(time.Millisecond))
			}
			out := stderr.String()
			if !strings.Contains(out, want) {
				t.Errorf("message does not name %s:\n%s", want, out)
			}
			if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
				t.Errorf("a crash, not a message:\n%s", out)
			}
			t.Logf("%v: %s", took.Round(time.Millisecond), strings.TrimSpace(out))
		})
	}
}

func crashWriteFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func crashMkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
}
