// Package dbrow turns an event into the row a database sink (postgres,
// mysql) inserts: the column names, their values, and a JSON view of the row
// for `hookrouter test` and the conformance suite.
//
// By default a row has the columns event_id, source, event, received_at and
// payload. With `columns:` the columns after event_id are the user's, each
// the value of an expr expression over the payload. event_id is always there:
// it is the primary key that makes a re-delivery insert nothing.
package dbrow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// Default column names, in the order of a default row.
const (
	ColEventID    = "event_id"
	ColSource     = "source"
	ColEvent      = "event"
	ColReceivedAt = "received_at"
	ColPayload    = "payload"
)

// Kind is what a column holds, for CREATE TABLE.
type Kind int

// Column kinds.
const (
	Text Kind = iota // event_id, source, event
	Time             // received_at
	JSON             // payload, and any column whose expression gives an object or list
	Any              // a `columns:` expression: its SQL type is the user's table's
)

// Column is one column of the row.
type Column struct {
	Name string
	Kind Kind
	expr *render.Body // nil for the default columns
}

// Mapper builds rows. It is safe for concurrent use.
type Mapper struct {
	cols []Column
}

// identifier is a column or table name usable unquoted in both PostgreSQL and
// MySQL; names are quoted anyway, this only keeps them unsurprising.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// CheckIdent reports what is wrong with a column name or one part of a
// table name.
func CheckIdent(name string) error {
	if !identifier.MatchString(name) {
		return fmt.Errorf("%q is not a plain identifier (letters, digits, _; at most 63)", name)
	}
	return nil
}

// CheckTable checks a table name, optionally qualified by a schema
// ("schema.table"), and returns its parts.
func CheckTable(table string) ([]string, error) {
	if table == "" {
		return nil, errors.New("required")
	}
	parts := strings.Split(table, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf("%q: at most schema.table", table)
	}
	for _, p := range parts {
		if err := CheckIdent(p); err != nil {
			return nil, err
		}
	}
	return parts, nil
}

// New compiles columns (column name → expr expression); nil or empty means
// the default columns. Problems are reported per key, as columns.NAME.
func New(columns map[string]string) (*Mapper, []sinks.FieldError) {
	m := &Mapper{cols: []Column{{Name: ColEventID, Kind: Text}}}
	if len(columns) == 0 {
		m.cols = append(m.cols,
			Column{Name: ColSource, Kind: Text},
			Column{Name: ColEvent, Kind: Text},
			Column{Name: ColReceivedAt, Kind: Time},
			Column{Name: ColPayload, Kind: JSON})
		return m, nil
	}
	var errs []sinks.FieldError
	for _, name := range slices.Sorted(mapsKeys(columns)) {
		field := "columns." + name
		if name == ColEventID {
			errs = append(errs, sinks.Errorf(field, "event_id is always the event's id (the primary key); leave it out"))
			continue
		}
		if err := CheckIdent(name); err != nil {
			errs = append(errs, sinks.Errorf(field, "%v", err))
			continue
		}
		b, err := render.CompileBody(columns[name])
		if err != nil {
			msg, _, _ := strings.Cut(err.Error(), "\n")
			errs = append(errs, sinks.Errorf(field, "expression does not compile: %s", msg))
			continue
		}
		m.cols = append(m.cols, Column{Name: name, Kind: Any, expr: b})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return m, nil
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Columns returns the row's columns in order; event_id is first.
func (m *Mapper) Columns() []Column { return m.cols }

// Names returns the column names in order.
func (m *Mapper) Names() []string {
	out := make([]string, len(m.cols))
	for i, c := range m.cols {
		out[i] = c.Name
	}
	return out
}

// ReceivedAt is the received_at value stored: UTC, to the microsecond, the
// precision of both PostgreSQL's timestamptz and MySQL's DATETIME(6), so that
// what is stored is exactly what Render shows.
func ReceivedAt(ev *sinks.Event) time.Time { return ev.ReceivedAt.UTC().Truncate(time.Microsecond) }

// Row appends ev's values to dst, in column order: strings, a time.Time, the
// payload as compact JSON text, and for `columns:` the expression's value
// (objects and lists as JSON text). An error means the event cannot be
// stored at all (its body is not a JSON object, an expression failed) and is
// permanent.
func (m *Mapper) Row(dst []any, ev *sinks.Event) ([]any, error) {
	p, err := ev.Payload()
	if err != nil {
		return dst, sinks.Permanent(fmt.Errorf("payload: %w", err))
	}
	for _, c := range m.cols {
		switch {
		case c.expr != nil:
			v, err := c.expr.Eval(p)
			if err != nil {
				msg, _, _ := strings.Cut(err.Error(), "\n")
				return dst, sinks.Permanent(fmt.Errorf("columns.%s: %s", c.Name, msg))
			}
			switch v.(type) {
			case map[string]any, []any:
				b, err := json.Marshal(v)
				if err != nil {
					return dst, sinks.Permanent(fmt.Errorf("columns.%s: %w", c.Name, err))
				}
				v = string(b)
			}
			dst = append(dst, v)
		case c.Name == ColEventID:
			dst = append(dst, ev.ID)
		case c.Name == ColSource:
			dst = append(dst, ev.Source)
		case c.Name == ColEvent:
			s, _ := p[ColEvent].(string)
			dst = append(dst, s)
		case c.Name == ColReceivedAt:
			dst = append(dst, ReceivedAt(ev))
		case c.Name == ColPayload:
			var buf bytes.Buffer
			if err := json.Compact(&buf, ev.Body); err != nil {
				return dst, sinks.Permanent(fmt.Errorf("payload: %w", err))
			}
			dst = append(dst, buf.String())
		}
	}
	return dst, nil
}

// Render returns the row Row builds for ev as one JSON object, keys sorted:
// received_at in RFC 3339 with nanosecond digits, JSON columns as JSON.
// RenderRow of the row read back from the table gives the same bytes.
func (m *Mapper) Render(ev *sinks.Event) ([]byte, error) {
	vals, err := m.Row(nil, ev)
	if err != nil {
		return nil, err
	}
	row := make(map[string]any, len(vals))
	for i, c := range m.cols {
		row[c.Name] = vals[i]
	}
	return RenderRow(row, m.cols)
}

// RenderRow renders a row given as column → value (as Row gives them, or as
// read back: JSON columns as text or bytes, times as time.Time).
func RenderRow(row map[string]any, cols []Column) ([]byte, error) {
	out := make(map[string]any, len(row))
	for _, c := range cols {
		v := row[c.Name]
		switch t := v.(type) {
		case time.Time:
			v = t.UTC().Format(time.RFC3339Nano)
		case []byte:
			v = string(t)
		}
		if s, ok := v.(string); ok && c.Kind == JSON {
			dec := json.NewDecoder(strings.NewReader(s))
			dec.UseNumber()
			var j any
			if err := dec.Decode(&j); err != nil {
				return nil, fmt.Errorf("%s: %w", c.Name, err)
			}
			v = j
		}
		out[c.Name] = v
	}
	return json.Marshal(out)
}
