package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/validate")

// TestValidateGolden checks the exact problems reported for broken configs,
// the loader's and the router's (expressions, templates, bodies, sink
// references) together, one FILE:LINE:COL: path: message line each.
func TestValidateGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/validate/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test configs: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			code, out, errOut := runCmd(t, "", "validate", "-config", file)
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if code != 1 || errOut != "" {
				t.Errorf("exit %d, stderr %q; want exit 1 and the problems on stdout", code, errOut)
			}
			if out != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", out, want)
			}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if !strings.HasPrefix(line, file+":") {
					t.Errorf("line without FILE:LINE:COL: %q", line)
				}
			}
		})
	}
}

func TestValidateExample(t *testing.T) {
	code, out, errOut := runCmd(t, "", "validate", "-config", "../../rules.example.yaml")
	if code != 0 || out != "ok: 7 rules, 4 sinks\n" || errOut != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestValidateDefaultConfig: without -config, $HOOKROUTER_CONFIG is used.
func TestValidateDefaultConfig(t *testing.T) {
	t.Setenv("HOOKROUTER_CONFIG", "testdata/validate/unknown-sink.yaml")
	code, out, _ := runCmd(t, "", "validate")
	if code != 1 || !strings.HasPrefix(out, "testdata/validate/unknown-sink.yaml:12:15: ") {
		t.Errorf("exit %d, stdout %q", code, out)
	}
}
