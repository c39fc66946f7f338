package config

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/router/auth"
	"github.com/hookrouter/hookrouter/router/queue/natsq"
	"github.com/hookrouter/hookrouter/sinks/file"
	"github.com/hookrouter/hookrouter/sinks/httpsink"
	"github.com/hookrouter/hookrouter/sinks/slack"
	"github.com/hookrouter/hookrouter/sinks/stdout"
)

var update = flag.Bool("update", false, "rewrite the testdata/bad/*.golden files from the current output")

// testEnv is the environment of the golden tests: the two variables the
// platform's docs tell users to set, and nothing else.
func testEnv(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

var goldenEnv = map[string]string{
	"WEBHOOK_SECRET_KEY": "s3cret",
	"SLACK_WEBHOOK_URL":  "https://hooks.slack.com/services/T0/B0/X0",
}

// TestGolden checks the exact problems reported for each broken file in
// testdata/bad against its .golden file. Run with -update to rewrite them.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) < 20 {
		t.Fatalf("testdata/bad holds %d files (%v), want at least 20", len(files), err)
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := Parse(name, data, testEnv(goldenEnv))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Parse: got %v, want Problems", err)
			}
			if f == nil {
				t.Fatal("Parse returned a nil File with its problems")
			}
			for _, p := range ps {
				if p.File != name || p.Line < 1 || p.Col < 1 || p.Msg == "" {
					t.Errorf("malformed problem %+v", p)
				}
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(path, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("problems differ from %s\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

// TestFull loads a file that sets every field and checks every value.
func TestFull(t *testing.T) {
	t.Setenv("WEBHOOK_SECRET_KEY", "platform-secret")
	t.Setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/X0")
	t.Setenv("CRM_KEY", "k3y")
	for _, name := range []string{"CRM_URL", "CRM_WORKERS", "HMAC_SECRET", "PORT"} {
		t.Setenv(name, "") // registers the restore; then truly unset it
		os.Unsetenv(name)
	}
	const path = "testdata/full.yaml"
	f, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Hash != sha256.Sum256(raw) {
		t.Error("Hash is not the SHA-256 of the file's bytes")
	}
	if f.Name != path {
		t.Errorf("Name = %q, want %q", f.Name, path)
	}
	retry := Retry{MaxAttempts: 3, InitialBackoff: Duration(100 * time.Millisecond), MaxBackoff: Duration(10 * time.Second)}
	crmHTTP := httpsink.Config{
		URL:     "http://127.0.0.1:9000/events",
		Method:  "PUT",
		Headers: map[string]string{"X-Api-Key": "k3y", "X-Event": "{{ .event }}"},
		Body:    `{"from": message.sender_name, "text": message.content.text}`,
		Timeout: 2 * time.Second,
		Sign:    &httpsink.Sign{Secret: "whsec_c2lnbg=="},
	}
	crm := &Sink{
		Type:     "http",
		Settings: &crmHTTP,
		Retry:    retry,
		Breaker:  Breaker{Failures: 2, OpenFor: Duration(time.Minute)},
		Workers:  16,
	}
	backupHTTP := crmHTTP
	backupHTTP.URL = "http://127.0.0.1:9001/events"
	backup := *crm
	backup.Settings = &backupHTTP
	backup.Workers = 1
	want := &File{
		Listen:      "127.0.0.1:3100",
		AdminListen: "127.0.0.1:3101",
		MaxConns:    10000,
		DataDir:     "/var/lib/hookrouter",
		Sources: []Source{
			{
				Name: "platform", Path: "/webhook", MaxBodyBytes: 512 << 10,
				Auth:  auth.Config{Type: "header", Header: "X-Platform-Key", Secret: "platform-secret"},
				Dedup: SourceDedup{Key: `event + "_" + message.id`, TTL: Duration(12 * time.Hour)},
			},
			{
				Name: "signed", Path: "/signed", MaxBodyBytes: 2_000_000,
				Auth:  auth.Config{Type: "hmac-sha256", Header: "X-Signature", Secret: "s3cret: with # and $"},
				Dedup: SourceDedup{TTL: Duration(24 * time.Hour)},
			},
			{
				Name: "stdhooks", Path: "/std", MaxBodyBytes: 1 << 20,
				Auth:  auth.Config{Type: "standard-webhooks", Secret: "whsec_c2VjcmV0", Tolerance: 2 * time.Minute},
				Dedup: SourceDedup{TTL: Duration(24 * time.Hour)},
			},
			{
				Name: "bearer", Path: "/bearer", MaxBodyBytes: 1 << 20,
				Auth:  auth.Config{Type: "bearer", Secret: "t0ken"},
				Dedup: SourceDedup{TTL: Duration(24 * time.Hour)},
			},
			{
				Name: "open", Path: "/open", MaxBodyBytes: 1 << 20,
				Auth:  auth.Config{Type: "none"},
				Dedup: SourceDedup{TTL: Duration(24 * time.Hour)},
			},
		},
		Dedup:   Dedup{Store: "redis", MaxKeys: 5000, Timeout: Duration(2 * time.Second), RedisURL: "redis://127.0.0.1:6379/2", RedisPrefix: "hookrouter:dedup:"},
		Queue:   Queue{Backend: "nats", MaxBytes: 256 << 20, NATS: natsq.Config{URL: "nats://127.0.0.1:4222", Stream: "HOOKROUTER"}},
		Journal: Journal{Enabled: false, Retention: Duration(24 * time.Hour), MaxBytes: 64 << 20, Bodies: false},
		Sinks: map[string]*Sink{
			"crm":        crm,
			"crm-backup": &backup,
			"support": {
				Type: "slack",
				Settings: &slack.Config{
					WebhookURL: "https://hooks.slack.com/services/T0/B0/X0",
					Text:       "*{{ .message.sender_name }}*: {{ .message.content.text | truncate 200 }}",
				},
				Retry:     retry,
				Breaker:   Breaker{Failures: 5, OpenFor: Duration(30 * time.Second)},
				Workers:   4,
				RateLimit: &RateLimit{Rate: 1, Burst: 3}, // slack's default
			},
			"archive": {
				Type:     "file",
				Settings: &file.Config{Path: "/var/lib/hookrouter/events.jsonl", Format: "envelope", FlushInterval: time.Second},
				Retry:    Retry{MaxAttempts: 8, InitialBackoff: Duration(500 * time.Millisecond), MaxBackoff: Duration(time.Minute)},
				Breaker:  Breaker{Failures: 5, OpenFor: Duration(30 * time.Second)},
				Workers:  16,
			},
			"console": {
				Type:     "stdout",
				Settings: &stdout.Config{Format: "payload"},
				Retry:    Retry{MaxAttempts: 8, InitialBackoff: Duration(500 * time.Millisecond), MaxBackoff: Duration(time.Minute)},
				Breaker:  Breaker{Failures: 5, OpenFor: Duration(30 * time.Second)},
				Workers:  16,
			},
		},
		Rules: []Rule{
			{Name: "archive-everything", When: "true", To: []string{"archive"}},
			{Name: "drop-load-tests", When: `header("X-Load-Test") == "1"`, To: []string{}, Stop: true},
			{Name: "needs-human", When: `event == "channel.message_in" && need_human == 1`, To: []string{"support", "crm", "crm-backup"}},
			{Name: "vip-candidate", When: `message?.bisnis?.id in ["biz_1", "biz_2"]`, To: []string{"console"}, Shadow: true},
		},
		Log: Log{Level: "debug", Format: "text"},
	}
	want.Name, want.Hash, want.positions, want.data = f.Name, f.Hash, f.positions, f.data
	if !reflect.DeepEqual(f, want) {
		for _, name := range f.SinkNames() {
			if !reflect.DeepEqual(f.Sinks[name], want.Sinks[name]) {
				t.Errorf("sink %s:\n got %+v\nwant %+v", name, *f.Sinks[name], *want.Sinks[name])
			}
		}
		f.Sinks, want.Sinks = nil, nil
		t.Errorf("File:\n got %+v\nwant %+v", *f, *want)
	}
	if got := f.SinkNames(); !reflect.DeepEqual(got, []string{"archive", "console", "crm", "crm-backup", "support"}) {
		t.Errorf("SinkNames = %v", got)
	}
}

// TestPos checks positions of scalars (their value), mappings and lists
// (their key), list items, merged keys, and the fallback to an ancestor.
func TestPos(t *testing.T) {
	data, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse("full.yaml", data, testEnv(goldenEnv))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want Pos
	}{
		{"listen", Pos{3, 9}},
		{"sources", Pos{6, 1}},
		{"sources[0]", Pos{7, 5}},
		{"sources[0].auth", Pos{10, 5}},
		{"sources[0].auth.secret", Pos{13, 15}},
		{"sinks.crm", Pos{44, 3}},
		{"sinks.crm.url", Pos{46, 10}},
		{"sinks.crm.headers", Pos{48, 5}},
		{"sinks.crm.headers.X-Api-Key", Pos{49, 18}},
		{"sinks.crm.retry.max_backoff", Pos{54, 74}},
		{"sinks.crm-backup.url", Pos{59, 10}},
		{"sinks.crm-backup.type", Pos{45, 11}}, // merged from the anchor
		{"rules[2].to[1]", Pos{84, 19}},
		{"rules[1].to", Pos{80, 5}},
		{"rules[3].to[7]", Pos{87, 5}},          // no such item: falls back to rules[3].to
		{"rules[2].nothing.deeper", Pos{82, 5}}, // falls back to rules[2]
		{"sinks.nope.url", Pos{43, 1}},          // falls back to sinks
		{"nowhere", Pos{1, 1}},
		{"", Pos{1, 1}},
	}
	for _, tc := range tests {
		if got := f.Pos(tc.path); got != tc.want {
			t.Errorf("Pos(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
	p := f.Problemf("rules[2].to[1]", "unknown sink %q", "crm")
	if got, want := p.String(), `full.yaml:84:19: rules[2].to[1]: unknown sink "crm"`; got != want {
		t.Errorf("Problemf = %q, want %q", got, want)
	}
}

// TestSpecExample loads the config of spec §2 as written. Its slack sink's
// webhook_url is ${SLACK_WEBHOOK_URL:-}, so it needs that variable.
func TestSpecExample(t *testing.T) {
	data, err := os.ReadFile("testdata/spec-example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse("spec-example.yaml", data, testEnv(goldenEnv))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(f.Sources) != 1 || len(f.Sinks) != 3 || len(f.Rules) != 5 {
		t.Errorf("got %d sources, %d sinks, %d rules; want 1, 3, 5", len(f.Sources), len(f.Sinks), len(f.Rules))
	}
	_, err = Parse("spec-example.yaml", data, testEnv(map[string]string{"WEBHOOK_SECRET_KEY": "x"}))
	want := `spec-example.yaml:40:5: sinks.support.webhook_url: required: the Slack incoming-webhook URL (it is "${SLACK_WEBHOOK_URL:-}", which is empty in this environment)`
	if err == nil || err.Error() != want {
		t.Errorf("without SLACK_WEBHOOK_URL: got %v, want %s", err, want)
	}
	_, err = Parse("spec-example.yaml", data, nil)
	if err == nil || !strings.Contains(err.Error(), "sources[0].auth.secret: environment variable WEBHOOK_SECRET_KEY is not set") {
		t.Errorf("without WEBHOOK_SECRET_KEY: got %v", err)
	}
}

const minimal = `
sources:
  - name: platform
    path: /webhook
    auth: {type: header, secret: s}
  - name: std
    path: /std
    auth: {type: standard-webhooks, secret: s}
  - name: mac
    path: /mac
    auth: {type: hmac-sha256, secret: s}
sinks:
  crm: {type: http, url: "http://127.0.0.1:9000/"}
  archive: {type: file, path: ./events.jsonl}
  out: {type: stdout}
  support: {type: slack, webhook_url: "https://hooks.slack.com/x", text: hi}
rules:
  - {name: all, when: "true", to: [crm, archive, out, support]}
`

// TestDefaults checks every default of spec §2 on a minimal file.
func TestDefaults(t *testing.T) {
	f, err := Parse("minimal.yaml", []byte(minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	retry := Retry{MaxAttempts: 8, InitialBackoff: Duration(500 * time.Millisecond), MaxBackoff: Duration(time.Minute)}
	breaker := Breaker{Failures: 5, OpenFor: Duration(30 * time.Second)}
	tests := []struct {
		name      string
		got, want any
	}{
		{"listen", f.Listen, ":3000"},
		{"admin_listen", f.AdminListen, "127.0.0.1:3001"},
		{"data_dir", f.DataDir, "./data"},
		{"dedup", f.Dedup, Dedup{Store: "memory", MaxKeys: 1_000_000, Timeout: Duration(2 * time.Second), RedisPrefix: "hookrouter:dedup:"}},
		{"queue", f.Queue, Queue{Backend: "disk", MaxBytes: 1 << 30}},
		{"journal", f.Journal, Journal{Enabled: true, Retention: Duration(168 * time.Hour), MaxBytes: 1 << 30, Bodies: true}},
		{"log", f.Log, Log{Level: "info", Format: "json"}},
		{"max_body_bytes", f.Sources[0].MaxBodyBytes, Size(1 << 20)},
		{"source dedup", f.Sources[0].Dedup, SourceDedup{TTL: Duration(24 * time.Hour)}},
		{"header auth", f.Sources[0].Auth, auth.Config{Type: "header", Header: "Authorization", Secret: "s"}},
		{"standard-webhooks auth", f.Sources[1].Auth, auth.Config{Type: "standard-webhooks", Secret: "s", Tolerance: 5 * time.Minute}},
		{"hmac auth", f.Sources[2].Auth, auth.Config{Type: "hmac-sha256", Header: "X-Signature", Secret: "s"}},
		{"http sink", *f.Sinks["crm"], Sink{Type: "http", Settings: &httpsink.Config{URL: "http://127.0.0.1:9000/", Method: "POST", Timeout: 5 * time.Second}, Retry: retry, Breaker: breaker, Workers: 4}},
		{"file sink", *f.Sinks["archive"], Sink{Type: "file", Settings: &file.Config{Path: "./events.jsonl", Format: "payload", FlushInterval: 200 * time.Millisecond}, Retry: retry, Breaker: breaker, Workers: 16}},
		{"stdout sink", *f.Sinks["out"], Sink{Type: "stdout", Settings: &stdout.Config{Format: "payload"}, Retry: retry, Breaker: breaker, Workers: 16}},
		{"slack sink", *f.Sinks["support"], Sink{Type: "slack", Settings: &slack.Config{WebhookURL: "https://hooks.slack.com/x", Text: "hi"}, Retry: retry, Breaker: breaker, Workers: 4, RateLimit: &RateLimit{Rate: 1, Burst: 3}}},
	}
	for _, tc := range tests {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, tc.got, tc.want)
		}
	}
}

// TestPORT checks that PORT replaces the port of listen and keeps its host.
func TestPORT(t *testing.T) {
	tests := []struct {
		name, listen, port string
		want, problem      string
	}{
		{name: "default listen", port: "8080", want: ":8080"},
		{name: "no PORT", listen: "127.0.0.1:3000", want: "127.0.0.1:3000"},
		{name: "empty PORT", listen: "127.0.0.1:3000", port: "", want: "127.0.0.1:3000"},
		{name: "host kept", listen: "127.0.0.1:3000", port: "8080", want: "127.0.0.1:8080"},
		{name: "ipv6 host kept", listen: "[::1]:3000", port: "9000", want: "[::1]:9000"},
		{name: "leading zero", listen: "0.0.0.0:1", port: "0080", want: "0.0.0.0:80"},
		{name: "not a number", port: "http", problem: `listen: the PORT environment variable is "http", which is not a port number from 1 to 65535`},
		{name: "out of range", listen: ":3000", port: "70000", problem: `listen: the PORT environment variable is "70000"`},
		{name: "bad listen", listen: "localhost", port: "8080", problem: `listen: invalid address "localhost"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := minimal
			if tc.listen != "" {
				src = "listen: \"" + tc.listen + "\"\n" + src
			}
			env := map[string]string{}
			if tc.port != "" || tc.name == "empty PORT" {
				env["PORT"] = tc.port
			}
			f, err := Parse("port.yaml", []byte(src), testEnv(env))
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("got %v, want a problem containing %q", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Listen != tc.want {
				t.Errorf("Listen = %q, want %q", f.Listen, tc.want)
			}
		})
	}
}

// TestRetyped checks that a plain scalar takes the type of its substituted
// text, and that substitution happens inside the YAML, not before it.
func TestRetyped(t *testing.T) {
	src := minimal + `
  - name: ${RULE_NAME:-second}
    when: ${WHEN}
    to: [out]
    stop: ${STOP:-true}
    shadow: "${SHADOW:-false}"
`
	src = strings.Replace(src, "out: {type: stdout}", `out:
    type: stdout
    workers: ${W:-7}
    retry: {max_attempts: "${ATTEMPTS}"}`, 1)
	env := map[string]string{"WHEN": `event == "a: b" # not a comment`, "ATTEMPTS": "2"}
	f, err := Parse("retyped.yaml", []byte(src), testEnv(env))
	if err != nil {
		t.Fatal(err)
	}
	r := f.Rules[1]
	if r.Name != "second" || r.When != env["WHEN"] || !r.Stop || r.Shadow {
		t.Errorf("rule = %+v", r)
	}
	if s := f.Sinks["out"]; s.Workers != 7 || s.Retry.MaxAttempts != 2 {
		t.Errorf("workers = %d, max_attempts = %d; want 7, 2", s.Workers, s.Retry.MaxAttempts)
	}
	// A quoted scalar stays a string: a number-looking secret is not mangled.
	f, err = Parse("retyped.yaml", []byte(strings.Replace(minimal, "secret: s}", `secret: "${S}"}`, 1)), testEnv(map[string]string{"S": "0x10"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Sources[0].Auth.Secret; got != "0x10" {
		t.Errorf("secret = %q, want 0x10", got)
	}
}

func TestProblems(t *testing.T) {
	ps := Problems{
		{File: "r.yaml", Line: 9, Col: 2, Path: "b", Msg: "second"},
		{File: "r.yaml", Line: 3, Col: 7, Msg: "no path"},
		{File: "r.yaml", Line: 9, Col: 2, Path: "a", Msg: "first"},
		{File: "r.yaml", Line: 9, Col: 1, Path: "z", Msg: "column first"},
		{File: "r.yaml", Line: 9, Col: 2, Path: "b", Msg: "second"},
	}
	want := "r.yaml:3:7: no path\n" +
		"r.yaml:9:1: z: column first\n" +
		"r.yaml:9:2: a: first\n" +
		"r.yaml:9:2: b: second"
	if got := ps.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
	if ps[0].Msg != "second" {
		t.Error("Error() reordered its receiver")
	}
	ps.Sort()
	if len(ps) != 4 || ps[0].Msg != "no path" || ps[3].Msg != "second" {
		t.Errorf("Sort() = %v", ps)
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("HOOKROUTER_CONFIG", "")
	if got := Resolve("given.yaml"); got != "given.yaml" {
		t.Errorf("Resolve(given) = %q", got)
	}
	if got := Resolve(""); got != "rules.example.yaml" {
		t.Errorf("without rules.yaml: %q, want rules.example.yaml", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := Resolve(""); got != "rules.yaml" {
		t.Errorf("with rules.yaml: %q, want rules.yaml", got)
	}
	t.Setenv("HOOKROUTER_CONFIG", "/etc/hookrouter.yaml")
	if got := Resolve(""); got != "/etc/hookrouter.yaml" {
		t.Errorf("with HOOKROUTER_CONFIG: %q", got)
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	var ps Problems
	if err == nil || errors.As(err, &ps) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want a not-exist error that is not Problems", err)
	}
}

// TestLocateLargeFile checks that a syntax error in a file too large to
// search still gets a line.
func TestLocateLargeFile(t *testing.T) {
	src := strings.Repeat("# padding padding padding padding padding padding\n", 2000) + "a: b: c\n"
	_, err := Parse("big.yaml", []byte(src), nil)
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Line < 2000 {
		t.Errorf("got %v, want one problem near line 2001", err)
	}
}

// TestAliasBomb checks that merges of merges, which grow exponentially, are
// cut off quickly with one problem.
func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("sinks:\n  a0: &a0 {type: stdout}\n")
	for i := 1; i < 12; i++ {
		fmt.Fprintf(&b, "  a%d: &a%d {<<: [", i, i)
		for j := range 8 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]}\n")
	}
	// The bound is on the work done, not on the time taken (which a loaded
	// machine stretches): the 8^11 nodes of the expansion would allocate
	// far beyond it, the cut-off after decodeBudget nodes well below.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Parse("bomb.yaml", []byte(b.String()), nil)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "too large once its aliases and merges are expanded") || strings.Count(err.Error(), "\n") != 0 {
		t.Errorf("got %v, want one problem about expansion", err)
	}
	allocs, bytes := after.Mallocs-before.Mallocs, after.TotalAlloc-before.TotalAlloc
	t.Logf("parse of the bomb: %d allocations, %d MiB", allocs, bytes>>20)
	if allocs > maxBombAllocs {
		t.Errorf("parse of the bomb made %d allocations (%d MiB), want at most %d", allocs, bytes>>20, maxBombAllocs)
	}
}

// maxBombAllocs bounds the allocations of TestAliasBomb's parse: measured
// 1.7 million with decodeBudget at 1<<20 nodes (with or without -race); a
// budget four times larger, or none, goes past it.
const maxBombAllocs = 4_000_000
