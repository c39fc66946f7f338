package file

import (
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// DefaultFlushInterval is Config.FlushInterval's default.
const DefaultFlushInterval = 200 * time.Millisecond

// DefaultWorkers is the dispatch workers a file or stdout sink gets by
// default: local writes protect no remote from load, and several workers let
// one write a batch while others gather the next.
const DefaultWorkers = 16

// Config is a file sink's settings: its keys in the config file (sink type
// file).
type Config struct {
	// Path is the file appended to; missing parent directories are created.
	Path string `yaml:"path"`
	// Format is payload (the default) or envelope.
	Format Format `yaml:"format"`
	// FlushInterval bounds how long written lines may sit in the operating
	// system's cache: the file is fsynced at most this long after a write,
	// and on Reopen and Close. Zero means DefaultFlushInterval; negative
	// leaves it to the OS except at Reopen and Close.
	FlushInterval time.Duration `yaml:"flush_interval"`
}

var _ sinks.Config = (*Config)(nil)

// Default implements sinks.Config.
func (c *Config) Default() {
	if c.Format == "" {
		c.Format = FormatPayload
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
}

// Validate implements sinks.Config.
func (c *Config) Validate() []sinks.FieldError {
	var errs []sinks.FieldError
	if strings.TrimSpace(c.Path) == "" {
		errs = append(errs, sinks.Required("path", "required: the file that events are appended to"))
	}
	if err := c.Format.Validate(); err != nil {
		errs = append(errs, *err)
	}
	return errs
}

// Build implements sinks.Config.
func (c *Config) Build(env sinks.Env) (sinks.Sink, error) { return New(*c, env.Log) }

// DefaultWorkers returns DefaultWorkers; the config loader asks.
func (c *Config) DefaultWorkers() int { return DefaultWorkers }

// Validate reports a Format that is neither payload nor envelope (nor empty,
// which means payload), as a problem of the field format.
func (f Format) Validate() *sinks.FieldError {
	switch f {
	case "", FormatPayload, FormatEnvelope:
		return nil
	}
	e := sinks.NotOneOf("format", "format", string(f), string(FormatPayload), string(FormatEnvelope))
	return &e
}
