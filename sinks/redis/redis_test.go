package redis

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
)

// The machine's Redis. Each test uses stream keys of its own.
const machineURL = "redis://127.0.0.1:6379/0"

const secret = "s3cr3t-redis-marker"

func client(t *testing.T, url string) *redis.Client {
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// entries reads back the stream key.
func entries(t *testing.T, c *redis.Client, key string) []redis.XMessage {
	msgs, err := c.XRange(context.Background(), key, "-", "+").Result()
	if err != nil {
		t.Fatalf("xrange %s: %v", key, err)
	}
	return msgs
}

func payloads(t *testing.T, msgs []redis.XMessage) [][]byte {
	var out [][]byte
	for _, m := range msgs {
		if m.Values["id"] == "" || m.Values["source"] != "test" || m.Values["received_at"] == "" {
			t.Errorf("entry %s lacks its id, source or received_at: %v", m.ID, m.Values)
		}
		out = append(out, []byte(m.Values["payload"].(string)))
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

// startServer runs a redis-server of the test's own on a free port, with
// an append-only file synced on every write, killed with SIGKILL when
// stopped (and started again from the same file).
func startServer(t *testing.T, args ...string) (*sinktest.Server, string) {
	t.Helper()
	bin := sinktest.Binary(t, "redis-server", "/usr/bin")
	dir := t.TempDir()
	port := sinktest.FreePort(t)
	logFile := filepath.Join(dir, "log")
	srv := sinktest.StartServer(t, sinktest.ServerSpec{
		Name: "redis-server",
		Port: port,
		Command: func() *exec.Cmd {
			return exec.Command(bin, append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
				"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", logFile}, args...)...)
		},
		Log: logFile,
	})
	return srv, fmt.Sprintf("redis://127.0.0.1:%d/0", port)
}

func TestConformance(t *testing.T) {
	c := client(t, machineURL)
	_, authURL := startServer(t, "--requirepass", "right-password")
	sinktest.Run(t, sinktest.Harness{
		Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			key := "hrtest:" + sinktest.Unique()
			t.Cleanup(func() { c.Del(context.Background(), key) })
			return newSink(t, Config{URL: machineURL, Stream: key}), func() [][]byte { return payloads(t, entries(t, c, key)) }
		},
		Failing: []sinktest.Failing{
			{Name: "bad password", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: "redis://:" + secret + "@" + authURL[len("redis://"):], Stream: "s"})
			}},
			{Name: "key is not a stream", Permanent: true, New: func(t *testing.T) sinks.Sink {
				key := "hrtest:" + sinktest.Unique()
				c.Set(t.Context(), key, "a string", time.Minute)
				return newSink(t, Config{URL: machineURL, Stream: key})
			}},
			{Name: "stream renders empty", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: machineURL, Stream: "{{ .nosuchfield }}"})
			}},
			{Name: "connection refused", New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: fmt.Sprintf("redis://:%s@127.0.0.1:%d/0", secret, sinktest.FreePort(t)), Stream: "s"})
			}},
		},
		Secret: secret,
	})
}

// A consumer reads back exactly the events sent, each once, with its id and
// on the stream its template gives; max_len trims approximately.
func TestReadBack(t *testing.T) {
	c := client(t, machineURL)
	prefix := "hrtest:" + sinktest.Unique()
	s := newSink(t, Config{URL: machineURL, Stream: prefix + ":{{ .event }}"})
	defer s.Close(t.Context())
	var evs []*sinks.Event
	for i := range 20 {
		evs = append(evs, sinktest.Variant(i))
	}
	if errs := s.SendBatch(t.Context(), evs); errs != nil {
		t.Fatalf("batch: %v", errs)
	}
	key := prefix + ":channel.message_in"
	t.Cleanup(func() { c.Del(context.Background(), key) })
	got := entries(t, c, key)
	if len(got) != len(evs) {
		t.Fatalf("%d entries, want %d", len(got), len(evs))
	}
	for i, m := range got {
		if m.Values["id"] != evs[i].ID || !bytes.Equal([]byte(m.Values["payload"].(string)), evs[i].Body) ||
			m.Values["received_at"] != "2025-01-28T09:20:00.123456789Z" {
			t.Errorf("entry %d = %v, want event %s", i, m.Values, evs[i].ID)
		}
	}

	trimmed := prefix + ":trimmed"
	t.Cleanup(func() { c.Del(context.Background(), trimmed) })
	ts := newSink(t, Config{URL: machineURL, Stream: trimmed, MaxLen: 10})
	defer ts.Close(t.Context())
	for i := range 500 {
		if err := ts.Send(t.Context(), sinktest.Variant(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Approximate trimming removes whole nodes (100 entries by default).
	if n := c.XLen(t.Context(), trimmed).Val(); n < 10 || n > 200 {
		t.Errorf("stream holds %d entries with max_len 10", n)
	}
}

// The server is killed in the middle of a run and started again: XADDs fail
// retryably meanwhile, the client reconnects, and every event is in the
// stream. (An answer lost with the server may have its entry added twice:
// Redis has no idempotent XADD; the count of such copies is logged.)
func TestOutage(t *testing.T) {
	srv, url := startServer(t)
	key := "hrtest:" + sinktest.Unique()
	s := newSink(t, Config{URL: url, Stream: key, Timeout: time.Second})
	defer s.Close(t.Context())
	evs, _ := sinktest.Outage(t, s, 60, srv.Stop, srv.Start)
	var ids []string
	for _, m := range entries(t, client(t, url), key) {
		ids = append(ids, m.Values["id"].(string))
	}
	sinktest.Arrived(t, evs, ids, false)
}

func TestValidate(t *testing.T) {
	c := Config{URL: "http://x", Stream: "{{ .a", MaxLen: -1, Timeout: -1}
	var got []string
	for _, err := range c.Validate() {
		got = append(got, err.Field)
	}
	if fmt.Sprint(got) != "[url stream max_len timeout]" {
		t.Fatalf("fields %v", got)
	}
}
