package dbrow

import (
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// DefaultTimeout bounds one insert (or batch) when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Config holds the settings every database sink has; a sink's own Config
// embeds it inline, so its keys are the sink's keys in the config file.
type Config struct {
	// DSN says where the database is and how to log in, in the form of the
	// sink's driver. It may hold a password: it never appears in errors.
	DSN string `yaml:"dsn"`
	// Table is the table, optionally qualified (schema.table, db.table).
	Table string `yaml:"table"`
	// CreateTable creates the table (event_id primary key and the default
	// columns, or event_id and text columns for Columns) if it does not
	// exist, before the first insert.
	CreateTable bool `yaml:"create_table"`
	// Columns maps column names to expr expressions over the payload; empty
	// means the default columns. event_id is always added.
	Columns map[string]string `yaml:"columns"`
	// Timeout bounds one insert; zero means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
	// MaxConns bounds the connection pool: the dispatch workers, at least 4.
	MaxConns int `yaml:"-"`
}

// Default sets the zero fields to their defaults (sinks.Config).
func (c *Config) Default() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 4
	}
}

// Check reports every problem of the shared settings. what names the DSN's
// form ("PostgreSQL connection string") and example shows one; parseDSN is
// the driver's parser. Its errors are not shown: they can quote the DSN,
// password included.
func (c *Config) Check(what, example string, parseDSN func(string) error) []sinks.FieldError {
	var errs []sinks.FieldError
	if c.DSN == "" {
		errs = append(errs, sinks.Required("dsn", "required: the "+what+" ("+example+")"))
	} else if err := parseDSN(c.DSN); err != nil {
		errs = append(errs, sinks.Errorf("dsn", "not a valid %s (%s)", what, example))
	}
	if _, err := CheckTable(c.Table); err != nil {
		if c.Table == "" {
			errs = append(errs, sinks.Required("table", "required: the table events are inserted into"))
		} else {
			errs = append(errs, sinks.Errorf("table", "%v", err))
		}
	}
	if _, ferrs := New(c.Columns); ferrs != nil {
		errs = append(errs, ferrs...)
	}
	if c.Timeout < 0 {
		errs = append(errs, sinks.Errorf("timeout", "must not be negative"))
	}
	return errs
}

// WithWorkers returns a copy of c whose pool fits env's dispatch workers,
// for Build.
func (c *Config) WithWorkers(env sinks.Env) Config {
	cfg := *c
	cfg.MaxConns = max(env.Workers, 4)
	return cfg
}

// Expressions implements sinks.PayloadFields: the columns.
func (c *Config) Expressions() map[string]string {
	out := make(map[string]string, len(c.Columns))
	for col, src := range c.Columns {
		out["columns."+col] = src
	}
	return out
}

// Templates implements sinks.PayloadFields: a database sink has none.
func (c *Config) Templates() map[string]string { return nil }
