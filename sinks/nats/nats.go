// Package nats publishes events to NATS (github.com/nats-io/nats.go), each
// event's original body as the message data, on a subject rendered from a
// template, with the event id in the Nats-Msg-Id header.
//
// With jetstream: true a delivery counts once the stream has stored the
// message and answered with its PubAck; the stream deduplicates on
// Nats-Msg-Id within its duplicate window, so a re-delivery is stored once.
// Core NATS has no acknowledgement: a delivery counts once the server has
// received the message (a flush round trip), whether or not anyone is
// subscribed.
package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

var (
	_ sinks.Sink        = (*Sink)(nil)
	_ sinks.BatchSender = (*Sink)(nil)
	_ sinks.Renderer    = (*Sink)(nil)
)

// Sink publishes to one NATS server or cluster. It is safe for concurrent use.
type Sink struct {
	cfg     Config
	subject *render.Name
	where   string   // the URL without credentials
	secrets []string // user info of at least 3 bytes, scrubbed from error texts
	timeout time.Duration
	log     *slog.Logger

	mu     sync.Mutex
	nc     *nats.Conn
	js     jetstream.JetStream
	closed bool
}

// New checks cfg and builds the sink. It does no I/O: the connection is made
// by the first Send, and nats.go reconnects it for good after that.
func New(cfg Config, log *slog.Logger) (*Sink, error) {
	cfg.Default()
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs[0]
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	subject, _ := render.ParseName("nats", "subject", cfg.Subject, false)
	s := &Sink{cfg: cfg, subject: subject, timeout: cfg.Timeout, log: log}
	var where []string
	for u := range strings.SplitSeq(cfg.URL, ",") {
		u = strings.TrimSpace(u)
		where = append(where, sinks.RedactURL(u))
		if p, _ := url.Parse(u); p != nil && p.User != nil {
			// A lone user name is a token (nats://TOKEN@host).
			// Shorter ones would scrub ordinary words from the text.
			if u := p.User.Username(); len(u) >= 3 {
				s.secrets = append(s.secrets, u)
			}
			if pw, _ := p.User.Password(); len(pw) >= 3 {
				s.secrets = append(s.secrets, pw)
			}
		}
	}
	s.where = strings.Join(where, ",")
	return s, nil
}

// Render returns the message data Send would publish for ev: its body.
func (s *Sink) Render(ev *sinks.Event) ([]byte, error) {
	if _, err := s.subjectFor(ev); err != nil {
		return nil, err
	}
	return ev.Body, nil
}

func (s *Sink) subjectFor(ev *sinks.Event) (string, error) {
	subj, err := s.subject.For(ev)
	if err != nil {
		return "", err
	}
	if strings.ContainsAny(subj, " \t\r\n*>") || strings.HasPrefix(subj, ".") || strings.HasSuffix(subj, ".") || strings.Contains(subj, "..") {
		return "", sinks.Permanent(fmt.Errorf("nats sink: event %s: subject %q is not a valid subject to publish on", ev.ID, subj))
	}
	return subj, nil
}

// conn returns the connection, making it if there is none yet.
func (s *Sink) conn(ctx context.Context) (*nats.Conn, jetstream.JetStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, fmt.Errorf("nats sink: %w", sinks.ErrClosed)
	}
	if s.nc != nil {
		return s.nc, s.js, nil
	}
	timeout := s.timeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	nc, err := nats.Connect(s.cfg.URL,
		nats.Name("hookrouter"),
		nats.Timeout(max(timeout, time.Millisecond)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		// Publishes made while reconnecting wait in this buffer and
		// Flush below waits for them, so a delivery still counts only once
		// the server has it.
		nats.ReconnectBufSize(8<<20),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.log.Warn("nats sink: asynchronous error", "error", s.wrap(err).Error())
		}),
	)
	if err != nil {
		return nil, nil, s.classify(ctx, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, s.classify(ctx, err)
	}
	s.nc, s.js = nc, js
	return nc, js, nil
}

// Send publishes ev and waits for the server (core) or the stream (JetStream).
func (s *Sink) Send(ctx context.Context, ev *sinks.Event) error { return sinks.SendOne(ctx, s, ev) }

// SendBatch publishes evs without waiting between them, then waits for the
// one flush (core) or for every PubAck (JetStream).
func (s *Sink) SendBatch(ctx context.Context, evs []*sinks.Event) []error {
	if len(evs) == 0 {
		return nil
	}
	errs := sinks.NewBatchErrors(len(evs))
	if err := ctx.Err(); err != nil {
		return errs.FailRest(fmt.Errorf("nats sink: %w", err))
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	nc, js, err := s.conn(ctx)
	if err != nil {
		return errs.FailRest(err)
	}
	msgs := make([]*nats.Msg, len(evs))
	for i, ev := range evs {
		subj, err := s.subjectFor(ev)
		if err != nil {
			errs.Fail(i, err)
			continue
		}
		m := nats.NewMsg(subj)
		m.Data = ev.Body
		m.Header.Set(jetstream.MsgIDHeader, ev.ID)
		msgs[i] = m
	}
	if s.cfg.JetStream {
		s.publishJetStream(ctx, js, msgs, errs.Fail)
	} else {
		s.publishCore(ctx, nc, msgs, errs.Fail)
	}
	return errs.Result()
}

func (s *Sink) publishCore(ctx context.Context, nc *nats.Conn, msgs []*nats.Msg, fail func(int, error)) {
	sent := false
	for i, m := range msgs {
		if m == nil {
			continue
		}
		if err := nc.PublishMsg(m); err != nil {
			fail(i, s.classify(ctx, err))
			msgs[i] = nil
			continue
		}
		sent = true
	}
	if !sent {
		return
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		err = s.classify(ctx, err)
		for i, m := range msgs {
			if m != nil {
				fail(i, err)
			}
		}
	}
}

func (s *Sink) publishJetStream(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg, fail func(int, error)) {
	if n := countSet(msgs); n == 1 {
		for i, m := range msgs {
			if m != nil {
				if _, err := js.PublishMsg(ctx, m); err != nil {
					fail(i, s.classifyJS(ctx, js, m.Subject, err))
				}
			}
		}
		return
	}
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		if m == nil {
			continue
		}
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			fail(i, s.classifyJS(ctx, js, m.Subject, err))
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			fail(i, s.classifyJS(ctx, js, msgs[i].Subject, err))
		case <-ctx.Done():
			fail(i, s.classify(ctx, ctx.Err()))
		}
	}
}

func countSet(msgs []*nats.Msg) int {
	n := 0
	for _, m := range msgs {
		if m != nil {
			n++
		}
	}
	return n
}

// classifyJS is classify for a JetStream publish: "no stream answered" is
// permanent only if JetStream itself answers that no stream captures the
// subject; while JetStream is starting up (after a server restart) it is
// retryable.
func (s *Sink) classifyJS(ctx context.Context, js jetstream.JetStream, subject string, err error) error {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		if _, lerr := js.StreamNameBySubject(ctx, subject); errors.Is(lerr, jetstream.ErrStreamNotFound) {
			return sinks.Permanent(fmt.Errorf("nats sink %s: no stream captures subject %q", s.where, subject))
		}
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500 && apiErr.Code != 408 && apiErr.Code != 429 {
		// The stream refused the message (too large, a limit, a wrong
		// expected sequence): sending it again cannot help.
		return sinks.Permanent(s.wrap(err))
	}
	return s.classify(ctx, err)
}

// classify marks bad credentials, a refused subject and an over-large
// payload permanent, and everything else (no connection, timeouts) retryable.
func (s *Sink) classify(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked),
		errors.Is(err, nats.ErrPermissionViolation), errors.Is(err, nats.ErrMaxPayload), errors.Is(err, nats.ErrBadSubject),
		strings.Contains(strings.ToLower(err.Error()), "authorization violation"):
		return sinks.Permanent(s.wrap(err))
	}
	return s.wrap(err)
}

func (s *Sink) wrap(err error) error {
	return sinks.Scrubbed(err, "nats sink "+s.where+": "+err.Error(), s.secrets...)
}

// scrubbed is an error whose text has been cleaned of secrets; Unwrap keeps
// errors.Is and As working on the original.
type scrubbed struct {
	err error
	msg string
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// Close flushes and closes the connection; it is idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.nc != nil {
		s.nc.FlushWithContext(ctx)
		s.nc.Close()
	}
	return nil
}
