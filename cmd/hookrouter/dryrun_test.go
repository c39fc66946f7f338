package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hookrouter/hookrouter/router/dryrun"
)

const example = "../../rules.example.yaml"

// payloads are the platform's sample payloads (the same files as the
// spec's payloads/).
const payloads = "../../router/rules/testdata"

func dryRunReport(t *testing.T, stdin string, args ...string) dryrun.Report {
	t.Helper()
	code, out, errOut := runCmd(t, stdin, append([]string{"test", "-config", example}, args...)...)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	var rep dryrun.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out)
	}
	return rep
}

func TestDryRunSamples(t *testing.T) {
	tests := []struct {
		file     string
		key      string
		matched  []string
		sinks    []string
		contains map[string]string // sink → substring of its body
	}{
		{"channel.message_in.json", "channel.message_in_msg_test456", []string{"archive-everything", "whatsapp-inbound"},
			[]string{"archive", "crm"}, map[string]string{"archive": `"id":"dry-run"`}},
		{"channel.message_in.image.json", "channel.message_in_msg_ig_9001", []string{"archive-everything", "needs-human"},
			[]string{"archive", "support", "crm"}, map[string]string{"support": `{"text":"*Rina* via Instagram Toko needs a human: Apakah warna ini masih ada?"}`}},
		{"agent.message_out.json", "agent.message_out_msg_agent_31", []string{"archive-everything", "agent-and-ai-replies"},
			[]string{"archive", "crm"}, nil},
		{"ai.message_generated.json", "ai.message_generated_msg_ai_88", []string{"archive-everything", "agent-and-ai-replies"},
			[]string{"archive", "crm"}, nil},
		{"device.connected.json", "device.connected_dev_wa_01_1738057000", []string{"archive-everything", "device-state"},
			[]string{"archive", "ops"}, map[string]string{"ops": `{"at":1738057000,"device":"WA Toko Utama","phone":"+6281200000001","state":"connected"}`}},
		{"device.disconnected.json", "device.disconnected_dev_wa_01_1738060600", []string{"archive-everything", "device-state"},
			[]string{"archive", "ops"}, map[string]string{"ops": `"state":"disconnected"`}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(payloads, tc.file)
			rep := dryRunReport(t, "", path)
			if rep.DedupKey != tc.key || !slices.Equal(rep.Matched, tc.matched) || len(rep.Shadow) != 0 || rep.Source != "platform" {
				t.Errorf("key %q matched %v shadow %v source %q", rep.DedupKey, rep.Matched, rep.Shadow, rep.Source)
			}
			if len(rep.Rules) != 7 {
				t.Errorf("%d rules in the trace, want all 7", len(rep.Rules))
			}
			var got []string
			for _, d := range rep.Deliveries {
				got = append(got, d.Sink)
				if want, ok := tc.contains[d.Sink]; ok && !strings.Contains(compact(t, d.Body), want) {
					t.Errorf("%s body %s, want %s", d.Sink, compact(t, d.Body), want)
				}
			}
			if !slices.Equal(got, tc.sinks) {
				t.Errorf("deliveries to %v, want %v", got, tc.sinks)
			}
			// crm forwards the original payload unchanged.
			for _, d := range rep.Deliveries {
				if d.Sink == "crm" {
					raw, _ := os.ReadFile(path)
					if compact(t, d.Body) != compact(t, raw) {
						t.Errorf("crm body is not the payload: %s", d.Body)
					}
				}
			}
		})
	}
}

func compact(t *testing.T, b []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// TestDryRunHeader: -H feeds header(); the load-test rule stops everything.
func TestDryRunHeader(t *testing.T) {
	rep := dryRunReport(t, "", "-H", "x-load-test: 1", filepath.Join(payloads, "device.connected.json"))
	if !slices.Equal(rep.Matched, []string{"drop-load-tests"}) || len(rep.Deliveries) != 0 {
		t.Errorf("matched %v deliveries %v, want only the stop rule and none", rep.Matched, rep.Deliveries)
	}
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], `"drop-load-tests" matched and has stop: true`) {
		t.Errorf("warnings %q", rep.Warnings)
	}
	if rep.Rules[0].Name != "drop-load-tests" || rep.Rules[0].Result != true {
		t.Errorf("trace %v", rep.Rules)
	}
}

// TestDryRunStdin: "-" reads the payload from stdin; a shadow rule is
// reported and delivers nothing.
func TestDryRunStdin(t *testing.T) {
	payload := `{"event":"agent.message_out","message":{"id":"m1","bisnis":{"id":"biz_1"}}}`
	rep := dryRunReport(t, payload, "-")
	if !slices.Equal(rep.Shadow, []string{"vip-businesses"}) || rep.DedupKey != "agent.message_out_m1" {
		t.Errorf("shadow %v key %q", rep.Shadow, rep.DedupKey)
	}
	if len(rep.Deliveries) != 2 {
		t.Errorf("deliveries %v: a shadow rule must add none", rep.Deliveries)
	}
	// A rule that fails at run time is reported as an error, not a crash.
	rep = dryRunReport(t, `{"event":"channel.message_in","message":"not an object"}`, "-")
	for _, r := range rep.Rules {
		if r.Name == "whatsapp-inbound" {
			if s, ok := r.Result.(string); !ok || !strings.HasPrefix(s, "error: ") {
				t.Errorf("whatsapp-inbound on a bad message: %v", r.Result)
			}
		}
	}
}

func TestDryRunErrors(t *testing.T) {
	tests := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"not json", "hello", []string{"-"}, 1, "hookrouter test: stdin: invalid payload: cannot parse JSON"},
		{"array", "[1,2]", []string{"-"}, 1, "hookrouter test: stdin: invalid payload: payload is not a JSON object"},
		{"empty", " \n", []string{"-"}, 1, "hookrouter test: stdin: invalid payload: empty"},
		{"truncated file", "", []string{"testdata/truncated.json"}, 1, "hookrouter test: testdata/truncated.json: invalid payload: cannot parse JSON"},
		{"missing file", "", []string{"nope.json"}, 1, "hookrouter test: open nope.json: no such file or directory"},
		{"no payload", "", nil, 2, "usage: hookrouter test"},
		{"bad header flag", "", []string{"-H", "no colon", "-"}, 2, `want 'Name: value', got "no colon"`},
		{"unknown source", "{}", []string{"-source", "nope", "-"}, 2, `-source "nope" is not a source of ../../rules.example.yaml (it has platform)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tc.stdin, append([]string{"test", "-config", example}, tc.args...)...)
			if code != tc.code || out != "" || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d stdout %q stderr %q; want exit %d and %q", code, out, errOut, tc.code, tc.want)
			}
		})
	}
	// A broken config is reported as validate reports it.
	code, _, errOut := runCmd(t, "{}", "test", "-config", "testdata/validate/unknown-sink.yaml", "-")
	if code != 1 || !strings.HasPrefix(errOut, "testdata/validate/unknown-sink.yaml:12:15: rules[0].to[1]: unknown sink") {
		t.Errorf("broken config: exit %d %s", code, errOut)
	}
}
