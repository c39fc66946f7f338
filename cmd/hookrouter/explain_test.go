package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExplainSamples runs `hookrouter test -explain` on every sample payload
// with the example config and compares each rule's explanation lines with
// testdata/explain/SAMPLE.golden; it also checks that the explanation agrees
// with the rule's result.
func TestExplainSamples(t *testing.T) {
	files, err := filepath.Glob("../../router/rules/testdata/*.json")
	if err != nil || len(files) < 6 {
		t.Fatalf("sample payloads: %v (%d)", err, len(files))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".json")
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCmd(t, "", "test", "-explain", "-config", "../../rules.example.yaml", file)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var rep struct {
				Rules []struct {
					Name    string `json:"name"`
					Result  any    `json:"result"`
					Explain []struct {
						Value any    `json:"value"`
						Depth int    `json:"depth"`
						Text  string `json:"text"`
					} `json:"explain"`
				} `json:"rules"`
			}
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			var b strings.Builder
			for _, r := range rep.Rules {
				b.WriteString(r.Name + ": ")
				res, _ := json.Marshal(r.Result)
				b.Write(res)
				b.WriteString("\n")
				if len(r.Explain) == 0 {
					t.Errorf("rule %s: no explanation", r.Name)
				}
				// A rule whose when is one part, or an && of parts, is true
				// exactly when every top-level part is.
				all := true
				for _, p := range r.Explain {
					b.WriteString("  " + strings.Repeat("  ", p.Depth) + p.Text + "\n")
					if p.Depth == 0 {
						all = all && p.Value == true
					}
				}
				if r.Result == true && !all {
					t.Errorf("rule %s matched, but not every part is true", r.Name)
				}
			}
			golden := filepath.Join("testdata", "explain", name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if b.String() != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
			}
		})
	}
}
