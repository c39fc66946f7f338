package kafka

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
)

// No Kafka broker can be installed on these machines: every test runs
// against franz-go's kfake, an in-process cluster speaking the Kafka
// protocol on real TCP listeners.

const secret = "s3cr3t-kafka-marker"

func unique() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newCluster starts a kfake cluster of one broker that does not create
// topics on demand.
func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func adminFor(t *testing.T, addrs []string, opts ...kgo.Opt) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// createTopic creates a topic of partitions partitions.
func createTopic(t *testing.T, adm *kadm.Client, partitions int32, name string) {
	t.Helper()
	resp, err := adm.CreateTopic(t.Context(), partitions, 1, nil, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
}

// readAll returns every record of topic, by partition then offset: it lists
// the partitions' end offsets, then consumes from the start until it has
// reached them all.
func readAll(t *testing.T, addrs []string, topic string, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	ends, err := adminFor(t, addrs, opts...).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	if len(want) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	byPart := map[int32][]*kgo.Record{}
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: still waiting for partitions %v", topic, want)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			byPart[r.Partition] = append(byPart[r.Partition], r)
			if end, ok := want[r.Partition]; ok && r.Offset >= end-1 {
				delete(want, r.Partition)
			}
		})
	}
	var out []*kgo.Record
	for p := range int32(len(byPart) + 64) {
		out = append(out, byPart[p]...)
	}
	return out
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func newSink(t *testing.T, cfg Config) *Sink {
	t.Helper()
	s, err := New(cfg, sinks.Env{Version: "test"})
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
	c := newCluster(t)
	addrs := c.ListenAddrs()
	adm := adminFor(t, addrs)
	// A user whose password is right but who has no ACL at all.
	acl := newCluster(t, kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "admin-password"), kfake.User("PLAIN", "nobody", "nobodys-password"))
	aclTopic := "hrtest.acl." + unique()
	// A broker that takes no batch over 300 bytes: every event is larger.
	small := newCluster(t, kfake.BrokerConfigs(map[string]string{"message.max.bytes": "300"}))
	smallTopic := "hrtest.small." + unique()
	createTopic(t, adminFor(t, small.ListenAddrs()), 1, smallTopic)
	createTopic(t, adminFor(t, acl.ListenAddrs(), kgo.SASL(plain.Auth{User: "admin", Pass: "admin-password"}.AsMechanism())), 1, aclTopic)
	sinktest.Run(t, sinktest.Harness{
		Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			topic := "hrtest." + unique()
			createTopic(t, adm, 1, topic)
			return newSink(t, Config{Brokers: addrs, Topic: topic, Key: "{{ .event }}"}), func() [][]byte {
				var out [][]byte
				for _, r := range readAll(t, addrs, topic) {
					if header(r, HeaderEventID) == "" || header(r, HeaderSource) != "test" {
						t.Errorf("record at offset %d without its event id or source headers: %v", r.Offset, r.Headers)
					}
					out = append(out, r.Value)
				}
				return out
			}
		},
		Failing: []sinktest.Failing{
			{Name: "unknown topic", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{Brokers: addrs, Topic: "hrtest.nosuch." + unique()})
			}},
			{Name: "topic renders empty", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{Brokers: addrs, Topic: "{{ .nosuchfield }}"})
			}},
			{Name: "topic renders a name Kafka refuses", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{Brokers: addrs, Topic: "events/{{ .event }}"})
			}},
			{Name: "key renders empty", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{Brokers: addrs, Topic: "whatever", Key: "{{ .nosuchfield }}"})
			}},
			{Name: "bad credentials", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{Brokers: badPassword(t).ListenAddrs(), Topic: "whatever",
					SASL: &SASL{Mechanism: "PLAIN", User: "hookrouter", Password: secret}, Timeout: 2 * time.Second})
			}},
			{Name: "not authorised for the topic", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{Brokers: acl.ListenAddrs(), Topic: aclTopic,
					SASL: &SASL{Mechanism: "PLAIN", User: "nobody", Password: "nobodys-password"}})
			}},
			{Name: "record larger than the broker takes", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{Brokers: small.ListenAddrs(), Topic: smallTopic})
			}},
			{Name: "connection refused", New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{Brokers: []string{fmt.Sprintf("127.0.0.1:%d", closedPort(t))}, Topic: "whatever",
					SASL: &SASL{Mechanism: "SCRAM-SHA-256", User: "u", Password: secret}, Timeout: time.Second})
			}},
		},
		Secret: secret,
	})
}

// certificate makes a self-signed certificate for 127.0.0.1 and returns a
// server config holding it, the certificate's PEM file, and a pool of it.
func certificate(t *testing.T) (*tls.Config, string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, file, pool
}

// A missing CA file is reported by Provision, at its field.
func TestProvisionBadCAFile(t *testing.T) {
	s := newSink(t, Config{Brokers: []string{"127.0.0.1:9092"}, Topic: "t", TLS: TLS{CAFile: filepath.Join(t.TempDir(), "nosuch.pem")}})
	err := s.Provision(t.Context())
	var fe sinks.FieldError
	if !errors.As(err, &fe) || fe.Field != "tls.ca_file" {
		t.Fatalf("provision = %v, want a FieldError about tls.ca_file", err)
	}
}

// badPassword starts a SASL cluster that refuses every password the way
// Kafka does: a SaslAuthenticate answer with SASL_AUTHENTICATION_FAILED.
// kfake on its own closes the connection instead, which a client cannot tell
// from a network fault.
func badPassword(t *testing.T) *kfake.Cluster {
	c := newCluster(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "hookrouter", "the-right-password"))
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		resp := req.(*kmsg.SASLAuthenticateRequest).ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
	return c
}

// A consumer reads back exactly the events sent, each once, with its event
// id, on the topic and with the key their templates give, over several
// partitions; through SASL/SCRAM too.
func TestReadBack(t *testing.T) {
	pw := "pw-" + unique()
	serverTLS, caFile, pool := certificate(t)
	for _, tc := range []struct {
		name    string
		cluster []kfake.Opt
		sasl    *SASL
		tls     TLS
		client  []kgo.Opt
	}{
		{name: "plaintext"},
		{name: "TLS", cluster: []kfake.Opt{kfake.TLS(serverTLS)}, tls: TLS{CAFile: caFile},
			client: []kgo.Opt{kgo.DialTLSConfig(&tls.Config{RootCAs: pool})}},
		{name: "SCRAM-SHA-512",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "hookrouter", pw)},
			sasl:    &SASL{Mechanism: "SCRAM-SHA-512", User: "hookrouter", Password: pw},
			client:  []kgo.Opt{kgo.SASL(scram.Auth{User: "hookrouter", Pass: pw}.AsSha512Mechanism())}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addrs := newCluster(t, tc.cluster...).ListenAddrs()
			prefix := "hrtest." + unique()
			createTopic(t, adminFor(t, addrs, tc.client...), 4, prefix+".channel.message_in")
			s := newSink(t, Config{Brokers: addrs, Topic: prefix + ".{{ .event }}", Key: "{{ .message.id }}", SASL: tc.sasl, TLS: tc.tls})
			if err := s.Provision(t.Context()); err != nil {
				t.Fatalf("provision: %v", err)
			}
			defer s.Close(t.Context())
			var evs []*sinks.Event
			for i := range 40 {
				evs = append(evs, sinktest.Variant(i))
			}
			if errs := s.SendBatch(t.Context(), evs[:30]); errs != nil {
				t.Fatalf("batch: %v", errs)
			}
			for _, ev := range evs[30:] {
				if err := s.Send(t.Context(), ev); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			checkOnce(t, readAll(t, addrs, prefix+".channel.message_in", tc.client...), evs)
		})
	}
}

// checkOnce checks that recs are evs, each exactly once, with their ids,
// bodies and keys, and that one key always went to one partition.
func checkOnce(t *testing.T, recs []*kgo.Record, evs []*sinks.Event) {
	t.Helper()
	byID := map[string]*sinks.Event{}
	for _, ev := range evs {
		byID[ev.ID] = ev
	}
	seen := map[string]int{}
	partitions := map[int32]bool{}
	for _, r := range recs {
		id := header(r, HeaderEventID)
		ev, ok := byID[id]
		if !ok {
			t.Errorf("record %d/%d carries unknown event id %q", r.Partition, r.Offset, id)
			continue
		}
		seen[id]++
		partitions[r.Partition] = true
		p, _ := ev.Payload()
		wantKey := p["message"].(map[string]any)["id"].(string)
		if !bytes.Equal(r.Value, ev.Body) || string(r.Key) != wantKey {
			t.Errorf("record of %s: key %q, value differs: %v", id, r.Key, !bytes.Equal(r.Value, ev.Body))
		}
	}
	for _, ev := range evs {
		if seen[ev.ID] != 1 {
			t.Errorf("event %s arrived %d times, want once", ev.ID, seen[ev.ID])
		}
	}
	if len(partitions) < 2 {
		t.Errorf("40 keys all went to %d partition(s) of 4", len(partitions))
	}
}

// The cluster goes away in the middle of a run (closed, its listener gone)
// and comes back on the same port with the same data: sends fail retryably
// meanwhile, and every event is in the topic afterwards (a produce whose ack
// was lost may bring a second copy, with the same event id).
func TestOutage(t *testing.T) {
	dir := t.TempDir()
	port := closedPort(t)
	topic := "hrtest.outage." + unique()
	start := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir))
		if err != nil {
			t.Fatalf("kfake on port %d: %v", port, err)
		}
		return c
	}
	c := start()
	t.Cleanup(func() { c.Close() })
	addrs := []string{fmt.Sprintf("127.0.0.1:%d", port)}
	createTopic(t, adminFor(t, addrs), 3, topic)

	s := newSink(t, Config{Brokers: addrs, Topic: topic, Key: "{{ .message.id }}", Timeout: 2 * time.Second})
	defer s.Close(t.Context())
	evs, _ := sinktest.Outage(t, s, 60, c.Close, func() { c = start() })

	seen := map[string]int{}
	for _, r := range readAll(t, addrs, topic) {
		seen[header(r, HeaderEventID)]++
	}
	extra := 0
	for _, ev := range evs {
		if seen[ev.ID] == 0 {
			t.Errorf("event %s lost", ev.ID)
		}
		extra += max(seen[ev.ID]-1, 0)
	}
	t.Logf("%d events in the topic, %d second copies", len(evs), extra)
}

// An event for a topic that does not exist fails permanently; once the topic
// is created, the same sink delivers to it (a replay of the dead letter).
func TestTopicCreatedLater(t *testing.T) {
	addrs := newCluster(t).ListenAddrs()
	topic := "hrtest.later." + unique()
	s := newSink(t, Config{Brokers: addrs, Topic: topic, Timeout: 5 * time.Second})
	defer s.Close(t.Context())
	ev := sinktest.Variant(1)
	if err := s.Send(t.Context(), ev); !sinks.IsPermanent(err) {
		t.Fatalf("send to a missing topic = %v, want a permanent error", err)
	}
	createTopic(t, adminFor(t, addrs), 1, topic)
	if err := s.Send(t.Context(), ev); err != nil {
		t.Fatalf("send once the topic exists: %v", err)
	}
	if recs := readAll(t, addrs, topic); len(recs) != 1 || header(recs[0], HeaderEventID) != ev.ID {
		t.Fatalf("topic holds %d records, want the one event", len(recs))
	}
}
