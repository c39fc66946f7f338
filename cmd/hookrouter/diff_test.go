package main

import (
	"os"
	"strings"
	"testing"
)

// TestDiff replays recorded events, payload lines and file-sink envelope
// lines, through two configs.
func TestDiff(t *testing.T) {
	const want = `line 2: channel.message_in_msg_ig_9001: gained [] lost [crm]
line 4: device.connected_dev_wa_01_1738057000: gained [crm] lost []
line 5: agent.message_out_msg_agent_31: gained [] lost [archive]
line 7: unreadable event: invalid payload: cannot parse JSON: unexpected value found: "not json at all"; unparsed tail: "not json at all"
summary: 6 events, 3 routed differently, 2 unchanged, 1 unreadable; gained crm×1; lost archive×1, crm×1
`
	args := []string{"diff", "-config", "testdata/diff/old.yaml", "-against", "testdata/diff/new.yaml"}
	code, out, errOut := runCmd(t, "", append(args, "testdata/diff/events.jsonl")...)
	if code != 0 || out != want || errOut != "" {
		t.Errorf("exit %d stderr %q\ngot:\n%s\nwant:\n%s", code, errOut, out, want)
	}
	// The same config on both sides changes nothing.
	code, out, _ = runCmd(t, "", "diff", "-config", "testdata/diff/old.yaml", "-against", "testdata/diff/old.yaml", "testdata/diff/events.jsonl")
	if code != 0 || !strings.HasPrefix(out, "line 7: unreadable event") ||
		!strings.HasSuffix(out, "summary: 6 events, 0 routed differently, 5 unchanged, 1 unreadable; gained none; lost none\n") {
		t.Errorf("same config: exit %d\n%s", code, out)
	}
	// "-" reads the events from stdin.
	events, _ := os.ReadFile("testdata/diff/events.jsonl")
	if code, out, _ = runCmd(t, string(events), append(args, "-")...); code != 0 || out != want {
		t.Errorf("from stdin: exit %d\n%s", code, out)
	}
}

func TestDiffErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no -against", []string{"-config", "testdata/diff/old.yaml", "testdata/diff/events.jsonl"}, 2, "usage: hookrouter diff"},
		{"no events", []string{"-config", "testdata/diff/old.yaml", "-against", "testdata/diff/new.yaml"}, 2, "usage: hookrouter diff"},
		{"missing events file", []string{"-config", "testdata/diff/old.yaml", "-against", "testdata/diff/new.yaml", "nope.jsonl"}, 1, "open nope.jsonl: no such file or directory"},
		{"broken candidate", []string{"-config", "testdata/diff/old.yaml", "-against", "testdata/validate/unknown-sink.yaml", "testdata/diff/events.jsonl"}, 1,
			`testdata/validate/unknown-sink.yaml:12:15: rules[0].to[1]: unknown sink "suport"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, "", append([]string{"diff"}, tc.args...)...)
			if code != tc.code || out != "" || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d stdout %q stderr %q; want exit %d and %q", code, out, errOut, tc.code, tc.want)
			}
		})
	}
}
