package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateWarnings checks the warnings of configs that are valid: each
// "warning: FILE:LINE:COL: …" line, then ok, exit 0.
func TestValidateWarnings(t *testing.T) {
	files, err := filepath.Glob("testdata/warnings/*.yaml")
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
			if code != 0 || errOut != "" {
				t.Errorf("exit %d, stderr %q; want exit 0", code, errOut)
			}
			if out != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", out, want)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			for _, line := range lines[:len(lines)-1] {
				if !strings.HasPrefix(line, "warning: "+file+":") {
					t.Errorf("line without warning: FILE:LINE:COL: %q", line)
				}
			}
			if !strings.HasPrefix(lines[len(lines)-1], "ok: ") {
				t.Errorf("last line %q, want ok: …", lines[len(lines)-1])
			}
		})
	}
}
