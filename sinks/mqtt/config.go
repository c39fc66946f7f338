package mqtt

import (
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// DefaultTimeout bounds one publish and its PUBACK when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Config is an mqtt sink's settings: its keys in the config file (sink type
// mqtt).
type Config struct {
	// URL is the broker, tcp://[user:pass@]host:1883. Its password never
	// appears in errors.
	URL string `yaml:"url"`
	// Topic is a template over the payload.
	Topic string `yaml:"topic"`
	// QoS is 0 (no acknowledgement) or 1 (wait for the PUBACK); nil means 1.
	QoS *int `yaml:"qos"`
	// ClientID identifies the connection to the broker; empty means
	// "hookrouter-" and random hex. Two connections with the same id make
	// the broker drop the older one.
	ClientID string `yaml:"client_id"`
	// Timeout bounds one publish; zero means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
}

var _ sinks.Config = (*Config)(nil)

// Default implements sinks.Config.
func (c *Config) Default() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.QoS == nil {
		one := 1
		c.QoS = &one
	}
	if c.ClientID == "" {
		b := make([]byte, 6)
		rand.Read(b)
		c.ClientID = "hookrouter-" + hex.EncodeToString(b)
	}
}

// Validate implements sinks.Config.
func (c *Config) Validate() []sinks.FieldError {
	var errs []sinks.FieldError
	if c.URL == "" {
		errs = append(errs, sinks.Required("url", "required: the broker, tcp://host:1883"))
	} else if u, err := url.Parse(c.URL); err != nil || u.Scheme != "tcp" || u.Host == "" || u.Port() == "" {
		errs = append(errs, sinks.Errorf("url", "must be tcp://host:port"))
	}
	if c.Topic == "" {
		errs = append(errs, sinks.Required("topic", "required: the topic template, such as 'events/{{ .event }}'"))
	} else if _, err := render.ParseName("mqtt", "topic", c.Topic, false); err != nil {
		errs = append(errs, sinks.Errorf("topic", "%v", err))
	}
	if c.QoS != nil && *c.QoS != 0 && *c.QoS != 1 {
		errs = append(errs, sinks.Errorf("qos", "must be 0 or 1, got %d", *c.QoS))
	}
	if len(c.ClientID) > 23*4 {
		errs = append(errs, sinks.Errorf("client_id", "longer than 92 bytes"))
	}
	if c.Timeout < 0 {
		errs = append(errs, sinks.Errorf("timeout", "must not be negative"))
	}
	return errs
}

// Build implements sinks.Config.
func (c *Config) Build(env sinks.Env) (sinks.Sink, error) { return New(*c, env.Log) }
