// Package slack posts events to a Slack incoming webhook as `{"text": …}`,
// the text rendered from a template over the payload and JSON-encoded, so a
// quote or a newline in a message is always sent intact.
//
// It is an http sink underneath (same connection pool, timeouts, headers and
// error classification: Slack's 429 with Retry-After is honoured through
// sinks.CheckStatus); errors show only the webhook's scheme and host, since
// its path is the credential.
package slack

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/httpsink"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// escape applies Slack's escaping to the payload's values: &, < and > are
// markup (links, mentions such as <!channel>) in Slack's message format.
var escape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// DefaultText is Config.Text's default: the event name and the start of the
// payload as JSON.
const DefaultText = "*{{ .event | default \"event\" }}*\n```{{ json . | truncate 3000 }}```"

// Config is a slack sink's settings: its keys in the config file (sink type
// slack).
type Config struct {
	// WebhookURL is the incoming webhook's URL (a secret).
	WebhookURL string `yaml:"webhook_url"`
	// Text is a render template over the payload; empty means DefaultText.
	// Slack's own markup (*bold*, <url|label>) passes through as written.
	Text string `yaml:"text"`

	// Timeout bounds one request; zero means httpsink.DefaultTimeout.
	Timeout time.Duration `yaml:"-"`
	// Version is hookrouter's version, for the User-Agent header.
	Version string `yaml:"-"`
}

var _ sinks.Config = (*Config)(nil)

// Default implements sinks.Config.
func (c *Config) Default() {
	if c.Text == "" {
		c.Text = DefaultText
	}
}

// DefaultRateLimit is the rate_limit of a slack sink that sets none: one
// message per second, Slack's documented limit for incoming webhooks, with
// bursts of up to 3 (Slack tolerates short bursts). The config loader asks.
func (c *Config) DefaultRateLimit() (perSecond float64, burst int) { return 1, 3 }

// Validate implements sinks.Config. The template is parsed by New.
func (c *Config) Validate() []sinks.FieldError {
	if strings.TrimSpace(c.WebhookURL) == "" {
		return []sinks.FieldError{sinks.Required("webhook_url", "required: the Slack incoming-webhook URL")}
	}
	if msg := httpsink.URLProblem(c.WebhookURL); msg != "" {
		return []sinks.FieldError{sinks.Errorf("webhook_url", "%s", msg)}
	}
	return nil
}

// Build implements sinks.Config.
func (c *Config) Build(env sinks.Env) (sinks.Sink, error) {
	cfg := *c
	cfg.Version = env.Version
	return New(cfg, env.Log)
}

var (
	_ sinks.Sink     = (*Sink)(nil)
	_ sinks.Renderer = (*Sink)(nil)
)

// Sink posts events to one Slack incoming webhook. It is safe for concurrent
// use.
type Sink struct {
	http *httpsink.Sink
	text *render.Template
}

// New checks cfg and builds the sink. It does no I/O. Errors are
// sinks.FieldErrors naming the field: webhook_url or text.
func New(cfg Config, log *slog.Logger) (*Sink, error) {
	cfg.Default()
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs[0]
	}
	text, err := render.ParseTemplateEscaped("text", cfg.Text, escape.Replace)
	if err != nil {
		return nil, sinks.Errorf("text", "%v", err)
	}
	s := &Sink{text: text}
	s.http, err = httpsink.New(httpsink.Config{
		URL:        cfg.WebhookURL,
		Timeout:    cfg.Timeout,
		Version:    cfg.Version,
		BodyFunc:   s.body,
		SecretPath: true,
	}, log)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// body appends `{"text": …}` for ev to dst.
func (s *Sink) body(dst []byte, ev *sinks.Event) ([]byte, error) {
	p, err := ev.Payload()
	if err != nil {
		return dst, fmt.Errorf("payload: %w", err)
	}
	text, err := s.text.Execute(p)
	if err != nil {
		return dst, err // text/template errors name the template: text
	}
	dst = append(dst, `{"text":`...)
	dst = render.AppendJSONString(dst, text)
	return append(dst, '}'), nil
}

// Send posts ev's message. See httpsink.Sink.Send for timeouts and errors.
func (s *Sink) Send(ctx context.Context, ev *sinks.Event) error { return s.http.Send(ctx, ev) }

// SendStatus is Send with Slack's status code (sinks.StatusSender).
func (s *Sink) SendStatus(ctx context.Context, ev *sinks.Event) (int, error) {
	return s.http.SendStatus(ctx, ev)
}

// Render returns the JSON body Send would post for ev.
func (s *Sink) Render(ev *sinks.Event) ([]byte, error) { return s.http.Render(ev) }

// Close makes later Sends fail with sinks.ErrClosed; it is idempotent.
func (s *Sink) Close(ctx context.Context) error { return s.http.Close(ctx) }
