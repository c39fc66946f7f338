package kafka

import (
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// DefaultTimeout bounds one produce (until the brokers' acks) when
// Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Mechanisms are the SASL mechanisms a kafka sink can authenticate with.
var Mechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

// Config is a kafka sink's settings, as written under `sinks.NAME` with
// `type: kafka`.
type Config struct {
	// Brokers are the seed brokers, host:port; an entry may hold several,
	// comma-separated, so that one ${KAFKA_BROKERS} can fill the list.
	Brokers []string `yaml:"brokers"`
	// Topic is a template over the payload, e.g. 'events.{{ .event }}'. The
	// topic must exist: the sink never asks the cluster to create one.
	Topic string `yaml:"topic"`
	// Key is a template over the payload giving the record's key (and so
	// its partition); empty sends records without a key.
	Key string `yaml:"key"`
	// SASL, when set, authenticates every connection.
	SASL *SASL `yaml:"sasl"`
	// TLS, when enabled, encrypts every connection.
	TLS TLS `yaml:"tls"`
	// Timeout bounds one produce, until every broker in sync has the
	// records; zero means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
}

// SASL is a kafka sink's authentication. The password never appears in
// errors or logs.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	Mechanism string `yaml:"mechanism"`
	User      string `yaml:"user"`
	Password  string `yaml:"password"`
}

// TLS is a kafka sink's transport security.
type TLS struct {
	// Enabled turns TLS on; it is implied by any of the files.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs to trust instead of the system's.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate (mutual TLS).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// on reports whether connections use TLS.
func (t TLS) on() bool { return t.Enabled || t.CAFile != "" || t.CertFile != "" }

// seeds returns the brokers, one host:port each.
func (c *Config) seeds() []string {
	var out []string
	for _, b := range c.Brokers {
		for h := range strings.SplitSeq(b, ",") {
			if h = strings.TrimSpace(h); h != "" {
				out = append(out, h)
			}
		}
	}
	return out
}

// Validate implements sinks.Config.
func (c *Config) Validate() []sinks.FieldError {
	var errs []sinks.FieldError
	seeds := c.seeds()
	if len(seeds) == 0 {
		errs = append(errs, sinks.Required("brokers", "required: a list of host:port"))
	}
	for _, h := range seeds {
		host, port, err := net.SplitHostPort(h)
		if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
			errs = append(errs, sinks.Errorf("brokers", "%q is not host:port", h))
			break
		}
	}
	if c.Topic == "" {
		errs = append(errs, sinks.Required("topic", "required"))
	} else if _, err := render.ParseTemplate("topic", c.Topic); err != nil {
		errs = append(errs, sinks.Errorf("topic", "%v", err))
	} else if !strings.Contains(c.Topic, "{{") && !validTopic(c.Topic) {
		errs = append(errs, sinks.Errorf("topic", "%q is not a Kafka topic name (at most 249 of a-z A-Z 0-9 . _ -)", c.Topic))
	}
	if _, err := render.ParseTemplate("key", c.Key); err != nil {
		errs = append(errs, sinks.Errorf("key", "%v", err))
	}
	if s := c.SASL; s != nil {
		if s.Mechanism == "" {
			errs = append(errs, sinks.Required("sasl.mechanism", "required: one of "+strings.Join(Mechanisms, ", ")))
		} else if !oneOf(s.Mechanism, Mechanisms) {
			errs = append(errs, sinks.NotOneOf("sasl.mechanism", "SASL mechanism", s.Mechanism, Mechanisms...))
		}
		if s.User == "" {
			errs = append(errs, sinks.Required("sasl.user", "required"))
		}
		if s.Password == "" {
			errs = append(errs, sinks.Required("sasl.password", "required"))
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, sinks.Errorf("tls", "cert_file and key_file go together"))
	}
	if c.Timeout < 0 {
		errs = append(errs, sinks.Errorf("timeout", "must not be negative"))
	}
	return errs
}

func oneOf(s string, allowed []string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}

// validTopic reports whether name is a topic name Kafka accepts.
func validTopic(name string) bool {
	if name == "" || len(name) > 249 || name == "." || name == ".." {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

var _ sinks.Config = (*Config)(nil)

// Default implements sinks.Config.
func (c *Config) Default() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
}

// Build implements sinks.Config.
func (c *Config) Build(env sinks.Env) (sinks.Sink, error) { return New(*c, env) }
