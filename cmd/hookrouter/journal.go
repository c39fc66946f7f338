package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/journal"
)

// The journal's commands: `hookrouter events`, `trace` and `tail` ask the
// running router's admin API (GET /-/events, /-/events/{id},
// /-/events/stream), so they see what the process sees, with no access to
// its data_dir.

// adminClient is the admin API of a running router, found as
// `hookrouter replay` finds it: -addr, else the config's admin_listen, with
// the config's admin.token.
type adminClient struct {
	base, token string
	http        *http.Client
}

// adminFlags adds -config and -addr to fs; the returned func resolves them
// after parsing.
func adminFlags(fs *flag.FlagSet) func() (*adminClient, error) {
	cfgPath := configFlag(fs)
	addr := fs.String("addr", "", "admin address of the running router (default: the config's admin_listen; the config's admin.token is sent)")
	return func() (*adminClient, error) {
		target, token := *addr, ""
		if target == "" || *cfgPath != "" {
			f, err := config.Load(config.Resolve(*cfgPath))
			if err != nil {
				return nil, err
			}
			token = f.Admin.Token
			if target == "" {
				if target = f.AdminListen; target == "" {
					return nil, fmt.Errorf("admin_listen is off in %s: the admin API is reached through the admin listener (or give -addr)", f.Name)
				}
			}
		} else if f, err := config.Load(config.Resolve("")); err == nil {
			// -addr alone: the token is still the one configured, when the
			// default config file has it (the router may be on another
			// address than its file says, behind a tunnel).
			token = f.Admin.Token
		}
		base := target
		if !strings.Contains(base, "://") {
			base = "http://" + loopback(target)
		}
		return &adminClient{base: strings.TrimRight(base, "/"), token: token, http: &http.Client{}}, nil
	}
}

// get sends GET path and returns the answer's body, or an error saying what
// the router answered.
func (c *adminClient) get(ctx context.Context, path string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("is hookrouter running? %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e struct{ Error, Detail string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			if e.Detail != "" {
				return nil, fmt.Errorf("%s answered %s: %s: %s", c.base+path, resp.Status, e.Error, e.Detail)
			}
			return nil, fmt.Errorf("%s answered %s: %s", c.base+path, resp.Status, e.Error)
		}
		return nil, fmt.Errorf("%s answered %s: %s", c.base+path, resp.Status, strings.TrimSpace(string(body)))
	}
	return resp, nil
}

func (c *adminClient) getJSON(ctx context.Context, path string, v any) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := c.get(ctx, path, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			return nil, fmt.Errorf("unexpected answer from %s: %w", c.base+path, err)
		}
	}
	return body, nil
}

// filterFlags adds the filters of GET /-/events to fs.
func filterFlags(fs *flag.FlagSet) func() url.Values {
	source := fs.String("source", "", "only events from this source")
	event := fs.String("event", "", "only this event type (the payload's \"event\")")
	sink := fs.String("sink", "", "only events routed to this sink")
	state := fs.String("state", "", "only deliveries in this state ("+strings.Join(journal.States, ", ")+")")
	since := fs.String("since", "", "only events received since: a duration back (24h) or an RFC 3339 time")
	q := fs.String("q", "", "only events whose id, dedup key or payload contains this text")
	return func() url.Values {
		v := url.Values{}
		for k, s := range map[string]string{"source": *source, "event": *event, "sink": *sink, "state": *state, "since": *since, "q": *q} {
			if s != "" {
				v.Set(k, s)
			}
		}
		return v
	}
}

// events is `hookrouter events`: the journal's events, newest first, one line each.
func events(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs)
	filters := filterFlags(fs)
	limit := fs.Int("limit", 50, "at most this many events")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 || *limit < 1 {
		fmt.Fprintln(stderr, "usage: hookrouter events [-config FILE] [-addr ADMIN] [-source S] [-event E] [-sink K] [-state ST] [-since D] [-q TEXT] [-limit N] [-json]")
		return 2
	}
	c, err := client()
	if err != nil {
		return fail(stderr, "events", err)
	}
	v := filters()
	ctx := context.Background()
	var all []journal.Event
	// Pages of at most 1000 (the API's bound) until limit.
	for len(all) < *limit {
		v.Set("limit", strconv.Itoa(min(*limit-len(all), 1000)))
		var page journal.Page
		if _, err := c.getJSON(ctx, "/-/events?"+v.Encode(), &page); err != nil {
			return fail(stderr, "events", err)
		}
		all = append(all, page.Events...)
		if page.NextCursor == "" {
			break
		}
		v.Set("cursor", page.NextCursor)
	}
	if *asJSON {
		b, _ := json.MarshalIndent(journal.Page{Events: all}, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	if len(all) == 0 {
		fmt.Fprintln(stdout, "no events")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tID\tEVENT\tSOURCE\tVERDICT\tSINKS")
	for _, ev := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ev.ReceivedAt.Local().Format("2006-01-02 15:04:05"), ev.ID,
			orDash(ev.Event), ev.Source, verdictText(&ev), sinkStates(&ev))
	}
	tw.Flush()
	return 0
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func verdictText(ev *journal.Event) string {
	switch ev.Verdict {
	case journal.Rejected:
		return fmt.Sprintf("rejected %d", ev.Status)
	case journal.Accepted:
		if len(ev.Sinks) == 0 {
			return "unrouted"
		}
	}
	return ev.Verdict
}

func sinkStates(ev *journal.Event) string {
	if len(ev.Deliveries) == 0 {
		return "-"
	}
	var b strings.Builder
	for i, d := range ev.Deliveries {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(d.Sink + ":" + d.State)
	}
	return b.String()
}

// trace is `hookrouter trace ID`: one event's journey in words.
func trace(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs)
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: hookrouter trace [-config FILE] [-addr ADMIN] [-json] EVENT_ID")
		return 2
	}
	c, err := client()
	if err != nil {
		return fail(stderr, "trace", err)
	}
	var ev journal.Event
	body, err := c.getJSON(context.Background(), "/-/events/"+url.PathEscape(fs.Arg(0)), &ev)
	if err != nil {
		return fail(stderr, "trace", err)
	}
	if *asJSON {
		stdout.Write(body)
		return 0
	}
	writeJourney(stdout, &ev)
	return 0
}

// writeJourney tells ev's journey: the request, each rule, each delivery
// with every attempt and change of state.
func writeJourney(w io.Writer, ev *journal.Event) {
	ts := func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05.000") }
	fmt.Fprintf(w, "event %s", ev.ID)
	if ev.Event != "" {
		fmt.Fprintf(w, " (%s)", ev.Event)
	}
	fmt.Fprintf(w, " from source %s, received %s\n", ev.Source, ts(ev.ReceivedAt))
	switch ev.Verdict {
	case journal.Accepted:
		fmt.Fprintf(w, "request: accepted, answered %d\n", ev.Status)
	case journal.Duplicate:
		of := "an event the journal no longer has"
		if ev.DuplicateOf != "" {
			of = ev.DuplicateOf + " (hookrouter trace " + ev.DuplicateOf + ")"
		}
		fmt.Fprintf(w, "request: duplicate of %s, answered %d, not routed again\n", of, ev.Status)
	case journal.Rejected:
		fmt.Fprintf(w, "request: rejected, answered %d: %s\n", ev.Status, ev.Reason)
	default:
		fmt.Fprintf(w, "request: %s, answered %d\n", ev.Verdict, ev.Status)
	}
	if ev.DedupKey != "" {
		fmt.Fprintf(w, "dedup key: %s\n", ev.DedupKey)
	}
	if ev.Verdict != journal.Accepted {
		return
	}
	if len(ev.Rules) > 0 {
		fmt.Fprintln(w, "rules:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, r := range ev.Rules {
			// expr's error ends with the expression and a caret: the
			// explanation below says which part failed.
			verdict, _, _ := strings.Cut(r.Verdict, "\n")
			fmt.Fprintf(tw, "  %s\t%s\n", r.Rule, verdict)
			for _, p := range r.Explain {
				fmt.Fprintf(tw, "  \t  %s%s\n", strings.Repeat("  ", p.Depth), p.Text)
			}
		}
		tw.Flush()
	}
	if len(ev.Sinks) == 0 {
		fmt.Fprintln(w, "sinks: none — no delivering rule matched (the event was accepted and counted as unrouted)")
		return
	}
	fmt.Fprintf(w, "sinks: %s\n", strings.Join(ev.Sinks, ", "))
	for _, d := range ev.Deliveries {
		fmt.Fprintf(w, "delivery to %s: %s (%d attempt%s)\n", d.Sink, d.State, len(d.Attempts), plural(len(d.Attempts)))
		n := 0
		for _, st := range d.Steps {
			if st.Outcome == "" {
				note := ""
				if st.Note != "" {
					note = ": " + st.Note
				}
				fmt.Fprintf(w, "  %s  %s%s\n", ts(st.At), st.State, note)
				continue
			}
			n++
			line := fmt.Sprintf("  %s  attempt %d: %s", ts(st.At), n, st.Outcome)
			if st.Status != 0 {
				line += fmt.Sprintf(", status %d", st.Status)
			}
			line += fmt.Sprintf(", %.1f ms", st.DurationMS)
			if st.Error != "" {
				line += ", error: " + st.Error
			}
			fmt.Fprintf(w, "%s → %s\n", line, st.State)
		}
		if len(d.Steps) == 0 && d.State == journal.Queued {
			fmt.Fprintln(w, "  queued, no attempt yet")
		}
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// tail is `hookrouter tail`: new events and outcomes as they happen, one
// line each, until interrupted. It reconnects (with Last-Event-ID, so that
// nothing is missed) when the router restarts or the connection drops.
func tail(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs)
	filters := filterFlags(fs)
	asJSON := fs.Bool("json", false, "print each record as the API's JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: hookrouter tail [-config FILE] [-addr ADMIN] [-source S] [-event E] [-sink K] [-state ST] [-q TEXT] [-json]")
		return 2
	}
	c, err := client()
	if err != nil {
		return fail(stderr, "tail", err)
	}
	v := filters()
	v.Del("since")
	ctx, stop := interrupted()
	defer stop()
	last := ""
	connected := false
	for ctx.Err() == nil {
		hdr := http.Header{}
		if last != "" {
			hdr.Set("Last-Event-ID", last)
		}
		resp, err := c.get(ctx, "/-/events/stream?"+v.Encode(), hdr)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if !connected && last == "" {
				return fail(stderr, "tail", err) // never reached it: say so at once
			}
			fmt.Fprintf(stderr, "hookrouter tail: %v; retrying\n", err)
			sleepCtx(ctx, 2*time.Second)
			continue
		}
		connected = true
		last, err = readStream(resp.Body, last, func(rec *journal.Record, raw []byte) {
			if *asJSON {
				fmt.Fprintf(stdout, "%s\n", raw)
				return
			}
			fmt.Fprintln(stdout, tailLine(rec))
		})
		resp.Body.Close()
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(stderr, "hookrouter tail: stream ended (%v); reconnecting\n", err)
		sleepCtx(ctx, time.Second)
	}
	return 0
}

// readStream reads server-sent events until the stream ends, calling fn for
// each, and returns the id of the last one.
func readStream(r io.Reader, last string, fn func(*journal.Record, []byte)) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var id string
	var data []byte
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != nil {
				var rec journal.Record
				if err := json.Unmarshal(data, &rec); err == nil {
					fn(&rec, data)
				}
				if id != "" {
					last = id
				}
			}
			id, data = "", nil
		case strings.HasPrefix(line, "id:"):
			id = strings.TrimSpace(line[3:])
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(line[5:], " ")...)
		}
	}
	err := sc.Err()
	if err == nil {
		err = io.EOF
	}
	return last, err
}

func tailLine(rec *journal.Record) string {
	if ev := rec.Event; ev != nil {
		line := fmt.Sprintf("%s  %s  %-20s %-10s %s", ev.ReceivedAt.Local().Format("15:04:05.000"), ev.ID, orDash(ev.Event), ev.Source, verdictText(ev))
		switch {
		case ev.Verdict == journal.Rejected && ev.Reason != "":
			line += ": " + ev.Reason
		case ev.Verdict == journal.Duplicate && ev.DuplicateOf != "":
			line += " of " + ev.DuplicateOf
		case len(ev.Sinks) > 0:
			line += " → " + strings.Join(ev.Sinks, ", ")
		}
		return line
	}
	st := rec.Step
	if st == nil {
		return fmt.Sprintf("record %d (%s)", rec.Seq, rec.Kind)
	}
	line := fmt.Sprintf("%s  %s    %s: %s", st.At.Local().Format("15:04:05.000"), st.EventID, st.Sink, st.State)
	if st.Outcome != "" {
		line += fmt.Sprintf(" (%s", st.Outcome)
		if st.Status != 0 {
			line += fmt.Sprintf(", status %d", st.Status)
		}
		line += fmt.Sprintf(", %.1f ms)", st.DurationMS)
	}
	if st.Error != "" {
		line += " " + st.Error
	}
	if st.Note != "" {
		line += " — " + st.Note
	}
	return line
}

// interrupted is the context of a command that runs until Ctrl-C or
// SIGTERM; tests replace it.
var interrupted = func() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// fail prints err for cmd and returns exit code 1.
func fail(stderr io.Writer, cmd string, err error) int {
	var ps config.Problems
	if errors.As(err, &ps) {
		printProblems(stderr, err)
		return 1
	}
	fmt.Fprintf(stderr, "hookrouter %s: %v\n", cmd, err)
	return 1
}
