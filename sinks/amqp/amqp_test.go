package amqp

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	name := "hrtest." + sinktest.Unique()
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

func TestConformance(t *testing.T) {
	unbound, _ := topology(t, "nothing.routes.here")
	sinktest.Run(t, sinktest.Harness{
		Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			ex, read := topology(t, "#")
			return newSink(t, Config{URL: machineURL, Exchange: ex, RoutingKey: "{{ .event }}"}), func() [][]byte { return bodies(t, read()) }
		},
		Failing: []sinktest.Failing{
			{Name: "unknown exchange", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{URL: machineURL, Exchange: "hrtest.nosuch." + sinktest.Unique(), RoutingKey: "k"})
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
				return newSink(t, Config{URL: fmt.Sprintf("amqp://guest:%s@127.0.0.1:%d/", secret, sinktest.FreePort(t)), Exchange: "x", RoutingKey: "k"})
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

// startRabbit boots a RabbitMQ node of the test's own — its own node name,
// AMQP and distribution ports, data and logs in a temporary folder, no
// plugins — and returns it with its URL. Stop is `rabbitmqctl stop`, a
// broker restart as an operator does it.
func startRabbit(t *testing.T) (*sinktest.Server, string) {
	t.Helper()
	// The packaged wrapper in /usr/sbin switches to the rabbitmq user and
	// writes to /var/log: run the scripts it wraps.
	server := sinktest.Binary(t, "rabbitmq-server", "/usr/lib/rabbitmq/bin")
	ctl := sinktest.Binary(t, "rabbitmqctl", "/usr/lib/rabbitmq/bin")
	dir := t.TempDir()
	port, dist := sinktest.FreePort(t), sinktest.FreePort(t)
	node := "hrtest-" + sinktest.Unique() + "@localhost"
	conf := filepath.Join(dir, "rabbitmq.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listeners.tcp.1 = 127.0.0.1:%d\nloopback_users = none\n", port)), 0o644)
	os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[].\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "rabbitmq-env.conf"), nil, 0o644)
	env := append(os.Environ(),
		"HOME="+dir, // the Erlang cookie the server makes and rabbitmqctl reads
		"RABBITMQ_NODENAME="+node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(dist),
		"RABBITMQ_CONFIG_FILE="+conf,
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(dir, "rabbitmq-env.conf"), // not /etc/rabbitmq's
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_PLUGINS_EXPAND_DIR="+filepath.Join(dir, "plugins"),
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
	)
	logFile := filepath.Join(dir, "stdout.log")
	url := fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port)
	srv := sinktest.StartServer(t, sinktest.ServerSpec{
		Name: "rabbitmq",
		Port: port,
		// The listener opens before the node serves: it may close a
		// connection at once (EOF).
		Ready: func() error {
			c, err := amqp.Dial(url)
			if err == nil {
				c.Close()
			}
			return err
		},
		Command: func() *exec.Cmd {
			cmd := exec.Command(server)
			cmd.Env, cmd.Dir = env, dir
			log, _ := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			cmd.Stdout, cmd.Stderr = log, log
			return cmd
		},
		Stop: func(*exec.Cmd) error {
			cmd := exec.Command(ctl, "-n", node, "stop")
			cmd.Env, cmd.Dir = env, dir
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("rabbitmqctl stop: %v\n%s", err, out)
			}
			return nil
		},
		Log:  logFile,
		Boot: 2 * time.Minute, // 20 s on an idle machine
	})
	return srv, url
}

// The test's own RabbitMQ is stopped in the middle of a run and started
// again: sends fail retryably meanwhile, the sink dials again, and a
// consumer reads every event back from the durable queue with its
// message_id. A confirm lost with the connection may bring a second copy
// (RabbitMQ cannot deduplicate; consumers drop it by message_id): those are
// counted, not failed.
func TestOutage(t *testing.T) {
	srv, url := startRabbit(t)
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	name := "hrtest." + sinktest.Unique()
	// Durable, so that what the broker confirmed survives its restart.
	if err := ch.ExchangeDeclare(name, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(name, "#", name, false, nil); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	s := newSink(t, Config{URL: url, Exchange: name, RoutingKey: "{{ .event }}", Timeout: 2 * time.Second})
	defer s.Close(t.Context())
	evs, _ := sinktest.Outage(t, s, 60, srv.Stop, srv.Start)

	conn, err = amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if ch, err = conn.Channel(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for {
		d, ok, err := ch.Get(name, true)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if !ok {
			break
		}
		ids = append(ids, d.MessageId)
	}
	sinktest.Arrived(t, evs, ids, false)
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
