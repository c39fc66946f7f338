package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// sqlReader counts the rows of a table every 50 ms; the sink creates the
// table (create_table: true) on its first delivery.
type sqlReader struct {
	driver, dsn, table string
	db                 *sql.DB
}

func (r *sqlReader) Start(ctx context.Context, c *counter) error {
	if strings.ContainsAny(r.table, ".-") {
		return fmt.Errorf("table %q: use letters, digits and _", r.table)
	}
	if err := safeName(r.table); err != nil {
		return err
	}
	db, err := sql.Open(r.driver, r.dsn)
	if err != nil {
		return err
	}
	r.db = db
	if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+r.table); err != nil {
		return err
	}
	go poll(context.WithoutCancel(ctx), 50*time.Millisecond, func(ctx context.Context) {
		var n uint64
		// Before the sink's first delivery the table does not exist: 0.
		if r.db.QueryRowContext(ctx, "SELECT count(*) FROM "+r.table).Scan(&n) == nil {
			c.rows(n)
		}
	})
	return nil
}

func (r *sqlReader) Stop(ctx context.Context) error {
	if r.db == nil {
		return errNotStarted
	}
	_, err := r.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+r.table)
	return errors.Join(err, r.db.Close())
}

// natsReader makes a JetStream stream capturing prefix.> and reads it with
// an ordered consumer.
type natsReader struct {
	url, prefix string
	nc          *nats.Conn
	js          jetstream.JetStream
	cc          jetstream.ConsumeContext
}

func (r *natsReader) stream() string {
	return strings.NewReplacer(".", "_", "-", "_").Replace(r.prefix)
}

func (r *natsReader) Start(ctx context.Context, c *counter) error {
	if err := safeName(r.prefix); err != nil {
		return err
	}
	nc, err := nats.Connect(r.url, nats.Name("hookrouter-readback"))
	if err != nil {
		return err
	}
	r.nc = nc
	if r.js, err = jetstream.New(nc); err != nil {
		return err
	}
	r.js.DeleteStream(ctx, r.stream())
	if _, err := r.js.CreateStream(ctx, jetstream.StreamConfig{Name: r.stream(), Subjects: []string{r.prefix + ".>"}}); err != nil {
		return err
	}
	cons, err := r.js.OrderedConsumer(ctx, r.stream(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		return err
	}
	r.cc, err = cons.Consume(func(m jetstream.Msg) {
		c.message(m.Headers().Get(jetstream.MsgIDHeader), validJSON(m.Data()))
	})
	return err
}

func (r *natsReader) Stop(ctx context.Context) error {
	if r.nc == nil {
		return errNotStarted
	}
	if r.cc != nil {
		r.cc.Stop()
	}
	var err error
	if r.js != nil {
		err = r.js.DeleteStream(ctx, r.stream())
	}
	r.nc.Close()
	return err
}

// amqpReader declares a topic exchange and a durable queue bound to it
// with #, both called name, and consumes the queue.
type amqpReader struct {
	url, name string
	conn      *amqp.Connection
	ch        *amqp.Channel
}

func (r *amqpReader) Start(ctx context.Context, c *counter) error {
	if err := safeName(r.name); err != nil {
		return err
	}
	conn, err := amqp.Dial(r.url)
	if err != nil {
		return err
	}
	r.conn = conn
	if r.ch, err = conn.Channel(); err != nil {
		return err
	}
	r.ch.QueueDelete(r.name, false, false, false)
	if err := r.ch.ExchangeDeclare(r.name, "topic", false, false, false, false, nil); err != nil {
		return err
	}
	if _, err := r.ch.QueueDeclare(r.name, true, false, false, false, nil); err != nil {
		return err
	}
	if err := r.ch.QueueBind(r.name, "#", r.name, false, nil); err != nil {
		return err
	}
	ds, err := r.ch.Consume(r.name, "readback", true, true, false, false, nil)
	if err != nil {
		return err
	}
	go func() {
		for d := range ds {
			c.message(d.MessageId, validJSON(d.Body))
		}
	}()
	return nil
}

func (r *amqpReader) Stop(context.Context) error {
	if r.conn == nil {
		return errNotStarted
	}
	var err error
	if r.ch != nil {
		_, err = r.ch.QueueDelete(r.name, false, false, false)
		err = errors.Join(err, r.ch.ExchangeDelete(r.name, false, false))
	}
	return errors.Join(err, r.conn.Close())
}

// redisReader reads a stream with XREAD from its start.
type redisReader struct {
	url, key string
	rdb      *redis.Client
}

func (r *redisReader) Start(ctx context.Context, c *counter) error {
	opt, err := redis.ParseURL(r.url)
	if err != nil {
		return err
	}
	r.rdb = redis.NewClient(opt)
	if err := r.rdb.Del(ctx, r.key).Err(); err != nil {
		return err
	}
	go func() {
		ctx := context.Background()
		last := "0"
		for {
			res, err := r.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{r.key, last}, Count: 1000, Block: time.Second}).Result()
			if errors.Is(err, redis.ErrClosed) {
				return
			}
			if err != nil { // redis.Nil: nothing new within the block
				continue
			}
			for _, s := range res {
				for _, m := range s.Messages {
					id, _ := m.Values["id"].(string)
					p, _ := m.Values["payload"].(string)
					c.message(id, validJSON([]byte(p)))
					last = m.ID
				}
			}
		}
	}()
	return nil
}

func (r *redisReader) Stop(ctx context.Context) error {
	if r.rdb == nil {
		return errNotStarted
	}
	return errors.Join(r.rdb.Del(ctx, r.key).Err(), r.rdb.Close())
}

// mqttReader subscribes to prefix/# with QoS 1 (MQTT 5: the event id is a
// user property).
type mqttReader struct {
	addr, prefix string
	c            *paho.Client
}

func (r *mqttReader) Start(ctx context.Context, c *counter) error {
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		return err
	}
	r.c = paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			id := ""
			if pr.Packet.Properties != nil {
				id = pr.Packet.Properties.User.Get("hookrouter-event-id")
			}
			c.message(id, validJSON(pr.Packet.Payload))
			return true, nil
		},
	}})
	if _, err := r.c.Connect(ctx, &paho.Connect{ClientID: "readback-" + r.prefix, CleanStart: true, KeepAlive: 30}); err != nil {
		return err
	}
	_, err = r.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: r.prefix + "/#", QoS: 1}}})
	return err
}

func (r *mqttReader) Stop(context.Context) error {
	if r.c == nil {
		return errNotStarted
	}
	return r.c.Disconnect(&paho.Disconnect{})
}

// kafkaReader runs a one-broker kfake cluster in this process (no Kafka
// broker can be installed on these machines), creates the topic with four
// partitions and consumes it from the start.
type kafkaReader struct {
	topic, brokerFile string
	cluster           *kfake.Cluster
	cl                *kgo.Client
}

func (r *kafkaReader) Start(ctx context.Context, c *counter) error {
	if err := safeName(r.topic); err != nil {
		return err
	}
	var err error
	if r.cluster, err = kfake.NewCluster(kfake.NumBrokers(1)); err != nil {
		return err
	}
	addrs := r.cluster.ListenAddrs()
	admin, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		return err
	}
	resp, err := kadm.NewClient(admin).CreateTopic(ctx, 4, 1, nil, r.topic)
	admin.Close()
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return err
	}
	if r.cl, err = kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(r.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())); err != nil {
		return err
	}
	go func() {
		for {
			fs := r.cl.PollFetches(context.Background())
			if fs.IsClientClosed() {
				return
			}
			fs.EachRecord(func(rec *kgo.Record) {
				id := ""
				for _, h := range rec.Headers {
					if h.Key == "hookrouter-event-id" {
						id = string(h.Value)
					}
				}
				c.message(id, validJSON(rec.Value))
			})
		}
	}()
	if r.brokerFile != "" {
		return os.WriteFile(r.brokerFile, []byte(strings.Join(addrs, ",")), 0o644)
	}
	return nil
}

func (r *kafkaReader) Stop(context.Context) error {
	if r.cl != nil {
		r.cl.Close()
	}
	if r.cluster != nil {
		r.cluster.Close()
	}
	return nil
}
