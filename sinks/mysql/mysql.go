// Package mysql inserts events into a MySQL or MariaDB table with
// database/sql and go-sql-driver/mysql, one row per event (see sinks/dbrow
// for the columns and the batching). event_id is the primary key and the
// insert ends with ON DUPLICATE KEY UPDATE event_id = event_id, so a
// re-delivery of an event already stored changes nothing and succeeds.
// (INSERT IGNORE would do that too, but it also turns a refused value into
// a warning and stores a mangled row.) A delivery counts once its insert
// has committed (autocommit).
package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/dbrow"
)

// New checks cfg and builds the sink. It does no I/O: connections are made
// by the first Send.
func New(cfg Config, log *slog.Logger) (*dbrow.Sink, error) {
	cfg.Default()
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs[0]
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
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
	// The driver's own complaints (a connection lost under a query) would
	// go to the standard logger, on stderr; the failure itself reaches the
	// dispatcher as the insert's error.
	dc.Logger = driverLog{log, dc.Passwd}
	conn, err := driver.NewConnector(dc)
	if err != nil {
		return nil, sinks.Errorf("dsn", "not a valid MySQL data source name")
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(cfg.MaxConns)
	db.SetMaxIdleConns(cfg.MaxConns)
	db.SetConnMaxLifetime(30 * time.Minute)
	parts, _ := dbrow.CheckTable(cfg.Table)
	rows, _ := dbrow.New(cfg.Columns)
	d := &dialect{
		db:     db,
		table:  quote(parts...),
		where:  dc.Addr + "/" + dc.DBName,
		secret: dc.Passwd,
		names:  rows.Names(),
	}
	return dbrow.NewSink("mysql", d, cfg.Config), nil
}

// driverLog hands the driver's log lines to the sink's logger at debug.
type driverLog struct {
	log    *slog.Logger
	secret string
}

func (l driverLog) Print(v ...any) {
	l.log.Debug("mysql sink: driver", "message", sinks.Scrubbed(nil, fmt.Sprint(v...), l.secret).Error())
}

// quote quotes identifiers (checked plain by dbrow) with backticks.
func quote(parts ...string) string {
	for i, p := range parts {
		parts[i] = "`" + p + "`"
	}
	return strings.Join(parts, ".")
}

// dialect is MySQL's dbrow.Dialect.
type dialect struct {
	db     *sql.DB
	table  string // quoted
	where  string // address/db for errors, no credentials
	secret string
	names  []string
}

// Insert implements dbrow.Dialect.
func (d *dialect) Insert(ctx context.Context, rows int, args []any) error {
	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(d.table)
	b.WriteString(" (")
	for i, c := range d.names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quote(c))
	}
	b.WriteString(") VALUES ")
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(d.names)), ", ") + ")"
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	b.WriteString(" ON DUPLICATE KEY UPDATE `event_id` = `event_id`")
	if _, err := d.db.ExecContext(ctx, b.String(), args...); err != nil {
		return d.classify(ctx, err)
	}
	return nil
}

// CreateTable implements dbrow.Dialect.
func (d *dialect) CreateTable(ctx context.Context, cols []dbrow.Column) error {
	var defs []string
	for _, c := range cols {
		typ := map[dbrow.Kind]string{dbrow.Text: "VARCHAR(255)", dbrow.Time: "DATETIME(6)", dbrow.JSON: "JSON", dbrow.Any: "TEXT"}[c.Kind]
		def := quote(c.Name) + " " + typ
		if c.Name == dbrow.ColEventID {
			def += " NOT NULL PRIMARY KEY"
		}
		defs = append(defs, def)
	}
	q := "CREATE TABLE IF NOT EXISTS " + d.table + " (" + strings.Join(defs, ", ") + ") DEFAULT CHARSET=utf8mb4"
	if _, err := d.db.ExecContext(ctx, q); err != nil {
		return d.classify(ctx, err)
	}
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
func (d *dialect) classify(ctx context.Context, err error) error {
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
	wrapped := sinks.Scrubbed(err, "mysql sink "+d.where+": "+msg, d.secret)
	if me != nil && (permanent[me.Number] || dataErrors[me.Number]) {
		return sinks.Permanent(wrapped)
	}
	return wrapped
}

// DataError implements dbrow.Dialect.
func (d *dialect) DataError(err error) bool {
	var me *driver.MySQLError
	return errors.As(err, &me) && dataErrors[me.Number]
}

// Close implements dbrow.Dialect.
func (d *dialect) Close() error { return d.db.Close() }
