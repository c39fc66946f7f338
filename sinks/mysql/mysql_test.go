package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/dbrow"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
)

// The machine's MariaDB (root without a password, database test). Tests use
// tables of their own, named uniquely, so that parallel runs do not collide.
const testDSN = "root@tcp(127.0.0.1:3306)/test"

const secret = "s3cr3t-mysql-marker"

func uniqueTable() string { return "hr_test_" + sinktest.Unique() }

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

func newSink(t *testing.T, cfg Config) *dbrow.Sink {
	t.Helper()
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	db := open(t)
	cols, _ := dbrow.New(nil)
	sinktest.Run(t, sinktest.Harness{
		Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			name := table(t, db)
			return newSink(t, Config{dbrow.Config{DSN: testDSN, Table: name}}), func() [][]byte { return readRows(t, db, name, cols.Columns(), "seq") }
		},
		Failing: []sinktest.Failing{
			{Name: "unknown table", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{dbrow.Config{DSN: testDSN, Table: uniqueTable()}})
			}},
			{Name: "bad credentials", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{dbrow.Config{DSN: "nosuchuser:" + secret + "@tcp(127.0.0.1:3306)/test", Table: "t"}})
			}},
			{Name: "unknown database", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{dbrow.Config{DSN: "root@tcp(127.0.0.1:3306)/nosuchdb_hr", Table: "t"}})
			}},
			{Name: "payload refused", Permanent: true, New: func(t *testing.T) sinks.Sink {
				name := uniqueTable()
				exec1(t, db, "CREATE TABLE "+name+" (event_id VARCHAR(255) PRIMARY KEY, source VARCHAR(255), event VARCHAR(255), received_at DATETIME(6), payload INT)")
				t.Cleanup(func() { db.Exec("DROP TABLE IF EXISTS " + name) })
				return newSink(t, Config{dbrow.Config{DSN: testDSN, Table: name}})
			}},
			{Name: "connection refused", New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{dbrow.Config{DSN: fmt.Sprintf("root:%s@tcp(127.0.0.1:%d)/test", secret, sinktest.FreePort(t)), Table: "t"}})
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
		s := newSink(t, Config{dbrow.Config{DSN: testDSN, Table: name, CreateTable: true}})
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
		got := readRows(t, db, name, s.Mapper().Columns(), "event_id")
		want, _ := s.Render(sinktest.Variant(1))
		if len(got) != 2 || string(got[0]) != string(want) {
			t.Fatalf("read back %s, Render %s", got, want)
		}
	})
	t.Run("columns", func(t *testing.T) {
		name := uniqueTable()
		t.Cleanup(func() { db.Exec("DROP TABLE IF EXISTS " + name) })
		s := newSink(t, Config{dbrow.Config{DSN: testDSN, Table: name, CreateTable: true, Columns: map[string]string{
			"sender": "message.sender_name",
			"text":   "message?.content?.text",
		}}})
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
	c := Config{dbrow.Config{DSN: "root:" + secret + "@tcp(127.0.0.1:3306", Table: "a;b", Timeout: -1, Columns: map[string]string{"event_id": "1"}}}
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

// startMariaDB runs a MariaDB server of the test's own: a data folder made
// by mariadb-install-db in a temporary folder, a free port, root without a
// password, stopped with SIGKILL (crash recovery at the next start). It
// returns the server and a DSN for its database test.
func startMariaDB(t *testing.T) (*sinktest.Server, string) {
	t.Helper()
	install := sinktest.Binary(t, "mariadb-install-db", "/usr/bin")
	server := sinktest.Binary(t, "mariadbd", "/usr/sbin")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	// --no-defaults: not the machine's my.cnf (its user, paths and port).
	args := []string{"--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal", "--skip-test-db"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	if out, err := exec.Command(install, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", install, err, out)
	}
	port := sinktest.FreePort(t)
	logFile := filepath.Join(dir, "error.log")
	srv := sinktest.StartServer(t, sinktest.ServerSpec{
		Name: "mariadb",
		Port: port,
		Command: func() *exec.Cmd {
			args := []string{"--no-defaults", "--datadir=" + data, "--port=" + strconv.Itoa(port), "--bind-address=127.0.0.1",
				"--socket=" + filepath.Join(dir, "sock"), "--log-error=" + logFile, "--skip-log-bin", "--innodb-buffer-pool-size=16M"}
			if os.Geteuid() == 0 {
				args = append(args, "--user=root")
			}
			return exec.Command(server, args...)
		},
		Log: logFile,
	})
	dsn := fmt.Sprintf("root@tcp(%s)/test", srv.Addr())
	db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(%s)/", srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec1(t, db, "CREATE DATABASE test")
	return srv, dsn
}

// The test's own MariaDB is killed in the middle of a run and started
// again: inserts fail retryably meanwhile, the pool reconnects, and every
// event is stored exactly once (the primary key makes a re-delivery after a
// lost answer insert nothing).
func TestOutage(t *testing.T) {
	srv, dsn := startMariaDB(t)
	name := uniqueTable()
	s := newSink(t, Config{dbrow.Config{DSN: dsn, Table: name, CreateTable: true, Timeout: 2 * time.Second}})
	defer s.Close(t.Context())
	evs, _ := sinktest.Outage(t, s, 60, srv.Stop, srv.Start)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT event_id FROM " + name)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	sinktest.Arrived(t, evs, ids, true)
}
