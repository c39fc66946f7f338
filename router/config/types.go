package config

import (
	"time"

	"github.com/hookrouter/hookrouter/router/auth"
	"github.com/hookrouter/hookrouter/router/queue/natsq"
	"github.com/hookrouter/hookrouter/router/tlscert"
	"github.com/hookrouter/hookrouter/sinks"
)

// File is a loaded, interpolated, defaulted and schema-checked config file.
// It is plain data: expressions and templates are compiled by the router,
// which uses Pos to place its own problems in the file.
type File struct {
	Listen string `yaml:"listen"`
	// TLS, when set, serves the ingress over HTTPS (the admin listener is
	// not affected).
	TLS         tlscert.Config `yaml:"tls"`
	AdminListen string         `yaml:"admin_listen"`
	Admin       Admin          `yaml:"admin"`
	// TrustedProxies are the CIDRs of reverse proxies whose X-Forwarded-For
	// and X-Real-IP are believed; from any other peer they are ignored.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// MaxConns and MaxConnsPerIP bound the ingress's open connections, in
	// all and per peer address. 0 is the default (10000 and 0 = no per-peer
	// limit, since behind a proxy every client is the proxy).
	MaxConns      int      `yaml:"max_conns"`
	MaxConnsPerIP int      `yaml:"max_conns_per_ip"`
	Sources       []Source `yaml:"sources"`
	DataDir       string   `yaml:"data_dir"`
	Dedup         Dedup    `yaml:"dedup"`
	Queue         Queue    `yaml:"queue"`
	Journal       Journal  `yaml:"journal"`
	// Sinks by name. Iterate with SinkNames for a stable order.
	Sinks map[string]*Sink `yaml:"sinks"`
	Rules []Rule           `yaml:"rules"`
	Log   Log              `yaml:"log"`

	// Name is the file name used in problems (the path given to Load).
	Name string `yaml:"-"`
	// Hash is the SHA-256 of the file's bytes before interpolation; a reload
	// whose hash did not change is a no-op.
	Hash [32]byte `yaml:"-"`

	positions map[string]Pos
	data      []byte // the file's bytes, for ValuePos
}

// Admin configures the admin listener (admin_listen).
type Admin struct {
	// Token, when set, is required of every admin request, as
	// "Authorization: Bearer TOKEN" or the console's login cookie.
	Token string `yaml:"token"`
}

// Source is one ingress path with its authentication and deduplication.
type Source struct {
	Name         string      `yaml:"name"`
	Path         string      `yaml:"path"`
	MaxBodyBytes Size        `yaml:"max_body_bytes"`
	Auth         auth.Config `yaml:"auth"`
	Dedup        SourceDedup `yaml:"dedup"`
	// Schema describes the payloads, so that rules are type-checked against
	// them: "platform" (built in) or a JSON Schema file, relative to the
	// config file's directory. Empty: no schema (router/rules/schema).
	Schema string `yaml:"schema"`
	// AllowIPs are the CIDRs (or single addresses) the source accepts
	// events from; others get 403. Empty: any client. The client is the
	// peer, or what a trusted proxy says it is (File.TrustedProxies).
	AllowIPs []string `yaml:"allow_ips"`
	// RateLimit bounds the events the source accepts; beyond it 429 with
	// Retry-After. nil or rate 0: no limit.
	RateLimit *RateLimit `yaml:"rate_limit"`
}

// SourceDedup configures duplicate detection for one source.
type SourceDedup struct {
	// Key is an expr expression giving the dedup key; empty means the default
	// (event + "_" + message.id, else event + "_" + device.id + "_" + timestamp,
	// else a hash of the body).
	Key string `yaml:"key"`
	// TTL is how long a key is remembered. Default 24h.
	TTL Duration `yaml:"ttl"`
}

// Dedup selects the store that remembers dedup keys.
type Dedup struct {
	Store   string `yaml:"store"` // memory | redis
	MaxKeys int    `yaml:"max_keys"`
	// Timeout bounds every call of the ingress path to the store, waiting
	// for a copy in flight included; beyond it the request is answered 503
	// with Retry-After. Default 2s.
	Timeout  Duration `yaml:"timeout"`
	RedisURL string   `yaml:"redis_url"`
	// RedisPrefix is prepended to every key the Redis store writes, so that
	// several deployments can share one Redis. Default "hookrouter:dedup:".
	RedisPrefix string `yaml:"redis_prefix"`
}

// Queue selects where accepted events wait for delivery. The settings of one
// backend are that backend's Config, inlined: their keys sit beside backend.
type Queue struct {
	Backend  string `yaml:"backend"` // disk | memory | nats
	MaxBytes Size   `yaml:"max_bytes"`
	// NATS holds the nats backend's keys (nats_url, ...).
	NATS natsq.Config `yaml:",inline"`
}

// Journal configures the event journal (router/journal), kept in data_dir.
type Journal struct {
	// Enabled turns the journal on. Default true.
	Enabled bool `yaml:"enabled"`
	// Retention is how long journeys are kept. Default 168h.
	Retention Duration `yaml:"retention"`
	// MaxBytes bounds the database; the oldest journeys go first. Default 1GiB.
	MaxBytes Size `yaml:"max_bytes"`
	// Bodies keeps payloads. Default true.
	Bodies bool `yaml:"bodies"`
}

// Log configures the process's structured log.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // json | text
}

// Sink is one destination: the fields every sink takes, and the settings of
// its type, decoded from the sink's other keys.
type Sink struct {
	Type    string  `yaml:"type"`
	Retry   Retry   `yaml:"retry"`
	Breaker Breaker `yaml:"breaker"`
	Workers int     `yaml:"workers"`
	// RateLimit bounds the sink's deliveries; nil means the sink type's
	// default (Slack: about one per second), else none.
	RateLimit *RateLimit `yaml:"rate_limit"`

	// Settings is the Config of the sink's type (a *httpsink.Config for
	// http, ...), defaulted and validated; nil when the type is unknown.
	// newSinkConfig says which type has which Config.
	Settings sinks.Config `yaml:"-"`
}

// RateLimit is a token bucket: Rate events per second on average, at most
// Burst at once. A Rate of zero means no limit.
type RateLimit struct {
	Rate  Rate `yaml:"rate"`
	Burst int  `yaml:"burst"`
}

// Rate is events per second, written as "10/s", "600/m", "1/h" or a bare
// number of events per second.
type Rate float64

// Retry bounds the dispatcher's attempts for one sink.
type Retry struct {
	MaxAttempts    int      `yaml:"max_attempts"`
	InitialBackoff Duration `yaml:"initial_backoff"`
	MaxBackoff     Duration `yaml:"max_backoff"`
}

// Breaker configures one sink's circuit breaker.
type Breaker struct {
	// Failures is the number of consecutive retryable failures that open it.
	Failures int `yaml:"failures"`
	// OpenFor is how long it stays open before letting one probe through.
	OpenFor Duration `yaml:"open_for"`
}

// Rule routes the events its expression matches to its sinks.
type Rule struct {
	Name   string   `yaml:"name"`
	When   string   `yaml:"when"`
	To     []string `yaml:"to"`
	Stop   bool     `yaml:"stop"`
	Shadow bool     `yaml:"shadow"`
}

// Duration is a time.Duration written as a Go duration string ("500ms", "24h").
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Size is a byte count written as a number or with a unit ("1048576", "512KiB",
// "1GiB", "10MB").
type Size int64
