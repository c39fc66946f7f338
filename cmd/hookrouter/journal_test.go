package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router"
	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/journal"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestEventsTraceTail drives the three journal commands against a running
// router with an admin token: an event no rule sends to crm, and one crm
// refuses (403, dead-lettered at once).
func TestEventsTraceTail(t *testing.T) {
	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "api key revoked", http.StatusForbidden)
	}))
	defer crm.Close()
	dir := t.TempDir()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	aln, _ := net.Listen("tcp", "127.0.0.1:0")
	cfgPath := filepath.Join(dir, "rules.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`listen: "127.0.0.1:0"
admin_listen: %q
admin: {token: journal-token}
data_dir: %s
sources: [{name: platform, path: /webhook, auth: {type: none}}]
queue: {backend: memory}
sinks:
  crm: {type: http, url: %q, retry: {max_attempts: 1}}
  archive: {type: file, path: %s}
rules:
  - {name: archive-everything, when: "true", to: [archive]}
  - {name: probes, when: 'event == "probe"', to: [crm]}
  - {name: whatsapp-inbound, when: 'event == "channel.message_in" && message.channel.engine == "wa"', to: [crm]}
  - {name: devices, when: 'event != "probe" && device.status == "connected"', to: [crm]}
`, aln.Addr().String(), filepath.Join(dir, "data"), crm.URL, filepath.Join(dir, "archive.jsonl")))
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
		r.Shutdown(ctx)
		<-served
	}()

	// tail, started first, follows until its context ends.
	tailCtx, stopTail := context.WithCancel(context.Background())
	interrupted = func() (context.Context, context.CancelFunc) { return tailCtx, stopTail }
	var tailOut, tailErr lockedBuffer
	tailDone := make(chan int, 1)
	go func() { tailDone <- run([]string{"tail", "-config", cfgPath, "-sink", "crm"}, nil, &tailOut, &tailErr) }()
	post := func(body string) string {
		resp, err := http.Post("http://"+ln.Addr().String()+"/webhook", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Hookrouter-Event-Id")
	}
	// The stream starts from the moment it opens: probe until tail shows
	// an event, so that it is known to be following.
	for i := 0; !strings.Contains(tailOut.String(), "probe") && !strings.Contains(tailOut.String(), "crm"); i++ {
		if i == 200 {
			t.Fatalf("tail printed nothing: %s", tailErr.String())
		}
		post(fmt.Sprintf(`{"event":"probe","n":%d}`, i))
		time.Sleep(50 * time.Millisecond)
	}
	telegram := post(`{"event":"channel.message_in","message":{"id":"t1","channel":{"engine":"telegram"}}}`)
	wa := post(`{"event":"channel.message_in","message":{"id":"w1","channel":{"engine":"wa"}}}`)
	waitUntil(t, func() bool {
		st, _ := r.Journal().State(context.Background(), wa, "crm")
		st2, _ := r.Journal().State(context.Background(), telegram, "archive")
		return st == journal.DeadLetter && st2 == journal.Delivered
	})

	code, out, errOut := runCmd(t, "", "events", "-config", cfgPath)
	if code != 0 || !strings.Contains(out, "TIME") || !strings.Contains(out, telegram) || !strings.Contains(out, wa) ||
		!strings.Contains(out, "crm:dead_letter") || !strings.Contains(out, "archive:delivered") {
		t.Fatalf("events: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, _ := runCmd(t, "", "events", "-config", cfgPath, "-sink", "crm", "-state", "dead_letter"); code != 0 || strings.Contains(out, telegram) || !strings.Contains(out, wa) {
		t.Errorf("events -sink crm -state dead_letter:\n%s", out)
	}
	// Without the token the admin API refuses, and the command says so.
	if code, _, errOut := runCmd(t, "", "events", "-addr", aln.Addr().String()); code != 1 || !strings.Contains(errOut, "401") {
		t.Errorf("events without token: exit %d %s", code, errOut)
	}
	// -addr alone still sends the token of the default config file.
	t.Setenv("HOOKROUTER_CONFIG", cfgPath)
	if code, out, errOut := runCmd(t, "", "events", "-addr", aln.Addr().String()); code != 0 || !strings.Contains(out, wa) {
		t.Errorf("events -addr with $HOOKROUTER_CONFIG's token: exit %d %s%s", code, out, errOut)
	}
	os.Unsetenv("HOOKROUTER_CONFIG")

	code, out, errOut = runCmd(t, "", "trace", "-config", cfgPath, telegram)
	if code != 0 || !regexpMatch(`whatsapp-inbound\s+no`, out) || !regexpMatch(`archive-everything\s+matched`, out) || !strings.Contains(out, "delivery to archive: delivered") {
		t.Errorf("trace of the unrouted-to-crm event: exit %d\n%s%s", code, out, errOut)
	}
	// A rule that failed for the event: its error's first line, and why,
	// part by part, from the journal.
	if want := `  devices             error: cannot fetch status from <nil>[^\n]*\n` +
		`                        event != "probe" → true \(event is "channel.message_in"\)\n` +
		`                        device.status == "connected" → error: cannot fetch status from <nil>\n`; !regexpMatch(want, out) {
		t.Errorf("trace of the event a rule failed for:\n%s\nwant:\n%s", out, want)
	}
	code, out, errOut = runCmd(t, "", "trace", "-config", cfgPath, wa)
	if code != 0 || !strings.Contains(out, "delivery to crm: dead_letter (1 attempt)") || !strings.Contains(out, "attempt 1: permanent, status 403") ||
		!strings.Contains(out, "api key revoked") || !strings.Contains(out, "request: accepted, answered 200") {
		t.Errorf("trace of the refused event: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runCmd(t, "", "trace", "-config", cfgPath, "-json", wa)
	var ev journal.Event
	if err := json.Unmarshal([]byte(out), &ev); code != 0 || err != nil || ev.ID != wa || len(ev.Deliveries) != 2 || ev.Deliveries[1].Attempts[0].Status != 403 {
		t.Errorf("trace -json: exit %d %v\n%s", code, err, out)
	}
	if code, _, errOut := runCmd(t, "", "trace", "-config", cfgPath, "nope"); code != 1 || !strings.Contains(errOut, "404") {
		t.Errorf("trace unknown: exit %d %s", code, errOut)
	}

	// tail printed the crm event and its outcome (sink filter: not the other).
	waitUntil(t, func() bool {
		return strings.Contains(tailOut.String(), wa+"    crm: dead_letter (permanent, status 403")
	})
	if s := tailOut.String(); strings.Contains(s, telegram) || !strings.Contains(s, wa+"  channel.message_in") {
		t.Errorf("tail output:\n%s", s)
	}
	stopTail()
	if code := <-tailDone; code != 0 {
		t.Errorf("tail exit %d: %s", code, tailErr.String())
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
