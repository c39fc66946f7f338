// Package natsq is the queue backend on NATS JetStream (`queue.backend:
// nats`), for running several identical hookrouter instances behind a load
// balancer: every instance publishes to, and takes from, one durable stream,
// so any instance can deliver what another accepted.
//
// Layout: one work-queue stream (default "HOOKROUTER", file storage) over
// the subjects `<prefix>.<sink>` (default prefix "hookrouter.deliveries").
// Put publishes one message per sink — the event's body as the message
// data, its id, source and acceptance time as headers — and returns nil
// only once JetStream has acknowledged every one of them (stored; on a
// replicated stream, on a quorum). Each sink has one durable pull consumer,
// `hookrouter-<sink>`, shared by every instance, so each delivery goes to one
// instance at a time. Done acks (and waits for the server's confirmation),
// Retry naks with a delay; the work-queue retention removes a message once
// it is acked, so the stream holds exactly the deliveries still owed and its
// MaxBytes (queue.max_bytes, with DiscardNew) is the queue's bound.
//
// At-least-once, and where duplicates can come from: a delivery taken but
// not finished by an instance that stops or dies is redelivered after the
// consumer's AckWait, to this or another instance, even if the dying
// instance had in fact sent it; and a Put that fails part-way (some sinks'
// messages stored, others refused) removes the stored ones again on a best
// effort basis before returning its error, but a message already taken by a
// worker, or one whose acknowledgement was lost, stays, so the sender's retry
// (a new event id) reaches those sinks a second time.
package natsq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

const (
	// DefaultStream is the name of the stream every instance shares.
	DefaultStream = "HOOKROUTER"
	// DefaultSubjectPrefix is the prefix of the per-sink subjects: a
	// delivery to sink "crm" is published to "hookrouter.deliveries.crm".
	DefaultSubjectPrefix = "hookrouter.deliveries"
	// DefaultAckWait is how long a delivery may stay unacknowledged before
	// JetStream gives it to another taker. Deliveries held by a live
	// instance are kept "in progress" well before that, so it only matters
	// when an instance dies: it bounds the delay before its work is redone.
	DefaultAckWait = 2 * time.Minute
	// ConsumerPrefix prefixes the durable consumer of each sink.
	ConsumerPrefix = "hookrouter-"

	// Headers carrying the event's metadata; the body is the message data.
	HeaderEventID    = "Hookrouter-Event-Id"
	HeaderSource     = "Hookrouter-Source"
	HeaderReceivedAt = "Hookrouter-Received-At"
)

const (
	// fetchBatch caps one pull request; a pull asks for as many messages as
	// there are workers waiting, so an instance does not hoard deliveries
	// that another instance's idle workers could take.
	fetchBatch = 16
	// pollWait is how long one pull request waits on the server for
	// messages before it is renewed.
	pollWait = 5 * time.Second
	// statsEvery bounds how often Depth and Pending ask the server.
	statsEvery = 500 * time.Millisecond
	// apiTimeout bounds stream and consumer management requests, acks and
	// the stats refresh.
	apiTimeout = 5 * time.Second
	// errorBackoff is the pause after a failed pull or consumer setup.
	errorBackoff = time.Second
)

// Option adjusts Open.
type Option func(*options)

type options struct {
	stream     string
	prefix     string
	maxBytes   int64
	ackWait    time.Duration
	putTimeout time.Duration
}

// WithStream names the stream and the subject prefix it captures (prefix +
// ".>"); tests use it to work on a stream of their own. Two streams cannot
// capture the same subjects, so a different stream needs its own prefix.
func WithStream(name, subjectPrefix string) Option {
	return func(o *options) { o.stream, o.prefix = name, subjectPrefix }
}

// WithMaxBytes bounds the stream (queue.max_bytes): once it holds that many
// bytes, Put returns queue.ErrFull. Zero or less means no bound.
func WithMaxBytes(n int64) Option {
	return func(o *options) { o.maxBytes = n }
}

// WithAckWait sets the consumers' AckWait (default DefaultAckWait). Every
// instance should use the same value: the last one to start sets it.
func WithAckWait(d time.Duration) Option {
	return func(o *options) { o.ackWait = d }
}

// WithPutTimeout bounds how long Put waits for JetStream's acknowledgements
// (default 5s); past it Put fails and ingress answers 503.
func WithPutTimeout(d time.Duration) Option {
	return func(o *options) { o.putTimeout = d }
}

// Queue is the JetStream-backed queue.Queue. Create it with Open.
type Queue struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	o      options
	log    *slog.Logger

	// ctx is cancelled by Close: it stops the pulls and the keep-alive.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	lanes  map[string]*lane
	puts   sync.WaitGroup // Puts in progress; Close waits for them
	bg     sync.WaitGroup // pullers and the keep-alive goroutine

	heldMu sync.Mutex
	held   map[*held]struct{} // messages this instance holds: pulled, not yet Done or Retried

	stats     atomic.Pointer[stats]
	statsKick chan struct{}
	errLog    lastError
}

// held is one message this instance pulled; it is a Delivery's Ref.
type held struct {
	msg  jetstream.Msg
	sink string
	d    *queue.Delivery
}

// stats is a snapshot of what the stream owes, per sink.
type stats struct {
	at    time.Time
	depth map[string]int
}

// Open connects to the NATS servers at url (a comma-separated list is
// accepted), creates the stream if it does not exist, and returns the queue.
// An existing stream is used as it is (replicas, placement and limits set by
// its operators are kept), except that its MaxBytes and discard policy are
// set to this queue's bound; it must have work-queue retention.
func Open(url string, log *slog.Logger, opts ...Option) (*Queue, error) {
	o := options{stream: DefaultStream, prefix: DefaultSubjectPrefix, ackWait: DefaultAckWait, putTimeout: 5 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var lastConnErr lastError
	nc, err := nats.Connect(url,
		nats.Name("hookrouter"),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "server", redactURL(c.ConnectedUrl()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if lastConnErr.changed(err) {
				log.Warn("nats asynchronous error", "error", err)
			}
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", redactURLs(url), err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(o.putTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q := &Queue{nc: nc, js: js, o: o, log: log, ctx: ctx, cancel: cancel,
		lanes: make(map[string]*lane), held: make(map[*held]struct{}), statsKick: make(chan struct{}, 1)}
	if err := q.setupStream(); err != nil {
		cancel()
		nc.Close()
		return nil, err
	}
	if err := q.refreshStats(); err != nil {
		cancel()
		nc.Close()
		return nil, err
	}
	q.bg.Add(2)
	go q.keepAlive()
	go q.statsLoop()
	return q, nil
}

// setupStream finds or creates the stream and gives it this queue's bound.
func (q *Queue) setupStream() error {
	ctx, cancel := context.WithTimeout(q.ctx, apiTimeout)
	defer cancel()
	maxBytes := q.o.maxBytes
	if maxBytes <= 0 {
		maxBytes = -1
	}
	want := jetstream.StreamConfig{
		Name:        q.o.stream,
		Description: "hookrouter deliveries, one subject per sink",
		Subjects:    []string{q.o.prefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.WorkQueuePolicy,
		MaxBytes:    maxBytes,
		Discard:     jetstream.DiscardNew,
		MaxMsgs:     -1,
		MaxAge:      0,
		Duplicates:  2 * time.Minute,
	}
	s, err := q.js.Stream(ctx, q.o.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = q.js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = q.js.Stream(ctx, q.o.stream) // another instance was quicker
		}
	}
	if err != nil {
		return fmt.Errorf("stream %q: %w", q.o.stream, err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Retention != jetstream.WorkQueuePolicy {
		return fmt.Errorf("stream %q has %s retention; hookrouter needs a work-queue stream", q.o.stream, cfg.Retention)
	}
	if !slices.Contains(cfg.Subjects, q.o.prefix+".>") {
		return fmt.Errorf("stream %q captures %v, not %q", q.o.stream, cfg.Subjects, q.o.prefix+".>")
	}
	if cfg.MaxBytes != maxBytes || cfg.Discard != jetstream.DiscardNew {
		q.log.Info("updating the stream's bound", "stream", q.o.stream, "max_bytes", maxBytes, "was", cfg.MaxBytes)
		cfg.MaxBytes, cfg.Discard = maxBytes, jetstream.DiscardNew
		if s, err = q.js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("stream %q: update bound: %w", q.o.stream, err)
		}
	}
	q.stream = s
	return nil
}

// Put publishes one message per sink in to, all at once, and waits for
// every acknowledgement. It returns queue.ErrFull (wrapped) if the stream
// refused one for lack of room; on any failure it deletes the messages that
// were stored (best effort, see the package comment) so that nothing is
// recorded.
func (q *Queue) Put(ctx context.Context, ev *sinks.Event, to []string) error {
	if len(to) == 0 {
		return errors.New("queue: put with no sinks")
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return queue.ErrClosed
	}
	q.puts.Add(1)
	q.mu.Unlock()
	defer q.puts.Done()

	received := ev.ReceivedAt.UTC().Format(time.RFC3339Nano)
	futures := make([]jetstream.PubAckFuture, 0, len(to))
	var errs []error
	for _, sink := range to {
		m := &nats.Msg{
			Subject: q.o.prefix + "." + sink,
			Data:    ev.Body,
			Header: nats.Header{
				jetstream.MsgIDHeader:          {ev.ID + ":" + sink},
				jetstream.ExpectedStreamHeader: {q.o.stream},
				HeaderEventID:                  {ev.ID},
				HeaderSource:                   {ev.Source},
				HeaderReceivedAt:               {received},
			},
		}
		f, err := q.js.PublishMsgAsync(m)
		if err != nil {
			errs = append(errs, fmt.Errorf("publish to %q: %w", sink, err))
			break
		}
		futures = append(futures, f)
	}
	var stored []uint64
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			stored = append(stored, ack.Sequence)
		case err := <-f.Err():
			errs = append(errs, fmt.Errorf("publish to %q: %w", to[i], err))
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil
	}
	q.unpublish(stored)
	err := errors.Join(errs...)
	if slices.ContainsFunc(errs, isFull) {
		return fmt.Errorf("%w: %w", queue.ErrFull, err)
	}
	return err
}

// unpublish deletes the messages of a failed Put that were stored; a
// message already taken by a worker may still be delivered.
func (q *Queue) unpublish(seqs []uint64) {
	if len(seqs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	for _, seq := range seqs {
		if err := q.stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			q.log.Warn("could not remove a message of a failed put; its sink may get the event twice", "seq", seq, "error", err)
		}
	}
}

// isFull reports whether err is JetStream refusing a message for lack of
// room: the stream's own limits (with DiscardNew) or the server's storage.
func isFull(err error) bool {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode {
	case 10047: // insufficient storage resources available
		return true
	case 10077: // store failed: "maximum bytes exceeded", "maximum messages exceeded", …
		return strings.Contains(ae.Description, "maximum")
	}
	return false
}

// Take blocks until a delivery for sink is pulled for this caller, ctx is
// done, or the queue is closed (ErrClosed). The first Take for a sink
// creates (or joins) its durable consumer.
func (q *Queue) Take(ctx context.Context, sink string) (*queue.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, err := q.lane(sink)
	if err != nil {
		return nil, err
	}
	l.waiting.Add(1) // the puller takes it off when it hands one over
	l.poke()
	select {
	case h := <-l.out:
		return h.d, nil
	case <-ctx.Done():
		l.waiting.Add(-1)
		return nil, ctx.Err()
	case <-q.ctx.Done():
		l.waiting.Add(-1)
		return nil, queue.ErrClosed
	}
}

// lane returns sink's puller, starting it on first use. The puller creates
// (or joins) the sink's durable consumer itself, so that a slow or failing
// server delays Take, not the caller of lane.
func (q *Queue) lane(sink string) (*lane, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, queue.ErrClosed
	}
	if l := q.lanes[sink]; l != nil {
		return l, nil
	}
	l := &lane{q: q, sink: sink, out: make(chan *held), wake: make(chan struct{}, 1)}
	q.lanes[sink] = l
	q.bg.Add(1)
	go l.run()
	return l, nil
}

// Done acknowledges d and waits for JetStream to confirm it, so that a nil
// error means the delivery will not be handed out again.
func (q *Queue) Done(d *queue.Delivery) error {
	h, err := q.release(d)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	if err := h.msg.DoubleAck(ctx); err != nil {
		return fmt.Errorf("queue: ack delivery of event %q to %q: %w", d.Event.ID, d.Sink, err)
	}
	return nil
}

// Retry hands d back to JetStream, to be delivered again (to any instance)
// after delay. The redelivery's Attempts is the message's delivery count
// minus one, which is the dispatcher's count as long as every delivery ends
// in one attempt: see Attempts in the README for when it runs ahead.
func (q *Queue) Retry(d *queue.Delivery, delay time.Duration) error {
	h, err := q.release(d)
	if err != nil {
		return err
	}
	if delay > 0 {
		err = h.msg.NakWithDelay(delay)
	} else {
		err = h.msg.Nak()
	}
	if err != nil {
		return fmt.Errorf("queue: nak delivery of event %q to %q: %w", d.Event.ID, d.Sink, err)
	}
	return nil
}

// release stops keeping d's message alive and returns it.
func (q *Queue) release(d *queue.Delivery) (*held, error) {
	h, ok := d.Ref.(*held)
	if !ok {
		return nil, fmt.Errorf("queue: delivery of event %q to %q is not from this queue", d.Event.ID, d.Sink)
	}
	q.heldMu.Lock()
	_, in := q.held[h]
	delete(q.held, h)
	q.heldMu.Unlock()
	if !in {
		return nil, fmt.Errorf("queue: delivery of event %q to %q is not in flight", d.Event.ID, d.Sink)
	}
	return h, nil
}

// hold records a pulled message as this instance's and makes its Delivery.
func (q *Queue) hold(sink string, m jetstream.Msg) *held {
	h := &held{msg: m, sink: sink, d: decode(sink, m)}
	h.d.Ref = h
	q.heldMu.Lock()
	q.held[h] = struct{}{}
	q.heldMu.Unlock()
	return h
}

// decode rebuilds the Delivery a message carries. A message published by
// something other than Put (missing headers) is still delivered, with what
// can be recovered.
func decode(sink string, m jetstream.Msg) *queue.Delivery {
	hdr := m.Headers()
	ev := &sinks.Event{ID: hdr.Get(HeaderEventID), Source: hdr.Get(HeaderSource), Body: m.Data()}
	if t, err := time.Parse(time.RFC3339Nano, hdr.Get(HeaderReceivedAt)); err == nil {
		ev.ReceivedAt = t
	}
	d := &queue.Delivery{Event: ev, Sink: sink}
	if md, err := m.Metadata(); err == nil {
		// NumDelivered counts this delivery too.
		d.Attempts = int(md.NumDelivered) - 1
		if ev.ID == "" {
			ev.ID = fmt.Sprintf("%s-%d", md.Stream, md.Sequence.Stream)
		}
		if ev.ReceivedAt.IsZero() {
			ev.ReceivedAt = md.Timestamp
		}
	}
	return d
}

// keepAlive tells JetStream, well within AckWait, that every message this
// instance holds is still being worked on: a send that waits for an open
// breaker or a slow destination must not be handed to another instance.
func (q *Queue) keepAlive() {
	defer q.bg.Done()
	t := time.NewTicker(max(q.o.ackWait/3, 50*time.Millisecond))
	defer t.Stop()
	var batch []*held
	for {
		select {
		case <-t.C:
		case <-q.ctx.Done():
			return
		}
		q.heldMu.Lock()
		batch = batch[:0]
		for h := range q.held {
			batch = append(batch, h)
		}
		q.heldMu.Unlock()
		for _, h := range batch {
			// ErrMsgAlreadyAckd: Done or Retry won the race; nothing to do.
			if err := h.msg.InProgress(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) && q.errLog.changed(err) {
				q.log.Warn("could not extend a held delivery", "sink", h.sink, "error", err)
			}
		}
	}
}

// Depth is the number of deliveries owed to sink by the whole stream (all
// instances): waiting, waiting for a retry, or being sent. It is refreshed
// at most every 500 ms.
func (q *Queue) Depth(sink string) int {
	return q.currentStats().depth[sink]
}

// Pending lists, sorted, the sinks the stream owes deliveries to.
func (q *Queue) Pending() []string {
	st := q.currentStats()
	out := make([]string, 0, len(st.depth))
	for sink, n := range st.depth {
		if n > 0 {
			out = append(out, sink)
		}
	}
	slices.Sort(out)
	return out
}

// currentStats returns the latest snapshot and, if it is stale, asks for a
// new one: callers (the dispatcher's reconcile, /health) never wait on the
// network.
func (q *Queue) currentStats() *stats {
	st := q.stats.Load()
	if time.Since(st.at) >= statsEvery {
		select {
		case q.statsKick <- struct{}{}:
		default:
		}
	}
	return st
}

// statsLoop refreshes the snapshot when asked, at most every statsEvery.
func (q *Queue) statsLoop() {
	defer q.bg.Done()
	for {
		select {
		case <-q.statsKick:
		case <-q.ctx.Done():
			return
		}
		if time.Since(q.stats.Load().at) < statsEvery {
			continue
		}
		_ = q.refreshStats() // logged there; the old numbers stay meanwhile
	}
}

// refreshStats reads the number of messages per subject. In a work-queue
// stream a message lives until acked, so that count is exactly what each
// sink is owed (its consumer's NumPending + NumAckPending), and it is known
// for sinks no instance has a consumer for yet.
func (q *Queue) refreshStats() error {
	ctx, cancel := context.WithTimeout(q.ctx, apiTimeout)
	defer cancel()
	info, err := q.stream.Info(ctx, jetstream.WithSubjectFilter(q.o.prefix+".>"))
	if err != nil {
		if old := q.stats.Load(); old != nil {
			if q.errLog.changed(err) {
				q.log.Warn("could not read the stream's state", "stream", q.o.stream, "error", err)
			}
			// Keep the old numbers until the next period.
			next := *old
			next.at = time.Now()
			q.stats.Store(&next)
		}
		return fmt.Errorf("stream %q: info: %w", q.o.stream, err)
	}
	st := &stats{at: time.Now(), depth: make(map[string]int, len(info.State.Subjects))}
	for subject, n := range info.State.Subjects {
		if sink, ok := strings.CutPrefix(subject, q.o.prefix+"."); ok {
			st.depth[sink] = int(n)
		}
	}
	q.stats.Store(st)
	return nil
}

// Close stops pulling: Take calls return ErrClosed; messages pulled but not
// yet taken are handed back at once. Deliveries taken and not yet Done stay
// owed: JetStream redelivers them after AckWait, to another instance or to
// this one after a restart. Done and Retry fail after Close.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	q.puts.Wait()
	q.cancel()
	q.bg.Wait()
	// The naks of the pullers are plain publishes: flush them before closing.
	err := q.nc.FlushTimeout(apiTimeout)
	q.nc.Close()
	if err != nil {
		return fmt.Errorf("nats flush: %w", err)
	}
	return nil
}

// lastError remembers the latest error's text, so that a failure that
// repeats is logged once, when it changes.
type lastError struct {
	mu   sync.Mutex
	text string
}

func (e *lastError) changed(err error) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err.Error() == e.text {
		return false
	}
	e.text = err.Error()
	return true
}

// redactURLs hides the credentials of each URL in a comma-separated list.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		parts[i] = redactURL(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable url)"
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	return u.String()
}

var _ queue.Queue = (*Queue)(nil)

// Shared reports true: instances share the stream (see queue.Sharer).
func (q *Queue) Shared() bool { return true }

// Ping reports whether the NATS server answers (a round trip), for /health.
func (q *Queue) Ping(ctx context.Context) error {
	if err := q.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("nats queue: %w", err)
	}
	return nil
}
