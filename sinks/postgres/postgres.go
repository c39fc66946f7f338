// Package postgres inserts events into a PostgreSQL table with pgx, one row
// per event (see sinks/dbrow for the columns), with ON CONFLICT DO NOTHING:
// event_id is the primary key, so a re-delivery of an event already stored
// inserts nothing and succeeds. A delivery counts once its insert has
// committed (each statement is its own transaction).
//
// Batches go in one multi-row INSERT. If the database refuses it for a row's
// data (a type, a constraint), the rows are inserted one by one so that only
// the refused event fails.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/dbrow"
)

var (
	_ sinks.Sink        = (*Sink)(nil)
	_ sinks.BatchSender = (*Sink)(nil)
	_ sinks.Renderer    = (*Sink)(nil)
)

// Sink inserts events into one table. It is safe for concurrent use.
type Sink struct {
	pool    *pgxpool.Pool
	rows    *dbrow.Mapper
	table   string // quoted
	where   string // host/db for errors, no credentials
	secret  string // the password, scrubbed from error texts
	timeout time.Duration
	create  bool
	log     *slog.Logger

	createMu sync.Mutex
	created  bool

	mu     sync.RWMutex
	closed bool
}

// New checks cfg and builds the sink. It does no I/O: connections are made
// by the first Send.
func New(cfg Config, log *slog.Logger) (*Sink, error) {
	cfg.Default()
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs[0]
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, sinks.Errorf("dsn", "not a valid PostgreSQL connection string")
	}
	pc.MaxConns = int32(cfg.MaxConns)
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	rows, _ := dbrow.New(cfg.Columns)
	parts, _ := dbrow.CheckTable(cfg.Table)
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, sinks.Errorf("dsn", "not a valid PostgreSQL connection string")
	}
	s := &Sink{
		pool:    pool,
		rows:    rows,
		table:   pgx.Identifier(parts).Sanitize(),
		where:   pc.ConnConfig.Host + ":" + strconv.Itoa(int(pc.ConnConfig.Port)) + "/" + pc.ConnConfig.Database,
		secret:  pc.ConnConfig.Password,
		timeout: cfg.Timeout,
		create:  cfg.CreateTable,
		log:     log,
	}
	return s, nil
}

// Render returns the row Send would insert for ev, as JSON (see dbrow).
func (s *Sink) Render(ev *sinks.Event) ([]byte, error) { return s.rows.Render(ev) }

// Send inserts ev's row, or nothing if a row with its event_id exists.
func (s *Sink) Send(ctx context.Context, ev *sinks.Event) error {
	if errs := s.SendBatch(ctx, []*sinks.Event{ev}); errs != nil {
		return errs[0]
	}
	return nil
}

// SendBatch inserts the rows of evs with one statement (see the package doc).
func (s *Sink) SendBatch(ctx context.Context, evs []*sinks.Event) []error {
	if len(evs) == 0 {
		return nil
	}
	var errs []error
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(evs))
		}
		errs[i] = err
	}
	failAll := func(err error) []error {
		for i := range evs {
			if errs == nil || errs[i] == nil {
				fail(i, err)
			}
		}
		return errs
	}
	if err := ctx.Err(); err != nil {
		return failAll(fmt.Errorf("postgres sink: %w", err))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return failAll(fmt.Errorf("postgres sink: %w", sinks.ErrClosed))
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.ensureTable(ctx); err != nil {
		return failAll(err)
	}
	ncol := len(s.rows.Columns())
	args := make([]any, 0, len(evs)*ncol)
	var idx []int // evs index of each row in args
	for i, ev := range evs {
		var err error
		n := len(args)
		if args, err = s.rows.Row(args, ev); err != nil {
			args = args[:n]
			fail(i, fmt.Errorf("postgres sink: event %s: %w", ev.ID, err))
			continue
		}
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return errs
	}
	_, err := s.pool.Exec(ctx, s.insert(len(idx)), args...)
	if err == nil {
		return errs
	}
	err = s.classify(ctx, err)
	if len(idx) > 1 && dataError(err) {
		// One row was refused: find it, inserting the others one by one.
		for k, i := range idx {
			if _, err := s.pool.Exec(ctx, s.insert(1), args[k*ncol:(k+1)*ncol]...); err != nil {
				fail(i, s.classify(ctx, err))
			}
		}
		return errs
	}
	for _, i := range idx {
		fail(i, err)
	}
	return errs
}

// insert is the statement for n rows.
func (s *Sink) insert(n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(s.table)
	b.WriteString(" (")
	names := s.rows.Names()
	for i, c := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pgx.Identifier{c}.Sanitize())
	}
	b.WriteString(") VALUES ")
	p := 1
	for r := range n {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := range names {
			if c > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(p))
			p++
		}
		b.WriteByte(')')
	}
	b.WriteString(" ON CONFLICT DO NOTHING")
	return b.String()
}

// ensureTable runs CREATE TABLE IF NOT EXISTS once, when create_table is set.
func (s *Sink) ensureTable(ctx context.Context) error {
	if !s.create {
		return nil
	}
	s.createMu.Lock()
	defer s.createMu.Unlock()
	if s.created {
		return nil
	}
	var cols []string
	for _, c := range s.rows.Columns() {
		typ := map[dbrow.Kind]string{dbrow.Text: "text", dbrow.Time: "timestamptz", dbrow.JSON: "jsonb", dbrow.Any: "text"}[c.Kind]
		def := pgx.Identifier{c.Name}.Sanitize() + " " + typ
		if c.Name == dbrow.ColEventID {
			def += " PRIMARY KEY"
		}
		cols = append(cols, def)
	}
	if _, err := s.pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+s.table+" ("+strings.Join(cols, ", ")+")"); err != nil {
		var pe *pgconn.PgError
		// Two sinks creating the same table at once: one loses the race on
		// the catalog, and the table exists.
		if !errors.As(err, &pe) || pe.Code != "23505" {
			return s.classify(ctx, err)
		}
	}
	s.created = true
	return nil
}

// classify wraps a pgx error with the sink's context and its class:
// PostgreSQL's SQLSTATE classes for bad credentials (28), an unknown
// database (3D), a statement the table cannot take (42: unknown table or
// column, no privilege), refused data (22, 23) are permanent; everything
// else (connection lost, timeouts, shutdown, 53 insufficient resources,
// 40 serialization) is retryable. The text never holds the password.
func (s *Sink) classify(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	msg := err.Error()
	var pe *pgconn.PgError
	if errors.As(err, &pe) && !strings.HasPrefix(msg, "failed to connect") {
		// A refused value is quoted in the message: keep payloads out of
		// errors, which go to logs and the dead-letter file.
		m, _, _ := strings.Cut(pe.Message, `: "`)
		msg = fmt.Sprintf("%s (SQLSTATE %s)", m, pe.Code)
	}
	wrapped := &scrubbed{err: err, msg: "postgres sink " + s.where + ": " + scrub(msg, s.secret)}
	if pe != nil {
		switch pe.Code[:2] {
		case "28", "3D", "42", "22", "23":
			return sinks.Permanent(wrapped)
		}
	}
	return wrapped
}

// dataError reports whether err is PostgreSQL refusing a row's data.
func dataError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

// scrubbed is an error whose text has been cleaned of a secret; Unwrap keeps
// errors.Is and As working on the original.
type scrubbed struct {
	err error
	msg string
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

func scrub(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "REDACTED")
}

// Close closes the pool, waiting for inserts in progress; it is idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.pool.Close()
	return nil
}
