package mqtt

import (
	"context"
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

	"github.com/eclipse/paho.golang/paho"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
)

// The machine's Mosquitto. Each test uses topics of its own.
const machineURL = "tcp://127.0.0.1:1883"

const secret = "s3cr3t-mqtt-marker"

// subscriber is a QoS 1 subscription to prefix/# on addr.
type subscriber struct {
	t       *testing.T
	addr    string
	prefix  string
	id      string // client id; the session outlives the connection when persistent
	persist bool
	mu      sync.Mutex
	c       *paho.Client
	got     []*paho.Publish
	barrier chan string
	n       int
}

func subscribe(t *testing.T, addr, prefix string) *subscriber {
	return newSubscriber(t, addr, prefix, false)
}

// newSubscriber subscribes; with persist its session (subscription and the
// messages queued for it) outlives the connection and a broker restart, and
// reconnect picks it up again.
func newSubscriber(t *testing.T, addr, prefix string, persist bool) *subscriber {
	t.Helper()
	s := &subscriber{t: t, addr: addr, prefix: prefix, id: "hrtest-sub-" + sinktest.Unique(), persist: persist, barrier: make(chan string, 16)}
	// A persistent session starts without clean start: Mosquitto saves no
	// session that began with it, whatever its expiry.
	s.connect(!persist)
	t.Cleanup(func() {
		// Not under s.mu: Disconnect waits for a message callback, which
		// takes it.
		s.mu.Lock()
		c := s.c
		s.mu.Unlock()
		c.Disconnect(&paho.Disconnect{})
	})
	if _, err := s.c.Subscribe(t.Context(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: prefix + "/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *subscriber) connect(clean bool) {
	s.t.Helper()
	nc, err := net.Dial("tcp", s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: nc, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			if pr.Packet.Topic == s.prefix+"/barrier" {
				select {
				case s.barrier <- string(pr.Packet.Payload):
				default: // a stale copy nobody waits for: never block the client
				}
				return true, nil
			}
			s.mu.Lock()
			s.got = append(s.got, pr.Packet)
			s.mu.Unlock()
			return true, nil
		},
	}})
	cp := &paho.Connect{ClientID: s.id, CleanStart: clean, KeepAlive: 30}
	if s.persist {
		expiry := uint32(3600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	if _, err := c.Connect(s.t.Context(), cp); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.c = c
	s.mu.Unlock()
}

// reconnect connects again to the subscriber's session, after the broker
// dropped the connection.
func (s *subscriber) reconnect() { s.connect(false) }

// messages returns what has arrived. A barrier message published after
// the sink's PUBACKs comes back after them (Mosquitto forwards in the order
// it processed), so once it is back, everything acknowledged has arrived.
func (s *subscriber) messages() []*paho.Publish {
	s.n++
	mark := strconv.Itoa(s.n)
	s.mu.Lock()
	c := s.c
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: s.prefix + "/barrier", QoS: 1, Payload: []byte(mark)}); err != nil {
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

func TestConformance(t *testing.T) {
	sinktest.Run(t, sinktest.Harness{
		Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			prefix := "hrtest/" + sinktest.Unique()
			sub := subscribe(t, "127.0.0.1:1883", prefix)
			return newSink(t, Config{URL: machineURL, Topic: prefix + "/{{ .event }}"}), func() [][]byte { return bodies(t, sub.messages()) }
		},
		Failing: []sinktest.Failing{
			{Name: "topic renders empty", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: machineURL, Topic: "{{ .nosuchfield }}"})
			}},
			{Name: "connection refused", New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: fmt.Sprintf("tcp://u:%s@127.0.0.1:%d", secret, sinktest.FreePort(t)), Topic: "t"})
			}},
		},
		Secret: secret,
	})
}

// A consumer reads back exactly the events sent, each once, with its id in
// the hookrouter-event-id property, on the topic its template gives.
func TestReadBack(t *testing.T) {
	prefix := "hrtest/" + sinktest.Unique()
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

// startMosquitto runs a Mosquitto of the test's own on a free port, with
// persistence in a temporary folder, stopped with SIGTERM (a service
// restart: it saves its sessions and their queued messages as it exits).
func startMosquitto(t *testing.T) *sinktest.Server {
	t.Helper()
	bin := sinktest.Binary(t, "mosquitto", "/usr/sbin")
	dir := t.TempDir()
	port := sinktest.FreePort(t)
	conf := filepath.Join(dir, "mosquitto.conf")
	logFile := filepath.Join(dir, "log")
	text := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nlog_dest file %s\n", port, dir, logFile)
	if os.Geteuid() == 0 {
		// As root Mosquitto switches to its own user, which cannot write
		// the test's folder.
		text += "user root\n"
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return sinktest.StartServer(t, sinktest.ServerSpec{
		Name:    "mosquitto",
		Port:    port,
		Command: func() *exec.Cmd { return exec.Command(bin, "-c", conf) },
		Stop:    func(cmd *exec.Cmd) error { return cmd.Process.Signal(syscall.SIGTERM) },
		Log:     logFile,
	})
}

// The test's own Mosquitto is stopped in the middle of a run and started
// again: publishes fail retryably meanwhile, the sink dials again, and a
// subscriber with a persistent session, connected directly to the broker,
// gets every event with its id. A PUBACK lost with the connection may bring
// a second copy (MQTT cannot deduplicate; consumers drop it by the
// hookrouter-event-id property): those are counted, not failed.
func TestOutage(t *testing.T) {
	srv := startMosquitto(t)
	prefix := "hrtest/" + sinktest.Unique()
	sub := newSubscriber(t, srv.Addr(), prefix, true)
	s := newSink(t, Config{URL: "tcp://" + srv.Addr(), Topic: prefix + "/{{ .event }}", Timeout: time.Second})
	defer s.Close(t.Context())
	evs, _ := sinktest.Outage(t, s, 60, srv.Stop, srv.Start)
	sub.reconnect()
	var ids []string
	for _, m := range sub.messages() {
		ids = append(ids, eventID(m))
	}
	sinktest.Arrived(t, evs, ids, false)
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
