package nats

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
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
	id := sinktest.Unique()
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

// startServer runs a nats-server of the test's own on a free port, with
// JetStream in a temporary folder, killed with SIGKILL when stopped.
func startServer(t *testing.T, args ...string) (*sinktest.Server, string) {
	t.Helper()
	bin := sinktest.Binary(t, "nats-server", "/usr/sbin")
	dir := t.TempDir()
	port := sinktest.FreePort(t)
	logFile := filepath.Join(dir, "log")
	srv := sinktest.StartServer(t, sinktest.ServerSpec{
		Name: "nats-server",
		Port: port,
		Command: func() *exec.Cmd {
			return exec.Command(bin, append([]string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir, "-l", logFile}, args...)...)
		},
		Log: logFile,
	})
	return srv, fmt.Sprintf("nats://127.0.0.1:%d", port)
}

func TestConformance(t *testing.T) {
	_, authURL := startServer(t, "--user", "hook", "--pass", "right-password")
	failing := []sinktest.Failing{
		{Name: "bad credentials", Permanent: true, New: func(t *testing.T) sinks.Sink {
			u := authURL[:len("nats://")] + "hook:" + secret + "@" + authURL[len("nats://"):]
			return newSink(t, Config{URL: u, Subject: "x.y"})
		}},
		{Name: "connection refused", New: func(t *testing.T) sinks.Sink {
			return newSink(t, Config{URL: fmt.Sprintf("nats://u:%s@127.0.0.1:%d", secret, sinktest.FreePort(t)), Subject: "x.y", Timeout: time.Second})
		}},
		{Name: "subject renders empty", Permanent: true, New: func(t *testing.T) sinks.Sink {
			return newSink(t, Config{URL: machineURL, Subject: "{{ .nosuchfield }}"})
		}},
	}
	t.Run("core", func(t *testing.T) {
		sinktest.Run(t, sinktest.Harness{
			Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
				prefix := "hrtest." + sinktest.Unique()
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
				return newSink(t, Config{URL: machineURL, Subject: "hrtest.nostream." + sinktest.Unique(), JetStream: true})
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
	srv, url := startServer(t)
	prefix, _ := stream(t, url)
	s := newSink(t, Config{URL: url, Subject: prefix + ".{{ .event }}", JetStream: true, Timeout: time.Second})
	defer s.Close(t.Context())
	evs, _ := sinktest.Outage(t, s, 60, srv.Stop, srv.Start)
	_, read := streamOf(t, url, prefix)
	var ids []string
	for _, m := range read() {
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	sinktest.Arrived(t, evs, ids, true)
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
