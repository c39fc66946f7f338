// Package kafka produces events to Apache Kafka (github.com/twmb/franz-go),
// each event's original body as one record's value, on a topic and with a
// key rendered from templates, with the event id in the record header
// hookrouter-event-id (and the source's name in hookrouter-source).
//
// The producer is idempotent and asks for acks from every in-sync replica
// (acks=all): a delivery counts once the partition's leader has answered that
// every replica in sync has the record. A batch of events is produced in one
// go, so records bound for one partition share produce requests.
//
// An unknown topic (the sink never asks the cluster to create one), a topic
// name the template renders that Kafka refuses, a record too large, refused
// credentials or a missing ACL are permanent failures; a cluster out of
// reach, a leader moving, or a timeout are retryable. A produce whose ack was
// lost may have been written: a re-delivery then stores a second copy, which
// consumers recognise by its hookrouter-event-id header.
package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// Header names of what the sink adds to every record.
const (
	HeaderEventID = "hookrouter-event-id"
	HeaderSource  = "hookrouter-source"
)

var (
	_ sinks.Sink        = (*Sink)(nil)
	_ sinks.BatchSender = (*Sink)(nil)
	_ sinks.Renderer    = (*Sink)(nil)
	_ sinks.Provisioner = (*Sink)(nil)
)

// Sink produces to one Kafka cluster. It is safe for concurrent use.
type Sink struct {
	cfg     Config
	topic   *render.Template
	key     *render.Template // nil: records have no key
	where   string           // the seed brokers
	version string

	mu     sync.Mutex
	tls    *tls.Config // loaded by Provision or the first Send
	cl     *kgo.Client
	closed bool
	wg     sync.WaitGroup // sends in progress
}

// New checks cfg and builds the sink. It does no I/O: Provision reads the
// TLS files, and the first Send makes the client, which then keeps its
// connections to the cluster (and makes them again) for good.
func New(cfg Config, env sinks.Env) (*Sink, error) {
	cfg.Default()
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs[0]
	}
	topic, _ := render.ParseTemplate("topic", cfg.Topic)
	s := &Sink{cfg: cfg, topic: topic, where: strings.Join(cfg.seeds(), ","), version: env.Version}
	if cfg.Key != "" {
		s.key, _ = render.ParseTemplate("key", cfg.Key)
	}
	return s, nil
}

// Provision reads the TLS files, so that a missing or bad one is a config
// error with its line rather than a failure of every delivery. It does not
// dial: a cluster that is down at start is an outage, and deliveries wait
// for it in their queue.
func (s *Sink) Provision(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadTLS()
}

// loadTLS sets s.tls from the config's files, once; s.mu is held.
func (s *Sink) loadTLS() error {
	t := s.cfg.TLS
	if !t.on() || s.tls != nil {
		return nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return sinks.Errorf("tls.ca_file", "%v", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return sinks.Errorf("tls.ca_file", "%s holds no PEM certificate", t.CAFile)
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return sinks.Errorf("tls.cert_file", "%v", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	s.tls = c
	return nil
}

// client returns the producer, making it if there is none yet.
func (s *Sink) client() (*kgo.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("kafka sink: %w", sinks.ErrClosed)
	}
	if s.cl != nil {
		return s.cl, nil
	}
	if err := s.loadTLS(); err != nil {
		return nil, sinks.Permanent(fmt.Errorf("kafka sink %s: %w", s.where, err))
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(s.cfg.seeds()...),
		kgo.ClientID("hookrouter"),
		kgo.SoftwareNameAndVersion("hookrouter", softwareVersion(s.version)),
		// Idempotent (the client's default, stated here because the
		// guarantee rests on it) and acknowledged by every replica in sync.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DialTimeout(min(s.cfg.Timeout, 10*time.Second)),
		// A record that cannot be delivered in time fails (when failing it
		// cannot break the idempotent sequence), so that the dispatcher's
		// retry and breaker see the outage. It fails before the send's own
		// deadline so that its error carries the client's last one (a
		// refused password, say), which classify reads.
		// (The client allows no less than a second.)
		kgo.RecordDeliveryTimeout(max(s.cfg.Timeout*3/4, time.Second)),
	}
	if s.tls != nil {
		opts = append(opts, kgo.DialTLSConfig(s.tls))
	}
	if a := s.cfg.SASL; a != nil {
		opts = append(opts, kgo.SASL(mechanism(a)))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, sinks.Permanent(s.wrap(err))
	}
	s.cl = cl
	return cl, nil
}

func mechanism(a *SASL) sasl.Mechanism {
	switch a.Mechanism {
	case "SCRAM-SHA-256":
		return scram.Auth{User: a.User, Pass: a.Password}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: a.User, Pass: a.Password}.AsSha512Mechanism()
	}
	return plain.Auth{User: a.User, Pass: a.Password}.AsMechanism()
}

// softwareVersion makes v fit Kafka's rule for client software versions
// ([a-zA-Z0-9.-], starting and ending with a letter or digit).
func softwareVersion(v string) string {
	b := []byte(v)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			b[i] = '-'
		}
	}
	v = strings.Trim(string(b), ".-")
	if v == "" {
		return "dev"
	}
	return v
}

// Render returns the record value Send would produce for ev: its body.
func (s *Sink) Render(ev *sinks.Event) ([]byte, error) {
	if _, err := s.record(ev); err != nil {
		return nil, err
	}
	return ev.Body, nil
}

// record renders ev's topic and key into the record Send produces.
func (s *Sink) record(ev *sinks.Event) (*kgo.Record, error) {
	p, err := ev.Payload()
	if err != nil {
		return nil, sinks.Permanent(fmt.Errorf("kafka sink: event %s: payload: %w", ev.ID, err))
	}
	topic, err := s.topic.Execute(p)
	if err != nil {
		return nil, sinks.Permanent(fmt.Errorf("kafka sink: event %s: %w", ev.ID, err))
	}
	if topic == "" {
		return nil, sinks.Permanent(fmt.Errorf("kafka sink: event %s: topic renders empty", ev.ID))
	}
	if !validTopic(topic) {
		return nil, sinks.Permanent(fmt.Errorf("kafka sink: event %s: topic %q is not a Kafka topic name", ev.ID, topic))
	}
	r := &kgo.Record{
		Topic: topic,
		Value: ev.Body,
		Headers: []kgo.RecordHeader{
			{Key: HeaderEventID, Value: []byte(ev.ID)},
			{Key: HeaderSource, Value: []byte(ev.Source)},
		},
	}
	if s.key != nil {
		key, err := s.key.Execute(p)
		if err != nil {
			return nil, sinks.Permanent(fmt.Errorf("kafka sink: event %s: %w", ev.ID, err))
		}
		if key == "" {
			return nil, sinks.Permanent(fmt.Errorf("kafka sink: event %s: key renders empty", ev.ID))
		}
		r.Key = []byte(key)
	}
	return r, nil
}

// Send produces ev and waits for the brokers' acks.
func (s *Sink) Send(ctx context.Context, ev *sinks.Event) error {
	if errs := s.SendBatch(ctx, []*sinks.Event{ev}); errs != nil {
		return errs[0]
	}
	return nil
}

// SendBatch produces evs in one call, so that the client puts the records
// of a partition in the same requests, then waits for every ack.
func (s *Sink) SendBatch(ctx context.Context, evs []*sinks.Event) []error {
	if len(evs) == 0 {
		return nil
	}
	errs := make([]error, len(evs))
	failed := false
	fail := func(i int, err error) {
		if errs[i] == nil {
			errs[i], failed = err, true
		}
	}
	failAll := func(err error) []error {
		for i := range evs {
			fail(i, err)
		}
		return errs
	}
	if err := ctx.Err(); err != nil {
		return failAll(fmt.Errorf("kafka sink: %w", err))
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return failAll(fmt.Errorf("kafka sink: %w", sinks.ErrClosed))
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	cl, err := s.client()
	if err != nil {
		return failAll(err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	index := make(map[*kgo.Record]int, len(evs))
	recs := make([]*kgo.Record, 0, len(evs))
	for i, ev := range evs {
		r, err := s.record(ev)
		if err != nil {
			fail(i, err)
			continue
		}
		index[r] = i
		recs = append(recs, r)
	}
	if len(recs) == 0 {
		return errs
	}
	// ProduceSync gives up on records not yet sent when ctx is done, but a
	// record already in a request to the broker is failed only once the
	// broker answers or the connection dies (failing it earlier would break
	// the idempotent sequence). Waiting here on ctx as well keeps Send
	// within its timeout; such a record may still be written, and a
	// re-delivery then stores a second copy with the same event id.
	done := make(chan kgo.ProduceResults, 1)
	go func() { done <- cl.ProduceSync(ctx, recs...) }()
	select {
	case results := <-done:
		for _, res := range results {
			if res.Err != nil {
				fail(index[res.Record], s.classify(ctx, res.Err))
			}
		}
	case <-ctx.Done():
		err := s.classify(ctx, ctx.Err())
		for _, r := range recs {
			fail(index[r], err)
		}
	}
	if !failed {
		return nil
	}
	return errs
}

// permanent lists the brokers' refusals that sending again cannot fix.
var permanent = []error{
	kerr.UnknownTopicOrPartition, kerr.UnknownTopicID, kerr.InvalidTopicException,
	kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord, kerr.CorruptMessage,
	kerr.PolicyViolation, kerr.InvalidRequiredAcks,
	kerr.TopicAuthorizationFailed, kerr.ClusterAuthorizationFailed,
	kerr.TransactionalIDAuthorizationFailed,
	kerr.SaslAuthenticationFailed, kerr.UnsupportedSaslMechanism, kerr.IllegalSaslState,
}

// classify marks the brokers' refusals permanent (see permanent), a sink
// closed under the send retryable, and everything else retryable: a cluster
// out of reach, a timeout, and a certificate that does not verify (which the
// brokers' side can fix without the deliveries being replayed).
func (s *Sink) classify(ctx context.Context, err error) error {
	if errors.Is(err, kgo.ErrClientClosed) {
		return fmt.Errorf("kafka sink %s: %w", s.where, sinks.ErrClosed)
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	for _, p := range permanent {
		if errors.Is(err, p) {
			return sinks.Permanent(s.wrap(err))
		}
	}
	return s.wrap(err)
}

func (s *Sink) wrap(err error) error {
	msg := err.Error()
	if a := s.cfg.SASL; a != nil && len(a.Password) >= 3 {
		msg = strings.ReplaceAll(msg, a.Password, "REDACTED")
	}
	return &scrubbed{err: err, msg: "kafka sink " + s.where + ": " + msg}
}

// scrubbed is an error whose text has been cleaned of the password; Unwrap
// keeps errors.Is and As working on the original.
type scrubbed struct {
	err error
	msg string
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// Close waits for sends in progress (each bounded by the timeout) or for
// ctx, then closes the client, failing whatever it still holds; it is
// idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	idle := make(chan struct{})
	go func() { s.wg.Wait(); close(idle) }()
	select {
	case <-idle:
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != nil {
		s.cl.Close()
	}
	return nil
}
