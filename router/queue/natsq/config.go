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
	// Stream names the JetStream stream (and so its consumers) that the
	// instances of one deployment share; another name lets staging and
	// production share a NATS server. Default DefaultStream.
	Stream string `yaml:"nats_stream"`
}

// Default sets the fields left zero to their defaults.
func (c *Config) Default() {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
}

// SubjectPrefix is the prefix of the subjects stream captures: two streams
// cannot capture the same subjects, so each name has its own. The default
// stream keeps DefaultSubjectPrefix.
func SubjectPrefix(stream string) string {
	if stream == DefaultStream {
		return DefaultSubjectPrefix
	}
	return "hookrouter." + stream + ".deliveries"
}

// Validate reports every problem of c, for a queue whose backend is nats.
func (c *Config) Validate() []sinks.FieldError {
	if strings.ContainsAny(c.Stream, " \t\r\n.*>/\\") {
		return []sinks.FieldError{sinks.Errorf("nats_stream", "%q is not a JetStream stream name: no spaces, '.', '*', '>', '/' or '\\'", c.Stream)}
	}
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
