package config

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestInterpolate(t *testing.T) {
	env := testEnv(map[string]string{"A": "alpha", "EMPTY": "", "DOLLAR": "p$$w${A}rd", "N": "4"})
	tests := []struct {
		in, want string
		changed  bool
		err      string // a substring of the only error, if any
	}{
		{in: "plain", want: "plain"},
		{in: "${A}", want: "alpha", changed: true},
		{in: "x-${A}-y", want: "x-alpha-y", changed: true},
		{in: "${A}${A}", want: "alphaalpha", changed: true},
		{in: "${N}", want: "4", changed: true},
		{in: "${EMPTY}", want: "", changed: true},
		{in: "${EMPTY:-d}", want: "d", changed: true},
		{in: "${UNSET:-d}", want: "d", changed: true},
		{in: "${UNSET:-}", want: "", changed: true},
		{in: "${A:-d}", want: "alpha", changed: true},
		{in: "${UNSET:-http://h:1/p?q=a b}", want: "http://h:1/p?q=a b", changed: true},
		{in: "${UNSET:-$$5}", want: "$5", changed: true},
		{in: "${DOLLAR}", want: "p$$w${A}rd", changed: true}, // values are not scanned again
		{in: "$$", want: "$", changed: true},
		{in: "$${A}", want: "${A}", changed: true},
		{in: "$$$${A}", want: "$${A}", changed: true},
		{in: "cost $5", want: "cost $5"},
		{in: `^a+$`, want: `^a+$`},
		{in: "$", want: "$"},
		{in: "a$b", want: "a$b"},
		{in: "${UNSET}", changed: true, err: "environment variable UNSET is not set"},
		{in: "${_X1}", changed: true, err: "environment variable _X1 is not set"},
		{in: "${}", changed: true, err: `invalid variable reference "${}"`},
		{in: "${1A}", changed: true, err: `invalid variable reference "${1A}"`},
		{in: "${A-d}", changed: true, err: `invalid variable reference "${A-d}"`},
		{in: "${A:?}", changed: true, err: `invalid variable reference`},
		{in: "x ${A", want: "x ${A", changed: true, err: `unterminated "${A"`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			r := interpolate(tc.in, env)
			if tc.err != "" {
				if len(r.errs) != 1 || !strings.Contains(r.errs[0], tc.err) {
					t.Fatalf("errs = %q, want one containing %q", r.errs, tc.err)
				}
			} else if len(r.errs) != 0 {
				t.Fatalf("unexpected errs %q", r.errs)
			}
			if r.changed != tc.changed {
				t.Errorf("changed = %v, want %v", r.changed, tc.changed)
			}
			if tc.want != "" && r.value != tc.want || tc.want == "" && tc.err == "" && r.value != "" {
				t.Errorf("value = %q, want %q", r.value, tc.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		err  string
	}{
		{in: "1048576", want: 1048576},
		{in: "0", want: 0},
		{in: "512KiB", want: 512 << 10},
		{in: "1MiB", want: 1 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "2TiB", want: 2 << 40},
		{in: "10MB", want: 10_000_000},
		{in: "1KB", want: 1000},
		{in: "3GB", want: 3_000_000_000},
		{in: "1TB", want: 1_000_000_000_000},
		{in: "100B", want: 100},
		{in: "1 MiB", want: 1 << 20},
		{in: " 7 ", want: 7},
		{in: "8388607TiB", want: 8388607 << 40},
		{in: "8388608TiB", err: "too large"},
		{in: "9223372036854775807", want: 9223372036854775807},
		{in: "9223372036854775808", err: "too large"},
		{in: "", err: "invalid size"},
		{in: "MiB", err: "invalid size"},
		{in: "1.5MiB", err: "invalid size"},
		{in: "-1", err: "invalid size"},
		{in: "1mib", err: "invalid size"},
		{in: "1Mi", err: "invalid size"},
		{in: "1 PB", err: "invalid size"},
		{in: "0x10", err: "invalid size"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSize(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parseSize(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{in: "500ms", want: 500 * time.Millisecond},
		{in: "30s", want: 30 * time.Second},
		{in: "24h", want: 24 * time.Hour},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "0s", want: 0},
		{in: "-1s", want: -time.Second}, // refused as not positive by the decoder
		{in: "30", err: "a number needs a unit"},
		{in: "0", err: "a number needs a unit"},
		{in: "1.5", err: "a number needs a unit"},
		{in: "1d", err: `invalid duration "1d" (use Go durations such as 500ms, 30s, 24h)`},
		{in: "5 seconds", err: `invalid duration "5 seconds"`},
		{in: "", err: "invalid duration"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseDuration(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parseDuration(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"url", "method", "headers", "workers", "to", "webhook_url"}
	tests := []struct{ in, want string }{
		{"ulr", "url"},
		{"URL", "url"},
		{"methd", "method"},
		{"hedaers", "headers"},
		{"worker", "workers"},
		{"webhookurl", "webhook_url"},
		{"a", ""},
		{"xyz", ""},
		{"timeout", ""},
	}
	for _, tc := range tests {
		if got := Suggest(tc.in, known); got != tc.want {
			t.Errorf("Suggest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want Rate
		err  bool
	}{
		{"10/s", 10, false}, {"600/m", 10, false}, {"36/h", 0.01, false}, {"0.5/s", 0.5, false},
		{"5", 5, false}, {"0", 0, false}, {" 2 / s ", 2, false},
		{"10/d", 0, true}, {"fast", 0, true}, {"-1/s", 0, true}, {"10abc/s", 0, true}, {"NaN", 0, true}, {"", 0, true},
	}
	for _, tc := range tests {
		got, err := parseRate(tc.in)
		if (err != nil) != tc.err || (!tc.err && math.Abs(float64(got-tc.want)) > 1e-9) {
			t.Errorf("parseRate(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}
