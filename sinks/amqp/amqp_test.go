package amqp

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
)

// The machine's RabbitMQ. Each test declares an exchange and a queue of its
// own, and deletes them.
const machineURL = "amqp://guest:guest@127.0.0.1:5672/"

const secret = "s3cr3t-amqp-marker"

func unique() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func channel(t *testing.T) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(machineURL)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// topology declares a topic exchange and a queue bound to it with binding,
// and returns the exchange's name and a function taking what has arrived.
func topology(t *testing.T, binding string) (exchange string, read func() []amqp.Delivery) {
	t.Helper()
	ch := channel(t)
	name := "hrtest." + unique()
	if err := ch.ExchangeDeclare(name, "topic", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(name, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(name, binding, name, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ch.QueueDelete(name, false, false, false)
		ch.ExchangeDelete(name, false, false)
	})
	var mu sync.Mutex
	var got []amqp.Delivery
	return name, func() []amqp.Delivery {
		mu.Lock()
		defer mu.Unlock()
		for {
			d, ok, err := ch.Get(name, true)
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if !ok {
				break
			}
			got = append(got, d)
		}
		return append([]amqp.Delivery(nil), got...)
	}
}

func bodies(t *testing.T, ds []amqp.Delivery) [][]byte {
	var out [][]byte
	for _, d := range ds {
		if d.MessageId == "" || d.DeliveryMode != amqp.Persistent {
			t.Errorf("message without message_id or not persistent: %q %d", d.MessageId, d.DeliveryMode)
		}
		out = append(out, d.Body)
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
	unbound, _ := topology(t, "nothing.routes.here")
	sinktest.Run(t, sinktest.Harness{
		Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			ex, read := topology(t, "#")
			return newSink(t, Config{URL: machineURL, Exchange: ex, RoutingKey: "{{ .event }}"}), func() [][]byte { return bodies(t, read()) }
		},
		Failing: []sinktest.Failing{
			{Name: "unknown exchange", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: machineURL, Exchange: "hrtest.nosuch." + unique(), RoutingKey: "k"})
			}},
			{Name: "bad credentials", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: "amqp://guest:" + secret + "@127.0.0.1:5672/", Exchange: unbound, RoutingKey: "k"})
			}},
			{Name: "unknown vhost", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: "amqp://guest:guest@127.0.0.1:5672/nosuchvhost", Exchange: unbound, RoutingKey: "k"})
			}},
			{Name: "unroutable (mandatory)", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: machineURL, Exchange: unbound, RoutingKey: "{{ .event }}"})
			}},
			{Name: "routing key renders empty", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: machineURL, Exchange: unbound, RoutingKey: "{{ .nosuchfield }}"})
			}},
			{Name: "connection refused", New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: fmt.Sprintf("amqp://guest:%s@127.0.0.1:%d/", secret, closedPort(t)), Exchange: "x", RoutingKey: "k"})
			}},
		},
		Secret: secret,
	})
}

// A consumer reads back exactly the events sent, each once, with its
// message_id, routed by the routing key its template gives.
func TestReadBack(t *testing.T) {
	ex, read := topology(t, "channel.message_in.*")
	s := newSink(t, Config{URL: machineURL, Exchange: ex, RoutingKey: "{{ .event }}.{{ .message.id }}"})
	defer s.Close(t.Context())
	var evs []*sinks.Event
	for i := range 20 {
		evs = append(evs, sinktest.Variant(i))
	}
	if errs := s.SendBatch(t.Context(), evs); errs != nil {
		t.Fatalf("batch: %v", errs)
	}
	got := read()
	if len(got) != len(evs) {
		t.Fatalf("%d messages, want %d", len(got), len(evs))
	}
	for i, d := range got {
		if d.MessageId != evs[i].ID || !bytes.Equal(d.Body, evs[i].Body) || d.RoutingKey != fmt.Sprintf("channel.message_in.msg_%04d", i) {
			t.Errorf("message %d: id %q key %q, want event %s", i, d.MessageId, d.RoutingKey, evs[i].ID)
		}
	}
	// mandatory: false lets an unroutable message be confirmed and dropped.
	f := false
	ds := newSink(t, Config{URL: machineURL, Exchange: ex, RoutingKey: "elsewhere", Mandatory: &f})
	defer ds.Close(t.Context())
	if err := ds.Send(t.Context(), evs[0]); err != nil {
		t.Fatalf("unroutable, not mandatory: %v", err)
	}
}

// proxy forwards connections to RabbitMQ until cut, which drops every
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
// broker restart, and comes back: sends fail retryably meanwhile, the sink
// dials again, and every event arrives (a confirm lost with the connection
// may bring a second copy: consumers deduplicate on message_id).
func TestReconnect(t *testing.T) {
	ex, read := topology(t, "#")
	p := newProxy(t, "127.0.0.1:5672")
	s := newSink(t, Config{URL: "amqp://guest:guest@" + p.l.Addr().String() + "/", Exchange: ex, RoutingKey: "{{ .event }}", Timeout: 2 * time.Second})
	defer s.Close(t.Context())
	evs, _ := sinktest.Outage(t, s, 60, p.cut, p.restore)
	seen := map[string]int{}
	for _, d := range read() {
		seen[d.MessageId]++
	}
	extra := 0
	for _, ev := range evs {
		if seen[ev.ID] == 0 {
			t.Errorf("event %s lost", ev.ID)
		}
		extra += max(seen[ev.ID]-1, 0)
	}
	t.Logf("%d events, %d extra copies from lost confirms", len(evs), extra)
}

func TestValidate(t *testing.T) {
	c := Config{URL: "http://x", RoutingKey: "{{ .a", Timeout: -1}
	var got []string
	for _, err := range c.Validate() {
		got = append(got, err.Field)
	}
	if fmt.Sprint(got) != "[url routing_key timeout]" {
		t.Fatalf("fields %v", got)
	}
}
