package postgres

import (
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/dbrow"
)

// Config is a postgres sink's settings: its keys in the config file (sink
// type postgres), those of dbrow.Config. DSN is a PostgreSQL connection
// string, URL (postgres://user:pass@host/db) or key=value form; Table may
// be schema-qualified. create_table makes event_id text primary key,
// source text, event text, received_at timestamptz, payload jsonb (or
// event_id and text columns for Columns).
type Config struct {
	dbrow.Config `yaml:",inline"`
}

var (
	_ sinks.Config        = (*Config)(nil)
	_ sinks.PayloadFields = (*Config)(nil)
)

// Validate implements sinks.Config.
func (c *Config) Validate() []sinks.FieldError {
	return c.Check("PostgreSQL connection string", "postgres://user@host:5432/db", func(dsn string) error {
		_, err := pgxpool.ParseConfig(dsn)
		return err
	})
}

// Build implements sinks.Config.
func (c *Config) Build(env sinks.Env) (sinks.Sink, error) {
	return New(Config{c.WithWorkers(env)}, env.Log)
}
