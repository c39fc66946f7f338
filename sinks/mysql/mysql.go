// Package mysql inserts events into a MySQL or MariaDB table with
// database/sql and go-sql-driver/mysql, one row per event (see sinks/dbrow
// for the columns). event_id is the primary key and the insert ends with ON
// DUPLICATE KEY UPDATE event_id = event_id, so a re-delivery of an event
// already stored changes nothing and succeeds. (INSERT IGNORE would do that
// too, but it also turns a refused value into a warning and stores a
// mangled row.) A delivery counts once its insert has committed (autocommit).
//
// Batches go in one multi-row INSERT. If the server refuses it for a row's
// data, the rows are inserted one by one so that only the refused event fails.
package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	driver "github.com/go-sql-driver/mysql"

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
	db      *sql.DB
	rows    *dbrow.Mapper
	table   string // quoted
	where   string // address/db for errors, no credentials
	secret  string
	timeout time.Duration
	create  bool

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
	dc, err := driver.ParseDSN(cfg.DSN)
	if err != nil {
		return nil, sinks.Errorf("dsn", "not a valid MySQL data source name")
	}
	dc.ParseTime = true
	dc.Loc = time.UTC
	if dc.Timeout == 0 {
		dc.Timeout = 5 * time.Second
	}
	conn, err := driver.NewConnector(dc)
	if err != nil {
		return nil, sinks.Errorf("dsn", "not a valid MySQL data source name")
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(cfg.MaxConns)
	db.SetMaxIdleConns(cfg.MaxConns)
	db.SetConnMaxLifetime(30 * time.Minute)
	rows, _ := dbrow.New(cfg.Columns)
	parts, _ := dbrow.CheckTable(cfg.Table)
	s := &Sink{
		db:      db,
		rows:    rows,
		table:   quote(parts...),
		where:   dc.Addr + "/" + dc.DBName,
		secret:  dc.Passwd,
		timeout: cfg.Timeout,
		create:  cfg.CreateTable,
	}
	return s, nil
}

// quote quotes identifiers (checked plain by dbrow) with backticks.
func quote(parts ...string) string {
	for i, p := range parts {
		parts[i] = "`" + p + "`"
	}
	return strings.Join(parts, ".")
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
		return failAll(fmt.Errorf("mysql sink: %w", err))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return failAll(fmt.Errorf("mysql sink: %w", sinks.ErrClosed))
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.ensureTable(ctx); err != nil {
		return failAll(err)
	}
	ncol := len(s.rows.Columns())
	args := make([]any, 0, len(evs)*ncol)
	var idx []int
	for i, ev := range evs {
		var err error
		n := len(args)
		if args, err = s.rows.Row(args, ev); err != nil {
			args = args[:n]
			fail(i, fmt.Errorf("mysql sink: event %s: %w", ev.ID, err))
			continue
		}
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return errs
	}
	_, err := s.db.ExecContext(ctx, s.insert(len(idx)), args...)
	if err == nil {
		return errs
	}
	err = s.classify(ctx, err)
	if len(idx) > 1 && dataError(err) {
		for k, i := range idx {
			if _, err := s.db.ExecContext(ctx, s.insert(1), args[k*ncol:(k+1)*ncol]...); err != nil {
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
		b.WriteString(quote(c))
	}
	b.WriteString(") VALUES ")
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(names)), ", ") + ")"
	for r := range n {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	b.WriteString(" ON DUPLICATE KEY UPDATE `event_id` = `event_id`")
	return b.String()
}

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
		typ := map[dbrow.Kind]string{dbrow.Text: "VARCHAR(255)", dbrow.Time: "DATETIME(6)", dbrow.JSON: "JSON", dbrow.Any: "TEXT"}[c.Kind]
		def := quote(c.Name) + " " + typ
		if c.Name == dbrow.ColEventID {
			def += " NOT NULL PRIMARY KEY"
		}
		cols = append(cols, def)
	}
	q := "CREATE TABLE IF NOT EXISTS " + s.table + " (" + strings.Join(cols, ", ") + ") DEFAULT CHARSET=utf8mb4"
	if _, err := s.db.ExecContext(ctx, q); err != nil {
		return s.classify(ctx, err)
	}
	s.created = true
	return nil
}

// permanent lists the server errors that retrying cannot fix: access denied
// (1044, 1045, 1142, 1143, 1227), unknown database, table or column (1049,
// 1146, 1054), a statement the table cannot take (1064, 1136), and refused
// data (see dataErrors).
var permanent = map[uint16]bool{1044: true, 1045: true, 1142: true, 1143: true, 1227: true, 1049: true, 1146: true, 1054: true, 1064: true, 1136: true}

// dataErrors are a row's data refused: too long (1406), a wrong value (1366,
// 1292, 1265, 1264), invalid JSON (3140; MariaDB's CHECK json_valid, 4025),
// NULL in a NOT NULL column (1048), a foreign key (1452).
var dataErrors = map[uint16]bool{1406: true, 1366: true, 1292: true, 1265: true, 1264: true, 3140: true, 4025: true, 1048: true, 1452: true}

// classify wraps a driver error with the sink's context and its class:
// bad credentials, unknown objects and refused data are permanent; lost
// connections, timeouts, deadlocks (1213), lock waits (1205) and too many
// connections (1040) are retryable. The text never holds the password.
func (s *Sink) classify(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	msg := err.Error()
	var me *driver.MySQLError
	if errors.As(err, &me) && dataErrors[me.Number] {
		// A refused value may be quoted in the message: keep payloads out
		// of errors, which go to logs and the dead-letter file.
		m, _, _ := strings.Cut(me.Message, ": '")
		msg = fmt.Sprintf("Error %d: %s", me.Number, m)
	}
	if s.secret != "" {
		msg = strings.ReplaceAll(msg, s.secret, "REDACTED")
	}
	wrapped := &scrubbed{err: err, msg: "mysql sink " + s.where + ": " + msg}
	if me != nil && (permanent[me.Number] || dataErrors[me.Number]) {
		return sinks.Permanent(wrapped)
	}
	return wrapped
}

func dataError(err error) bool {
	var me *driver.MySQLError
	return errors.As(err, &me) && dataErrors[me.Number]
}

// scrubbed is an error whose text has been cleaned of the password; Unwrap
// keeps errors.Is and As working on the original.
type scrubbed struct {
	err error
	msg string
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

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
