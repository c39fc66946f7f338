// Package postgres inserts events into a PostgreSQL table with pgx, one row
// per event (see sinks/dbrow for the columns and the batching), with ON
// CONFLICT DO NOTHING: event_id is the primary key, so a re-delivery of an
// event already stored inserts nothing and succeeds. A delivery counts once
// its insert has committed (each statement is its own transaction).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

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
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, sinks.Errorf("dsn", "not a valid PostgreSQL connection string")
	}
	pc.MaxConns = int32(cfg.MaxConns)
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, sinks.Errorf("dsn", "not a valid PostgreSQL connection string")
	}
	parts, _ := dbrow.CheckTable(cfg.Table)
	rows, _ := dbrow.New(cfg.Columns)
	d := &dialect{
		pool:   pool,
		table:  pgx.Identifier(parts).Sanitize(),
		where:  pc.ConnConfig.Host + ":" + strconv.Itoa(int(pc.ConnConfig.Port)) + "/" + pc.ConnConfig.Database,
		secret: pc.ConnConfig.Password,
		names:  rows.Names(),
	}
	return dbrow.NewSink("postgres", d, cfg.Config), nil
}

// dialect is PostgreSQL's dbrow.Dialect.
type dialect struct {
	pool   *pgxpool.Pool
	table  string // quoted
	where  string // host/db for errors, no credentials
	secret string // the password, scrubbed from error texts
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
		b.WriteString(pgx.Identifier{c}.Sanitize())
	}
	b.WriteString(") VALUES ")
	p := 1
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := range d.names {
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
	if _, err := d.pool.Exec(ctx, b.String(), args...); err != nil {
		return d.classify(ctx, err)
	}
	return nil
}

// CreateTable implements dbrow.Dialect.
func (d *dialect) CreateTable(ctx context.Context, cols []dbrow.Column) error {
	var defs []string
	for _, c := range cols {
		typ := map[dbrow.Kind]string{dbrow.Text: "text", dbrow.Time: "timestamptz", dbrow.JSON: "jsonb", dbrow.Any: "text"}[c.Kind]
		def := pgx.Identifier{c.Name}.Sanitize() + " " + typ
		if c.Name == dbrow.ColEventID {
			def += " PRIMARY KEY"
		}
		defs = append(defs, def)
	}
	if _, err := d.pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+d.table+" ("+strings.Join(defs, ", ")+")"); err != nil {
		var pe *pgconn.PgError
		// Two sinks creating the same table at once: one loses the race on
		// the catalog, and the table exists.
		if !errors.As(err, &pe) || pe.Code != "23505" {
			return d.classify(ctx, err)
		}
	}
	return nil
}

// classify wraps a pgx error with the sink's context and its class:
// PostgreSQL's SQLSTATE classes for bad credentials (28), an unknown
// database (3D), a statement the table cannot take (42: unknown table or
// column, no privilege), refused data (22, 23) are permanent; everything
// else (connection lost, timeouts, shutdown, 53 insufficient resources,
// 40 serialization) is retryable. The text never holds the password.
func (d *dialect) classify(ctx context.Context, err error) error {
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
	wrapped := sinks.Scrubbed(err, "postgres sink "+d.where+": "+msg, d.secret)
	if pe != nil {
		switch pe.Code[:2] {
		case "28", "3D", "42", "22", "23":
			return sinks.Permanent(wrapped)
		}
	}
	return wrapped
}

// DataError implements dbrow.Dialect: SQLSTATE classes 22 and 23.
func (d *dialect) DataError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

// Close implements dbrow.Dialect, waiting for the pool's connections.
func (d *dialect) Close() error {
	d.pool.Close()
	return nil
}
