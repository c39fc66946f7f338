package mqtt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
)

// The machine's Mosquitto. Each test uses topics of its own.
const machineURL = "tcp://127.0.0.1:1883"

const secret = "s3cr3t-mqtt-marker"

func unique() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// subscriber is a QoS 1 subscription to prefix/# on addr.
type subscriber struct {
	t       *testing.T
	c       *paho.Client
	prefix  string
	mu      sync.Mutex
	got     []*paho.Publish
	barrier chan string
	n       int
}

func subscribe(t *testing.T, addr, prefix string) *subscriber {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &subscriber{t: t, prefix: prefix, barrier: make(chan string, 16)}
	s.c = paho.NewClient(paho.ClientConfig{Conn: nc, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			if pr.Packet.Topic == prefix+"/barrier" {
				s.barrier <- string(pr.Packet.Payload)
				return true, nil
			}
			s.mu.Lock()
			s.got = append(s.got, pr.Packet)
			s.mu.Unlock()
			return true, nil
		},
	}})
	if _, err := s.c.Connect(t.Context(), &paho.Connect{ClientID: "hrtest-sub-" + unique(), CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.c.Disconnect(&paho.Disconnect{}) })
	if _, err := s.c.Subscribe(t.Context(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: prefix + "/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// messages returns what has arrived. A barrier message published after
// the sink's PUBACKs comes back after them (Mosquitto forwards in the order
// it processed), so once it is back, everything acknowledged has arrived.
func (s *subscriber) messages() []*paho.Publish {
	s.n++
	mark := strconv.Itoa(s.n)
	if _, err := s.c.Publish(context.Background(), &paho.Publish{Topic: s.prefix + "/barrier", QoS: 1, Payload: []byte(mark)}); err != nil {
		s.t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-s.barrier:
			if m != mark {
				continue
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			return append([]*paho.Publish(nil), s.got...)
		case <-timeout:
			s.t.Fatal("barrier message did not come back")
		}
	}
}

func eventID(p *paho.Publish) string {
	if p.Properties == nil {
		return ""
	}
	return p.Properties.User.Get(EventIDProperty)
}

func bodies(t *testing.T, ms []*paho.Publish) [][]byte {
	var out [][]byte
	for _, m := range ms {
		if eventID(m) == "" {
			t.Errorf("message on %s without %s", m.Topic, EventIDProperty)
		}
		out = append(out, m.Payload)
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

func TestConformance(t *testing.T) {
	sinktest.Run(t, sinktest.Harness{
		Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			prefix := "hrtest/" + unique()
			sub := subscribe(t, "127.0.0.1:1883", prefix)
			return newSink(t, Config{URL: machineURL, Topic: prefix + "/{{ .event }}"}), func() [][]byte { return bodies(t, sub.messages()) }
		},
		Failing: []sinktest.Failing{
			{Name: "topic renders empty", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: machineURL, Topic: "{{ .nosuchfield }}"})
			}},
			{Name: "connection refused", New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: fmt.Sprintf("tcp://u:%s@127.0.0.1:%d", secret, closedPort(t)), Topic: "t"})
			}},
		},
		Secret: secret,
	})
}

// A consumer reads back exactly the events sent, each once, with its id in
// the hookrouter-event-id property, on the topic its template gives.
func TestReadBack(t *testing.T) {
	prefix := "hrtest/" + unique()
	sub := subscribe(t, "127.0.0.1:1883", prefix)
	s := newSink(t, Config{URL: machineURL, Topic: prefix + "/{{ .event }}/{{ .message.id }}"})
	defer s.Close(t.Context())
	want := map[string]string{}
	var evs []*sinks.Event
	for i := range 20 {
		ev := sinktest.Variant(i)
		evs = append(evs, ev)
		want[ev.ID] = fmt.Sprintf("%s/channel.message_in/msg_%04d", prefix, i)
	}
	if errs := s.SendBatch(t.Context(), evs); errs != nil {
		t.Fatalf("batch: %v", errs)
	}
	got := sub.messages()
	if len(got) != len(evs) {
		t.Fatalf("%d messages, want %d", len(got), len(evs))
	}
	for _, m := range got {
		id := eventID(m)
		if want[id] != m.Topic {
			t.Errorf("message %q on %q, want topic %q", id, m.Topic, want[id])
		}
		delete(want, id)
	}
	if len(want) != 0 {
		t.Errorf("missing %v", want)
	}
}

// proxy forwards connections to the broker until cut, which drops every
// connection and refuses new ones until restore: to the client, a broker
// restart.
type proxy struct {
	l    net.Listener
	mu   sync.Mutex
	down bool
	open map[net.Conn]struct{}
}

func newProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, open: map[net.Conn]struct{}{}}
	t.Cleanup(func() { l.Close(); p.cut() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.open[c], p.open[u] = struct{}{}, struct{}{}
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close(); c.Close() }()
			go func() { io.Copy(c, u); u.Close(); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.open {
		c.Close()
		delete(p.open, c)
	}
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// The connection to the broker is lost in the middle of a run, as in a
// broker restart, and comes back: publishes fail retryably meanwhile, the
// sink dials again, and a subscriber (connected directly, so that it sees
// everything the broker accepted) gets every event at least once (a PUBACK
// lost with the connection may bring a second copy).
func TestReconnect(t *testing.T) {
	prefix := "hrtest/" + unique()
	sub := subscribe(t, "127.0.0.1:1883", prefix)
	p := newProxy(t, "127.0.0.1:1883")
	s := newSink(t, Config{URL: "tcp://" + p.l.Addr().String(), Topic: prefix + "/{{ .event }}", Timeout: time.Second})
	defer s.Close(t.Context())
	evs, _ := sinktest.Outage(t, s, 60, p.cut, p.restore)
	seen := map[string]int{}
	for _, m := range sub.messages() {
		seen[eventID(m)]++
	}
	extra := 0
	for _, ev := range evs {
		if seen[ev.ID] == 0 {
			t.Errorf("event %s lost", ev.ID)
		}
		extra += max(seen[ev.ID]-1, 0)
	}
	t.Logf("%d events, %d extra copies from lost PUBACKs", len(evs), extra)
}

func TestValidate(t *testing.T) {
	two := 2
	c := Config{URL: "mqtt://x", Topic: "{{ .a", QoS: &two, Timeout: -1}
	var got []string
	for _, err := range c.Validate() {
		got = append(got, err.Field)
	}
	if fmt.Sprint(got) != "[url topic qos timeout]" {
		t.Fatalf("fields %v", got)
	}
}
