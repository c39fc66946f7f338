package journal

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go
)

// schema is the journal's tables. Times are unix milliseconds (in the sqlite3
// shell: datetime(received_at/1000, 'unixepoch')); rules and sinks are JSON
// arrays; payload is the body as received (NULL when journal.bodies is off or
// the request was rejected). seq is one sequence over events and steps: the
// order the journal learnt things in.
const schema = `
CREATE TABLE IF NOT EXISTS events (
	seq          INTEGER PRIMARY KEY,
	id           TEXT NOT NULL UNIQUE,
	received_at  INTEGER NOT NULL,
	source       TEXT NOT NULL,
	event        TEXT NOT NULL DEFAULT '',
	dedup_key    TEXT NOT NULL DEFAULT '',
	verdict      TEXT NOT NULL,
	status       INTEGER NOT NULL,
	reason       TEXT NOT NULL DEFAULT '',
	duplicate_of TEXT NOT NULL DEFAULT '',
	rules        TEXT NOT NULL DEFAULT '[]',
	sinks        TEXT NOT NULL DEFAULT '[]',
	payload      TEXT
);
CREATE INDEX IF NOT EXISTS events_received_at ON events(received_at);
-- No index on dedup_key: its keys arrive in random order, so every insert
-- dirtied a page of it and the writer spent 2-4x the time (BenchmarkWriter).
-- The ack path names a duplicate's original from memory (router.recentKeys);
-- Get finds an older one by scanning back from the duplicate.
DROP INDEX IF EXISTS events_dedup_key;
CREATE TABLE IF NOT EXISTS deliveries (
	event_id   TEXT NOT NULL,
	sink       TEXT NOT NULL,
	state      TEXT NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (event_id, sink)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS steps (
	seq         INTEGER PRIMARY KEY,
	event_id    TEXT NOT NULL,
	sink        TEXT NOT NULL,
	state       TEXT NOT NULL,
	at          INTEGER NOT NULL,
	duration_ms REAL NOT NULL DEFAULT 0,
	outcome     TEXT NOT NULL DEFAULT '',
	status      INTEGER NOT NULL DEFAULT 0,
	error       TEXT NOT NULL DEFAULT '',
	note        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS steps_event ON steps(event_id, seq);
CREATE INDEX IF NOT EXISTS steps_dead_letter ON steps(seq) WHERE state = 'dead_letter';
`

// FileName is the journal's database file in data_dir.
const FileName = "journal.db"

// Options tune a Journal; the zero value takes the defaults. They are for
// tests and benchmarks: the config file sets Config only.
type Options struct {
	Log *slog.Logger
	// QueueSize bounds the records waiting for the writer (default 16384).
	QueueSize int
	// BatchSize bounds the records written in one transaction (default 1024).
	BatchSize int
	// RetentionEvery is the period of the retention pass (default 1m).
	RetentionEvery time.Duration
	// WriteDelay makes the writer sleep this long before each batch: a
	// writer made slow on purpose, to show drops being counted.
	WriteDelay time.Duration
	// CPUShare bounds the writer's time, as a share of one core (default
	// 0.15): after each batch it rests until its busy time is at most that
	// share. Under a load the journal cannot keep within it, records are
	// dropped and counted, so the journal never takes more than that from
	// ingress and delivery, which own the machine.
	CPUShare float64
	// Now is the clock of retention (default time.Now).
	Now func() time.Time
}

// Stats are the journal's counters, shown in /health.
type Stats struct {
	// Written counts records committed to the database.
	Written int64 `json:"written"`
	// Dropped counts records lost because the writer was behind (or failing).
	Dropped int64 `json:"dropped"`
	// Unsampled counts rejected requests not journaled under a flood of them.
	Unsampled int64 `json:"rejected_not_recorded"`
	// Bytes is the database's size in use (pages not free).
	Bytes int64 `json:"bytes"`
	// Pending is the records waiting for the writer.
	Pending int `json:"pending"`
	// LastError is the writer's latest failure, cleared by a success.
	LastError string `json:"last_error,omitempty"`
}

// Journal is an open journal. Its Record methods never block; it is safe for
// concurrent use.
type Journal struct {
	cfg  Config
	opts Options
	log  *slog.Logger
	db   *sql.DB
	path string

	in      chan item
	closing chan struct{}
	abandon chan struct{} // closed when Close's ctx is done: stop draining
	done    chan struct{}
	closed  atomic.Bool

	written, dropped, unsampled atomic.Int64
	bytes                       atomic.Int64
	lastErr                     atomic.Pointer[string]

	// notify is closed (and replaced) after every commit, to wake tails.
	notifyMu sync.Mutex
	notify   chan struct{}
	lastSeq  atomic.Int64

	sampler sampler
	commits int // batches committed; the writer's own

	// wconn is the writer's own connection, and full its statements of
	// rowsPerInsert rows prepared on it: parsing a statement of 64 rows per
	// batch was a sixth of the writer's time.
	wconn *sql.Conn
	full  struct{ events, steps, deliveries *sql.Stmt }
}

// Multi-row statements: per row, a statement costs more than its insert.
const (
	insertEvents     = `INSERT OR IGNORE INTO events (seq, id, received_at, source, event, dedup_key, verdict, status, reason, duplicate_of, rules, sinks, payload) VALUES `
	insertSteps      = `INSERT INTO steps (seq, event_id, sink, state, at, duration_ms, outcome, status, error, note) VALUES `
	insertDeliveries = `INSERT INTO deliveries (event_id, sink, state, updated_at) VALUES `
	// Rows are applied in order: a later step of the same delivery in one
	// statement wins.
	upsertDeliveries = ` ON CONFLICT (event_id, sink) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at`
)

func eventsSQL(n int) string     { return insertEvents + placeholders(n, 13) }
func stepsSQL(n int) string      { return insertSteps + placeholders(n, 10) }
func deliveriesSQL(n int) string { return insertDeliveries + placeholders(n, 4) + upsertDeliveries }

// prepareWriter takes the writer's connection and prepares its statements.
func (j *Journal) prepareWriter(ctx context.Context) error {
	c, err := j.db.Conn(ctx)
	if err != nil {
		return err
	}
	j.wconn = c
	for _, p := range []struct {
		dst *(*sql.Stmt)
		q   string
	}{
		{&j.full.events, eventsSQL(rowsPerInsert)},
		{&j.full.steps, stepsSQL(rowsPerInsert)},
		{&j.full.deliveries, deliveriesSQL(rowsPerInsert)},
	} {
		// Prepared on the pool, not on c: a Conn's statement is prepared
		// again in each of its transactions (database/sql's Tx.Stmt),
		// a pool's once per connection it runs on.
		if *p.dst, err = j.db.PrepareContext(ctx, p.q); err != nil {
			return err
		}
	}
	return nil
}

// closeWriter releases what prepareWriter took.
func (j *Journal) closeWriter() {
	for _, st := range []*sql.Stmt{j.full.events, j.full.steps, j.full.deliveries} {
		if st != nil {
			st.Close()
		}
	}
	if j.wconn != nil {
		j.wconn.Close()
	}
}

type item struct {
	ev *Event
	st *Step
	// flushed, on an item with neither, is closed once everything sent
	// before it is committed (Flush).
	flushed chan struct{}
}

// Open opens (creating it) the journal database in dir and starts its writer.
func Open(dir string, cfg Config, opts Options) (*Journal, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 16384
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1024
	}
	if opts.RetentionEvery <= 0 {
		opts.RetentionEvery = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CPUShare <= 0 || opts.CPUShare > 1 {
		opts.CPUShare = defaultCPUShare
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	path := filepath.Join(dir, FileName)
	// Payloads may be personal data: the file is the owner's only. SQLite
	// creates the -wal and -shm files with the database's mode.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	} else {
		f.Close()
	}
	// auto_vacuum must be set before the first table exists: it lets the
	// size retention give freed pages back to the file system. temp_store
	// keeps the statement journal of the writer's multi-row inserts in
	// memory, not in a temporary file (~13% of the writer's time).
	q := url.Values{}
	for _, p := range []string{"auto_vacuum(INCREMENTAL)", "journal_mode(WAL)", "synchronous(NORMAL)", "busy_timeout(5000)", "temp_store(MEMORY)"} {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	// One writer and a few readers: WAL lets them run side by side.
	db.SetMaxOpenConns(4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: %s: %w", path, err)
	}
	j := &Journal{
		cfg: cfg, opts: opts, log: opts.Log.With("component", "journal"), db: db, path: path,
		in: make(chan item, opts.QueueSize), closing: make(chan struct{}), abandon: make(chan struct{}), done: make(chan struct{}),
		notify: make(chan struct{}),
	}
	var seq int64
	if err := db.QueryRowContext(ctx, `SELECT max(coalesce((SELECT max(seq) FROM events), 0), coalesce((SELECT max(seq) FROM steps), 0))`).Scan(&seq); err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: %s: %w", path, err)
	}
	j.lastSeq.Store(seq)
	if err := j.prepareWriter(ctx); err != nil {
		j.closeWriter()
		db.Close()
		return nil, fmt.Errorf("journal: %s: %w", path, err)
	}
	j.sampler.init(rejectRate, rejectBurst)
	j.refreshSize(ctx)
	go j.write(seq)
	return j, nil
}

// Path is the database file.
func (j *Journal) Path() string { return j.path }

// Bodies reports whether payloads are kept.
func (j *Journal) Bodies() bool { return j.cfg.Bodies }

// Config is the configuration the journal was opened with.
func (j *Journal) Config() Config { return j.cfg }

// RecordEvent journals a request's journey as known when it was answered.
// ev belongs to the journal afterwards; its Payload is not copied and must
// not be modified. It never blocks: if the writer is behind, the record is
// dropped and counted. A rejected request's payload is never kept, and
// rejections beyond a rate are counted rather than journaled.
func (j *Journal) RecordEvent(ev *Event) {
	if ev.Verdict == Rejected {
		ev.Payload = nil
		if !j.sampler.allow() {
			j.unsampled.Add(1)
			return
		}
	} else if !j.cfg.Bodies {
		// An explanation shows payload values: kept only with the payload.
		ev.Payload, ev.explain = nil, nil
	}
	j.send(item{ev: ev})
}

// RecordStep journals a change to one delivery: an attempt and the state it
// left the delivery in, or a state change such as replayed. It never blocks.
func (j *Journal) RecordStep(st Step) {
	st.Error = Scrub(st.Error)
	j.send(item{st: &st})
}

func (j *Journal) send(it item) {
	// The channel is never closed: a record sent as Close starts is written
	// by the writer's last drain, or left unwritten with the process.
	if j.closed.Load() {
		j.dropped.Add(1)
		return
	}
	select {
	case j.in <- it:
	default:
		j.dropped.Add(1)
	}
}

// Flush waits until every record given before it is written (or dropped),
// or ctx is done. Unlike the Record methods it blocks: it is for tests,
// benchmarks and tools, never for the request path.
func (j *Journal) Flush(ctx context.Context) error {
	it := item{flushed: make(chan struct{})}
	if j.closed.Load() {
		return errors.New("journal: closed")
	}
	select {
	case j.in <- it:
	case <-ctx.Done():
		return ctx.Err()
	case <-j.done:
		return errors.New("journal: closed")
	}
	select {
	case <-j.done:
		return errors.New("journal: closed")
	case <-it.flushed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats returns the journal's counters.
func (j *Journal) Stats() Stats {
	s := Stats{
		Written: j.written.Load(), Dropped: j.dropped.Load(), Unsampled: j.unsampled.Load(),
		Bytes: j.bytes.Load(), Pending: len(j.in),
	}
	if e := j.lastErr.Load(); e != nil {
		s.LastError = *e
	}
	return s
}

// Close writes what is waiting (for up to ctx's deadline), stops the writer
// and closes the database. Records given after Close are dropped.
func (j *Journal) Close(ctx context.Context) error {
	already := j.closed.Swap(true)
	if already {
		<-j.done
		return nil
	}
	close(j.closing)
	select {
	case <-j.done:
	case <-ctx.Done():
		// The writer finishes its batch and stops; what is left is lost.
		close(j.abandon)
		<-j.done
	}
	j.closeWriter()
	return j.db.Close()
}

// write is the writer goroutine: it takes what the channel holds, up to a
// batch, writes it in one transaction, and runs retention now and then.
func (j *Journal) write(seq int64) {
	defer close(j.done)
	retention := time.NewTicker(j.opts.RetentionEvery)
	defer retention.Stop()
	batch := make([]item, 0, j.opts.BatchSize)
	for {
		select {
		case it := <-j.in:
			batch = append(batch[:0], it)
		case <-retention.C:
			j.retain()
			continue
		case <-j.closing:
			// Drain what was recorded before Close.
			for {
				select {
				case <-j.abandon:
					j.dropped.Add(int64(len(j.in)))
					return
				default:
				}
				batch = batch[:0]
				for len(batch) < cap(batch) {
					select {
					case it := <-j.in:
						batch = append(batch, it)
						continue
					default:
					}
					break
				}
				if len(batch) == 0 {
					return
				}
				seq = j.commit(batch, seq)
			}
		}
		if j.opts.WriteDelay > 0 {
			time.Sleep(j.opts.WriteDelay)
		}
	gather:
		for len(batch) < cap(batch) {
			select {
			case it := <-j.in:
				batch = append(batch, it)
			default:
				break gather
			}
		}
		start := time.Now()
		seq = j.commit(batch, seq)
		// Rest so that writing stays within CPUShare of a core; what
		// arrives meanwhile waits in the channel, or is dropped if it is full.
		if rest := time.Duration(float64(time.Since(start)) * (1/j.opts.CPUShare - 1)); rest > 0 {
			t := time.NewTimer(rest)
			select {
			case <-t.C:
			case <-j.closing:
				t.Stop()
			}
		}
	}
}

// defaultCPUShare is the writer's default budget: 15% of one core, which
// keeps the journal's cost on a saturated two-core machine within the 0.85
// ratio of benchmarks/run.sh (0.86–0.87 with the disk queue), and journals
// 94% of records at 4,000 events a second there (BenchmarkWriter: ~21µs of
// CPU an event). 10% kept only 59% at that rate.
const defaultCPUShare = 0.15

// commit writes batch in one transaction, numbering its records from seq+1,
// and returns the last number used. A failed batch is dropped and counted:
// the journal never holds up the router for its own sake.
func (j *Journal) commit(batch []item, seq int64) int64 {
	var flushed []chan struct{}
	n := 0
	for _, it := range batch {
		if it.flushed != nil {
			flushed = append(flushed, it.flushed)
		} else {
			batch[n] = it
			n++
		}
	}
	batch = batch[:n]
	defer func() {
		for _, c := range flushed {
			close(c)
		}
	}()
	if len(batch) == 0 {
		return seq
	}
	eventsFirst(batch)
	next, err := j.insert(batch, seq)
	if err != nil {
		j.dropped.Add(int64(len(batch)))
		msg := err.Error()
		if prev := j.lastErr.Load(); prev == nil || *prev != msg {
			j.log.Error("journal write failed; records dropped", "records", len(batch), "error", err)
		}
		j.lastErr.Store(&msg)
		return seq
	}
	j.lastErr.Store(nil)
	j.written.Add(int64(len(batch)))
	// The size bound is checked every few batches too, not only at the
	// retention period, so that a burst cannot overshoot it for long.
	if j.commits++; j.commits%64 == 0 {
		j.refreshSize(context.Background())
		if j.bytes.Load() > j.cfg.MaxBytes {
			defer j.retain()
		}
	}
	j.lastSeq.Store(next)
	j.notifyMu.Lock()
	close(j.notify)
	j.notify = make(chan struct{})
	j.notifyMu.Unlock()
	return next
}

// eventsFirst moves a batch's events before its steps, each kind in the
// order recorded: ingress records an event after queueing it, so a fast
// delivery's step can be recorded first, and numbered first a tail would
// show "delivered" before the event it belongs to. Within a batch (the
// writer gathers what arrived together) it no longer does.
func eventsFirst(batch []item) {
	steps := 0
	for _, it := range batch {
		if it.ev == nil {
			steps++
		}
	}
	if steps == 0 || steps == len(batch) {
		return
	}
	sorted := make([]item, 0, len(batch))
	for _, it := range batch {
		if it.ev != nil {
			sorted = append(sorted, it)
		}
	}
	for _, it := range batch {
		if it.ev == nil {
			sorted = append(sorted, it)
		}
	}
	copy(batch, sorted)
}

func (j *Journal) insert(batch []item, seq int64) (int64, error) {
	ctx := context.Background()
	tx, err := j.wconn.BeginTx(ctx, nil)
	if err != nil {
		return seq, err
	}
	defer tx.Rollback()
	var evArgs, stArgs, dlArgs []any
	var nEv, nSt int
	// exec runs the statement of n rows: the prepared one for a full chunk.
	exec := func(full *sql.Stmt, sqlOf func(int) string, n int, args []any) error {
		var err error
		if n == rowsPerInsert {
			_, err = tx.StmtContext(ctx, full).ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, sqlOf(n), args...)
		}
		return err
	}
	flush := func(force bool) error {
		if nEv > 0 && (force || nEv == rowsPerInsert) {
			if err := exec(j.full.events, eventsSQL, nEv, evArgs); err != nil {
				return err
			}
			evArgs, nEv = evArgs[:0], 0
		}
		if nSt > 0 && (force || nSt == rowsPerInsert) {
			if err := exec(j.full.steps, stepsSQL, nSt, stArgs); err != nil {
				return err
			}
			if err := exec(j.full.deliveries, deliveriesSQL, nSt, dlArgs); err != nil {
				return err
			}
			stArgs, dlArgs, nSt = stArgs[:0], dlArgs[:0], 0
		}
		return nil
	}
	for _, it := range batch {
		seq++
		if ev := it.ev; ev != nil {
			ev.expandRules()
			rules, _ := json.Marshal(nonNil(ev.Rules))
			sinks, _ := json.Marshal(nonNil(ev.Sinks))
			var payload any
			if ev.Payload != nil {
				payload = string(ev.Payload)
			}
			evArgs = append(evArgs, seq, ev.ID, ev.ReceivedAt.UnixMilli(), ev.Source, ev.Event, ev.DedupKey,
				ev.Verdict, ev.Status, ev.Reason, ev.DuplicateOf, string(rules), string(sinks), payload)
			nEv++
		} else {
			st := it.st
			at := st.At.UnixMilli()
			stArgs = append(stArgs, seq, st.EventID, st.Sink, st.State, at, st.DurationMS, st.Outcome, st.Status, st.Error, st.Note)
			dlArgs = append(dlArgs, st.EventID, st.Sink, st.State, at)
			nSt++
		}
		if err := flush(false); err != nil {
			return seq, err
		}
	}
	if err := flush(true); err != nil {
		return seq, err
	}
	if err := tx.Commit(); err != nil {
		return seq, err
	}
	return seq, nil
}

// rowsPerInsert bounds a multi-row statement (13 columns × 64 rows stays far
// below SQLite's limit on bound parameters).
const rowsPerInsert = 64

// placeholders returns "(?,…),(?,…)…" for rows rows of cols columns.
func placeholders(rows, cols int) string {
	one := "(" + strings.Repeat("?,", cols-1) + "?)"
	return strings.Repeat(one+",", rows-1) + one
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// retain deletes events older than the retention, then the oldest events
// while the database is over max_bytes, and gives freed pages back.
func (j *Journal) retain() {
	ctx := context.Background()
	cutoff := j.opts.Now().Add(-j.cfg.Retention).UnixMilli()
	if err := j.deleteWhere(ctx, `received_at < ?`, cutoff); err != nil {
		j.log.Error("journal retention failed", "error", err)
		return
	}
	// Steps whose event the journal never had (dropped): older than every
	// event kept.
	if _, err := j.db.ExecContext(ctx, `DELETE FROM steps WHERE seq < (SELECT coalesce(min(seq), 0) FROM events) AND at < ?`, cutoff); err != nil {
		j.log.Error("journal retention failed", "error", err)
		return
	}
	j.refreshSize(ctx)
	// Over max_bytes: delete the oldest tenth of the events until the size
	// in use is under 90% of the bound, so that the next batches fit.
	for i := 0; i < 20 && j.bytes.Load() > j.cfg.MaxBytes*9/10; i++ {
		var n int64
		if err := j.db.QueryRowContext(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil || n == 0 {
			break
		}
		chunk := max(n/10, 1)
		if err := j.deleteWhere(ctx, `seq <= (SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?)`, chunk-1); err != nil {
			j.log.Error("journal size retention failed", "error", err)
			break
		}
		j.refreshSize(ctx)
	}
	if _, err := j.db.ExecContext(ctx, `PRAGMA incremental_vacuum`); err != nil {
		j.log.Warn("journal vacuum failed", "error", err)
	}
	if _, err := j.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		j.log.Warn("journal checkpoint failed", "error", err)
	}
	j.refreshSize(ctx)
}

// deleteWhere deletes the events matching cond (over the events table) with
// their deliveries and steps, in one transaction.
func (j *Journal) deleteWhere(ctx context.Context, cond string, args ...any) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{
		`DELETE FROM steps WHERE event_id IN (SELECT id FROM events WHERE ` + cond + `)`,
		`DELETE FROM deliveries WHERE event_id IN (SELECT id FROM events WHERE ` + cond + `)`,
		`DELETE FROM events WHERE ` + cond,
	} {
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// refreshSize reads the database's size in use.
func (j *Journal) refreshSize(ctx context.Context) {
	var pages, free, size int64
	err := errors.Join(
		j.db.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages),
		j.db.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&free),
		j.db.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&size),
	)
	if err == nil {
		j.bytes.Store((pages - free) * size)
	}
}

// rejectRate and rejectBurst bound the rejected requests journaled: a flood
// of bad requests (a wrong secret, a scanner) is sampled, the rest counted.
const (
	rejectRate  = 50 // per second
	rejectBurst = 200
)

// sampler is a token bucket.
type sampler struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func (s *sampler) init(rate, burst float64) {
	s.rate, s.burst, s.tokens = rate, burst, burst
}

func (s *sampler) allow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if !s.last.IsZero() {
		s.tokens = min(s.burst, s.tokens+now.Sub(s.last).Seconds()*s.rate)
	}
	s.last = now
	if s.tokens < 1 {
		return false
	}
	s.tokens--
	return true
}
