package router

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router/config"
)

// TestReloadRefusesUnwritableFile: a reload naming a file sink whose path
// cannot be opened (its parent is a regular file, which stops root too) is
// refused with the line of that path, and the running config stays in
// force and keeps delivering; at start, the same file is refused by New.
func TestReloadRefusesUnwritableFile(t *testing.T) {
	good := baseConfig("{backend: memory}", "  archive: {type: file, path: DATA/events.jsonl}",
		"  - {name: all, when: 'true', to: [archive]}")
	s := startServer(t, good)
	blocker := filepath.Join(s.dir, "blocker")
	if err := os.WriteFile(blocker, []byte("a file, not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := baseConfig("{backend: memory}", "  archive: {type: file, path: DATA/events.jsonl}\n  other:\n    type: file\n    path: "+filepath.Join(blocker, "events.jsonl"),
		"  - {name: all, when: 'true', to: [archive, other]}")
	bad = strings.ReplaceAll(bad, "DATA", filepath.Join(s.dir, "data"))
	if err := os.WriteFile(s.config, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	a := s.adminPost("/-/reload", nil)
	line := 0
	for i, l := range strings.Split(bad, "\n") {
		if strings.Contains(l, "path: "+blocker) {
			line = i + 1
		}
	}
	want := fmt.Sprintf("rules.yaml:%d:11: ", line) + "sinks.other.path: cannot be opened for appending: mkdir "
	if a.status != 400 || !strings.Contains(a.body, want) || !strings.Contains(a.body, "not a directory") {
		t.Fatalf("reload: %d %q, want 400 with %q…not a directory", a.status, a.body, want)
	}
	if g := s.r.Runtime().Generation; g != 1 {
		t.Errorf("generation %d after a refused reload, want 1", g)
	}
	if _, ok := s.r.Runtime().Sinks["other"]; ok {
		t.Error("the refused sink is in force")
	}
	if a := s.post("/webhook", message("after-refusal")); a.status != 200 {
		t.Fatalf("post after the refused reload: %d %s", a.status, a.body)
	}
	path := filepath.Join(s.dir, "data", "events.jsonl")
	waitFor(t, 5*time.Second, "the event in the running config's file", func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), "after-refusal")
	})

	// At start: New refuses the same file.
	f, err := config.Load(s.config)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := New(f, Options{ConfigPath: s.config, Version: "test"}); err == nil || !strings.Contains(err.Error(), "sinks.other.path: cannot be opened") {
		if r != nil {
			t.Cleanup(func() { _ = r.Shutdown(t.Context()) })
		}
		t.Errorf("New with an unwritable file sink: %v, want the problem", err)
	}
}

// TestReloadProvisionsFileSink: a file sink that a reload adds has its file
// created by the reload, before any event reaches it.
func TestReloadProvisionsFileSink(t *testing.T) {
	s := startServer(t, baseConfig("{backend: memory}", "  out: {type: stdout}", "  - {name: none, when: 'false', to: [out]}"))
	path := filepath.Join(s.dir, "data", "new", "events.jsonl")
	cfg := baseConfig("{backend: memory}", "  out: {type: stdout}\n  archive: {type: file, path: "+path+"}",
		"  - {name: none, when: 'false', to: [out, archive]}")
	cfg = strings.ReplaceAll(cfg, "DATA", filepath.Join(s.dir, "data"))
	if err := os.WriteFile(s.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if a := s.adminPost("/-/reload", nil); a.status != 200 {
		t.Fatalf("reload: %d %s", a.status, a.body)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the new file sink's file was not created by the reload: %v", err)
	}
}

// TestHealthDoesNotWaitForReload: /health answers while a reload holds its
// lock (as one does through Build and the wait for requests in flight).
func TestHealthDoesNotWaitForReload(t *testing.T) {
	s := startServer(t, baseConfig("{backend: memory}", "  out: {type: stdout}", "  - {name: none, when: 'false', to: [out]}"))
	s.r.reloadMu.Lock()
	defer s.r.reloadMu.Unlock()
	done := make(chan answer, 2)
	go func() { done <- s.get("/health") }()
	go func() { done <- s.adminGet("/health") }()
	for range 2 {
		select {
		case a := <-done:
			if a.status != 200 {
				t.Errorf("/health during a reload: %d %s", a.status, a.body)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("/health waited for the reload")
		}
	}
}
