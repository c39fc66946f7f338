package config

import (
	"strings"
	"testing"
)

// TestConnLimits: max_conns defaults to 10000 (also when 0),
// max_conns_per_ip to 0 (off); a negative value is refused with its key.
func TestConnLimits(t *testing.T) {
	const head = "sources:\n  - {name: p, path: /w, auth: {type: none}}\nrules:\n  - {name: r, when: 'true', to: [s]}\nsinks:\n  s: {type: stdout}\n"
	for _, tc := range []struct {
		name, extra     string
		maxConns, perIP int
		problem         string
	}{
		{"defaults", "", 10000, 0, ""},
		{"zero is the default", "max_conns: 0\n", 10000, 0, ""},
		{"set", "max_conns: 3\nmax_conns_per_ip: 2\n", 3, 2, ""},
		{"negative max_conns", "max_conns: -1\n", 0, 0, "max_conns: must not be negative, got -1"},
		{"negative max_conns_per_ip", "max_conns_per_ip: -5\n", 0, 0, "max_conns_per_ip: must not be negative, got -5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse("r.yaml", []byte(head+tc.extra), testEnv(nil))
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("error %v, want one containing %q", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.MaxConns != tc.maxConns || f.MaxConnsPerIP != tc.perIP {
				t.Fatalf("max_conns %d, max_conns_per_ip %d; want %d, %d", f.MaxConns, f.MaxConnsPerIP, tc.maxConns, tc.perIP)
			}
		})
	}
}
