package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// runCmd runs the command line in process, as main does.
func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestVersionAndUsage(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string // a substring; "" = empty
		stderr     string
		emptyOther bool
	}{
		{"version", []string{"version"}, 0, "hookrouter dev " + runtime.Version() + "\n", "", true},
		{"--version", []string{"--version"}, 0, "hookrouter dev ", "", true},
		{"help", []string{"help"}, 0, "hookrouter validate [-config FILE]", "", true},
		{"unknown command", []string{"serv"}, 2, "", `hookrouter: unknown command "serv"`, false},
		{"unknown flag", []string{"validate", "-confg", "x.yaml"}, 2, "", "flag provided but not defined: -confg", false},
		{"missing config file", []string{"validate", "-config", "testdata/nope.yaml"}, 1, "no such file or directory", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, "", tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if !strings.Contains(out, tc.stdout) || (tc.stdout == "" && out != "") {
				t.Errorf("stdout %q, want %q", out, tc.stdout)
			}
			if !strings.Contains(errOut, tc.stderr) || (tc.emptyOther && errOut != "") {
				t.Errorf("stderr %q, want %q", errOut, tc.stderr)
			}
		})
	}
	// The usage of an unknown command lists the commands.
	if _, _, errOut := runCmd(t, "", "frobnicate"); !strings.Contains(errOut, "hookrouter replay") {
		t.Errorf("unknown command without usage: %s", errOut)
	}
}
