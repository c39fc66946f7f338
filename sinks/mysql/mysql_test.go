package mysql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	_ "github.com/go-sql-driver/mysql"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/dbrow"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
)

// The machine's MariaDB (root without a password, database test). Tests use
// tables of their own, named uniquely, so that parallel runs do not collide.
const testDSN = "root@tcp(127.0.0.1:3306)/test"

const secret = "s3cr3t-mysql-marker"

func uniqueTable() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "hr_test_" + hex.EncodeToString(b)
}

func open(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", testDSN+"?parseTime=true&loc=UTC")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func exec1(t *testing.T, db *sql.DB, q string) {
	t.Helper()
	if _, err := db.Exec(q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func table(t *testing.T, db *sql.DB) string {
	name := uniqueTable()
	exec1(t, db, "CREATE TABLE "+name+" (seq BIGINT AUTO_INCREMENT UNIQUE KEY, event_id VARCHAR(255) PRIMARY KEY, source VARCHAR(255), event VARCHAR(255), received_at DATETIME(6), payload JSON)")
	t.Cleanup(func() { db.Exec("DROP TABLE IF EXISTS " + name) })
	return name
}

// readRows returns the rows of name in order, rendered as dbrow renders what
// it inserts.
func readRows(t *testing.T, db *sql.DB, name string, cols []dbrow.Column, order string) [][]byte {
	t.Helper()
	var names []string
	for _, c := range cols {
		names = append(names, "`"+c.Name+"`")
	}
	rows, err := db.QueryContext(context.Background(), "SELECT "+strings.Join(names, ", ")+" FROM "+name+" ORDER BY "+order)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := map[string]any{}
		for i, c := range cols {
			row[c.Name] = vals[i]
		}
		b, err := dbrow.RenderRow(row, cols)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func newSink(t *testing.T, cfg Config) *Sink {
	t.Helper()
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	return s
}

func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestConformance(t *testing.T) {
	db := open(t)
	cols, _ := dbrow.New(nil)
	sinktest.Run(t, sinktest.Harness{
		Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			name := table(t, db)
			return newSink(t, Config{DSN: testDSN, Table: name}), func() [][]byte { return readRows(t, db, name, cols.Columns(), "seq") }
		},
		Failing: []sinktest.Failing{
			{Name: "unknown table", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{DSN: testDSN, Table: uniqueTable()})
			}},
			{Name: "bad credentials", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{DSN: "nosuchuser:" + secret + "@tcp(127.0.0.1:3306)/test", Table: "t"})
			}},
			{Name: "unknown database", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{DSN: "root@tcp(127.0.0.1:3306)/nosuchdb_hr", Table: "t"})
			}},
			{Name: "payload refused", Permanent: true, New: func(t *testing.T) sinks.Sink {
				name := uniqueTable()
				exec1(t, db, "CREATE TABLE "+name+" (event_id VARCHAR(255) PRIMARY KEY, source VARCHAR(255), event VARCHAR(255), received_at DATETIME(6), payload INT)")
				t.Cleanup(func() { db.Exec("DROP TABLE IF EXISTS " + name) })
				return newSink(t, Config{DSN: testDSN, Table: name})
			}},
			{Name: "connection refused", New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{DSN: fmt.Sprintf("root:%s@tcp(127.0.0.1:%d)/test", secret, closedPort(t)), Table: "t"})
			}},
		},
		Secret: secret,
	})
}

// A re-delivery of a stored event inserts nothing and succeeds; create_table
// makes the table; columns: puts fields in columns of their own.
func TestRedeliveryCreateTableColumns(t *testing.T) {
	db := open(t)
	t.Run("default columns", func(t *testing.T) {
		name := uniqueTable()
		t.Cleanup(func() { db.Exec("DROP TABLE IF EXISTS " + name) })
		s := newSink(t, Config{DSN: testDSN, Table: name, CreateTable: true})
		defer s.Close(t.Context())
		ev := sinktest.Variant(1)
		for range 3 {
			if err := s.Send(t.Context(), ev); err != nil {
				t.Fatalf("send: %v", err)
			}
		}
		if errs := s.SendBatch(t.Context(), []*sinks.Event{ev, sinktest.Variant(2), ev}); errs != nil {
			t.Fatalf("batch: %v", errs)
		}
		var ids []string
		rows, err := db.Query("SELECT event_id FROM " + name + " ORDER BY event_id")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id string
			rows.Scan(&id)
			ids = append(ids, id)
		}
		if !slices.Equal(ids, []string{"ev_0001", "ev_0002"}) {
			t.Fatalf("rows %v, want each event once", ids)
		}
		got := readRows(t, db, name, s.rows.Columns(), "event_id")
		want, _ := s.Render(sinktest.Variant(1))
		if len(got) != 2 || string(got[0]) != string(want) {
			t.Fatalf("read back %s, Render %s", got, want)
		}
	})
	t.Run("columns", func(t *testing.T) {
		name := uniqueTable()
		t.Cleanup(func() { db.Exec("DROP TABLE IF EXISTS " + name) })
		s := newSink(t, Config{DSN: testDSN, Table: name, CreateTable: true, Columns: map[string]string{
			"sender": "message.sender_name",
			"text":   "message?.content?.text",
		}})
		defer s.Close(t.Context())
		if err := s.Send(t.Context(), sinktest.Variant(3)); err != nil {
			t.Fatalf("send: %v", err)
		}
		var id, sender, text string
		if err := db.QueryRow("SELECT event_id, sender, text FROM "+name).Scan(&id, &sender, &text); err != nil {
			t.Fatal(err)
		}
		if id != "ev_0003" || text != "variant 3: \"quoted\"\nnext line ü 🚀" || sender == "" {
			t.Fatalf("row = %q %q %q", id, sender, text)
		}
	})
}

func TestValidate(t *testing.T) {
	c := Config{DSN: "root:" + secret + "@tcp(127.0.0.1:3306", Table: "a;b", Timeout: -1, Columns: map[string]string{"event_id": "1"}}
	var got []string
	for _, err := range c.Validate() {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("problem carries the password: %v", err)
		}
		got = append(got, err.Field)
	}
	if fmt.Sprint(got) != "[dsn table columns.event_id timeout]" {
		t.Fatalf("fields %v", got)
	}
}
