package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router"
	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/journal"
)

// TestDiffJournalRunningRouter runs `hookrouter diff -against NEW -journal`
// against a real router with its journal on: the sample payloads are posted
// to its ingress, the journal records them, and the diff reads them back
// through the admin API (with the config's admin.token) and reports the
// events NEW routes elsewhere. A duplicate and a rejected request are in the
// journal too, and are skipped.
func TestDiffJournalRunningRouter(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	crm, ops := httptest.NewServer(ok), httptest.NewServer(ok)
	defer crm.Close()
	defer ops.Close()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := aln.Addr().String()
	// OLD and NEW are testdata/diff's old.yaml and new.yaml with real sinks
	// and the router's own settings.
	settings := fmt.Sprintf("listen: \"127.0.0.1:0\"\nadmin_listen: %q\nadmin: {token: diff-token}\ndata_dir: %s\nqueue: {backend: memory}\njournal: {enabled: true, bodies: true}\n",
		admin, filepath.Join(dir, "data"))
	real := func(src string) string {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "http://127.0.0.1:9000/events", crm.URL)
		s = strings.ReplaceAll(s, "http://127.0.0.1:9002/devices", ops.URL)
		return settings + strings.ReplaceAll(s, "./data/events.jsonl", filepath.Join(dir, "archive.jsonl"))
	}
	oldPath, newPath := filepath.Join(dir, "old.yaml"), filepath.Join(dir, "new.yaml")
	writeFile(t, oldPath, real("testdata/diff/old.yaml"))
	writeFile(t, newPath, real("testdata/diff/new.yaml"))

	f, err := config.Load(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(f, router.Options{ConfigPath: oldPath, Version: "test", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(ln, aln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.Shutdown(ctx)
		<-served
	}()

	post := func(path, file string) (status int, id string) {
		t.Helper()
		body := file
		if strings.HasSuffix(file, ".json") {
			b, err := os.ReadFile(filepath.Join(payloads, file))
			if err != nil {
				t.Fatal(err)
			}
			body = string(b)
		}
		resp, err := http.Post("http://"+ln.Addr().String()+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Hookrouter-Event-Id")
	}
	var ids []string
	for _, p := range []struct{ path, file string }{
		{"/webhook", "channel.message_in.json"},       // wa: same sinks under NEW
		{"/webhook", "channel.message_in.image.json"}, // ig: NEW drops crm
		{"/webhook", "device.connected.json"},         // NEW adds crm
		{"/shop", "agent.message_out.json"},           // NEW archives nothing from shop
	} {
		status, id := post(p.path, p.file)
		if status != http.StatusOK || id == "" {
			t.Fatalf("POST %s %s: %d, id %q", p.path, p.file, status, id)
		}
		ids = append(ids, id)
	}
	if status, _ := post("/webhook", "device.connected.json"); status != http.StatusOK { // a duplicate
		t.Fatalf("duplicate: %d", status)
	}
	if status, _ := post("/webhook", "{not json"); status != http.StatusBadRequest { // rejected
		t.Fatalf("invalid JSON: %d", status)
	}
	// The journal writes off the request path: wait until it holds all six.
	waitUntil(t, func() bool {
		p, err := r.Journal().List(context.Background(), journal.Filter{})
		return err == nil && len(p.Events) == 6
	})
	after := time.Now()

	code, out, errOut := runCmd(t, "", "diff", "-config", oldPath, "-against", newPath, "-journal", "-since", "1h")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// Newest first; the wa message routes the same and is not listed.
	want := "event " + ids[3] + ": agent.message_out_msg_agent_31: gained [] lost [archive]\n" +
		"event " + ids[2] + ": device.connected_dev_wa_01_1738057000: gained [crm] lost []\n" +
		"event " + ids[1] + ": channel.message_in_msg_ig_9001: gained [] lost [crm]\n" +
		"summary: 4 events, 3 routed differently, 1 unchanged, 0 unreadable; gained crm×1; lost archive×1, crm×1\n"
	if out != want {
		t.Errorf("diff -journal -since 1h:\n%s\nwant:\n%s", out, want)
	}
	if want := "hookrouter diff: 2 duplicates and rejected requests in the journal were not routed, and are not compared\n"; errOut != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}

	// -since after the last event: nothing to compare.
	since := after.Add(time.Millisecond).UTC().Format(time.RFC3339Nano)
	code, out, errOut = runCmd(t, "", "diff", "-config", oldPath, "-against", newPath, "-journal", "-since", since)
	if want := "summary: 0 events, 0 routed differently, 0 unchanged, 0 unreadable; gained none; lost none\n"; code != 0 || out != want || errOut != "" {
		t.Errorf("-since %s: exit %d\n%s%s\nwant:\n%s", since, code, out, errOut, want)
	}

	// A wrong token (another copy of the config) and none: 401, exit 1, and
	// the token is not echoed.
	wrongPath := filepath.Join(dir, "wrong.yaml")
	writeFile(t, wrongPath, strings.Replace(real("testdata/diff/old.yaml"), "token: diff-token", "token: not-the-token", 1))
	noTokenPath := filepath.Join(dir, "notoken.yaml")
	writeFile(t, noTokenPath, strings.Replace(real("testdata/diff/old.yaml"), "admin: {token: diff-token}\n", "", 1))
	for _, p := range []string{wrongPath, noTokenPath} {
		code, out, errOut = runCmd(t, "", "diff", "-config", p, "-against", newPath, "-journal", "-addr", admin)
		if code != 1 || out != "" || !strings.Contains(errOut, "401 Unauthorized") || strings.Contains(errOut, "not-the-token") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", filepath.Base(p), code, out, errOut)
		}
	}
}
