package router

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// TestSeveralSources: sources on different paths, each with its own auth,
// dedup namespace and source() value in rules.
func TestSeveralSources(t *testing.T) {
	crm, ops := newCapture(t), newCapture(t)
	key := []byte("0123456789abcdef0123456789abcdef")
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	s := startServer(t, fmt.Sprintf(`listen: "127.0.0.1:0"
data_dir: DATA
sources:
  - {name: platform, path: /webhook, auth: {type: header, secret: %s}}
  - {name: partner, path: /hooks/partner, auth: {type: bearer, secret: tok-123}}
  - {name: signed, path: /hooks/signed, auth: {type: standard-webhooks, secret: %q}}
queue: {backend: memory}
sinks:
  crm: {type: http, url: %q}
  ops: {type: http, url: %q}
rules:
  - {name: platform-only, when: 'source() == "platform"', to: [crm]}
  - {name: others, when: 'source() != "platform"', to: [ops]}
`, testSecret, secret, crm.URL, ops.URL))
	body := payloadFile(t, "channel.message_in.json")

	if a := s.post("/webhook", body); a.status != 200 {
		t.Fatalf("platform: %d %s", a.status, a.body)
	}
	// The same event on another source is not a duplicate: keys are per source.
	a := s.post("/hooks/partner", body, "Authorization", "Bearer tok-123")
	if a.status != 200 || a.header.Get("X-Hookrouter-Duplicate") != "" {
		t.Fatalf("partner: %d %s dup=%q", a.status, a.body, a.header.Get("X-Hookrouter-Duplicate"))
	}
	if a := s.post("/hooks/partner", body, "Authorization", testSecret); a.status != 401 {
		t.Errorf("partner with the platform's secret: %d, want 401", a.status)
	}
	if a := s.post("/webhook", body, "Authorization", "Bearer tok-123"); a.status != 401 {
		t.Errorf("platform with the partner's token: %d, want 401", a.status)
	}

	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "msg_1.%s.%s", ts, body)
	sig := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if a := s.post("/hooks/signed", body, "Authorization", "", "webhook-id", "msg_1", "webhook-timestamp", ts, "webhook-signature", sig); a.status != 200 {
		t.Errorf("signed: %d %s", a.status, a.body)
	}
	if a := s.post("/hooks/signed", append(body, ' '), "Authorization", "", "webhook-id", "msg_1", "webhook-timestamp", ts, "webhook-signature", sig); a.status != 401 {
		t.Errorf("signed, body changed: %d, want 401", a.status)
	}
	old := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
	if a := s.post("/hooks/signed", body, "Authorization", "", "webhook-id", "msg_1", "webhook-timestamp", old, "webhook-signature", sig); a.status != 401 {
		t.Errorf("signed, stale timestamp: %d, want 401", a.status)
	}

	waitFor(t, 5*time.Second, "deliveries", func() bool { return crm.count() == 1 && ops.count() == 2 })
}
