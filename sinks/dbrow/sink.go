package dbrow

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// Dialect is what one database does its own way: its statements, run with
// its client, and the classification of its errors. Errors it returns are
// already classified (sinks.Permanent or retryable) and hold no password.
type Dialect interface {
	// Insert inserts rows rows, whose values are args in column order, with
	// one statement that inserts nothing for an event_id already stored.
	Insert(ctx context.Context, rows int, args []any) error
	// CreateTable creates the table with cols if it does not exist.
	CreateTable(ctx context.Context, cols []Column) error
	// DataError reports whether err, from Insert, is the database refusing
	// one row's data (a type, a constraint) rather than the statement.
	DataError(err error) bool
	// Close closes the connection pool.
	Close() error
}

// Sink inserts one row per event into one table, through a Dialect. It is
// safe for concurrent use.
//
// A batch goes in one multi-row INSERT. If the database refuses it for a
// row's data, the rows are inserted one by one so that only the refused
// event fails.
type Sink struct {
	name    string // the sink type, in errors
	db      Dialect
	rows    *Mapper
	timeout time.Duration
	create  bool

	createMu sync.Mutex
	created  bool

	mu     sync.RWMutex // held for reading by inserts, for writing by Close
	closed bool
}

var (
	_ sinks.Sink        = (*Sink)(nil)
	_ sinks.BatchSender = (*Sink)(nil)
	_ sinks.Renderer    = (*Sink)(nil)
)

// NewSink returns the sink of type name (postgres, mysql) inserting through
// db with cfg's settings; cfg is valid and defaulted.
func NewSink(name string, db Dialect, cfg Config) *Sink {
	rows, _ := New(cfg.Columns)
	return &Sink{name: name, db: db, rows: rows, timeout: cfg.Timeout, create: cfg.CreateTable}
}

// Mapper returns the sink's row builder.
func (s *Sink) Mapper() *Mapper { return s.rows }

// Render returns the row Send would insert for ev, as JSON (see Mapper.Render).
func (s *Sink) Render(ev *sinks.Event) ([]byte, error) { return s.rows.Render(ev) }

// Send inserts ev's row, or nothing if a row with its event_id exists.
func (s *Sink) Send(ctx context.Context, ev *sinks.Event) error { return sinks.SendOne(ctx, s, ev) }

// SendBatch inserts the rows of evs with one statement.
func (s *Sink) SendBatch(ctx context.Context, evs []*sinks.Event) []error {
	if len(evs) == 0 {
		return nil
	}
	errs := sinks.NewBatchErrors(len(evs))
	if err := ctx.Err(); err != nil {
		return errs.FailRest(fmt.Errorf("%s sink: %w", s.name, err))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errs.FailRest(fmt.Errorf("%s sink: %w", s.name, sinks.ErrClosed))
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.ensureTable(ctx); err != nil {
		return errs.FailRest(err)
	}
	ncol := len(s.rows.Columns())
	args := make([]any, 0, len(evs)*ncol)
	var idx []int // evs index of each row in args
	for i, ev := range evs {
		var err error
		n := len(args)
		if args, err = s.rows.Row(args, ev); err != nil {
			args = args[:n]
			errs.Fail(i, fmt.Errorf("%s sink: event %s: %w", s.name, ev.ID, err))
			continue
		}
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return errs.Result()
	}
	err := s.db.Insert(ctx, len(idx), args)
	if err == nil {
		return errs.Result()
	}
	if len(idx) > 1 && s.db.DataError(err) {
		// One row was refused: find it, inserting the others one by one.
		for k, i := range idx {
			if err := s.db.Insert(ctx, 1, args[k*ncol:(k+1)*ncol]); err != nil {
				errs.Fail(i, err)
			}
		}
		return errs.Result()
	}
	for _, i := range idx {
		errs.Fail(i, err)
	}
	return errs.Result()
}

// ensureTable creates the table once, when create_table is set.
func (s *Sink) ensureTable(ctx context.Context) error {
	if !s.create {
		return nil
	}
	s.createMu.Lock()
	defer s.createMu.Unlock()
	if s.created {
		return nil
	}
	if err := s.db.CreateTable(ctx, s.rows.Columns()); err != nil {
		return err
	}
	s.created = true
	return nil
}

// Close closes the pool once inserts in progress end; it is idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.db.Close()
}
