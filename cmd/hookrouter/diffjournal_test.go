package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// journalAPI serves GET /health, /-/events and /-/events/{id} as spec.md §3
// says the router's admin listener does, from a fixed list of journal
// records, newest first, two per page, and requires the admin token.
func journalAPI(t *testing.T, token string, records []map[string]any) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"status": "healthy", "last_reload_error": ""})
	})
	mux.HandleFunc("GET /-/events", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("since") != "2h" {
			t.Errorf("since=%q, want 2h", r.URL.Query().Get("since"))
		}
		from, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
		to := min(from+2, len(records))
		page := map[string]any{"events": []map[string]any{}, "next_cursor": ""}
		var evs []map[string]any
		for _, rec := range records[from:to] {
			short := map[string]any{}
			for k, v := range rec {
				if k != "payload" {
					short[k] = v
				}
			}
			evs = append(evs, short)
		}
		page["events"] = evs
		if to < len(records) {
			page["next_cursor"] = strconv.Itoa(to)
		}
		json.NewEncoder(w).Encode(page)
	})
	mux.HandleFunc("GET /-/events/{id}", func(w http.ResponseWriter, r *http.Request) {
		for _, rec := range records {
			if rec["id"] == r.PathValue("id") {
				json.NewEncoder(w).Encode(rec)
				return
			}
		}
		http.NotFound(w, r)
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"Unauthorized"}`))
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestDiffJournalContract: diff -journal pages through the journal, skips
// what was not routed, and reports the accepted events whose routing
// changes, as diff does for a file.
func TestDiffJournalContract(t *testing.T) {
	payload := func(name string) json.RawMessage {
		b, err := os.ReadFile(filepath.Join(payloads, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	records := []map[string]any{
		{"id": "ev-5", "source": "platform", "verdict": "accepted", "payload": payload("channel.message_in.image.json")},
		{"id": "ev-4", "source": "platform", "verdict": "duplicate"},
		{"id": "ev-3", "source": "platform", "verdict": "accepted", "payload": payload("device.connected.json")},
		{"id": "ev-2", "source": "shop", "verdict": "accepted", "payload": payload("agent.message_out.json")},
		{"id": "ev-1", "source": "platform", "verdict": "accepted"},
		{"id": "ev-0", "source": "platform", "verdict": "rejected"},
	}
	srv := journalAPI(t, "s3cret", records)
	dir := t.TempDir()
	old, err := os.ReadFile("testdata/diff/old.yaml")
	if err != nil {
		t.Fatal(err)
	}
	oldPath := filepath.Join(dir, "old.yaml")
	cfg := "admin_listen: " + strings.TrimPrefix(srv.URL, "http://") + "\nadmin: {token: s3cret}\n" + string(old)
	if err := os.WriteFile(oldPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, "", "diff", "-config", oldPath, "-against", "testdata/diff/new.yaml", "-journal", "-since", "2h")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := `event ev-5: channel.message_in_msg_ig_9001: gained [] lost [crm]
event ev-3: device.connected_dev_wa_01_1738057000: gained [crm] lost []
event ev-2: agent.message_out_msg_agent_31: gained [] lost [archive]
event ev-1: unreadable event: the journal kept no payload (journal.bodies is false)
summary: 4 events, 3 routed differently, 0 unchanged, 1 unreadable; gained crm×1; lost archive×1, crm×1
`
	if out != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
	if !strings.Contains(errOut, "2 duplicates and rejected requests") {
		t.Errorf("stderr %q: want the skipped count", errOut)
	}

	// Without the token: a clear error, exit 1.
	if err := os.WriteFile(oldPath, []byte(strings.Replace(cfg, "token: s3cret", "token: wrong", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCmd(t, "", "diff", "-config", oldPath, "-against", "testdata/diff/new.yaml", "-journal", "-since", "2h")
	if code != 1 || !strings.Contains(errOut, "401 Unauthorized") {
		t.Errorf("wrong token: exit %d, stderr %q", code, errOut)
	}
	// Both a file and -journal, or neither: usage.
	if code, _, _ := runCmd(t, "", "diff", "-against", "testdata/diff/new.yaml", "-journal", "x.jsonl"); code != 2 {
		t.Errorf("-journal with a file: exit %d, want 2", code)
	}
	// No router there.
	code, _, errOut = runCmd(t, "", "diff", "-config", "testdata/diff/old.yaml", "-against", "testdata/diff/new.yaml", "-journal", "-addr", "127.0.0.1:1")
	if code != 1 || !strings.Contains(errOut, "is hookrouter running?") {
		t.Errorf("no router: exit %d, stderr %q", code, errOut)
	}
}
