package sinks

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheckStatus(t *testing.T) {
	tests := []struct {
		code       int
		retryAfter string
		ok         bool
		permanent  bool
		after      time.Duration
	}{
		{200, "", true, false, 0},
		{204, "", true, false, 0},
		{299, "", true, false, 0},
		{301, "", false, true, 0},
		{400, "", false, true, 0},
		{401, "", false, true, 0},
		{404, "", false, true, 0},
		{408, "", false, false, 0},
		{429, "7", false, false, 7 * time.Second},
		{500, "", false, false, 0},
		{503, "2", false, false, 2 * time.Second},
		{503, "soon", false, false, 0},
		{503, "-1", false, false, 0},
	}
	for _, tc := range tests {
		err := CheckStatus(tc.code, tc.retryAfter, []byte("  answer body  "))
		if (err == nil) != tc.ok {
			t.Errorf("%d: err = %v", tc.code, err)
			continue
		}
		if err == nil {
			continue
		}
		if IsPermanent(err) != tc.permanent {
			t.Errorf("%d: permanent = %v, want %v", tc.code, IsPermanent(err), tc.permanent)
		}
		after, has := RetryAfterOf(err)
		if after != tc.after || has != (tc.after > 0) {
			t.Errorf("%d %q: retry after %v %v, want %v", tc.code, tc.retryAfter, after, has, tc.after)
		}
		var se *StatusError
		if !errors.As(err, &se) || se.Code != tc.code || se.Snippet != "answer body" {
			t.Errorf("%d: status error %+v", tc.code, se)
		}
	}
}

func TestParseRetryAfterDate(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	d, ok := ParseRetryAfter(now.Add(90*time.Second).Format(time.RFC1123), now)
	if !ok || d != 90*time.Second {
		t.Errorf("date: %v %v", d, ok)
	}
	if d, ok := ParseRetryAfter(now.Add(-time.Minute).Format(time.RFC1123), now); !ok || d != 0 {
		t.Errorf("past date: %v %v", d, ok)
	}
}

func TestRedact(t *testing.T) {
	u := "https://user:hunter2@crm.example.com/events?token=hunter3"
	if r := RedactURL(u); strings.Contains(r, "hunter") || !strings.Contains(r, "crm.example.com/events") {
		t.Errorf("RedactURL = %q", r)
	}
	if r := RedactPath("https://hooks.slack.com/services/T0/B0/secret"); strings.Contains(r, "secret") || strings.Contains(r, "T0") {
		t.Errorf("RedactPath = %q", r)
	}
}

func TestPayloadNumbers(t *testing.T) {
	ev := &Event{Body: []byte(`{"i":1738056000,"f":0.5,"big":1e30,"a":[1,{"n":2}]}`)}
	p, err := ev.Payload()
	if err != nil {
		t.Fatal(err)
	}
	if p["i"] != 1738056000 || p["f"] != 0.5 || p["big"] != 1e30 {
		t.Errorf("numbers: %#v", p)
	}
	if n := p["a"].([]any)[1].(map[string]any)["n"]; n != 2 {
		t.Errorf("nested number: %#v", n)
	}
	if _, err := (&Event{Body: []byte(`[1]`)}).Payload(); err == nil {
		t.Error("an array payload decoded as an object")
	}
}
