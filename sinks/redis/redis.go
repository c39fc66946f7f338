// Package redis appends events to Redis Streams with XADD (go-redis), one
// entry per event with the fields id (the event id), source, received_at
// (RFC 3339) and payload (the original body), on a stream whose key is
// rendered from a template and trimmed approximately to max_len entries.
//
// A delivery counts once Redis has answered the XADD. Redis gives no
// idempotent append: an answer lost with the connection means the retry may
// add the entry again, so consumers deduplicate on the id field. A batch is
// one pipeline: one round trip for all its XADDs.
package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

var (
	_ sinks.Sink        = (*Sink)(nil)
	_ sinks.BatchSender = (*Sink)(nil)
	_ sinks.Renderer    = (*Sink)(nil)
)

// Sink appends to streams on one Redis server. It is safe for concurrent use.
type Sink struct {
	client  *redis.Client
	stream  *render.Name
	maxLen  int64
	where   string
	secret  string
	timeout time.Duration

	mu     sync.RWMutex
	closed bool
}

// New checks cfg and builds the sink. It does no I/O.
func New(cfg Config, log *slog.Logger) (*Sink, error) {
	cfg.Default()
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs[0]
	}
	opt, _ := redis.ParseURL(cfg.URL)
	// The dispatcher owns retry: a command resent by the client after a
	// lost answer would add the entry twice behind its back.
	opt.MaxRetries = -1
	opt.DialTimeout = 5 * time.Second
	stream, _ := render.ParseName("redis", "stream", cfg.Stream, false)
	s := &Sink{
		client:  redis.NewClient(opt),
		stream:  stream,
		maxLen:  cfg.MaxLen,
		where:   sinks.RedactURL(cfg.URL),
		secret:  opt.Password,
		timeout: cfg.Timeout,
	}
	return s, nil
}

// Render returns the payload field Send would write for ev: its body.
func (s *Sink) Render(ev *sinks.Event) ([]byte, error) {
	if _, err := s.args(ev); err != nil {
		return nil, err
	}
	return ev.Body, nil
}

func (s *Sink) args(ev *sinks.Event) (*redis.XAddArgs, error) {
	key, err := s.stream.For(ev)
	if err != nil {
		return nil, err
	}
	return &redis.XAddArgs{
		Stream: key,
		MaxLen: s.maxLen,
		Approx: s.maxLen > 0,
		Values: []any{
			"id", ev.ID,
			"source", ev.Source,
			"received_at", ev.ReceivedAt.UTC().Format(time.RFC3339Nano),
			"payload", ev.Body,
		},
	}, nil
}

// Send appends ev to its stream.
func (s *Sink) Send(ctx context.Context, ev *sinks.Event) error { return sinks.SendOne(ctx, s, ev) }

// SendBatch appends evs with one pipeline.
func (s *Sink) SendBatch(ctx context.Context, evs []*sinks.Event) []error {
	if len(evs) == 0 {
		return nil
	}
	errs := sinks.NewBatchErrors(len(evs))
	if err := ctx.Err(); err != nil {
		return errs.FailRest(fmt.Errorf("redis sink: %w", err))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errs.FailRest(fmt.Errorf("redis sink: %w", sinks.ErrClosed))
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	pipe := s.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(evs))
	for i, ev := range evs {
		a, err := s.args(ev)
		if err != nil {
			errs.Fail(i, err)
			continue
		}
		cmds[i] = pipe.XAdd(ctx, a)
	}
	var execErr error
	if pipe.Len() > 0 {
		_, execErr = pipe.Exec(ctx)
	}
	anyCmdErr := false
	for _, c := range cmds {
		anyCmdErr = anyCmdErr || (c != nil && c.Err() != nil)
	}
	for i, c := range cmds {
		switch {
		case c == nil:
		case c.Err() != nil:
			errs.Fail(i, s.classify(ctx, c.Err()))
		case execErr != nil && !anyCmdErr:
			// The connection failed before any command ran (a refused
			// AUTH, for one): go-redis reports it on Exec only.
			errs.Fail(i, s.classify(ctx, execErr))
		}
	}
	return errs.Result()
}

// classify marks Redis's refusals permanent (bad credentials, no
// permission, a key that is not a stream, a command error) and the rest
// retryable: lost connections, timeouts, and the conditions Redis itself
// says will pass (LOADING, BUSY, OOM, READONLY, TRYAGAIN, MASTERDOWN,
// CLUSTERDOWN).
func (s *Sink) classify(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	wrapped := sinks.Scrubbed(err, "redis sink "+s.where+": "+err.Error(), s.secret)
	var re redis.Error
	if errors.As(err, &re) {
		code, _, _ := strings.Cut(re.Error(), " ")
		switch code {
		case "LOADING", "BUSY", "OOM", "READONLY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "MOVED", "ASK":
			return wrapped
		case "NOAUTH", "WRONGPASS", "NOPERM", "WRONGTYPE", "ERR":
			return sinks.Permanent(wrapped)
		}
	}
	return wrapped
}

// Close closes the client's connections once sends in progress end; it is
// idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.client.Close()
}
