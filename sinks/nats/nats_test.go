package nats

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
)

// The machine's NATS server, with JetStream. Each test uses subjects and a
// stream of its own.
const machineURL = "nats://127.0.0.1:4222"

const secret = "s3cr3t-nats-marker"

func unique() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// stream creates a stream capturing hrtest.ID.> and returns its subject
// prefix and a function reading back its messages, in order.
func stream(t *testing.T, url string) (prefix string, read func() []*nats.Msg) {
	t.Helper()
	id := unique()
	prefix = "hrtest." + id
	nc := connect(t, url)
	js, _ := jetstream.New(nc)
	st, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "HRTEST_" + id, Subjects: []string{prefix + ".>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	t.Cleanup(func() { js.DeleteStream(context.Background(), "HRTEST_"+id) })
	return prefix, func() []*nats.Msg {
		info, err := st.Info(t.Context())
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		var out []*nats.Msg
		for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
			m, err := st.GetMsg(t.Context(), seq)
			if err != nil {
				t.Fatalf("get %d: %v", seq, err)
			}
			out = append(out, &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header})
		}
		return out
	}
}

// subscribe subscribes to prefix.> on the core server and returns a function
// reading what has arrived: once the sink's Send returned, the server has
// the message, and a flush of this connection makes sure it is here too.
func subscribe(t *testing.T, url, prefix string) func() []*nats.Msg {
	nc := connect(t, url)
	sub, err := nc.SubscribeSync(prefix + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []*nats.Msg
	return func() []*nats.Msg {
		mu.Lock()
		defer mu.Unlock()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := sub.NextMsg(10 * time.Millisecond)
			if err != nil {
				break
			}
			got = append(got, m)
		}
		return append([]*nats.Msg(nil), got...)
	}
}

func data(t *testing.T, msgs []*nats.Msg) [][]byte {
	var out [][]byte
	for _, m := range msgs {
		if m.Header.Get(jetstream.MsgIDHeader) == "" {
			t.Errorf("message on %s without Nats-Msg-Id", m.Subject)
		}
		out = append(out, m.Data)
	}
	return out
}

func newSink(t *testing.T, cfg Config) *Sink {
	t.Helper()
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	return s
}

func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServer runs a nats-server of the test's own on a free port, with
// JetStream in a temporary folder, and returns its URL and functions that
// kill it and start it again on the same port and folder.
func startServer(t *testing.T, args ...string) (url string, stop, start func()) {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		t.Fatal("nats-server not found")
	}
	dir := t.TempDir()
	port := closedPort(t)
	var cmd *exec.Cmd
	start = func() {
		cmd = exec.Command(bin, append([]string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir}, args...)...)
		log, _ := os.Create(filepath.Join(dir, "log"))
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				c.Close()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("nats-server did not start")
			}
			time.Sleep(20 * time.Millisecond) // polling for readiness
		}
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
	start()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			stop()
		}
	})
	return fmt.Sprintf("nats://127.0.0.1:%d", port), stop, start
}

func TestConformance(t *testing.T) {
	authURL, _, _ := startServer(t, "--user", "hook", "--pass", "right-password")
	failing := []sinktest.Failing{
		{Name: "bad credentials", Permanent: true, New: func(t *testing.T) sinks.Sink {
			u := authURL[:len("nats://")] + "hook:" + secret + "@" + authURL[len("nats://"):]
			return newSink(t, Config{URL: u, Subject: "x.y"})
		}},
		{Name: "connection refused", New: func(t *testing.T) sinks.Sink {
			return newSink(t, Config{URL: fmt.Sprintf("nats://u:%s@127.0.0.1:%d", secret, closedPort(t)), Subject: "x.y", Timeout: time.Second})
		}},
		{Name: "subject renders empty", Permanent: true, New: func(t *testing.T) sinks.Sink {
			return newSink(t, Config{URL: machineURL, Subject: "{{ .nosuchfield }}"})
		}},
	}
	t.Run("core", func(t *testing.T) {
		sinktest.Run(t, sinktest.Harness{
			Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
				prefix := "hrtest." + unique()
				read := subscribe(t, machineURL, prefix)
				return newSink(t, Config{URL: machineURL, Subject: prefix + ".{{ .event }}"}), func() [][]byte { return data(t, read()) }
			},
			Failing: failing,
			Secret:  secret,
		})
	})
	t.Run("jetstream", func(t *testing.T) {
		sinktest.Run(t, sinktest.Harness{
			Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
				prefix, read := stream(t, machineURL)
				return newSink(t, Config{URL: machineURL, Subject: prefix + ".{{ .event }}", JetStream: true}), func() [][]byte { return data(t, read()) }
			},
			Failing: append(failing, sinktest.Failing{Name: "no stream captures the subject", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: machineURL, Subject: "hrtest.nostream." + unique(), JetStream: true})
			}}),
			Secret: secret,
		})
	})
}

// A consumer reads back exactly the events sent, each once, with its id on
// the subject its template gives; a re-delivery is stored once.
func TestReadBack(t *testing.T) {
	prefix, read := stream(t, machineURL)
	s := newSink(t, Config{URL: machineURL, Subject: prefix + ".{{ .event }}.{{ .message.id }}", JetStream: true})
	defer s.Close(t.Context())
	var evs []*sinks.Event
	for i := range 20 {
		evs = append(evs, sinktest.Variant(i))
	}
	if errs := s.SendBatch(t.Context(), evs); errs != nil {
		t.Fatalf("batch: %v", errs)
	}
	if err := s.Send(t.Context(), evs[3]); err != nil { // a re-delivery
		t.Fatalf("resend: %v", err)
	}
	got := read()
	if len(got) != len(evs) {
		t.Fatalf("%d messages in the stream, want %d", len(got), len(evs))
	}
	for i, m := range got {
		ev := evs[i]
		if id := m.Header.Get(jetstream.MsgIDHeader); id != ev.ID {
			t.Errorf("message %d: Nats-Msg-Id %q, want %q", i, id, ev.ID)
		}
		if want := fmt.Sprintf("%s.channel.message_in.msg_%04d", prefix, i); m.Subject != want {
			t.Errorf("message %d: subject %q, want %q", i, m.Subject, want)
		}
		if !bytes.Equal(m.Data, ev.Body) {
			t.Errorf("message %d: data differs from the body", i)
		}
	}
}

// The server is killed in the middle of a run and started again: publishes
// fail retryably meanwhile, the connection comes back, and the stream holds
// every event exactly once (Nats-Msg-Id deduplicates an acknowledgement lost
// with the server).
func TestOutage(t *testing.T) {
	url, stop, start := startServer(t)
	prefix, _ := stream(t, url)
	s := newSink(t, Config{URL: url, Subject: prefix + ".{{ .event }}", JetStream: true, Timeout: time.Second})
	defer s.Close(t.Context())
	evs, _ := sinktest.Outage(t, s, 60, stop, start)
	_, read := streamOf(t, url, prefix)
	seen := map[string]int{}
	for _, m := range read() {
		seen[m.Header.Get(jetstream.MsgIDHeader)]++
	}
	for _, ev := range evs {
		if seen[ev.ID] != 1 {
			t.Errorf("event %s stored %d times", ev.ID, seen[ev.ID])
		}
	}
	if len(seen) != len(evs) {
		t.Errorf("%d distinct messages, want %d", len(seen), len(evs))
	}
}

// streamOf reads the stream made by stream for prefix.
func streamOf(t *testing.T, url, prefix string) (jetstream.Stream, func() []*nats.Msg) {
	nc := connect(t, url)
	js, _ := jetstream.New(nc)
	st, err := js.Stream(t.Context(), "HRTEST_"+prefix[len("hrtest."):])
	if err != nil {
		t.Fatal(err)
	}
	return st, func() []*nats.Msg {
		info, _ := st.Info(t.Context())
		var out []*nats.Msg
		for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
			m, err := st.GetMsg(t.Context(), seq)
			if err != nil {
				t.Fatalf("get %d: %v", seq, err)
			}
			out = append(out, &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header})
		}
		return out
	}
}

func TestValidate(t *testing.T) {
	c := Config{URL: "http://x", Subject: "{{ .a", Timeout: -1}
	var got []string
	for _, err := range c.Validate() {
		got = append(got, err.Field)
	}
	if fmt.Sprint(got) != "[url subject timeout]" {
		t.Fatalf("fields %v", got)
	}
	c = Config{}
	if n := len(c.Validate()); n != 2 {
		t.Fatalf("empty config: %d problems, want 2", n)
	}
}
