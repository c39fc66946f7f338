package mysql

import (
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/dbrow"
)

// DefaultTimeout bounds one insert (or batch) when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Config is a mysql sink's settings: its keys in the config file (sink type
// mysql).
type Config struct {
	// DSN is a go-sql-driver/mysql data source name,
	// user:password@tcp(host:3306)/db. It may hold a password: it never
	// appears in errors. parseTime and loc=UTC are set by the sink.
	DSN string `yaml:"dsn"`
	// Table is the table, optionally database-qualified (db.table).
	Table string `yaml:"table"`
	// CreateTable creates the table (event_id VARCHAR(255) primary key,
	// source, event, received_at DATETIME(6), payload JSON; or event_id and
	// TEXT columns for Columns) if it does not exist, before the first insert.
	CreateTable bool `yaml:"create_table"`
	// Columns maps column names to expr expressions over the payload; empty
	// means the default columns. event_id is always added.
	Columns map[string]string `yaml:"columns"`
	// Timeout bounds one insert; zero means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
	// MaxConns bounds the connection pool: the dispatch workers, at least 4.
	MaxConns int `yaml:"-"`
}

var _ sinks.Config = (*Config)(nil)

// Default implements sinks.Config.
func (c *Config) Default() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 4
	}
}

// Validate implements sinks.Config.
func (c *Config) Validate() []sinks.FieldError {
	var errs []sinks.FieldError
	if c.DSN == "" {
		errs = append(errs, sinks.Required("dsn", "required: the MySQL data source name (user:password@tcp(host:3306)/db)"))
	} else if _, err := driver.ParseDSN(c.DSN); err != nil {
		// The driver's parse errors can quote the DSN, password included.
		errs = append(errs, sinks.Errorf("dsn", "not a valid MySQL data source name (user:password@tcp(host:3306)/db)"))
	}
	if _, err := dbrow.CheckTable(c.Table); err != nil {
		if c.Table == "" {
			errs = append(errs, sinks.Required("table", "required: the table events are inserted into"))
		} else {
			errs = append(errs, sinks.Errorf("table", "%v", err))
		}
	}
	if _, ferrs := dbrow.New(c.Columns); ferrs != nil {
		errs = append(errs, ferrs...)
	}
	if c.Timeout < 0 {
		errs = append(errs, sinks.Errorf("timeout", "must not be negative"))
	}
	return errs
}

// Build implements sinks.Config.
func (c *Config) Build(env sinks.Env) (sinks.Sink, error) {
	cfg := *c
	cfg.MaxConns = max(env.Workers, 4)
	return New(cfg, env.Log)
}
