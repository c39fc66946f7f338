package config

import (
	"strings"
	"testing"
)

func TestSinkRateLimit(t *testing.T) {
	const head = "sources:\n  - {name: p, path: /w, auth: {type: none}}\nrules:\n  - {name: r, when: 'true', to: [s]}\nsinks:\n  s:\n"
	tests := []struct {
		name, sink string
		want       *RateLimit // nil: none
		problem    string
	}{
		{"none for http", "    type: http\n    url: http://127.0.0.1:9/x\n", nil, ""},
		{"slack default", "    type: slack\n    webhook_url: https://hooks.slack.com/services/x\n", &RateLimit{Rate: 1, Burst: 3}, ""},
		{"slack turned off", "    type: slack\n    webhook_url: https://hooks.slack.com/services/x\n    rate_limit: {rate: 0}\n", &RateLimit{}, ""},
		{"explicit", "    type: http\n    url: http://127.0.0.1:9/x\n    rate_limit: {rate: 10/s, burst: 20}\n", &RateLimit{Rate: 10, Burst: 20}, ""},
		{"burst defaults to the rate", "    type: http\n    url: http://127.0.0.1:9/x\n    rate_limit: {rate: 600/m}\n", &RateLimit{Rate: 10, Burst: 10}, ""},
		{"slow rate, burst 1", "    type: http\n    url: http://127.0.0.1:9/x\n    rate_limit: {rate: 2/h}\n", &RateLimit{Rate: 2.0 / 3600, Burst: 1}, ""},
		{"bad unit", "    type: http\n    url: http://127.0.0.1:9/x\n    rate_limit: {rate: 10/day}\n", nil, "r.yaml:9:24: sinks.s.rate_limit.rate: invalid rate \"10/day\""},
		{"negative burst", "    type: http\n    url: http://127.0.0.1:9/x\n    rate_limit: {rate: 1/s, burst: -1}\n", nil, "sinks.s.rate_limit.burst: must not be negative"},
		{"burst without rate", "    type: http\n    url: http://127.0.0.1:9/x\n    rate_limit: {burst: 5}\n", nil, "sinks.s.rate_limit.rate: required with a burst"},
		{"unknown key", "    type: http\n    url: http://127.0.0.1:9/x\n    rate_limit: {rate: 1/s, brust: 5}\n", nil, "sinks.s.rate_limit.brust: unknown key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse("r.yaml", []byte(head+tc.sink), testEnv(nil))
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("error %v, want one containing %q", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := f.Sinks["s"].RateLimit
			if (got == nil) != (tc.want == nil) || (got != nil && (got.Burst != tc.want.Burst || float64(got.Rate-tc.want.Rate) > 1e-12 || float64(tc.want.Rate-got.Rate) > 1e-12)) {
				t.Fatalf("rate_limit = %+v, want %+v", got, tc.want)
			}
		})
	}
}
