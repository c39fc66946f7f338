package journal

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Filter selects events, for List, Subscribe and the admin API (whose query
// parameters have the same names: source, event, sink, state, since, until,
// q, limit, cursor). Zero fields do not filter.
type Filter struct {
	Source string
	// Event is the payload's event type.
	Event string
	// Sink selects events routed to that sink.
	Sink string
	// State is a delivery state (queued, retrying, delivered, dead_letter,
	// replayed: some delivery, or the one to Sink, is in it), a verdict
	// (accepted, duplicate, rejected), or unrouted (accepted, no sink).
	State string
	// Since and Until bound received_at: Since ≤ t < Until.
	Since, Until time.Time
	// Q matches a substring of the event id, the dedup key or the payload.
	Q string
	// Limit bounds a page (default 50, at most 1000).
	Limit int
	// Cursor is a page's NextCursor: the page after it.
	Cursor string
}

// Page is one page of List, newest first.
type Page struct {
	Events []Event `json:"events"`
	// NextCursor fetches the next (older) page; empty on the last one.
	NextCursor string `json:"next_cursor"`
}

// States lists the values Filter.State accepts.
var States = []string{Queued, Retrying, Delivered, DeadLetter, Replayed, Accepted, Duplicate, Rejected, "unrouted"}

const (
	defaultLimit = 50
	maxLimit     = 1000
)

// ParseFilter reads a Filter from query parameters. since and until take an
// RFC 3339 time or a duration back from now ("24h"). It reports the first
// parameter that is wrong.
func ParseFilter(v url.Values, now time.Time) (Filter, error) {
	f := Filter{
		Source: v.Get("source"), Event: v.Get("event"), Sink: v.Get("sink"), State: v.Get("state"),
		Q: v.Get("q"), Cursor: v.Get("cursor"),
	}
	if f.State != "" && !contains(States, f.State) {
		return f, fmt.Errorf("state %q: want one of %s", f.State, strings.Join(States, ", "))
	}
	var err error
	if f.Since, err = parseTime(v.Get("since"), now); err != nil {
		return f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = parseTime(v.Get("until"), now); err != nil {
		return f, fmt.Errorf("until: %w", err)
	}
	if s := v.Get("limit"); s != "" {
		if f.Limit, err = strconv.Atoi(s); err != nil || f.Limit < 1 {
			return f, fmt.Errorf("limit %q: want a positive number", s)
		}
	}
	if f.Cursor != "" {
		if _, err := strconv.ParseInt(f.Cursor, 10, 64); err != nil {
			return f, fmt.Errorf("cursor %q: not a cursor of this journal", f.Cursor)
		}
	}
	return f, nil
}

// Values is f as query parameters, the inverse of ParseFilter.
func (f Filter) Values() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("source", f.Source)
	set("event", f.Event)
	set("sink", f.Sink)
	set("state", f.State)
	set("q", f.Q)
	set("cursor", f.Cursor)
	if !f.Since.IsZero() {
		v.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		v.Set("until", f.Until.UTC().Format(time.RFC3339Nano))
	}
	if f.Limit > 0 {
		v.Set("limit", strconv.Itoa(f.Limit))
	}
	return v
}

func parseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration such as 24h", s)
	}
	return t, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// where builds the conditions of f over events e (the cursor aside).
func (f Filter) where() (string, []any) {
	var conds []string
	var args []any
	add := func(c string, a ...any) {
		conds = append(conds, c)
		args = append(args, a...)
	}
	if f.Source != "" {
		add(`e.source = ?`, f.Source)
	}
	if f.Event != "" {
		add(`e.event = ?`, f.Event)
	}
	if !f.Since.IsZero() {
		add(`e.received_at >= ?`, f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		add(`e.received_at < ?`, f.Until.UnixMilli())
	}
	if f.Q != "" {
		add(`(instr(e.id, ?) > 0 OR instr(e.dedup_key, ?) > 0 OR instr(e.payload, ?) > 0)`, f.Q, f.Q, f.Q)
	}
	switch f.State {
	case Accepted, Duplicate, Rejected:
		add(`e.verdict = ?`, f.State)
		if f.Sink != "" {
			add(`EXISTS (SELECT 1 FROM json_each(e.sinks) s WHERE s.value = ?)`, f.Sink)
		}
	case "unrouted":
		add(`e.verdict = 'accepted' AND e.sinks = '[]'`)
	case "":
		if f.Sink != "" {
			add(`EXISTS (SELECT 1 FROM json_each(e.sinks) s WHERE s.value = ?)`, f.Sink)
		}
	case Queued:
		// A delivery has no row until its first step.
		if f.Sink != "" {
			add(`EXISTS (SELECT 1 FROM json_each(e.sinks) s WHERE s.value = ? AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.sink = s.value))`, f.Sink)
		} else {
			add(`EXISTS (SELECT 1 FROM json_each(e.sinks) s WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.sink = s.value))`)
		}
	default:
		if f.Sink != "" {
			add(`EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.sink = ? AND d.state = ?)`, f.Sink, f.State)
		} else {
			add(`EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.state = ?)`, f.State)
		}
	}
	if len(conds) == 0 {
		return "1", nil
	}
	return strings.Join(conds, " AND "), args
}

func (f Filter) limit() int {
	switch {
	case f.Limit <= 0:
		return defaultLimit
	case f.Limit > maxLimit:
		return maxLimit
	}
	return f.Limit
}

const eventColumns = `e.seq, e.id, e.received_at, e.source, e.event, e.dedup_key, e.verdict, e.status, e.reason, e.duplicate_of, e.rules, e.sinks`

func scanEvent(sc interface{ Scan(...any) error }, extra ...any) (Event, error) {
	var ev Event
	var at int64
	var rules, sinks string
	dst := append([]any{&ev.Seq, &ev.ID, &at, &ev.Source, &ev.Event, &ev.DedupKey, &ev.Verdict, &ev.Status,
		&ev.Reason, &ev.DuplicateOf, &rules, &sinks}, extra...)
	if err := sc.Scan(dst...); err != nil {
		return ev, err
	}
	ev.ReceivedAt = time.UnixMilli(at).UTC()
	_ = json.Unmarshal([]byte(rules), &ev.Rules)
	_ = json.Unmarshal([]byte(sinks), &ev.Sinks)
	if ev.Sinks == nil {
		ev.Sinks = []string{}
	}
	ev.Deliveries = []Delivery{}
	return ev, nil
}

// List returns the events f selects, newest first, one page at a time.
// Each event has its deliveries' states, without attempts, rules or payload.
func (j *Journal) List(ctx context.Context, f Filter) (Page, error) {
	where, args := f.where()
	if f.Cursor != "" {
		c, err := strconv.ParseInt(f.Cursor, 10, 64)
		if err != nil {
			return Page{}, fmt.Errorf("cursor %q: not a cursor of this journal", f.Cursor)
		}
		where += ` AND e.seq < ?`
		args = append(args, c)
	}
	n := f.limit()
	rows, err := j.db.QueryContext(ctx, `SELECT `+eventColumns+` FROM events e WHERE `+where+` ORDER BY e.seq DESC LIMIT ?`, append(args, n+1)...)
	if err != nil {
		return Page{}, fmt.Errorf("journal: %w", err)
	}
	defer rows.Close()
	page := Page{Events: []Event{}}
	for rows.Next() {
		ev, err := scanEvent(rows)
		if err != nil {
			return Page{}, fmt.Errorf("journal: %w", err)
		}
		ev.Rules = nil
		page.Events = append(page.Events, ev)
	}
	if err := rows.Err(); err != nil {
		return Page{}, fmt.Errorf("journal: %w", err)
	}
	rows.Close()
	if len(page.Events) > n {
		page.Events = page.Events[:n]
		page.NextCursor = strconv.FormatInt(page.Events[n-1].Seq, 10)
	}
	if err := fillDeliveries(ctx, j.db, page.Events, false); err != nil {
		return Page{}, err
	}
	return page, nil
}

// fillDeliveries adds each event's deliveries (with their steps if steps).
func fillDeliveries(ctx context.Context, q querier, evs []Event, steps bool) error {
	if len(evs) == 0 {
		return nil
	}
	idx := make(map[string]int, len(evs))
	ph := make([]string, 0, len(evs))
	args := make([]any, 0, len(evs))
	for i := range evs {
		idx[evs[i].ID] = i
		ph = append(ph, "?")
		args = append(args, evs[i].ID)
	}
	in := strings.Join(ph, ",")
	rows, err := q.QueryContext(ctx, `SELECT event_id, sink, state, updated_at FROM deliveries WHERE event_id IN (`+in+`)`, args...)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var d Delivery
		var at int64
		if err := rows.Scan(&id, &d.Sink, &d.State, &at); err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		d.UpdatedAt = time.UnixMilli(at).UTC()
		d.Attempts = []Attempt{}
		ev := &evs[idx[id]]
		ev.Deliveries = append(ev.Deliveries, d)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	rows.Close()
	for i := range evs {
		ev := &evs[i]
		for _, s := range ev.Sinks {
			if !ev.hasDelivery(s) {
				ev.Deliveries = append(ev.Deliveries, Delivery{Sink: s, State: Queued, UpdatedAt: ev.ReceivedAt, Attempts: []Attempt{}})
			}
		}
		sortDeliveries(ev)
	}
	if !steps {
		return nil
	}
	rows, err = q.QueryContext(ctx, `SELECT `+stepColumns+` FROM steps s WHERE s.event_id IN (`+in+`) ORDER BY s.seq`, args...)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		st, err := scanStep(rows)
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		ev := &evs[idx[st.EventID]]
		d := ev.delivery(st.Sink)
		d.Steps = append(d.Steps, st)
		if st.Outcome != "" {
			d.Attempts = append(d.Attempts, Attempt{At: st.At, DurationMS: st.DurationMS, Outcome: st.Outcome, Status: st.Status, Error: st.Error})
		}
	}
	return rows.Err()
}

// sortDeliveries orders ev's deliveries as its sinks were chosen, then by name.
func sortDeliveries(ev *Event) {
	rank := func(s string) int {
		for i, x := range ev.Sinks {
			if x == s {
				return i
			}
		}
		return len(ev.Sinks)
	}
	ds := ev.Deliveries
	for i := 1; i < len(ds); i++ {
		for k := i; k > 0; k-- {
			a, b := &ds[k-1], &ds[k]
			if ra, rb := rank(a.Sink), rank(b.Sink); ra > rb || ra == rb && a.Sink > b.Sink {
				*a, *b = *b, *a
			} else {
				break
			}
		}
	}
}

func (ev *Event) hasDelivery(sink string) bool {
	for i := range ev.Deliveries {
		if ev.Deliveries[i].Sink == sink {
			return true
		}
	}
	return false
}

// delivery returns ev's delivery to sink, adding it if missing.
func (ev *Event) delivery(sink string) *Delivery {
	for i := range ev.Deliveries {
		if ev.Deliveries[i].Sink == sink {
			return &ev.Deliveries[i]
		}
	}
	ev.Deliveries = append(ev.Deliveries, Delivery{Sink: sink, Attempts: []Attempt{}})
	return &ev.Deliveries[len(ev.Deliveries)-1]
}

const stepColumns = `s.seq, s.event_id, s.sink, s.state, s.at, s.duration_ms, s.outcome, s.status, s.error, s.note`

func scanStep(sc interface{ Scan(...any) error }, extra ...any) (Step, error) {
	var st Step
	var at int64
	dst := append([]any{&st.Seq, &st.EventID, &st.Sink, &st.State, &at, &st.DurationMS, &st.Outcome, &st.Status, &st.Error, &st.Note}, extra...)
	if err := sc.Scan(dst...); err != nil {
		return st, err
	}
	st.At = time.UnixMilli(at).UTC()
	return st, nil
}

// Get returns the whole journey of the event id: verdicts, deliveries with
// every attempt and step, and the payload when kept. ErrNotFound if the
// journal does not have it (never recorded, dropped, or past retention).
func (j *Journal) Get(ctx context.Context, id string) (*Event, error) {
	var payload sql.NullString
	ev, err := scanEvent(j.db.QueryRowContext(ctx, `SELECT `+eventColumns+`, e.payload FROM events e WHERE e.id = ?`, id), &payload)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if payload.Valid {
		ev.Payload = json.RawMessage(payload.String)
	}
	if ev.Verdict == Duplicate && ev.DuplicateOf == "" && ev.DedupKey != "" {
		// Its original was not among the recent ones ingress remembers.
		c, cancel := context.WithTimeout(ctx, originalScanTimeout)
		ev.DuplicateOf = j.originalOf(c, &ev)
		cancel()
	}
	evs := []Event{ev}
	if err := fillDeliveries(ctx, j.db, evs, true); err != nil {
		return nil, err
	}
	return &evs[0], nil
}

// originalOf returns the id of the accepted event that dup, a duplicate,
// duplicates: the latest accepted event of its source with its dedup key
// recorded before it, "" if the journal does not have it. The dedup key has
// no index (see schema), so this scans back from dup; it runs only when a
// journey is read, never on the ack or the write path, and gives up with ctx.
func (j *Journal) originalOf(ctx context.Context, dup *Event) string {
	var id string
	j.db.QueryRowContext(ctx, `SELECT id FROM events WHERE seq < ? AND source = ? AND dedup_key = ? AND verdict = 'accepted' ORDER BY seq DESC LIMIT 1`,
		dup.Seq, dup.Source, dup.DedupKey).Scan(&id)
	return id
}

// originalScanTimeout bounds Get's scan for a duplicate's original: a
// journal of a million events is scanned in under half a second here.
const originalScanTimeout = 3 * time.Second

// querier is what the queries run on: the pool, or one read transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// LastSeq is the seq of the latest record written.
func (j *Journal) LastSeq() int64 { return j.lastSeq.Load() }

// Since returns up to limit records after seq that f selects, oldest first:
// what a tail that had seen seq missed. Cursor, Limit, Since and Until of f
// are ignored.
func (j *Journal) Since(ctx context.Context, f Filter, seq int64, limit int) ([]Record, error) {
	f.Since, f.Until, f.Cursor = time.Time{}, time.Time{}, ""
	// One read transaction, so that the events and the steps are read from
	// the same snapshot: a batch committed between two queries would give
	// its steps without its events, and the tail, moving past the steps'
	// seq, would skip the events for good.
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer tx.Rollback()
	var out []Record
	// Event records: an event with the sink filter chose that sink; with a
	// delivery state filter, only "queued" (which a new event's deliveries
	// are in) selects them.
	ef := f
	if contains([]string{Retrying, Delivered, DeadLetter, Replayed}, f.State) {
		ef.State = "-"
	}
	if ef.State == Queued {
		ef.State = ""
		if f.Sink == "" {
			ef.State = Accepted
		}
	}
	if ef.State != "-" {
		where, args := ef.where()
		rows, err := tx.QueryContext(ctx, `SELECT `+eventColumns+` FROM events e WHERE e.seq > ? AND `+where+` ORDER BY e.seq LIMIT ?`,
			append(append([]any{seq}, args...), limit)...)
		if err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		var evs []Event
		for rows.Next() {
			ev, err := scanEvent(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("journal: %w", err)
			}
			ev.Rules = nil
			evs = append(evs, ev)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		// The ingress journals an event after queueing it, so a fast
		// delivery's step can be written first, and a reader that skips
		// steps of events it has not seen would miss it. Each event record
		// carries its deliveries' states as of now.
		if err := fillDeliveries(ctx, tx, evs, false); err != nil {
			return nil, err
		}
		for i := range evs {
			ev := &evs[i]
			out = append(out, Record{Seq: ev.Seq, Kind: KindEvent, EventID: ev.ID, Source: ev.Source, EventType: ev.Event, Event: ev})
		}
	}
	// Step records: filtered on the step itself (sink, state) and on its
	// event (source, event type, q).
	if !contains([]string{Accepted, Duplicate, Rejected, "unrouted"}, f.State) {
		var conds []string
		args := []any{seq}
		if f.Sink != "" {
			conds = append(conds, `s.sink = ?`)
			args = append(args, f.Sink)
		}
		if f.State != "" && f.State != Queued {
			conds = append(conds, `s.state = ?`)
			args = append(args, f.State)
		} else if f.State == Queued {
			conds = append(conds, `0`)
		}
		ef := Filter{Source: f.Source, Event: f.Event, Q: f.Q}
		if w, a := ef.where(); len(a) > 0 {
			conds = append(conds, w)
			args = append(args, a...)
		}
		q := `SELECT ` + stepColumns + `, coalesce(e.source, ''), coalesce(e.event, '') FROM steps s LEFT JOIN events e ON e.id = s.event_id WHERE s.seq > ?`
		if len(conds) > 0 {
			q += ` AND ` + strings.Join(conds, " AND ")
		}
		rows, err := tx.QueryContext(ctx, q+` ORDER BY s.seq LIMIT ?`, append(args, limit)...)
		if err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		for rows.Next() {
			var src, typ string
			st, err := scanStep(rows, &src, &typ)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("journal: %w", err)
			}
			s := st
			out = append(out, Record{Seq: st.Seq, Kind: KindStep, EventID: st.EventID, Source: src, EventType: typ, Step: &s})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
	}
	sortRecords(out)
	if len(out) > limit {
		// Each query was limited on its own: keep the first limit of the
		// merge, so that nothing before the last one returned is skipped.
		out = out[:limit]
	}
	return out, nil
}

func sortRecords(rs []Record) {
	for i := 1; i < len(rs); i++ {
		for k := i; k > 0 && rs[k-1].Seq > rs[k].Seq; k-- {
			rs[k-1], rs[k] = rs[k], rs[k-1]
		}
	}
}

// changed returns a channel closed at the next commit.
func (j *Journal) changed() <-chan struct{} {
	j.notifyMu.Lock()
	defer j.notifyMu.Unlock()
	return j.notify
}

// Subscribe returns the records f selects as they are written, starting
// after seq (a Record's Seq, such as SSE's Last-Event-ID; a negative seq
// means from now on). The channel is closed when ctx is done or the journal
// closes. A slow reader holds back only itself: it catches up from the
// database, so no record is missed.
func (j *Journal) Subscribe(ctx context.Context, f Filter, seq int64) <-chan Record {
	ch := make(chan Record, 64)
	if seq < 0 {
		seq = j.LastSeq()
	}
	go func() {
		defer close(ch)
		for {
			// wait is taken before last, and last before the query: the query
			// sees every record up to last, and a commit after it closes wait.
			wait := j.changed()
			last := j.LastSeq()
			recs, err := j.Since(ctx, f, seq, 500)
			if err != nil {
				if ctx.Err() == nil {
					j.log.Warn("journal tail failed", "error", err)
				}
				return
			}
			for _, r := range recs {
				select {
				case ch <- r:
					seq = r.Seq
				case <-ctx.Done():
					return
				}
			}
			if len(recs) == 500 {
				continue
			}
			// Nothing else up to last matched: the next query starts there.
			seq = max(seq, last)
			select {
			case <-wait:
			case <-ctx.Done():
				return
			case <-j.done:
				return
			}
		}
	}()
	return ch
}

// DeadLetters returns the events with a delivery that was dead-lettered
// since the given time (zero: any), to sink if not empty, latest dead letter
// first, each with its whole journey: a dead letter since replayed stays,
// its delivery's state and steps saying so.
func (j *Journal) DeadLetters(ctx context.Context, sink string, since time.Time, limit int) ([]Event, error) {
	if limit <= 0 || limit > maxLimit {
		limit = maxLimit
	}
	q := `SELECT e.id, max(s.seq) AS last FROM steps s JOIN events e ON e.id = s.event_id WHERE s.state = 'dead_letter'`
	var args []any
	if sink != "" {
		q += ` AND s.sink = ?`
		args = append(args, sink)
	}
	if !since.IsZero() {
		q += ` AND s.at >= ?`
		args = append(args, since.UnixMilli())
	}
	rows, err := j.db.QueryContext(ctx, q+` GROUP BY e.id ORDER BY last DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			rows.Close()
			return nil, fmt.Errorf("journal: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	out := []Event{}
	for _, id := range ids {
		ev, err := j.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *ev)
	}
	return out, nil
}

// ReplayedSince reports whether the journal has a replay of event id's
// delivery to sink at or after t (a dead-letter record's failed_at) that
// reached the queue, and when: a replay of the dead-letter file skips a
// record already replayed another way, so that one dead letter is not sent
// twice by accident. A replay whose enqueue failed (a change without a send
// after it) does not count.
func (j *Journal) ReplayedSince(ctx context.Context, id, sink string, t time.Time) (time.Time, bool, error) {
	var state string
	var at int64
	err := j.db.QueryRowContext(ctx, `SELECT state, at FROM steps WHERE event_id = ? AND sink = ? AND at >= ? AND outcome = ''
		ORDER BY seq DESC LIMIT 1`, id, sink, t.UnixMilli()).Scan(&state, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("journal: %w", err)
	}
	return time.UnixMilli(at).UTC(), state == Replayed, nil
}

// DeadLetterReplayed returns the step that replayed d's latest dead letter,
// if one did since (and its enqueue did not fail): d's Steps are needed, as
// Get gives them. A second replay of the same dead letter is then an
// accident unless asked for.
func (d *Delivery) DeadLetterReplayed() (Step, bool) {
	var rep *Step
	dead := false
	for i := range d.Steps {
		st := &d.Steps[i]
		switch {
		case st.State == DeadLetter:
			// A new dead letter, or a failed replay putting it back.
			dead, rep = true, nil
		case st.State == Replayed:
			if dead {
				rep = st
			}
		case st.Outcome == "":
			// A change without a send other than a replay: a failed
			// replay of a delivery that was not dead-lettered.
			rep = nil
		}
	}
	if rep == nil {
		return Step{}, false
	}
	return *rep, true
}

// State returns the state of event id's delivery to sink, "" if the journal
// does not know it.
func (j *Journal) State(ctx context.Context, id, sink string) (string, error) {
	var st string
	err := j.db.QueryRowContext(ctx, `SELECT state FROM deliveries WHERE event_id = ? AND sink = ?`, id, sink).Scan(&st)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("journal: %w", err)
	}
	return st, nil
}
