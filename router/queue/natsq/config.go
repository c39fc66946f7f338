package natsq

import (
	"errors"
	"net/url"
	"strings"

	"github.com/hookrouter/hookrouter/sinks"
)

// Config is the nats queue backend's settings: its keys in the config file's
// queue section, beside backend and max_bytes.
type Config struct {
	// URL is the NATS server, or a comma-separated list of them.
	URL string `yaml:"nats_url"`
}

// Default sets the fields left zero to their defaults.
func (c *Config) Default() {}

// Validate reports every problem of c, for a queue whose backend is nats.
func (c *Config) Validate() []sinks.FieldError {
	if strings.TrimSpace(c.URL) == "" {
		return []sinks.FieldError{sinks.Required("nats_url", "required: queue.backend nats needs a nats_url, such as nats://127.0.0.1:4222")}
	}
	// nats.go takes a comma-separated list of servers.
	for u := range strings.SplitSeq(c.URL, ",") {
		if msg := urlProblem(strings.TrimSpace(u)); msg != "" {
			return []sinks.FieldError{sinks.Errorf("nats_url", "%s", msg)}
		}
	}
	return nil
}

// urlProblem says what is wrong with one server URL, "" if nothing, without
// quoting it: it may hold a password.
func urlProblem(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return "not a valid URL: " + ue.Err.Error()
		}
		return "not a valid URL: cannot be parsed"
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
		return ""
	}
	return "must be a URL starting with nats:// or tls:// or ws:// or wss://"
}
