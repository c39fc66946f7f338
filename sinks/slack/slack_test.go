package slack

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/sinktest"
)

// secret stands for the webhook's path token.
const secret = "s3cr3tPATHtoken42"

const text = "*{{ .message.sender_name | default .device.name }}* ({{ .message.channel.name }}): {{ .message.content.text }}"

type request struct {
	header http.Header
	body   []byte
	path   string
}

// slackServer imitates an incoming webhook: it records each request and
// answers with handle, or 200 "ok".
func slackServer(t *testing.T, handle func(w http.ResponseWriter, r request)) (url string, got func() []request) {
	t.Helper()
	var mu sync.Mutex
	var reqs []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := request{header: r.Header.Clone(), body: body, path: r.URL.Path}
		mu.Lock()
		reqs = append(reqs, req)
		mu.Unlock()
		if handle != nil {
			handle(w, req)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/services/T000/B000/" + secret, func() []request {
		mu.Lock()
		defer mu.Unlock()
		return append([]request(nil), reqs...)
	}
}

func newSink(t *testing.T, cfg Config) *Sink {
	t.Helper()
	cfg.Version = "1.2.3"
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	return s
}

func answer(code int, retryAfter, body string) func(http.ResponseWriter, request) {
	return func(w http.ResponseWriter, r request) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

func TestConformance(t *testing.T) {
	failing := func(handle func(http.ResponseWriter, request)) func(t *testing.T) sinks.Sink {
		return func(t *testing.T) sinks.Sink {
			url, _ := slackServer(t, handle)
			return newSink(t, Config{WebhookURL: url, Text: text})
		}
	}
	sinktest.Run(t, sinktest.Harness{
		Secret: secret,
		Healthy: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			url, got := slackServer(t, nil)
			return newSink(t, Config{WebhookURL: url, Text: text}), func() [][]byte {
				var out [][]byte
				for _, r := range got() {
					out = append(out, r.body)
				}
				return out
			}
		},
		Failing: []sinktest.Failing{
			{Name: "500 echoing the path", New: failing(func(w http.ResponseWriter, r request) {
				answer(500, "", "no route to "+r.path)(w, r)
			})},
			{Name: "404 no_service", Permanent: true, New: failing(answer(404, "", "no_service"))},
			{Name: "410 channel_is_archived", Permanent: true, New: failing(answer(410, "", "channel_is_archived"))},
			{Name: "429 rate limited", RetryAfter: 30 * time.Second, New: failing(answer(429, "30", "rate_limited"))},
			{Name: "connection refused", New: func(t *testing.T) sinks.Sink {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr := ln.Addr().String()
				ln.Close()
				return newSink(t, Config{WebhookURL: "http://" + addr + "/services/T/B/" + secret, Text: text})
			}},
		},
	})
}

func TestMessage(t *testing.T) {
	tests := []struct {
		name, sample, text, want string
	}{
		{"escaping", "escaping.json", text,
			// Payload values are escaped for Slack's markup (&, <, >); JSON
			// escaping of quotes, backslashes and newlines is the encoder's.
			"*O'Brien \"Bob\" &lt;bob@example.com&gt;* (WhatsApp Business): line one\nline \"two\" \\ tab\there \u2028 ünïcödé 🚀 &lt;/script&gt; &amp; done"},
		{"template markup kept, payload markup escaped", "escaping.json", "<!here> {{ .message.sender_name }} <https://crm.example.com|open>",
			"<!here> O'Brien \"Bob\" &lt;bob@example.com&gt; <https://crm.example.com|open>"},
		{"device event", "device.connected.json", text, "*WA Toko Utama* (): "},
		{"default text", "device.connected.json", "",
			"*device.connected*\n```" + `{"device":{"engine":"wa","id":"dev_wa_01","name":"WA Toko Utama","phone":"+6281200000001","status":"connected"},"event":"device.connected","timestamp":1738057000}` + "```"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url, got := slackServer(t, nil)
			s := newSink(t, Config{WebhookURL: url, Text: tc.text})
			defer s.Close(t.Context())
			ev := sinktest.Event("ev_1", sinktest.Samples()[tc.sample])
			if err := s.Send(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
			r := got()[0]
			var msg map[string]any
			if err := json.Unmarshal(r.body, &msg); err != nil {
				t.Fatalf("body is not JSON: %v\n%s", err, r.body)
			}
			if len(msg) != 1 || msg["text"] != tc.want {
				t.Errorf("message %q\nwant text %q", r.body, tc.want)
			}
			if r.header.Get("Content-Type") != "application/json" || r.header.Get("X-Hookrouter-Event-Id") != "ev_1" ||
				r.header.Get("User-Agent") != "hookrouter/1.2.3" || r.path != "/services/T000/B000/"+secret {
				t.Errorf("request %s %v", r.path, r.header)
			}
		})
	}
}

func TestRateLimited(t *testing.T) {
	url, got := slackServer(t, answer(429, "17", "rate_limited"))
	s := newSink(t, Config{WebhookURL: url, Text: text})
	defer s.Close(t.Context())
	err := s.Send(t.Context(), sinktest.Variant(1))
	if d, ok := sinks.RetryAfterOf(err); !ok || d != 17*time.Second || sinks.IsPermanent(err) {
		t.Fatalf("send = %v; RetryAfterOf = %v, %v", err, d, ok)
	}
	if len(got()) != 1 {
		t.Errorf("%d requests, want exactly 1: retrying is the dispatcher's job", len(got()))
	}
	want := fmt.Sprintf("POST %s/REDACTED: http status 429: rate_limited", url[:strings.Index(url, "/services")])
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, field string
		cfg         Config
	}{
		{"no url", "webhook_url: ", Config{}},
		{"not a url", "webhook_url: ", Config{WebhookURL: "hooks.slack.com/services/" + secret}},
		{"bad escape", "webhook_url: ", Config{WebhookURL: "https://hooks.slack.com/%zz/" + secret}},
		{"bad template", "text: ", Config{WebhookURL: "https://hooks.slack.com/x", Text: "{{ .a "}},
		{"timeout", "timeout: ", Config{WebhookURL: "https://hooks.slack.com/x", Timeout: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nil)
			if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
				t.Fatalf("New = %v, want an error starting %q", err, tc.field)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error carries the secret: %v", err)
			}
		})
	}
}

func TestTemplateErrorIsPermanent(t *testing.T) {
	url, got := slackServer(t, nil)
	s := newSink(t, Config{WebhookURL: url, Text: "{{ json .x }}"})
	defer s.Close(t.Context())
	ev := sinktest.Event("ev_nan", []byte(`{"x": 1e400}`)) // +Inf: not encodable as JSON
	if err := s.Send(t.Context(), ev); !sinks.IsPermanent(err) {
		t.Fatalf("send = %v, want a permanent error", err)
	}
	if len(got()) != 0 {
		t.Error("a request was sent")
	}
}
