package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router"
	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/dispatch"
)

// TestReplay sends a dead-letter file to a running router, found through
// -addr or through the config's admin_listen, with the config's admin token.
func TestReplay(t *testing.T) {
	var mu sync.Mutex
	var ids, bodies []string
	dest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		ids = append(ids, r.Header.Get("X-Hookrouter-Event-Id"))
		bodies = append(bodies, string(b))
		mu.Unlock()
	}))
	defer dest.Close()
	delivered := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(ids)
	}

	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "rules.yaml")
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`listen: "127.0.0.1:0"
admin_listen: %q
admin: {token: replay-token}
data_dir: %s
sources: [{name: platform, path: /webhook, auth: {type: none}}]
queue: {backend: memory}
sinks:
  crm: {type: http, url: %q}
rules:
  - {name: all, when: "true", to: [crm]}
`, aln.Addr().String(), filepath.Join(dir, "data"), dest.URL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(f, router.Options{ConfigPath: cfgPath, Version: "test", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(ln, aln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		<-served
	}()

	// A dead-letter file as the router writes it.
	dlPath := filepath.Join(dir, "dead.jsonl")
	dl, err := dispatch.OpenDeadLetters(dlPath)
	if err != nil {
		t.Fatal(err)
	}
	for i, sink := range []string{"crm", "crm"} {
		rec := &dispatch.Record{Sink: sink, EventID: fmt.Sprintf("0194abcd00000000000000000000000%d", i), Attempts: 8,
			Error: "POST http://crm: http status 503", FailedAt: time.Now().UTC(),
			Envelope: dispatch.RecordEvent{ID: fmt.Sprintf("0194abcd00000000000000000000000%d", i), Source: "platform",
				ReceivedAt: time.Now().UTC(), Payload: []byte(fmt.Sprintf(`{"event":"x","n":%d}`, i))}}
		if err := dl.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	dl.Close()

	// The admin listener wants the token: -addr alone does not have it.
	code, out, errOut := runCmd(t, "", "replay", "-addr", aln.Addr().String(), dlPath)
	if code != 1 || !strings.Contains(errOut, "401 Unauthorized") {
		t.Fatalf("replay -addr without the token: exit %d stdout %q stderr %q, want 1 and a 401", code, out, errOut)
	}
	if delivered() != 0 {
		t.Fatalf("%d deliveries after a refused replay", delivered())
	}
	// The ingress listener serves no admin endpoint.
	code, out, errOut = runCmd(t, "", "replay", "-addr", ln.Addr().String(), "-config", cfgPath, dlPath)
	if code != 1 || !strings.Contains(errOut, "404 Not Found") {
		t.Fatalf("replay to the ingress listener: exit %d stdout %q stderr %q, want 1 and a 404", code, out, errOut)
	}

	code, out, errOut = runCmd(t, "", "replay", "-addr", aln.Addr().String(), "-config", cfgPath, dlPath)
	if code != 0 || out != "requeued 2 of 2 records, skipped 0\n" || errOut != "" {
		t.Fatalf("replay -addr: exit %d stdout %q stderr %q", code, out, errOut)
	}
	waitUntil(t, func() bool { return delivered() == 2 })
	mu.Lock()
	if ids[0]+ids[1] != "0194abcd000000000000000000000000"+"0194abcd000000000000000000000001" &&
		ids[1]+ids[0] != "0194abcd000000000000000000000000"+"0194abcd000000000000000000000001" {
		t.Errorf("replayed with ids %v, want the records' ids", ids)
	}
	if !strings.HasPrefix(bodies[0], `{"event":"x","n":`) {
		t.Errorf("replayed body %q", bodies[0])
	}
	mu.Unlock()

	// Without -addr, the address and the token come from the config; the
	// records were replayed already, so nothing is delivered twice.
	if code, out, errOut = runCmd(t, "", "replay", "-config", cfgPath, dlPath); out != "requeued 0 of 2 records, skipped 2\n" || !strings.Contains(errOut, "already replayed") {
		t.Fatalf("replay -config: exit %d stdout %q stderr %q", code, out, errOut)
	}

	// A record for a sink the config does not have is skipped and reported.
	other := filepath.Join(dir, "other.jsonl")
	data, _ := os.ReadFile(dlPath)
	fresh := strings.ReplaceAll(string(data), "0194abcd0000", "0194abcd1111") // events not replayed yet
	os.WriteFile(other, []byte(strings.Replace(fresh, `"sink":"crm"`, `"sink":"gone"`, 1)), 0o600)
	code, out, errOut = runCmd(t, "", "replay", "-config", cfgPath, other)
	if code != 1 || out != "requeued 1 of 2 records, skipped 1\n" || errOut != "record 1: sink \"gone\" is not in the config\n" {
		t.Errorf("unknown sink: exit %d stdout %q stderr %q", code, out, errOut)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

func TestReplayErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.jsonl")
	garbage := filepath.Join(dir, "garbage.jsonl")
	valid := filepath.Join(dir, "valid.jsonl")
	os.WriteFile(empty, nil, 0o600)
	os.WriteFile(garbage, []byte("{\"sink\":\"crm\",\"event_id\":\"x\"}\nnot a record\n"), 0o600)
	os.WriteFile(valid, []byte(`{"sink":"crm","event_id":"x","event":{"id":"x","payload":{}}}`+"\n"), 0o600)
	// A port nothing listens on.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name         string
		args         []string
		code         int
		stdout, want string
	}{
		{"no file", nil, 2, "", "usage: hookrouter replay"},
		{"missing file", []string{filepath.Join(dir, "nope.jsonl")}, 1, "", "no such file or directory"},
		{"empty file", []string{empty}, 0, "nothing to replay: 0 records\n", ""},
		{"not a dead-letter file", []string{garbage}, 1, "", "garbage.jsonl: dead letters: line 2:"},
		{"router not running", []string{"-addr", closed, valid}, 1, "", "hookrouter replay: is hookrouter running?"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, "", append([]string{"replay"}, tc.args...)...)
			if code != tc.code || out != tc.stdout || !strings.Contains(errOut, tc.want) || (tc.want == "" && errOut != "") {
				t.Errorf("exit %d stdout %q stderr %q; want exit %d, %q and %q", code, out, errOut, tc.code, tc.stdout, tc.want)
			}
		})
	}
}
