// Package queue holds accepted events until every sink their rules chose has
// them. A Queue stores each event once, with one Delivery per sink it still
// owes; the dispatcher takes deliveries per sink, and reports each outcome
// with Done (delivered or dead-lettered) or Retry (try again later).
//
// Backends differ only in what they survive: memory survives sink outages but
// not a crash; disk (the default) survives kill -9; nats shares one durable
// stream between instances.
package queue

import (
	"context"
	"errors"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// ErrFull is returned by Put when accepting the event would exceed the
// queue's bound; ingress answers 503 with Retry-After so the sender retries.
var ErrFull = errors.New("queue full")

// ErrClosed is returned by Put and Take once Close has begun.
var ErrClosed = errors.New("queue closed")

// Delivery is one event owed to one sink.
type Delivery struct {
	Event *sinks.Event
	Sink  string
	// Attempts counts the attempts made so far; the dispatcher increments it
	// before calling Retry, and backends that persist it keep retry budgets
	// across restarts.
	Attempts int
	// LastError is the error of the latest failed attempt, if any.
	LastError string

	// Ref is the backend's own handle for the delivery; callers must not touch it.
	Ref any

	// seq is the Scheduler's acceptance number, assigned on first Push.
	seq uint64
	// accepted is the event's ReceivedAt (unix nanoseconds), kept by the
	// Scheduler for Oldest.
	accepted int64
}

// SetAccepted records when d's event was accepted, for Oldest, by a backend
// that does not keep d.Event in memory while d waits (disk). Call it before
// d is first pushed.
func (d *Delivery) SetAccepted(t time.Time) { d.accepted = t.UnixNano() }

// Queue is the contract shared by every backend. All methods are safe for
// concurrent use.
type Queue interface {
	// Put records ev as owed to each of the named sinks (at least one). When
	// it returns nil the event is as safe as the backend makes it (on disk,
	// fsynced, for disk and nats); it returns ErrFull at the bound, ErrClosed
	// after Close, and otherwise nothing is recorded.
	Put(ctx context.Context, ev *sinks.Event, to []string) error
	// Take blocks until a delivery for sink is due, ctx is done, or the queue
	// is closed (ErrClosed). Deliveries come in order of acceptance, except
	// that one waiting for a retry lets later ones pass.
	Take(ctx context.Context, sink string) (*Delivery, error)
	// Done forgets d: it was delivered, or dead-lettered.
	Done(d *Delivery) error
	// Retry makes d due again after delay.
	Retry(d *Delivery, delay time.Duration) error
	// Depth is the number of deliveries owed to sink, due or waiting.
	Depth(sink string) int
	// Pending lists the sinks that are owed deliveries, so that deliveries
	// for a sink no longer in the config are not forgotten after a restart.
	Pending() []string
	// Close stops the queue: Take calls return ErrClosed, and deliveries not
	// yet Done stay owed (durable backends deliver them after the next start).
	Close() error
}

// Drainer is implemented by backends that lose what they hold when the
// process stops (memory): at shutdown, the dispatcher dead-letters the
// deliveries Remaining returns instead of dropping them silently.
type Drainer interface {
	// Remaining returns every delivery still owed, in acceptance order,
	// without removing them.
	Remaining() []*Delivery
}

// Sharer is implemented by queues that several router instances share. The
// dispatcher does not dead-letter deliveries owed to a sink missing from its
// config when the queue is shared: another instance may have that sink.
type Sharer interface {
	Shared() bool
}

// KeyKeeper is implemented by queues that keep committed dedup keys across a
// restart (disk): the key of an event Put with a DedupKey is stored with it,
// in the same durable write, and kept after the event is delivered, until it
// expires or the queue's bound on keys drops the oldest. At start the router
// seeds an in-memory dedup store from Keys.
type KeyKeeper interface {
	// KeepKey records a committed key with no event to queue (an unrouted event); not synced on its own.
	KeepKey(key string, expires time.Time) error
	// Keys calls fn for each kept key not yet expired, oldest first.
	Keys(fn func(key string, expires time.Time)) error
}

// Ager is implemented by queues that know how long their oldest delivery
// per sink has waited (memory, disk), for /health and the
// hookrouter_queue_oldest_seconds gauge.
type Ager interface {
	// Oldest returns when the oldest delivery owed to sink was accepted,
	// and false if none is owed.
	Oldest(sink string) (time.Time, bool)
}
