package nats

import (
	"net/url"
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// DefaultTimeout bounds one publish (and its ack) when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Config is a nats sink's settings, as written under `sinks.NAME` with
// `type: nats`.
type Config struct {
	// URL is the server, nats://[user:pass@]host:4222; several may be given
	// comma-separated. Credentials in it never appear in errors.
	URL string `yaml:"url"`
	// Subject is a template over the payload, e.g. 'events.{{ .event }}'.
	Subject string `yaml:"subject"`
	// JetStream waits for the stream's PubAck (a stream must capture the subject).
	JetStream bool `yaml:"jetstream"`
	// Timeout bounds one publish; zero means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
}

// Validate implements sinks.Config.
func (c *Config) Validate() []sinks.FieldError {
	var errs []sinks.FieldError
	if c.URL == "" {
		errs = append(errs, sinks.Required("url", "required"))
	} else {
		for u := range strings.SplitSeq(c.URL, ",") {
			p, err := url.Parse(strings.TrimSpace(u))
			if err != nil || p.Host == "" || (p.Scheme != "nats" && p.Scheme != "tls") {
				errs = append(errs, sinks.Errorf("url", "must be nats://host:port (or tls://)"))
				break
			}
		}
	}
	if c.Subject == "" {
		errs = append(errs, sinks.Required("subject", "required"))
	} else if _, err := render.ParseName("nats", "subject", c.Subject, false); err != nil {
		errs = append(errs, sinks.Errorf("subject", "%v", err))
	}
	if c.Timeout < 0 {
		errs = append(errs, sinks.Errorf("timeout", "must not be negative"))
	}
	return errs
}

var _ sinks.Config = (*Config)(nil)

// Default implements sinks.Config.
func (c *Config) Default() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
}

// Build implements sinks.Config.
func (c *Config) Build(env sinks.Env) (sinks.Sink, error) { return New(*c, env.Log) }
