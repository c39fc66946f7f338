package mysql

import (
	driver "github.com/go-sql-driver/mysql"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/dbrow"
)

// Config is a mysql sink's settings: its keys in the config file (sink type
// mysql), those of dbrow.Config. DSN is a go-sql-driver/mysql data source
// name, user:password@tcp(host:3306)/db (parseTime and loc=UTC are set by
// the sink); Table may be database-qualified. create_table makes event_id
// VARCHAR(255) primary key, source, event, received_at DATETIME(6), payload
// JSON (or event_id and TEXT columns for Columns).
type Config struct {
	dbrow.Config `yaml:",inline"`
}

var (
	_ sinks.Config        = (*Config)(nil)
	_ sinks.PayloadFields = (*Config)(nil)
)

// Validate implements sinks.Config.
func (c *Config) Validate() []sinks.FieldError {
	return c.Check("MySQL data source name", "user:password@tcp(host:3306)/db", func(dsn string) error {
		_, err := driver.ParseDSN(dsn)
		return err
	})
}

// Build implements sinks.Config.
func (c *Config) Build(env sinks.Env) (sinks.Sink, error) {
	return New(Config{c.WithWorkers(env)}, env.Log)
}
