// Command readback counts, at a broker or database, the events a hookrouter
// sink delivered there, and answers GET /stats the way the capture server
// does ({"received","unique","duplicates","invalid","failed","last_at"}), so
// that loadgen -sinks and run.sh measure delivered events per second for
// every sink type alike.
//
// It reads back from the destination, as a consumer would: rows counted in
// the table (postgres, mysql: the event id is the primary key, so a count is
// of distinct events), or every message consumed and its event id noted (a
// JetStream ordered consumer on the stream, an AMQP queue, XREAD on a Redis
// stream, an MQTT QoS 1 subscription, a Kafka consumer). Before it says it
// is ready (the -addr-file) it makes the destination empty: it drops the
// table, or creates the stream, queue, topic afresh; on SIGTERM it deletes
// them again.
//
//	readback -kind postgres -target bench_1234 -addr-file F
//	readback -kind kafka -target bench.1234 -broker-file B -addr-file F   # also runs an in-process kfake cluster
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/hookrouter/hookrouter/benchmarks/internal/serve"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// defaultURLs are the machine's services.
var defaultURLs = map[string]string{
	"postgres": "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
	"mysql":    "root@tcp(127.0.0.1:3306)/test",
	"nats":     "nats://127.0.0.1:4222",
	"amqp":     "amqp://guest:guest@127.0.0.1:5672/",
	"redis":    "redis://127.0.0.1:6379/0",
	"mqtt":     "127.0.0.1:1883",
	"kafka":    "", // an in-process kfake cluster
}

// reader is one destination: Start empties it and begins counting into c;
// Stop ends the counting and deletes what Start made.
type reader interface {
	Start(ctx context.Context, c *counter) error
	Stop(ctx context.Context) error
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("readback", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "stats listen address")
	addrFile := fs.String("addr-file", "", "write the stats address here once the destination is ready")
	kind := fs.String("kind", "", "postgres | mysql | nats | amqp | redis | mqtt | kafka")
	url := fs.String("url", "", "the destination's URL or DSN (default: the machine's service)")
	target := fs.String("target", "", "table, stream, exchange and queue, topic prefix or topic to read")
	brokerFile := fs.String("broker-file", "", "kafka: write the kfake cluster's address here")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	def, ok := defaultURLs[*kind]
	if !ok || *target == "" {
		log.Error("bad flags: -kind must be one of postgres, mysql, nats, amqp, redis, mqtt, kafka, and -target is required")
		return 2
	}
	if *url == "" {
		*url = def
	}
	var r reader
	switch *kind {
	case "postgres":
		r = &sqlReader{driver: "pgx", dsn: *url, table: *target}
	case "mysql":
		r = &sqlReader{driver: "mysql", dsn: *url, table: *target}
	case "nats":
		r = &natsReader{url: *url, prefix: *target}
	case "amqp":
		r = &amqpReader{url: *url, name: *target}
	case "redis":
		r = &redisReader{url: *url, key: *target}
	case "mqtt":
		r = &mqttReader{addr: *url, prefix: *target}
	case "kafka":
		r = &kafkaReader{topic: *target, brokerFile: *brokerFile}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &counter{seen: map[string]struct{}{}}
	startCtx, startCancel := context.WithTimeout(ctx, 30*time.Second)
	err := r.Start(startCtx, c)
	startCancel()
	if err != nil {
		log.Error("destination not ready", "kind", *kind, "err", err)
		r.Stop(context.Background())
		return 1
	}
	ln, err := serve.Listen(*addr, *addrFile)
	if err != nil {
		log.Error("listen failed", "err", err)
		r.Stop(context.Background())
		return 1
	}
	srv := &fasthttp.Server{Handler: c.handle, Name: "readback", NoDefaultServerHeader: true}
	log.Info("reading back", "kind", *kind, "target", *target, "stats", ln.Addr().String())
	return serve.UntilSignal(srv, ln, log, func(os.Signal) {
		st := c.snapshot()
		log.Info("stopping", "received", st.Received, "unique", st.Unique, "duplicates", st.Duplicates, "invalid", st.Invalid)
		cancel()
		stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer stopCancel()
		if err := r.Stop(stopCtx); err != nil {
			log.Warn("clean-up failed", "err", err)
		}
	})
}

// stats is capture's /stats answer.
type stats struct {
	Received   uint64 `json:"received"`
	Unique     uint64 `json:"unique"`
	Duplicates uint64 `json:"duplicates"`
	Invalid    uint64 `json:"invalid"`
	Failed     uint64 `json:"failed"`
	LastAt     int64  `json:"last_at"`
}

// counter tallies what a reader saw.
type counter struct {
	mu   sync.Mutex
	st   stats
	seen map[string]struct{}
}

// message counts one message carrying event id (and whether its body was
// JSON).
func (c *counter) message(id string, valid bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Received++
	if !valid {
		c.st.Invalid++
	}
	if _, dup := c.seen[id]; dup || id == "" {
		c.st.Duplicates++
		return
	}
	c.seen[id] = struct{}{}
	c.st.Unique++
	c.st.LastAt = time.Now().UnixNano()
}

// rows sets the count of a table whose rows are distinct events.
func (c *counter) rows(n uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.st.Unique {
		c.st.Received, c.st.Unique, c.st.LastAt = n, n, time.Now().UnixNano()
	}
}

func (c *counter) snapshot() stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

func (c *counter) handle(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) != "/stats" {
		ctx.Error("only GET /stats", fasthttp.StatusNotFound)
		return
	}
	b, _ := json.Marshal(c.snapshot())
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// validJSON is the capture server's -check, for message bodies.
func validJSON(b []byte) bool { return json.Valid(b) }

// poll calls f every interval until ctx is done.
func poll(ctx context.Context, interval time.Duration, f func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		f(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// safeName checks a target is a plain identifier, since it is put into SQL
// and broker names as is.
func safeName(s string) error {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_.-", r)) {
			return fmt.Errorf("target %q: use letters, digits, _ . -", s)
		}
	}
	return nil
}

var errNotStarted = errors.New("not started")
