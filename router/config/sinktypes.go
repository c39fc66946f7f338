package config

import (
	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/amqp"
	"github.com/hookrouter/hookrouter/sinks/file"
	"github.com/hookrouter/hookrouter/sinks/httpsink"
	"github.com/hookrouter/hookrouter/sinks/kafka"
	"github.com/hookrouter/hookrouter/sinks/mqtt"
	"github.com/hookrouter/hookrouter/sinks/mysql"
	"github.com/hookrouter/hookrouter/sinks/nats"
	"github.com/hookrouter/hookrouter/sinks/postgres"
	"github.com/hookrouter/hookrouter/sinks/redis"
	"github.com/hookrouter/hookrouter/sinks/slack"
	"github.com/hookrouter/hookrouter/sinks/stdout"
)

// sinkTypes returns the sink types newSinkConfig knows, in the order
// problems list them.
func sinkTypes() []string {
	return []string{"http", "slack", "file", "stdout", "postgres", "mysql", "nats", "amqp", "redis", "mqtt", "kafka"}
}

// newSinkConfig returns an empty Config for sinks of type typ, or nil for an
// unknown type. This switch is where sink types are wired: adding a sink is a
// package under sinks/ whose *Config implements sinks.Config, a case here
// and its name in sinkTypes. The loader decodes the sink's keys into the
// Config, and the router builds the sink with its Build method.
func newSinkConfig(typ string) sinks.Config {
	switch typ {
	case "http":
		return &httpsink.Config{}
	case "slack":
		return &slack.Config{}
	case "file":
		return &file.Config{}
	case "stdout":
		return &stdout.Config{}
	case "postgres":
		return &postgres.Config{}
	case "mysql":
		return &mysql.Config{}
	case "nats":
		return &nats.Config{}
	case "amqp":
		return &amqp.Config{}
	case "redis":
		return &redis.Config{}
	case "mqtt":
		return &mqtt.Config{}
	case "kafka":
		return &kafka.Config{}
	}
	return nil
}
