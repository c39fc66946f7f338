// Package mqtt publishes events to an MQTT broker over MQTT 5
// (github.com/eclipse/paho.golang), each event's original body as the
// message, on a topic rendered from a template, with the event id in the
// user property hookrouter-event-id (MQTT 5 is needed for that: 3.1.1 has
// no message properties).
//
// With QoS 1 (the default) a delivery counts once the broker has answered
// with its PUBACK; with QoS 0 once the message is written to the
// connection. A lost connection is a retryable failure: the next send dials
// again. A PUBACK lost with the connection means the retry may publish the
// message twice: consumers deduplicate on the event id.
package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// EventIDProperty is the MQTT 5 user property carrying the event id.
const EventIDProperty = "hookrouter-event-id"

var (
	_ sinks.Sink        = (*Sink)(nil)
	_ sinks.BatchSender = (*Sink)(nil)
	_ sinks.Renderer    = (*Sink)(nil)
)

// Sink publishes to one broker. It is safe for concurrent use.
type Sink struct {
	addr     string
	user     string
	password string
	clientID string
	topic    *render.Name
	qos      byte
	where    string
	timeout  time.Duration
	log      *slog.Logger

	mu     sync.Mutex
	client *paho.Client
	closed bool
	wg     sync.WaitGroup
}

// New checks cfg and builds the sink. It does no I/O: the first Send dials.
func New(cfg Config, log *slog.Logger) (*Sink, error) {
	cfg.Default()
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs[0]
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, _ := url.Parse(cfg.URL)
	topic, _ := render.ParseName("mqtt", "topic", cfg.Topic, false)
	s := &Sink{
		addr: u.Host, clientID: cfg.ClientID, topic: topic, qos: byte(*cfg.QoS),
		where: sinks.RedactURL(cfg.URL), timeout: cfg.Timeout, log: log,
	}
	if u.User != nil {
		s.user = u.User.Username()
		s.password, _ = u.User.Password()
	}
	return s, nil
}

// Render returns the message Send would publish for ev: its body.
func (s *Sink) Render(ev *sinks.Event) ([]byte, error) {
	if _, err := s.topicFor(ev); err != nil {
		return nil, err
	}
	return ev.Body, nil
}

func (s *Sink) topicFor(ev *sinks.Event) (string, error) {
	t, err := s.topic.For(ev)
	if err != nil {
		return "", err
	}
	if strings.ContainsAny(t, "+#\x00") {
		return "", sinks.Permanent(fmt.Errorf("mqtt sink: event %s: topic %q holds a wildcard", ev.ID, t))
	}
	return t, nil
}

// conn returns the connected client, dialing if there is none or it died.
func (s *Sink) conn(ctx context.Context) (*paho.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		select {
		case <-s.client.Done():
			s.client = nil
		default:
			return s.client, nil
		}
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, s.wrap(err)
	}
	c := paho.NewClient(paho.ClientConfig{
		ClientID:      s.clientID,
		Conn:          nc,
		OnClientError: func(err error) { s.log.Debug("mqtt sink: connection error", "error", s.wrap(err).Error()) },
	})
	cp := &paho.Connect{ClientID: s.clientID, CleanStart: true, KeepAlive: 30}
	if s.user != "" {
		cp.Username, cp.UsernameFlag = s.user, true
	}
	if s.password != "" {
		cp.Password, cp.PasswordFlag = []byte(s.password), true
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		nc.Close()
		if ca != nil {
			switch ca.ReasonCode {
			// Bad user name or password, not authorized, banned, client id
			// refused, bad authentication method.
			case 0x86, 0x87, 0x8A, 0x85, 0x8C:
				return nil, sinks.Permanent(s.wrap(fmt.Errorf("connect refused: reason 0x%02x %w", ca.ReasonCode, err)))
			}
		}
		return nil, s.wrap(err)
	}
	s.client = c
	return c, nil
}

// Send publishes ev and, at QoS 1, waits for its PUBACK.
func (s *Sink) Send(ctx context.Context, ev *sinks.Event) error { return sinks.SendOne(ctx, s, ev) }

// SendBatch publishes evs at once, on one connection, and waits for every
// PUBACK.
func (s *Sink) SendBatch(ctx context.Context, evs []*sinks.Event) []error {
	if len(evs) == 0 {
		return nil
	}
	errs := sinks.NewBatchErrors(len(evs))
	if err := ctx.Err(); err != nil {
		return errs.FailRest(fmt.Errorf("mqtt sink: %w", err))
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errs.FailRest(fmt.Errorf("mqtt sink: %w", sinks.ErrClosed))
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	c, err := s.conn(ctx)
	if err != nil {
		return errs.FailRest(s.withCtx(ctx, err))
	}
	var wg sync.WaitGroup
	for i, ev := range evs {
		topic, err := s.topicFor(ev)
		if err != nil {
			errs.Fail(i, err)
			continue
		}
		wg.Go(func() {
			_, err := c.Publish(ctx, &paho.Publish{
				Topic: topic, QoS: s.qos, Payload: ev.Body,
				Properties: &paho.PublishProperties{
					ContentType: "application/json",
					User:        paho.UserProperties{{Key: EventIDProperty, Value: ev.ID}, {Key: "hookrouter-source", Value: ev.Source}},
				},
			})
			if err != nil {
				errs.Fail(i, s.classify(ctx, err))
			}
		})
	}
	wg.Wait()
	return errs.Result()
}

// classify marks the broker's refusals of a message permanent — not
// authorized (0x87), topic name invalid (0x90), packet too large (0x95),
// payload format invalid (0x99) — and the rest retryable: lost
// connections, timeouts, quota exceeded (0x97), unspecified errors.
func (s *Sink) classify(ctx context.Context, err error) error {
	err = s.withCtx(ctx, err)
	msg := err.Error()
	for _, r := range []string{"not authorized", "topic name invalid", "packet too large", "payload format invalid"} {
		if strings.Contains(strings.ToLower(msg), r) {
			return sinks.Permanent(s.wrap(err))
		}
	}
	return s.wrap(err)
}

func (s *Sink) withCtx(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

func (s *Sink) wrap(err error) error {
	if sinks.IsPermanent(err) {
		return err
	}
	return sinks.Scrubbed(err, "mqtt sink "+s.where+": "+err.Error(), s.password)
}

// Close waits for sends in progress, then disconnects; it is idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		s.client.Disconnect(&paho.Disconnect{ReasonCode: 0})
		s.client = nil
	}
	return nil
}
