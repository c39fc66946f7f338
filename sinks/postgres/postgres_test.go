package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/dbrow"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
)

// The machine's PostgreSQL (trust auth, database test). Tests use tables of
// their own, named uniquely, so that parallel runs do not collide.
const testDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

const secret = "s3cr3t-pg-marker"

func uniqueTable(t *testing.T) string { return "hr_test_" + sinktest.Unique() }

func conn(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect to the test database: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func exec1(t *testing.T, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.Exec(t.Context(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// table creates a table with the default columns and an insertion sequence,
// and drops it at the end of the test.
func table(t *testing.T, c *pgx.Conn) string {
	t.Helper()
	name := uniqueTable(t)
	exec1(t, c, "CREATE TABLE "+name+" (seq bigserial, event_id text PRIMARY KEY, source text, event text, received_at timestamptz, payload jsonb)")
	t.Cleanup(func() { c.Exec(context.Background(), "DROP TABLE IF EXISTS "+name) })
	return name
}

// readRows returns the rows of name in insertion order, rendered as dbrow
// renders what it inserts.
func readRows(t *testing.T, c *pgx.Conn, name string, cols []dbrow.Column, order string) [][]byte {
	t.Helper()
	var names []string
	for _, col := range cols {
		names = append(names, col.Name)
	}
	rows, err := c.Query(context.Background(), "SELECT "+strings.Join(names, ", ")+" FROM "+name+" ORDER BY "+order)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		row := map[string]any{}
		for i, col := range cols {
			v := vals[i]
			if col.Kind == dbrow.JSON {
				// pgx decodes jsonb; re-encode it for RenderRow.
				b, _ := json.Marshal(v)
				v = string(b)
			}
			row[col.Name] = v
		}
		b, err := dbrow.RenderRow(row, cols)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
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
	c := conn(t, testDSN)
	cols, _ := dbrow.New(nil)
	sinktest.Run(t, sinktest.Harness{
		Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			name := table(t, c)
			s := newSink(t, Config{dbrow.Config{DSN: testDSN, Table: name}})
			return s, func() [][]byte { return readRows(t, c, name, cols.Columns(), "seq") }
		},
		Failing: []sinktest.Failing{
			{Name: "unknown table", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{dbrow.Config{DSN: testDSN, Table: uniqueTable(t)}})
			}},
			{Name: "unknown role", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{dbrow.Config{DSN: "postgres://nosuchrole:" + secret + "@127.0.0.1:5432/test?sslmode=disable", Table: "t"}})
			}},
			{Name: "unknown database", Permanent: true, New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{dbrow.Config{DSN: "postgres://postgres:" + secret + "@127.0.0.1:5432/nosuchdb_hr?sslmode=disable", Table: "t"}})
			}},
			{Name: "payload refused", Permanent: true, New: func(t *testing.T) sinks.Sink {
				name := uniqueTable(t)
				exec1(t, c, "CREATE TABLE "+name+" (event_id text PRIMARY KEY, source text, event text, received_at timestamptz, payload integer)")
				t.Cleanup(func() { c.Exec(context.Background(), "DROP TABLE IF EXISTS "+name) })
				return newSink(t, Config{dbrow.Config{DSN: testDSN, Table: name}})
			}},
			{Name: "connection refused", New: func(t *testing.T) sinks.Sink {
				return newSink(t, Config{dbrow.Config{DSN: fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/test?sslmode=disable", secret, sinktest.FreePort(t)), Table: "t"}})
			}},
		},
		Secret: secret,
	})
}

// A re-delivery of a stored event inserts nothing and succeeds; create_table
// makes the table; columns: puts fields in columns of their own.
func TestRedeliveryCreateTableColumns(t *testing.T) {
	c := conn(t, testDSN)
	t.Run("default columns", func(t *testing.T) {
		name := uniqueTable(t)
		t.Cleanup(func() { c.Exec(context.Background(), "DROP TABLE IF EXISTS "+name) })
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
		rows, _ := c.Query(t.Context(), "SELECT event_id FROM "+name+" ORDER BY event_id")
		for rows.Next() {
			var id string
			rows.Scan(&id)
			ids = append(ids, id)
		}
		if !slices.Equal(ids, []string{"ev_0001", "ev_0002"}) {
			t.Fatalf("rows %v, want each event once", ids)
		}
	})
	t.Run("columns", func(t *testing.T) {
		name := uniqueTable(t)
		t.Cleanup(func() { c.Exec(context.Background(), "DROP TABLE IF EXISTS "+name) })
		s := newSink(t, Config{dbrow.Config{DSN: testDSN, Table: name, CreateTable: true, Columns: map[string]string{
			"sender": "message.sender_name",
			"text":   "message?.content?.text",
			"engine": `message?.channel?.engine ?? "none"`,
		}}})
		defer s.Close(t.Context())
		if err := s.Send(t.Context(), sinktest.Variant(3)); err != nil {
			t.Fatalf("send: %v", err)
		}
		var id, sender, text, engine string
		if err := c.QueryRow(t.Context(), "SELECT event_id, sender, text, engine FROM "+name).Scan(&id, &sender, &text, &engine); err != nil {
			t.Fatal(err)
		}
		if id != "ev_0003" || text != "variant 3: \"quoted\"\nnext line ü 🚀" || sender == "" || engine == "" {
			t.Fatalf("row = %q %q %q %q", id, sender, text, engine)
		}
		got := readRows(t, c, name, s.Mapper().Columns(), "event_id")
		want, _ := s.Render(sinktest.Variant(3))
		if len(got) != 1 || string(got[0]) != string(want) {
			t.Fatalf("read back %s, Render %s", got, want)
		}
	})
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // the fields with a problem, in order
	}{
		{"ok", Config{dbrow.Config{DSN: testDSN, Table: "public.events"}}, nil},
		{"empty", Config{}, []string{"dsn", "table"}},
		{"bad", Config{dbrow.Config{DSN: "postgres://u:" + secret + "@[::1", Table: "a;drop", Timeout: -1,
			Columns: map[string]string{"x y": "1", "event_id": "1", "ok": "(("}}},
			[]string{"dsn", "table", "columns.event_id", "columns.ok", "columns.x y", "timeout"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, err := range tc.cfg.Validate() {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("problem carries the password: %v", err)
				}
				got = append(got, err.Field)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Validate fields = %q, want %q", got, tc.want)
			}
		})
	}
}

// startPostgres runs a PostgreSQL cluster of the test's own (initdb in a
// temporary folder, trust auth, a free port), as the postgres user when the
// test runs as root. It returns the server, stopped by an immediate
// shutdown (no checkpoint, crash recovery at the next start), and its DSN.
func startPostgres(t *testing.T) (*sinktest.Server, string) {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.Reverse(dirs) // the newest version first
	initdb := sinktest.Binary(t, "initdb", dirs...)
	bin := filepath.Dir(initdb)
	dir, err := os.MkdirTemp("", "hookrouter-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs a postgres user to run the server: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	command := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = dir
		return cmd
	}
	data := filepath.Join(dir, "data")
	if out, err := command("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := sinktest.FreePort(t)
	logFile := filepath.Join(dir, "log")
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	srv := sinktest.StartServer(t, sinktest.ServerSpec{
		Name: "postgres",
		Port: port,
		// It accepts connections before it serves them ("the database
		// system is starting up").
		Ready: func() error {
			c, err := pgx.Connect(context.Background(), dsn)
			if err == nil {
				c.Close(context.Background())
			}
			return err
		},
		Command: func() *exec.Cmd {
			cmd := command("postgres", "-D", data, "-p", strconv.Itoa(port), "-k", dir,
				"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "logging_collector=off")
			log, _ := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			cmd.Stdout, cmd.Stderr = log, log
			return cmd
		},
		Stop: func(cmd *exec.Cmd) error { return cmd.Process.Signal(syscall.SIGQUIT) },
		Log:  logFile,
	})
	return srv, dsn
}

// The server stops (immediate shutdown) in the middle of a run and comes
// back: sends fail retryably meanwhile, the pool reconnects, and every event
// is stored exactly once.
func TestOutage(t *testing.T) {
	srv, dsn := startPostgres(t)
	name := uniqueTable(t)
	s := newSink(t, Config{dbrow.Config{DSN: dsn, Table: name, CreateTable: true, Timeout: 2 * time.Second}})
	defer s.Close(t.Context())
	evs, _ := sinktest.Outage(t, s, 60, srv.Stop, srv.Start)
	c := conn(t, dsn)
	rows, err := c.Query(t.Context(), "SELECT event_id FROM "+name)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	sinktest.Arrived(t, evs, ids, true)
}
