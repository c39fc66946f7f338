// Package amqp publishes events to a RabbitMQ exchange (amqp091-go), each
// event's original body as a persistent message with message_id = the event
// id, on a routing key rendered from a template.
//
// Channels are in confirm mode: a delivery counts once the broker has
// confirmed the message (for a persistent message routed to durable queues,
// once it is written). With mandatory (the default) a message no queue is
// bound for comes back, and that delivery fails — permanently, so it is
// dead-lettered at once and can be replayed once the binding exists — rather
// than being confirmed and dropped. A lost connection (a broker restart) is
// a retryable failure; the next send dials again.
package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// channels is how many publisher channels a sink keeps open: one batch or
// send in flight on each, so that a returned message belongs to the batch on
// its channel.
const channels = 4

var (
	_ sinks.Sink        = (*Sink)(nil)
	_ sinks.BatchSender = (*Sink)(nil)
	_ sinks.Renderer    = (*Sink)(nil)
)

// Sink publishes to one exchange. It is safe for concurrent use.
type Sink struct {
	url       string
	exchange  string
	key       *render.Name
	mandatory bool
	where     string
	secret    string
	timeout   time.Duration
	log       *slog.Logger

	free chan *pubChan // idle channels; nil entries are slots to open

	mu     sync.Mutex
	conn   *amqp.Connection
	closed bool
	wg     sync.WaitGroup // sends in progress
}

// pubChan is one confirm-mode channel with its notifications.
type pubChan struct {
	ch      *amqp.Channel
	returns chan amqp.Return
	closes  chan *amqp.Error
	// closeErr is the broker's reason for closing ch, once seen; only the
	// sender holding pc reads or writes it.
	closeErr *amqp.Error
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
	// An unset routing key may be "" (fanout, headers exchanges); a set one
	// that renders empty is a mistake.
	key, _ := render.ParseName("amqp", "routing_key", cfg.RoutingKey, cfg.RoutingKey == "")
	s := &Sink{
		url: cfg.URL, exchange: cfg.Exchange, key: key,
		mandatory: cfg.Mandatory == nil || *cfg.Mandatory,
		where:     sinks.RedactURL(cfg.URL),
		timeout:   cfg.Timeout,
		log:       log,
		free:      make(chan *pubChan, channels),
	}
	if u, err := url.Parse(cfg.URL); err == nil && u.User != nil {
		s.secret, _ = u.User.Password()
	}
	for range channels {
		s.free <- nil
	}
	return s, nil
}

// Render returns the message body Send would publish for ev: its body.
func (s *Sink) Render(ev *sinks.Event) ([]byte, error) {
	if _, err := s.routingKey(ev); err != nil {
		return nil, err
	}
	return ev.Body, nil
}

func (s *Sink) routingKey(ev *sinks.Event) (string, error) {
	k, err := s.key.For(ev)
	if err != nil {
		return "", err
	}
	if len(k) > 255 {
		return "", sinks.Permanent(fmt.Errorf("amqp sink: event %s: routing key longer than 255 bytes", ev.ID))
	}
	return k, nil
}

// Send publishes ev and waits for the broker's confirm.
func (s *Sink) Send(ctx context.Context, ev *sinks.Event) error { return sinks.SendOne(ctx, s, ev) }

// SendBatch publishes evs on one channel, then waits for all their confirms.
func (s *Sink) SendBatch(ctx context.Context, evs []*sinks.Event) []error {
	if len(evs) == 0 {
		return nil
	}
	errs := sinks.NewBatchErrors(len(evs))
	if err := ctx.Err(); err != nil {
		return errs.FailRest(fmt.Errorf("amqp sink: %w", err))
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errs.FailRest(fmt.Errorf("amqp sink: %w", sinks.ErrClosed))
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var pc *pubChan
	select {
	case pc = <-s.free:
	case <-ctx.Done():
		return errs.FailRest(s.classify(ctx.Err()))
	}
	broken := false
	defer func() {
		if broken && pc != nil {
			pc.ch.Close()
			pc = nil
		}
		s.free <- pc
	}()
	if pc == nil || pc.ch.IsClosed() {
		var err error
		if pc, err = s.open(); err != nil {
			return errs.FailRest(err)
		}
	}

	dcs := make([]*amqp.DeferredConfirmation, len(evs))
	for i, ev := range evs {
		key, err := s.routingKey(ev)
		if err != nil {
			errs.Fail(i, err)
			continue
		}
		dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, s.exchange, key, s.mandatory, false, amqp.Publishing{
			ContentType:  "application/json",
			DeliveryMode: amqp.Persistent,
			MessageId:    ev.ID,
			Timestamp:    ev.ReceivedAt,
			AppId:        "hookrouter",
			Headers:      amqp.Table{"hookrouter-source": ev.Source},
			Body:         ev.Body,
		})
		if err != nil {
			broken = true
			errs.Fail(i, s.classify(chanErr(pc, err)))
			continue
		}
		dcs[i] = dc
	}
	for i, dc := range dcs {
		if dc == nil {
			continue
		}
		acked, err := dc.WaitContext(ctx)
		switch {
		case err != nil:
			// No confirm in time: the channel's state is unknown.
			broken = true
			errs.Fail(i, s.classify(err))
		case !acked:
			broken = broken || pc.ch.IsClosed()
			errs.Fail(i, s.classify(chanErr(pc, errors.New("broker did not confirm the message (nack)"))))
		}
	}
	// A return comes before its message's confirm, and the client hands it
	// to pc.returns before it reads the confirm: every return for this
	// batch is buffered by now.
	returned := map[string]amqp.Return{}
drain:
	for {
		select {
		case r, ok := <-pc.returns:
			if !ok { // closed with the channel
				break drain
			}
			returned[r.MessageId] = r
		default:
			break drain
		}
	}
	for i, ev := range evs {
		if r, ok := returned[ev.ID]; ok && dcs[i] != nil {
			errs.Fail(i, sinks.Permanent(fmt.Errorf("amqp sink %s: exchange %q returned the message as unroutable (routing key %q): %d %s",
				s.where, s.exchange, r.RoutingKey, r.ReplyCode, r.ReplyText)))
		}
	}
	return errs.Result()
}

// chanErr prefers the reason the broker gave for closing pc (an unknown
// exchange, no permission) over err.
func chanErr(pc *pubChan, err error) error {
	if pc.closeErr == nil {
		// A closed channel's reason reaches pc.closes just after the
		// channel reads as closed (a publish then fails with 504): wait
		// for it, briefly, rather than report the bare 504 as retryable.
		wait := time.Duration(0)
		if pc.ch.IsClosed() {
			wait = time.Second
		}
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case e, ok := <-pc.closes:
			if ok && e != nil {
				pc.closeErr = e // kept for the other events of the batch
			}
		case <-timer.C:
		}
	}
	if pc.closeErr != nil {
		return pc.closeErr
	}
	return err
}

// open opens a confirm-mode channel, dialing first if there is no live
// connection.
func (s *Sink) open() (*pubChan, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil || s.conn.IsClosed() {
		conn, err := amqp.DialConfig(s.url, amqp.Config{
			Dial:       amqp.DefaultDial(5 * time.Second),
			Properties: amqp.Table{"connection_name": "hookrouter"},
		})
		if err != nil {
			return nil, s.classify(err)
		}
		s.conn = conn
	}
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, s.classify(err)
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, s.classify(err)
	}
	pc := &pubChan{ch: ch, returns: make(chan amqp.Return, 1024), closes: make(chan *amqp.Error, 1)}
	ch.NotifyReturn(pc.returns)
	ch.NotifyClose(pc.closes)
	return pc, nil
}

// classify marks the broker's refusals permanent — bad credentials or vhost
// (403, 530), an unknown exchange (404), a precondition (406), a frame the
// broker will not take (311 content too large) — and the rest retryable:
// lost connections, a broker shutting down (320), timeouts, nacks.
func (s *Sink) classify(err error) error {
	wrapped := sinks.Scrubbed(err, "amqp sink "+s.where+": "+err.Error(), s.secret)
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.AccessRefused, amqp.NotFound, amqp.PreconditionFailed, amqp.NotAllowed, amqp.ContentTooLarge:
			return sinks.Permanent(wrapped)
		}
	}
	return wrapped
}

// Close waits for sends in progress (each bounded by the timeout), then
// closes the connection; it is idempotent.
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
	if s.conn != nil && !s.conn.IsClosed() {
		return s.conn.Close()
	}
	return nil
}
