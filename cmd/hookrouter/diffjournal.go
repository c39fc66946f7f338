package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/router"
)

// journalQuery is what `hookrouter diff -journal` asks the running router.
type journalQuery struct {
	addr  string // admin address; "" = the config's admin_listen
	since string // a duration back or an RFC 3339 time
	limit int    // most events replayed
}

// journalEvent is the part of a journal record (GET /-/events/{id}) the diff
// reads.
type journalEvent struct {
	ID      string          `json:"id"`
	Source  string          `json:"source"`
	Verdict string          `json:"verdict"`
	Payload json.RawMessage `json:"payload"`
}

// diffJournal is `hookrouter diff -against NEW -journal`: the events the
// running router accepted recently, read from its journal through the admin
// API, routed through the config in force (oldRT, the -config file, which
// the router reloads when it changes) and through newRT. Duplicates and
// rejected requests were not routed and are skipped; an event the journal
// kept without its payload (journal.bodies: false) is unreadable.
func diffJournal(oldRT, newRT *router.Runtime, headers headerFlags, q journalQuery, stdout, stderr io.Writer) int {
	c, err := newJournalClient(oldRT, q.addr)
	if err != nil {
		fmt.Fprintf(stderr, "hookrouter diff: %v\n", err)
		return 1
	}
	warnings, err := c.checkInForce(oldRT)
	if err != nil {
		fmt.Fprintf(stderr, "hookrouter diff: %v\n", err)
		return 1
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "hookrouter diff: warning: %s\n", w)
	}
	ids, skipped, err := c.acceptedIDs(q)
	if err != nil {
		fmt.Fprintf(stderr, "hookrouter diff: %v\n", err)
		return 1
	}
	sum := diffSummary{gained: map[string]int{}, lost: map[string]int{}}
	for _, id := range ids {
		var ev journalEvent
		if err := c.getJSON("/-/events/"+url.PathEscape(id), &ev); err != nil {
			fmt.Fprintf(stderr, "hookrouter diff: %v\n", err)
			return 1
		}
		sum.events++
		label := "event " + id
		if len(ev.Payload) == 0 || string(ev.Payload) == "null" {
			sum.invalid++
			fmt.Fprintf(stdout, "%s: unreadable event: the journal kept no payload (journal.bodies is false)\n", label)
			continue
		}
		sum.compare(oldRT, newRT, headers, ev.Source, ev.Payload, label, stdout)
	}
	fmt.Fprintln(stdout, sum)
	if skipped > 0 {
		fmt.Fprintf(stderr, "hookrouter diff: %d duplicates and rejected requests in the journal were not routed, and are not compared\n", skipped)
	}
	return 0
}

// journalClient reads the running router's journal through its admin API.
type journalClient struct {
	base, token string
	http        *http.Client
}

// newJournalClient finds the admin API as `hookrouter replay` does: addr,
// else the config's admin_listen, with the config's admin.token.
func newJournalClient(rt *router.Runtime, addr string) (*journalClient, error) {
	if addr == "" {
		if addr = rt.File.AdminListen; addr == "" {
			return nil, fmt.Errorf("admin_listen is off in %s: the journal is read through the admin listener (or give -addr)", rt.File.Name)
		}
	}
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + loopback(addr)
	}
	return &journalClient{base: strings.TrimRight(base, "/"), token: rt.File.Admin.Token, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

func (c *journalClient) getJSON(path string, v any) error {
	req, err := http.NewRequest(http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("is hookrouter running? %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s: %s", c.base+path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("unexpected answer from %s: %w", c.base+path, err)
	}
	return nil
}

// checkInForce says when the router may not run the file given as the config
// in force: it names another file (or the same one by another path), or its
// last reload of it failed (it then still runs an older version).
func (c *journalClient) checkInForce(rt *router.Runtime) ([]string, error) {
	var h struct {
		ConfigFile      string `json:"config_file"`
		LastReloadError string `json:"last_reload_error"`
	}
	if err := c.getJSON("/health", &h); err != nil {
		return nil, err
	}
	var ws []string
	if h.ConfigFile != "" && !sameFile(h.ConfigFile, rt.File.Name) {
		ws = append(ws, fmt.Sprintf("the router at %s runs %s, and the config in force compared is %s (-config)", c.base, h.ConfigFile, rt.File.Name))
	}
	if h.LastReloadError != "" {
		ws = append(ws, "the router's last reload of its config failed: it runs an older version than the file compared (see its /health)")
	}
	return ws, nil
}

func sameFile(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == bb
}

// acceptedIDs pages through GET /-/events since q.since, newest first, and
// returns the ids of accepted events (at most q.limit), and how many other
// records (duplicates, rejections) it skipped.
func (c *journalClient) acceptedIDs(q journalQuery) (ids []string, skipped int, err error) {
	cursor := ""
	for len(ids) < q.limit {
		v := url.Values{}
		v.Set("since", q.since)
		v.Set("limit", strconv.Itoa(min(500, q.limit-len(ids))))
		if cursor != "" {
			v.Set("cursor", cursor)
		}
		var page struct {
			Events     []journalEvent `json:"events"`
			NextCursor string         `json:"next_cursor"`
		}
		if err := c.getJSON("/-/events?"+v.Encode(), &page); err != nil {
			return nil, 0, err
		}
		for _, ev := range page.Events {
			if ev.Verdict != "accepted" {
				skipped++
				continue
			}
			if len(ids) < q.limit {
				ids = append(ids, ev.ID)
			}
		}
		if page.NextCursor == "" || len(page.Events) == 0 {
			break
		}
		cursor = page.NextCursor
	}
	return ids, skipped, nil
}
