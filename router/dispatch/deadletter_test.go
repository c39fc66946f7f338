package dispatch

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

func TestDeadLettersRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dead-letter.jsonl")
	dl, err := OpenDeadLetters(path)
	if err != nil {
		t.Fatal(err)
	}
	received := time.Date(2024, 5, 1, 10, 0, 0, 123, time.UTC)
	body := "{\n  \"event\": \"channel.message_in\",\n  \"message\": {\"id\": \"m1\", \"content\": {\"text\": \"a <b> & \\\"c\\\"\"}}\n}"
	d := &queue.Delivery{Sink: "crm", Attempts: 3, Event: &sinks.Event{ID: "ev-1", Source: "platform", ReceivedAt: received, Body: []byte(body)}}
	before := time.Now()
	if err := dl.Write(newRecord(d, "http status 503: down", time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := dl.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dl.Write(newRecord(d, "x", time.Now())); err == nil {
		t.Fatal("Write after Close must fail")
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if n := bytes.Count(raw, []byte("\n")); n != 1 {
		t.Fatalf("file has %d lines, want 1 (payload compacted onto one line):\n%s", n, raw)
	}
	if !bytes.Contains(raw, []byte(`"text":"a <b> & \"c\""`)) {
		t.Fatalf("payload not kept verbatim (compacted):\n%s", raw)
	}
	recs, err := ReadDeadLetters(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	r := recs[0]
	if r.Sink != "crm" || r.EventID != "ev-1" || r.Attempts != 3 || r.Error != "http status 503: down" {
		t.Fatalf("record = %+v", r)
	}
	if r.FailedAt.Before(before.Add(-time.Second)) || r.FailedAt.After(time.Now()) {
		t.Fatalf("failed_at = %v", r.FailedAt)
	}
	ev := r.Event()
	if ev.ID != "ev-1" || ev.Source != "platform" || !ev.ReceivedAt.Equal(received) {
		t.Fatalf("event = %+v", ev)
	}
	got, err := ev.Payload()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := sinks.DecodePayload([]byte(body))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("payload = %v, want %v", got, want)
	}
}

func TestDeadLettersNonJSONBodyKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl.jsonl")
	dl, err := OpenDeadLetters(path)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	d := &queue.Delivery{Sink: "s", Event: &sinks.Event{ID: "e", Body: []byte("not json\n")}}
	if err := dl.Write(newRecord(d, "x", time.Now())); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	recs, err := ReadDeadLetters(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(recs[0].Event().Body); got != "not json\n" {
		t.Fatalf("body = %q", got)
	}
}

func TestOpenDeadLettersFails(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plain")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
	}{
		{"parent is a file", filepath.Join(file, "dead-letter.jsonl")},
		{"path is a directory", dir},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dl, err := OpenDeadLetters(tc.path)
			if err == nil {
				dl.Close()
				t.Fatal("open succeeded")
			}
			if !strings.HasPrefix(err.Error(), "dead letters: ") || !strings.Contains(err.Error(), dir) {
				t.Fatalf("error %q should say dead letters and name the path", err)
			}
		})
	}
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "ro")
		os.Mkdir(ro, 0o500)
		if _, err := OpenDeadLetters(filepath.Join(ro, "dl.jsonl")); err == nil {
			t.Fatal("open in a read-only directory succeeded")
		}
	}
}

func TestDeadLettersConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl.jsonl")
	dl, err := OpenDeadLetters(path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 25 {
				d := &queue.Delivery{Sink: fmt.Sprint("s", w), Event: &sinks.Event{ID: fmt.Sprint(w, "-", i), Body: []byte(`{"a":1}`)}}
				if err := dl.Write(newRecord(d, "e", time.Now())); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	dl.Close()
	// Reopening appends.
	dl, err = OpenDeadLetters(path)
	if err != nil {
		t.Fatal(err)
	}
	dl.Write(newRecord(&queue.Delivery{Sink: "last", Event: &sinks.Event{ID: "last", Body: []byte(`{}`)}}, "e", time.Now()))
	dl.Close()
	raw, _ := os.ReadFile(path)
	recs, err := ReadDeadLetters(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.EventID] = true
	}
	if len(recs) != 101 || len(seen) != 101 || recs[100].EventID != "last" {
		t.Fatalf("read %d records (%d distinct), want 101 with the reopened append last", len(recs), len(seen))
	}
}

func TestReadDeadLetters(t *testing.T) {
	good := `{"sink":"a","event_id":"1","attempts":1,"error":"e","failed_at":"2024-01-01T00:00:00Z","event":{"id":"1","source":"p","received_at":"2024-01-01T00:00:00Z","payload":{"x":1}}}`
	tests := []struct {
		name    string
		in      string
		n       int
		wantErr string
	}{
		{"empty", "", 0, ""},
		{"blank lines skipped", "\n" + good + "\n\n  \n" + good, 2, ""},
		{"no final newline", good, 1, ""},
		{"malformed line", good + "\n\n{\"sink\":\n" + good, 0, "line 3"},
		{"not a record", good + "\n{\"hello\":1}\n", 0, "line 2: not a dead-letter record"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := ReadDeadLetters(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != tc.n {
				t.Fatalf("read %d records, want %d", len(recs), tc.n)
			}
		})
	}
}
