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
// Every delivery an instance holds is kept "in progress" (AckWait 15 s,
// marked every 5 s), so another instance takes over within AckWait of an
// instance's death, and not while it lives and reaches NATS.
//
// At-least-once, and where duplicates can come from: a delivery taken but
// not finished by an instance that stops or dies is redelivered after the
// consumer's AckWait, to this or another instance, even if the dying
// instance had in fact sent it; a NATS server that crashes may forget acks.
// A Put that fails (ingress answers 503) withdraws its messages in the
// background (see withdraw), but one that another instance took before the
// withdrawal reached the server is sent, and the sender's retry (a new
// event id) reaches those sinks a second time.
package natsq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
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
	// JetStream gives it to another taker. It is the takeover time: the
	// deliveries an instance held when it died (kill -9, lost machine) or
	// that were lost in flight at a NATS restart come back within it. A
	// live instance marks every delivery it holds (pulled, being sent,
	// waiting for an open breaker) "in progress" every AckWait/3 and at
	// once after a reconnect, so a slow send is never handed out twice; a
	// delivery waiting for a retry is not held (Retry naks it with the
	// delay). 15 s survives two lost in-progress marks, or an instance that
	// cannot reach NATS for 10 s, yet lets another instance take over well
	// within 30 s.
	DefaultAckWait = 15 * time.Second
	// ConsumerPrefix prefixes the durable consumer of each sink.
	ConsumerPrefix = "hookrouter-"

	// Headers carrying the event's metadata; the body is the message data.
	HeaderEventID    = "Hookrouter-Event-Id"
	HeaderSource     = "Hookrouter-Source"
	HeaderReceivedAt = "Hookrouter-Received-At"

	// headerStaleAfter is when a store of the message becomes suspect:
	// half-way to its Put's timeout (Unix ns, the publisher's clock).
	headerStaleAfter = "Hookrouter-Stale-After"
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
	// keepAlive is the period of the in-progress marks; 0 means AckWait/3.
	// Tests lengthen it to make a mark late.
	keepAlive time.Duration
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
	wjs    jetstream.JetStream // for withdrawals (see Open)
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
	bySeq  map[uint64]*held   // the same, by stream sequence
	// acked are the stream sequences of messages held for long that this
	// instance acked within the last two AckWaits, with when: a copy the
	// server redelivered meanwhile is dropped (see admit).
	acked map[uint64]time.Time

	// idPrefix and puts64 make each Put's message ids unique.
	idPrefix string
	puts64   atomic.Uint64

	// Withdrawals of failed Puts' messages, oldest first (see withdraw).
	wdMu    sync.Mutex
	wdQueue []*withdrawal
	wdIDs   map[string]struct{} // their Nats-Msg-Ids
	wdCount atomic.Int64        // len(wdIDs): pullers skip the lock when 0
	wdKick  chan struct{}

	stats     atomic.Pointer[stats]
	statsKick chan struct{}
	errLog    lastError
}

// held is one message this instance pulled; it is a Delivery's Ref.
type held struct {
	msg  jetstream.Msg
	sink string
	d    *queue.Delivery
	// finishing is set (under heldMu) once Done has begun: the message
	// stays held, and kept in progress, until its ack is confirmed.
	finishing bool
	seq       uint64    // stream sequence; 0 if unknown
	at        time.Time // when it was pulled
}

// stats is a snapshot of what the stream owes, per sink.
type stats struct {
	at     time.Time
	depth  map[string]int
	oldest map[string]time.Time // acceptance of each owing sink's oldest delivery
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
	reconnected := make(chan struct{}, 1)
	nc, err := nats.Connect(url,
		nats.Name("hookrouter"),
		nats.MaxReconnects(-1),
		// No publish is buffered while reconnecting: a Put then fails at
		// once (503) instead of its message being sent after the reconnect,
		// long after the sender was told 503 — and so a message whose Put
		// failed either reached the server before the connection broke or
		// never will, which withdraw relies on.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "server", redactURL(c.ConnectedUrl()))
			select {
			case reconnected <- struct{}{}:
			default:
			}
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
	// Withdrawal markers wait for their answer as long as any API call: a
	// slow answer is no reason to publish them again.
	wjs, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(apiTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q := &Queue{nc: nc, js: js, wjs: wjs, o: o, log: log, ctx: ctx, cancel: cancel,
		lanes: make(map[string]*lane), held: make(map[*held]struct{}), bySeq: make(map[uint64]*held), acked: make(map[uint64]time.Time), statsKick: make(chan struct{}, 1),
		idPrefix: strconv.FormatUint(rand.Uint64(), 36) + "-", wdIDs: make(map[string]struct{}), wdKick: make(chan struct{}, 1)}
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
	q.bg.Add(3)
	go q.keepAlive(reconnected)
	go q.statsLoop()
	go q.withdrawLoop()
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
// refused one for lack of room. On any failure it withdraws the messages
// that were, or may have been, stored (see withdraw), so that an event
// answered 503 is not delivered later.
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
	// The message id is unique to this Put: JetStream then drops only a
	// re-publish of this very message (the client's own retry, a
	// withdrawal's marker), never a later Put of the same event (a replay).
	putID := q.idPrefix + strconv.FormatUint(q.puts64.Add(1), 36)
	// A message stored later than this (half the Put's timeout) may have
	// been answered 503: pullers check it again (see lane.stale).
	staleAfter := strconv.FormatInt(time.Now().Add(q.o.putTimeout/2).UnixNano(), 10)
	sent := make([]*nats.Msg, 0, len(to))
	futures := make([]jetstream.PubAckFuture, 0, len(to))
	var errs []error
	var maybe []*nats.Msg // published, fate unknown
	for _, sink := range to {
		m := &nats.Msg{
			Subject: q.o.prefix + "." + sink,
			Data:    ev.Body,
			Header: nats.Header{
				jetstream.MsgIDHeader:          {ev.ID + ":" + sink + ":" + putID},
				jetstream.ExpectedStreamHeader: {q.o.stream},
				HeaderEventID:                  {ev.ID},
				HeaderSource:                   {ev.Source},
				HeaderReceivedAt:               {received},
				headerStaleAfter:               {staleAfter},
			},
		}
		f, err := q.js.PublishMsgAsync(m)
		if err != nil {
			errs = append(errs, fmt.Errorf("publish to %q: %w", sink, err))
			if !notSent(err) {
				maybe = append(maybe, m)
			}
			break
		}
		sent = append(sent, m)
		futures = append(futures, f)
	}
	var stored []*nats.Msg
	for i, f := range futures {
		select {
		case <-f.Ok():
			stored = append(stored, sent[i])
			continue
		case err := <-f.Err():
			errs = append(errs, fmt.Errorf("publish to %q: %w", to[i], err))
			if !refused(err) {
				maybe = append(maybe, sent[i])
			}
			continue
		case <-ctx.Done():
		}
		errs = append(errs, ctx.Err())
		maybe = append(maybe, sent[i:]...)
		break
	}
	if len(errs) == 0 {
		return nil
	}
	q.withdraw(append(stored, maybe...))
	err := errors.Join(errs...)
	if slices.ContainsFunc(errs, isFull) {
		return fmt.Errorf("%w: %w", queue.ErrFull, err)
	}
	return err
}

// withdrawWindow bounds how long a withdrawal is tried: the stream's
// duplicate window, past which a marker no longer finds (or stops) the
// message it is for.
const withdrawWindow = 2 * time.Minute

// withdrawal is one message of a failed Put to be removed from the stream.
type withdrawal struct {
	msgID, sink string
	until       time.Time
}

// withdraw removes msgs, the messages of a failed Put that were or may have
// been stored, from the stream, in the background: the caller answers 503
// at once, and the sender's retry is a new event. For each one it
// publishes a marker with the same Nats-Msg-Id to a subject no consumer
// reads (<prefix>.<sink>.withdrawn). If the message was stored (its
// acknowledgement lost, or late: a stalled server), JetStream drops the
// marker as a duplicate and names the message's sequence, which is then
// deleted; if not, the marker takes the id, so that the message, should it
// still arrive within the duplicate window, is dropped, and the marker is
// deleted. Publishes are not buffered across a reconnect (see Open), so a
// message not stored when the marker is answered never is. Until it is
// done, this instance's pullers drop the message if they get it (see
// withdrawn). Tried until the server answers, for at most withdrawWindow.
func (q *Queue) withdraw(msgs []*nats.Msg) {
	if len(msgs) == 0 {
		return
	}
	until := time.Now().Add(withdrawWindow)
	q.wdMu.Lock()
	for _, m := range msgs {
		w := &withdrawal{msgID: m.Header.Get(jetstream.MsgIDHeader), sink: strings.TrimPrefix(m.Subject, q.o.prefix+"."), until: until}
		q.wdIDs[w.msgID] = struct{}{}
		q.wdQueue = append(q.wdQueue, w)
	}
	q.wdCount.Store(int64(len(q.wdIDs)))
	q.wdMu.Unlock()
	select {
	case q.wdKick <- struct{}{}:
	default:
	}
}

// withdrawn reports whether m is being withdrawn by this instance.
func (q *Queue) withdrawn(m jetstream.Msg) bool {
	if q.wdCount.Load() == 0 {
		return false
	}
	q.wdMu.Lock()
	_, ok := q.wdIDs[m.Headers().Get(jetstream.MsgIDHeader)]
	q.wdMu.Unlock()
	return ok
}

// withdrawLoop carries out the withdrawals, oldest first, pausing after a
// failure (the server is unreachable: the next ones would fail too).
func (q *Queue) withdrawLoop() {
	defer q.bg.Done()
	for {
		select {
		case <-q.wdKick:
		case <-q.ctx.Done():
			q.wdMu.Lock()
			n := len(q.wdQueue)
			q.wdMu.Unlock()
			if n > 0 {
				q.log.Warn("closing with messages of failed puts not withdrawn; their sinks may get those events", "count", n)
			}
			return
		}
		for {
			q.wdMu.Lock()
			batch := slices.Clone(q.wdQueue[:min(len(q.wdQueue), 256)])
			q.wdMu.Unlock()
			if len(batch) == 0 {
				break
			}
			done, err := q.withdrawBatch(batch)
			var gaveUp []*withdrawal
			if err != nil {
				if q.ctx.Err() != nil {
					break
				}
				for _, w := range batch[done:] {
					if time.Now().After(w.until) {
						gaveUp = append(gaveUp, w)
					}
				}
				if len(gaveUp) > 0 {
					q.log.Error("gave up withdrawing messages of failed puts; their sinks may get those events", "count", len(gaveUp), "error", err)
				} else if q.errLog.changed(err) {
					q.log.Warn("could not withdraw messages of failed puts yet; trying again", "error", err)
				}
			}
			q.wdMu.Lock()
			for _, w := range append(batch[:done], gaveUp...) {
				delete(q.wdIDs, w.msgID)
			}
			q.wdQueue = slices.DeleteFunc(q.wdQueue, func(w *withdrawal) bool {
				_, pending := q.wdIDs[w.msgID]
				return !pending
			})
			q.wdCount.Store(int64(len(q.wdIDs)))
			q.wdMu.Unlock()
			if err != nil && !sleepCtx(q.ctx, errorBackoff) {
				break
			}
		}
	}
}

// withdrawBatch publishes the markers of batch at once, then deletes what
// each names, in order; it returns how many, from the first, are done.
func (q *Queue) withdrawBatch(batch []*withdrawal) (int, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(batch))
	var err error
	for _, w := range batch {
		m := &nats.Msg{
			Subject: q.o.prefix + "." + w.sink + ".withdrawn",
			Header: nats.Header{
				jetstream.MsgIDHeader:          {w.msgID},
				jetstream.ExpectedStreamHeader: {q.o.stream},
			},
		}
		f, perr := q.wjs.PublishMsgAsync(m)
		if perr != nil {
			err = fmt.Errorf("marker: %w", perr)
			break
		}
		futures = append(futures, f)
	}
	ctx, cancel := context.WithTimeout(q.ctx, apiTimeout)
	defer cancel()
	for i, f := range futures {
		var ack *jetstream.PubAck
		select {
		case ack = <-f.Ok():
		case ferr := <-f.Err():
			return i, fmt.Errorf("marker: %w", ferr)
		case <-ctx.Done():
			return i, fmt.Errorf("marker: %w", ctx.Err())
		}
		if derr := q.stream.DeleteMsg(ctx, ack.Sequence); derr != nil {
			var ae *jetstream.APIError
			if !errors.As(derr, &ae) {
				return i, fmt.Errorf("delete message %d: %w", ack.Sequence, derr)
			}
			// The server answered: the message is gone already (acked,
			// or dropped by a puller of this instance), or cannot be
			// removed; trying again would not change that.
			if ae.ErrorCode != jetstream.JSErrCodeMessageNotFound && !strings.Contains(ae.Description, "not found") {
				q.log.Warn("could not withdraw a message of a failed put; its sink may get the event", "sink", batch[i].sink, "seq", ack.Sequence, "error", derr)
			}
			continue
		}
		if ack.Duplicate {
			q.log.Info("withdrew a message of a failed put that the server had stored", "sink", batch[i].sink, "seq", ack.Sequence)
		}
	}
	if err != nil {
		return len(futures), err
	}
	return len(batch), nil
}

// sleepCtx waits d, or less if ctx is done; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// notSent reports whether PublishMsgAsync's err means the message never
// left the client: no connection (publishes are not buffered while
// reconnecting, see Open), too many unacknowledged, or too large.
func notSent(err error) bool {
	return errors.Is(err, nats.ErrReconnectBufExceeded) || errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrConnectionDraining) || errors.Is(err, nats.ErrMaxPayload) ||
		errors.Is(err, jetstream.ErrTooManyStalledMsgs)
}

// refused reports whether a publish's err is the server's answer that it
// did not store the message (as opposed to no answer: a timeout).
func refused(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) || errors.Is(err, nats.ErrNoResponders)
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
	l := &lane{q: q, sink: sink, out: make(chan *held), wake: make(chan struct{}, 1), rechecked: make(chan *held)}
	q.lanes[sink] = l
	q.bg.Add(1)
	go l.run()
	return l, nil
}

// Done acknowledges d and waits for JetStream to confirm it, so that a nil
// error means the delivery will not be handed out again. If the server
// does not answer (a NATS restart), it tries again, keeping d in progress
// meanwhile, for up to AckWait: a delivery the sink has must not come back
// to another instance because its ack fell into a reconnect.
func (q *Queue) Done(d *queue.Delivery) error {
	h, ok := d.Ref.(*held)
	if !ok {
		return fmt.Errorf("queue: delivery of event %q to %q is not from this queue", d.Event.ID, d.Sink)
	}
	q.heldMu.Lock()
	_, in := q.held[h]
	in = in && !h.finishing
	h.finishing = true
	q.heldMu.Unlock()
	if !in {
		return fmt.Errorf("queue: delivery of event %q to %q is not in flight", d.Event.ID, d.Sink)
	}
	// Still held, so still kept in progress, until the ack is confirmed.
	acked := false
	defer func() {
		q.heldMu.Lock()
		q.forget(h)
		// Only a message held for long can have been redelivered
		// meanwhile: remembering just those keeps the set small.
		if acked && h.seq != 0 && time.Since(h.at) >= q.o.ackWait/3 {
			q.acked[h.seq] = time.Now()
		}
		q.heldMu.Unlock()
	}()
	giveUp := time.Now().Add(q.o.ackWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		err := h.msg.DoubleAck(ctx)
		cancel()
		if err == nil {
			acked = true
			return nil
		}
		if q.ctx.Err() != nil || time.Now().After(giveUp) {
			return fmt.Errorf("queue: ack delivery of event %q to %q: %w", d.Event.ID, d.Sink, err)
		}
		if !sleepCtx(q.ctx, 200*time.Millisecond) {
			return fmt.Errorf("queue: ack delivery of event %q to %q: %w", d.Event.ID, d.Sink, err)
		}
	}
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
	in = in && !h.finishing
	q.forget(h)
	q.heldMu.Unlock()
	if !in {
		return nil, fmt.Errorf("queue: delivery of event %q to %q is not in flight", d.Event.ID, d.Sink)
	}
	return h, nil
}

// forget removes h from the held messages. heldMu is held.
func (q *Queue) forget(h *held) {
	delete(q.held, h)
	if q.bySeq[h.seq] == h {
		delete(q.bySeq, h.seq)
	}
}

// admit records a pulled message as this instance's and makes its
// Delivery; it returns nil for a copy of a message this instance still
// holds or has just acked. JetStream sends such a copy when an in-progress
// mark or an ack reached it after AckWait (a loaded machine, a reconnect):
// a live instance must not deliver it a second time. The original's ack
// (or the one sent for the copy) settles both.
func (q *Queue) admit(sink string, m jetstream.Msg) *held {
	h := &held{msg: m, sink: sink, d: decode(sink, m), at: time.Now()}
	h.d.Ref = h
	if md, err := m.Metadata(); err == nil {
		h.seq = md.Sequence.Stream
	}
	q.heldMu.Lock()
	_, holding := q.bySeq[h.seq]
	_, done := q.acked[h.seq]
	if h.seq != 0 && (holding || done) {
		q.heldMu.Unlock()
		if done {
			_ = m.Ack()
		}
		q.log.Debug("dropped a redelivered copy of a delivery this instance holds or acked", "sink", sink, "seq", h.seq)
		return nil
	}
	q.held[h] = struct{}{}
	if h.seq != 0 {
		q.bySeq[h.seq] = h
	}
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
// instance holds (pulled and not yet handed over, being sent, or kept by a
// worker while its sink's breaker is open) is still being worked on, so
// that it is not handed to another instance; and does so at once after a
// reconnect, since marks sent while disconnected were lost.
func (q *Queue) keepAlive(reconnected <-chan struct{}) {
	defer q.bg.Done()
	every := q.o.keepAlive
	if every <= 0 {
		every = max(q.o.ackWait/3, 50*time.Millisecond)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var batch []*held
	for {
		select {
		case <-t.C:
		case <-reconnected:
		case <-q.ctx.Done():
			return
		}
		q.heldMu.Lock()
		batch = batch[:0]
		for h := range q.held {
			batch = append(batch, h)
		}
		for seq, at := range q.acked {
			if time.Since(at) > 2*q.o.ackWait {
				delete(q.acked, seq)
			}
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
	st := &stats{at: time.Now(), depth: make(map[string]int, len(info.State.Subjects)), oldest: map[string]time.Time{}}
	for subject, n := range info.State.Subjects {
		// A sink's subject has one token after the prefix; withdrawal
		// markers (<sink>.withdrawn) are no sink's.
		if sink, ok := strings.CutPrefix(subject, q.o.prefix+"."); ok && !strings.Contains(sink, ".") {
			st.depth[sink] = int(n)
		}
	}
	for sink, n := range st.depth {
		if n == 0 {
			continue
		}
		q.refreshSink(ctx, st, sink)
	}
	q.stats.Store(st)
	return nil
}

// refreshSink corrects st for a sink the stream holds messages for, from
// its consumer's view when it has one: a NATS server that crashed (kill -9)
// can bring back messages that were acked and deleted, behind the
// consumer's ack floor, where no one will ever deliver them again; they are
// not owed. The oldest owed delivery is the first message after the ack
// floor (work-queue retention: acked ones are gone).
func (q *Queue) refreshSink(ctx context.Context, st *stats, sink string) {
	from := uint64(1)
	if c, err := q.stream.Consumer(ctx, ConsumerPrefix+sink); err == nil {
		ci := c.CachedInfo()
		st.depth[sink] = int(ci.NumPending) + ci.NumAckPending
		if st.depth[sink] == 0 {
			return
		}
		from = ci.AckFloor.Stream + 1
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		q.keepOldest(st, sink, err)
		return
	}
	m, err := q.stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(q.o.prefix+"."+sink))
	if err != nil {
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			q.keepOldest(st, sink, err)
		}
		return
	}
	at := m.Time
	if t, err := time.Parse(time.RFC3339Nano, m.Header.Get(HeaderReceivedAt)); err == nil {
		at = t
	}
	st.oldest[sink] = at
}

// keepOldest keeps the previous snapshot's oldest for sink after err.
func (q *Queue) keepOldest(st *stats, sink string, err error) {
	if q.errLog.changed(err) {
		q.log.Warn("could not read a sink's oldest delivery", "stream", q.o.stream, "sink", sink, "error", err)
	}
	if old := q.stats.Load(); old != nil {
		if t, ok := old.oldest[sink]; ok {
			st.oldest[sink] = t
		}
	}
}

// Oldest returns when the oldest delivery owed to sink (by the whole
// stream) was accepted, and false if none is owed (queue.Ager). Like
// Depth, it is refreshed at most every 500 ms, in the background.
func (q *Queue) Oldest(sink string) (time.Time, bool) {
	t, ok := q.currentStats().oldest[sink]
	return t, ok
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

var (
	_ queue.Queue = (*Queue)(nil)
	_ queue.Ager  = (*Queue)(nil)
)

// Shared reports true: instances share the stream (see queue.Sharer).
func (q *Queue) Shared() bool { return true }

// Ping reports whether the NATS server answers (a round trip), for /health.
func (q *Queue) Ping(ctx context.Context) error {
	if err := q.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("nats queue: %w", err)
	}
	return nil
}
