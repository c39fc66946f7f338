package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, and that a File comes
// back with every Problems error, every problem placed inside the file.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	bad, _ := filepath.Glob("testdata/bad/*.yaml")
	for _, path := range append(files, bad...) {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a: &x [*x]\nsinks: {s: &s {<<: *s}}"))
	env := testEnv(map[string]string{"WEBHOOK_SECRET_KEY": "s3cret", "PORT": "8080"})
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.yaml", data, env)
		if file == nil {
			t.Fatal("nil File")
		}
		if err == nil {
			return
		}
		ps, ok := err.(Problems)
		if !ok || len(ps) == 0 {
			t.Fatalf("error %T %v, want non-empty Problems", err, err)
		}
		for _, p := range ps {
			if p.Line < 1 || p.Col < 1 || p.Msg == "" {
				t.Fatalf("malformed problem %+v", p)
			}
		}
	})
}
