package natsq

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// lane pulls one sink's deliveries from its durable consumer and hands them
// to this instance's Take calls. It pulls only while takers wait, and asks
// for as many messages as there are takers (at most fetchBatch): messages an
// instance holds are messages other instances cannot take.
type lane struct {
	q    *Queue
	sink string
	cons jetstream.Consumer // nil until created, and again after a failure

	out chan *held // unbuffered: a hand-over is atomic with the taker's select
	// waiting counts the takers blocked in Take; the puller takes one off
	// for each message it hands over, so the count it pulls for is exact.
	waiting atomic.Int32
	wake    chan struct{}
	// rechecked passes on stale messages that turned out not withdrawn.
	rechecked chan *held
	errLog    lastError
}

// poke tells the puller that a taker arrived.
func (l *lane) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// consumerConfig is the sink's durable consumer, the same for every instance.
func (l *lane) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerPrefix + l.sink,
		Description:   "hookrouter deliveries to sink " + l.sink,
		FilterSubject: l.q.o.prefix + "." + l.sink,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       l.q.o.ackWait,
		// The dispatcher counts attempts and dead-letters; JetStream must
		// never give up on a delivery by itself.
		MaxDeliver: -1,
		// Deliveries waiting for a retry count as ack-pending: a sink that
		// is down for long must not stop its fresh deliveries at a limit.
		MaxAckPending: -1,
	}
}

func (l *lane) ensureConsumer() error {
	ctx, cancel := context.WithTimeout(l.q.ctx, apiTimeout)
	defer cancel()
	c, err := l.q.stream.CreateOrUpdateConsumer(ctx, l.consumerConfig())
	if err != nil {
		return err
	}
	l.cons = c
	return nil
}

// run is the puller. It keeps at most one pull request open, and starts
// one only when takers wait and nothing pulled is left to hand over.
func (l *lane) run() {
	q := l.q
	defer q.bg.Done()
	var (
		ready       []*held // pulled, not yet handed over; kept alive meanwhile
		batch       jetstream.MessageBatch
		msgs        <-chan jetstream.Msg // batch's, nil while no pull is open
		cancelFetch context.CancelFunc
	)
	defer func() {
		// Closing: hand back at once what no taker got, so that another
		// instance need not wait for AckWait.
		if cancelFetch != nil {
			cancelFetch()
			for m := range msgs {
				if h := q.admit(l.sink, m); h != nil {
					ready = append(ready, h)
				}
			}
		}
		for _, h := range ready {
			if _, err := q.release(h.d); err == nil {
				_ = h.msg.Nak()
			}
		}
	}()
	for {
		if msgs == nil && len(ready) == 0 && l.waiting.Load() > 0 {
			b, cancel, err := l.pull()
			if err != nil {
				if errors.Is(err, context.Canceled) && q.ctx.Err() != nil {
					return
				}
				if l.errLog.changed(err) {
					q.log.Warn("pulling deliveries failed", "sink", l.sink, "error", err)
				}
				l.cons = nil // re-create it: the server may have lost it
				if !l.sleep(errorBackoff) {
					return
				}
				continue
			}
			batch, msgs, cancelFetch = b, b.Messages(), cancel
		}
		var out chan *held
		var next *held
		if len(ready) > 0 {
			out, next = l.out, ready[0]
		}
		select {
		case m, ok := <-msgs:
			if ok {
				if q.withdrawn(m) {
					// Its Put failed (ingress answered 503) and the
					// withdrawal has not removed it yet: remove it now.
					_ = m.Ack()
					continue
				}
				h := q.admit(l.sink, m)
				if h == nil {
					continue
				}
				if l.stale(m) {
					q.bg.Add(1)
					go l.recheck(h)
					continue
				}
				ready = append(ready, h)
				continue
			}
			cancelFetch()
			cancelFetch, msgs = nil, nil
			if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				if q.ctx.Err() != nil {
					return
				}
				if l.errLog.changed(err) {
					q.log.Warn("pulling deliveries failed", "sink", l.sink, "error", err)
				}
				l.cons = nil
				if !l.sleep(errorBackoff) {
					return
				}
			}
		case out <- next:
			l.waiting.Add(-1)
			ready[0] = nil
			ready = ready[1:]
		case h := <-l.rechecked:
			ready = append(ready, h)
		case <-l.wake:
		case <-q.ctx.Done():
			return
		}
	}
}

// staleGrace is how long a message stored after its Put gave up waits
// before it is delivered: the publishing instance, if alive, withdraws it
// within milliseconds of the server's answer.
const staleGrace = 2 * time.Second

// stale reports whether the server stored m so late (half-way to its Put's
// timeout, or later: the server stalled, then stored what was waiting in
// its socket) that its Put may have given up: ingress answered 503 and the
// publishing instance is withdrawing it. The clocks of publisher and server
// are compared, so this only picks which messages are checked again
// (recheck), never drops one by itself.
func (l *lane) stale(m jetstream.Msg) bool {
	by, err := strconv.ParseInt(m.Headers().Get(headerStaleAfter), 10, 64)
	if err != nil {
		return false
	}
	md, err := m.Metadata()
	return err == nil && md.Timestamp.UnixNano() > by
}

// recheck holds h, a stale message, for staleGrace (kept in progress, like
// any held message), then drops it if it was withdrawn meanwhile (it is no
// longer in the stream), or hands it over.
func (l *lane) recheck(h *held) {
	q := l.q
	defer q.bg.Done()
	if !sleepCtx(q.ctx, staleGrace) {
		return // closing: it stays owed, and comes back after AckWait
	}
	md, err := h.msg.Metadata()
	if err == nil {
		ctx, cancel := context.WithTimeout(q.ctx, apiTimeout)
		_, err = q.stream.GetMsg(ctx, md.Sequence.Stream)
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			q.log.Info("dropped a delivery withdrawn by the instance whose put failed", "sink", l.sink, "event_id", h.d.Event.ID)
			if _, err := q.release(h.d); err == nil {
				_ = h.msg.Ack()
			}
			return
		}
	}
	// Not withdrawn, or unknown: delivering twice beats losing it.
	select {
	case l.rechecked <- h:
	case <-q.ctx.Done():
	}
}

// pull opens one pull request for as many messages as takers wait.
func (l *lane) pull() (jetstream.MessageBatch, context.CancelFunc, error) {
	if l.cons == nil {
		if err := l.ensureConsumer(); err != nil {
			return nil, nil, err
		}
	}
	n := int(min(max(l.waiting.Load(), 1), fetchBatch))
	ctx, cancel := context.WithTimeout(l.q.ctx, pollWait)
	b, err := l.cons.Fetch(n, jetstream.FetchContext(ctx))
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return b, cancel, nil
}

// sleep waits d, or less if the queue closes; it reports whether d passed.
func (l *lane) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.q.ctx.Done():
		return false
	}
}
