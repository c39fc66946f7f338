package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/router/journal"
)

type eventsData struct {
	Off     bool // the journal is off
	Filter  filterView
	Events  []eventRow
	Next    string // the URL of the next (older) page
	Err     string
	Live    string // the query string live mode subscribes with
	Options filterOptions
}

// filterView is the filter form's values, as typed.
type filterView struct {
	Source, Event, Sink, State, Since, Until, Q string
}

type filterOptions struct {
	Sources, Sinks, States, Since []string
}

type eventRow struct {
	journal.Event
	Short string // the id, shortened for the table
	// Chips are the deliveries' states by sink.
	Chips []chip
}

type chip struct{ Sink, State, Class string }

// stateClass is the badge colour of a delivery state or a verdict.
func stateClass(s string) string {
	switch s {
	case journal.Delivered, journal.Accepted, journal.OK, journal.Matched:
		return "ok"
	case journal.Queued, journal.Retrying, journal.Duplicate, journal.Retryable:
		return "warn"
	case journal.Replayed, journal.Shadow:
		return "shadow"
	case journal.No:
		return ""
	}
	return "bad"
}

func (c *Console) filterOptions() filterOptions {
	f := c.b.Config()
	o := filterOptions{Sinks: f.SinkNames(), States: journal.States, Since: []string{"15m", "1h", "6h", "24h", "168h"}}
	for _, s := range f.Sources {
		o.Sources = append(o.Sources, s.Name)
	}
	return o
}

func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := eventsData{Options: c.filterOptions(), Filter: filterView{Source: q.Get("source"), Event: q.Get("event"),
		Sink: q.Get("sink"), State: q.Get("state"), Since: q.Get("since"), Until: q.Get("until"), Q: q.Get("q")}}
	j := c.b.Journal()
	status := http.StatusOK
	switch f, err := journal.ParseFilter(q, time.Now()); {
	case j == nil:
		d.Off = true
	case err != nil:
		d.Err, status = err.Error(), http.StatusBadRequest
	default:
		ctx, cancel := pageContext(r)
		defer cancel()
		page, err := j.List(ctx, f)
		if err != nil {
			d.Err, status = err.Error(), http.StatusInternalServerError
			break
		}
		for _, ev := range page.Events {
			d.Events = append(d.Events, row(ev))
		}
		if page.NextCursor != "" {
			next := url.Values{}
			for k, v := range q {
				next[k] = v
			}
			next.Set("cursor", page.NextCursor)
			d.Next = "/events?" + next.Encode()
		}
		live := f.Values()
		live.Del("cursor")
		live.Del("limit")
		d.Live = live.Encode()
	}
	c.render(w, r, status, "events", page{Title: "Events", Nav: "events", Data: d})
}

func row(ev journal.Event) eventRow {
	// An id starts with its time (ids sort by acceptance), so the end is
	// what tells neighbours apart.
	r := eventRow{Event: ev, Short: ev.ID}
	if len(r.Short) > 12 {
		r.Short = "…" + r.Short[len(r.Short)-12:]
	}
	for _, s := range ev.Sinks {
		st := journal.Queued
		for _, d := range ev.Deliveries {
			if d.Sink == s {
				st = d.State
			}
		}
		r.Chips = append(r.Chips, chip{Sink: s, State: st, Class: stateClass(st)})
	}
	return r
}

type eventData struct {
	ID         string
	Ev         *journal.Event
	Rules      []chip // Sink holds the rule's name
	Deliveries []deliveryPanel
	Payload    string
	Bodies     bool // the journal keeps payloads
	Notice     string
	Err        string
	CanReplay  bool
}

type deliveryPanel struct {
	journal.Delivery
	Class string
	Steps []stepView
}

type stepView struct {
	journal.Step
	Class string
	What  string
}

func (c *Console) event(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d := eventData{ID: id, Notice: c.takeNotice(w, r, id)}
	j := c.b.Journal()
	if j == nil {
		d.Err = "The journal is off (journal.enabled: false): there is nothing to show."
		c.render(w, r, http.StatusNotFound, "event", page{Title: "Event", Nav: "events", Data: d})
		return
	}
	ctx, cancel := pageContext(r)
	defer cancel()
	ev, err := j.Get(ctx, id)
	if errors.Is(err, journal.ErrNotFound) {
		d.Err = "The journal has no event with this id: it may be older than journal.retention, or the id is mistyped."
		c.render(w, r, http.StatusNotFound, "event", page{Title: "Event", Nav: "events", Data: d})
		return
	}
	if err != nil {
		d.Err = err.Error()
		c.render(w, r, http.StatusInternalServerError, "event", page{Title: "Event", Nav: "events", Data: d})
		return
	}
	d.Ev, d.Bodies = ev, j.Bodies()
	if len(ev.Payload) > 0 {
		d.Payload = pretty(ev.Payload)
	}
	d.CanReplay = ev.Verdict == journal.Accepted && len(ev.Payload) > 0 && len(ev.Sinks) > 0
	for _, rv := range ev.Rules {
		d.Rules = append(d.Rules, chip{Sink: rv.Rule, State: rv.Verdict, Class: stateClass(rv.Verdict)})
	}
	for _, del := range ev.Deliveries {
		p := deliveryPanel{Delivery: del, Class: stateClass(del.State)}
		for _, st := range del.Steps {
			sv := stepView{Step: st, Class: st.State}
			switch {
			case st.Outcome != "":
				sv.Class = st.Outcome
				sv.What = st.Outcome
				if st.Status != 0 {
					sv.What += fmt.Sprintf(" · %d", st.Status)
				}
				if st.State == journal.DeadLetter {
					sv.What += " → dead letter"
				}
			default:
				sv.What = strings.ReplaceAll(st.State, "_", " ")
			}
			p.Steps = append(p.Steps, sv)
		}
		if len(p.Steps) == 0 {
			// A journal without steps still has the attempts.
			for _, a := range del.Attempts {
				sv := stepView{Step: journal.Step{At: a.At, DurationMS: a.DurationMS, Outcome: a.Outcome, Status: a.Status, Error: a.Error}, Class: a.Outcome, What: a.Outcome}
				if a.Status != 0 {
					sv.What += fmt.Sprintf(" · %d", a.Status)
				}
				p.Steps = append(p.Steps, sv)
			}
		}
		d.Deliveries = append(d.Deliveries, p)
	}
	c.render(w, r, http.StatusOK, "event", page{Title: "Event " + id, Nav: "events", Data: d})
}

// replayEvent is the event page's replay button: to one sink or to all the
// event's sinks, after the confirmation the page asks for.
func (c *Console) replayEvent(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if !c.checkCSRF(w, r) {
		return
	}
	id, sink := r.PathValue("id"), r.PostFormValue("sink")
	ctx, cancel := pageContext(r)
	defer cancel()
	requeued, skipped, err := c.b.ReplayEvent(ctx, id, sink)
	notice := replayNotice(requeued, skipped, err)
	c.log.Info("console replay", "event_id", id, "sink", sink, "requeued", len(requeued), "error", err)
	c.setNotice(w, r, id, notice)
	http.Redirect(w, r, "/events/"+url.PathEscape(id), http.StatusSeeOther)
}

func replayNotice(requeued []string, skipped map[string]string, err error) string {
	var parts []string
	if len(requeued) > 0 {
		parts = append(parts, "Replayed to "+strings.Join(requeued, ", ")+".")
	}
	names := make([]string, 0, len(skipped))
	for s := range skipped {
		names = append(names, s)
	}
	slices.Sort(names)
	for _, s := range names {
		parts = append(parts, fmt.Sprintf("Not %s: %s.", s, skipped[s]))
	}
	if err != nil && len(parts) == 0 {
		parts = append(parts, "Not replayed: "+err.Error()+".")
	}
	return strings.Join(parts, " ")
}

type deadData struct {
	Off     bool
	Sink    string
	Since   string
	Options filterOptions
	Rows    []deadRow
	Results []string
	Err     string
}

type deadRow struct {
	Ev       journal.Event
	Sink     string
	At       time.Time // when it was dead-lettered
	Error    string    // the last attempt's error
	Attempts int
	// Replayed is when it was replayed after it was dead-lettered.
	Replayed *time.Time
	State    string
}

const deadLimit = 500

func (c *Console) deadLetters(w http.ResponseWriter, r *http.Request) {
	d, status := c.deadData(r, r.URL.Query().Get("sink"), r.URL.Query().Get("since"))
	c.render(w, r, status, "deadletters", page{Title: "Dead letters", Nav: "dead-letters", Data: d})
}

func (c *Console) deadData(r *http.Request, sink, since string) (deadData, int) {
	d := deadData{Sink: sink, Since: since, Options: c.filterOptions()}
	j := c.b.Journal()
	if j == nil {
		d.Off = true
		return d, http.StatusOK
	}
	f, err := journal.ParseFilter(url.Values{"since": {since}}, time.Now())
	if err != nil {
		d.Err = err.Error()
		return d, http.StatusBadRequest
	}
	ctx, cancel := pageContext(r)
	defer cancel()
	evs, err := j.DeadLetters(ctx, sink, f.Since, deadLimit)
	if err != nil {
		d.Err = err.Error()
		return d, http.StatusInternalServerError
	}
	for _, ev := range evs {
		for _, del := range ev.Deliveries {
			if sink != "" && del.Sink != sink {
				continue
			}
			if row, ok := deadRowOf(ev, del); ok {
				d.Rows = append(d.Rows, row)
			}
		}
	}
	return d, http.StatusOK
}

// deadRowOf is del as a dead letter: when it was dead-lettered, why, and
// whether it was replayed since.
func deadRowOf(ev journal.Event, del journal.Delivery) (deadRow, bool) {
	row := deadRow{Ev: ev, Sink: del.Sink, State: del.State, Attempts: len(del.Attempts)}
	found := del.State == journal.DeadLetter
	if found {
		row.At = del.UpdatedAt
	}
	for _, st := range del.Steps {
		switch st.State {
		case journal.DeadLetter:
			found, row.At, row.Replayed = true, st.At, nil
			if st.Error != "" {
				row.Error = st.Error
			}
		case journal.Replayed:
			if found {
				at := st.At
				row.Replayed = &at
			}
		}
	}
	if row.Error == "" {
		// The error that dead-lettered it: the last failed attempt.
		for _, a := range del.Attempts {
			if a.Error != "" {
				row.Error = a.Error
			}
		}
	}
	return row, found
}

// replayDeadLetters replays the dead letters picked on the page, each to
// its sink.
func (c *Console) replayDeadLetters(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if !c.checkCSRF(w, r) {
		return
	}
	ctx, cancel := pageContext(r)
	defer cancel()
	var results []string
	picks := r.PostForm["pick"]
	for _, p := range picks {
		id, sink, ok := strings.Cut(p, " ") // "ID SINK": an id has no space
		if !ok {
			continue
		}
		requeued, skipped, err := c.b.ReplayEvent(ctx, id, sink)
		results = append(results, id+": "+replayNotice(requeued, skipped, err))
	}
	if len(picks) == 0 {
		results = append(results, "Nothing was selected.")
	}
	c.log.Info("console dead-letter replay", "picked", len(picks))
	d, status := c.deadData(r, r.PostFormValue("sink"), r.PostFormValue("since"))
	d.Results = results
	c.render(w, r, status, "deadletters", page{Title: "Dead letters", Nav: "dead-letters", Data: d})
}
