package amqp

import (
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// DefaultTimeout bounds one publish and its confirm when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Config is an amqp sink's settings, as written under `sinks.NAME` with
// `type: amqp`.
type Config struct {
	// URL is amqp://user:pass@host:5672/vhost (amqps:// for TLS). Its
	// password never appears in errors.
	URL string `yaml:"url"`
	// Exchange is the exchange to publish to; "" is the default exchange
	// (the routing key is then a queue name).
	Exchange string `yaml:"exchange"`
	// RoutingKey is a template over the payload. Empty is allowed for
	// fanout and headers exchanges; a non-empty template that renders
	// empty fails that delivery.
	RoutingKey string `yaml:"routing_key"`
	// Mandatory makes an unroutable message a failed delivery; nil means true.
	Mandatory *bool `yaml:"mandatory"`
	// Timeout bounds one publish and its confirm; zero means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
}

// Validate implements sinks.Config.
func (c *Config) Validate() []sinks.FieldError {
	var errs []sinks.FieldError
	if c.URL == "" {
		errs = append(errs, sinks.Required("url", "required"))
	} else if _, err := amqp.ParseURI(c.URL); err != nil {
		errs = append(errs, sinks.Errorf("url", "must be amqp://user:password@host:port/vhost"))
	}
	if _, err := render.ParseName("amqp", "routing_key", c.RoutingKey, true); err != nil {
		errs = append(errs, sinks.Errorf("routing_key", "%v", err))
	}
	if c.Exchange == "" && c.RoutingKey == "" {
		errs = append(errs, sinks.Errorf("routing_key", "required with the default exchange (it names the queue)"))
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
