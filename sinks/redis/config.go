package redis

import (
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// DefaultTimeout bounds one XADD (or pipeline) when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Config is a redis sink's settings, as written under `sinks.NAME` with
// `type: redis`.
type Config struct {
	// URL is redis://[user:pass@]host:6379[/db] (rediss:// for TLS). Its
	// password never appears in errors.
	URL string `yaml:"url"`
	// Stream is a template over the payload giving the stream's key.
	Stream string `yaml:"stream"`
	// MaxLen trims the stream to about this many entries (XADD MAXLEN ~);
	// zero keeps every entry.
	MaxLen int64 `yaml:"max_len"`
	// Timeout bounds one XADD; zero means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
}

// Validate implements sinks.Config.
func (c *Config) Validate() []sinks.FieldError {
	var errs []sinks.FieldError
	if c.URL == "" {
		errs = append(errs, sinks.Required("url", "required"))
	} else if _, err := redis.ParseURL(c.URL); err != nil {
		errs = append(errs, sinks.Errorf("url", "must be redis://[user:password@]host:port[/db]"))
	}
	if c.Stream == "" {
		errs = append(errs, sinks.Required("stream", "required"))
	} else if _, err := render.ParseName("redis", "stream", c.Stream, false); err != nil {
		errs = append(errs, sinks.Errorf("stream", "%v", err))
	}
	if c.MaxLen < 0 {
		errs = append(errs, sinks.Errorf("max_len", "must not be negative"))
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
