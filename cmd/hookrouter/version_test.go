package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		name     string
		version  string
		settings map[string]string
		want     string
	}{
		{"module version", "v1.2.3", map[string]string{"vcs.revision": rev}, "v1.2.3"},
		{"revision", "(devel)", map[string]string{"vcs.revision": rev, "vcs.modified": "false"}, "0123456789ab"},
		{"dirty revision", "(devel)", map[string]string{"vcs.revision": rev, "vcs.modified": "true"}, "0123456789ab-dirty"},
		{"nothing stamped", "(devel)", nil, "dev"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bi := &debug.BuildInfo{Main: debug.Module{Version: tc.version}}
			for k, v := range tc.settings {
				bi.Settings = append(bi.Settings, debug.BuildSetting{Key: k, Value: v})
			}
			if got := buildVersion(bi); got != tc.want {
				t.Fatalf("buildVersion = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestVersionOfPlainBuild builds the binary without -ldflags, as the README
// does, asking the toolchain to stamp VCS data, and checks that `hookrouter
// version` names the revision the binary carries (go version -m), not "dev".
// Where the toolchain stamps none (a git worktree, a source tarball), the
// version must be "dev".
func TestVersionOfPlainBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "hookrouter")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=auto")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	meta, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	// Go stamps a pseudo-version holding the revision
	// (v0.0.0-20261202031114-90917a5d8a30) or only vcs.revision.
	want := "hookrouter dev "
	for _, line := range strings.Split(string(meta), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[1], "vcs.revision=") {
			want = strings.TrimPrefix(f[1], "vcs.revision=")[:12]
		}
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("hookrouter version: %v", err)
	}
	if !strings.HasPrefix(string(out), "hookrouter ") || !strings.Contains(string(out), want) {
		t.Fatalf("hookrouter version = %q, want it to name %q", out, want)
	}
	t.Logf("%s", out)
}
