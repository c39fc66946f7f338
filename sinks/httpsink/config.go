package httpsink

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/valyala/fasthttp"
)

// DefaultTimeout bounds one request when Config.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// DefaultMaxConns is the connection pool size when Config.MaxConns is zero:
// more than the dispatcher's usual worker count, so workers never queue for a
// connection, and few enough not to flood a struggling receiver.
const DefaultMaxConns = 32

// DefaultMethod is Config.Method's default.
const DefaultMethod = fasthttp.MethodPost

// Config is an http sink's settings: its keys in the config file (sink type
// http), and the fields sinks built on this one (slack) set in code.
type Config struct {
	// URL is the absolute http or https endpoint. User info in it is sent as
	// basic authentication; it and the query never appear in errors.
	URL string `yaml:"url"`
	// Method is POST (the default), PUT or PATCH, in any case.
	Method string `yaml:"method"`
	// Headers are extra request headers; values are render templates over the
	// payload (control characters in a rendered value become spaces).
	Headers map[string]string `yaml:"headers"`
	// Body is an expr expression whose value is sent as JSON; empty forwards
	// the event's original bytes unchanged.
	Body string `yaml:"body"`
	// Timeout bounds one request, from connecting to reading the answer.
	// Zero means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
	// Sign, when set, signs each request the Standard Webhooks way.
	Sign *Sign `yaml:"sign"`

	// Version is hookrouter's version, sent as User-Agent: hookrouter/Version.
	Version string `yaml:"-"`
	// MaxConns caps open connections to the host. Zero means DefaultMaxConns.
	MaxConns int `yaml:"-"`
	// BodyFunc, when set, produces the request body by appending it to dst,
	// in place of Body; sinks built on this one (slack) use it. Its errors
	// are permanent.
	BodyFunc func(dst []byte, ev *sinks.Event) ([]byte, error) `yaml:"-"`
	// SecretPath hides the URL's path too in errors, for endpoints whose path
	// is the credential (Slack incoming webhooks).
	SecretPath bool `yaml:"-"`
}

// Sign is the key requests are signed with.
type Sign struct {
	// Secret is the signing key: a "whsec_" prefix means the rest is the
	// base64 key; otherwise the string's bytes are the key.
	Secret string `yaml:"secret"`
	// Secrets are several keys, for rotation: each request carries one
	// "v1," signature per key, as the Standard Webhooks spec allows, so a
	// receiver that knows any of them accepts it. Either Secret or Secrets.
	Secrets []string `yaml:"secrets"`
}

// keys returns the signing secrets: Secrets, or Secret alone.
func (s *Sign) keys() []string {
	if s.Secrets != nil {
		return s.Secrets
	}
	return []string{s.Secret}
}

var _ sinks.Config = (*Config)(nil)

// reserved are headers hookrouter sets itself or the transport owns.
var reserved = []string{
	"Host", "Content-Length", "Transfer-Encoding", "Connection", "User-Agent",
	"X-Hookrouter-Event-Id", "Webhook-Id", "Webhook-Timestamp", "Webhook-Signature",
}

// Default implements sinks.Config.
func (c *Config) Default() {
	switch m := strings.ToUpper(c.Method); {
	case m == "":
		c.Method = DefaultMethod
	case validMethod(m):
		c.Method = m // an invalid one stays as written, for Validate to quote
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
}

func validMethod(m string) bool {
	return m == fasthttp.MethodPost || m == fasthttp.MethodPut || m == fasthttp.MethodPatch
}

// Validate implements sinks.Config. Header values and Body are parsed by New.
func (c *Config) Validate() []sinks.FieldError {
	var errs []sinks.FieldError
	if c.URL == "" || strings.TrimSpace(c.URL) == "" {
		errs = append(errs, sinks.Required("url", "required: the URL http sinks deliver to"))
	} else if msg := URLProblem(c.URL); msg != "" {
		errs = append(errs, sinks.Errorf("url", "%s", msg))
	}
	if !validMethod(c.Method) {
		errs = append(errs, sinks.Errorf("method", "method %q is not supported (use POST, PUT or PATCH)", c.Method))
	}
	errs = append(errs, checkHeaders(c.Headers)...)
	if c.Timeout < 0 {
		errs = append(errs, sinks.Errorf("timeout", "must be positive"))
	}
	if c.Sign != nil {
		switch {
		case c.Sign.Secret != "" && c.Sign.Secrets != nil:
			errs = append(errs, sinks.Errorf("sign.secrets", "give sign.secret or sign.secrets, not both"))
		case c.Sign.Secrets != nil:
			if len(c.Sign.Secrets) == 0 {
				errs = append(errs, sinks.Required("sign.secrets", "required: signing needs at least one secret"))
			}
			for i, sec := range c.Sign.Secrets {
				field := fmt.Sprintf("sign.secrets[%d]", i)
				if strings.TrimSpace(sec) == "" {
					errs = append(errs, sinks.Required(field, "secret is empty"))
				} else if _, err := signingKey(sec); err != nil {
					errs = append(errs, sinks.Errorf(field, "%v", err))
				}
			}
		case strings.TrimSpace(c.Sign.Secret) == "":
			errs = append(errs, sinks.Required("sign.secret", "required: signing needs a secret"))
		default:
			if _, err := signingKey(c.Sign.Secret); err != nil {
				errs = append(errs, sinks.Errorf("sign.secret", "%v", err))
			}
		}
	}
	return errs
}

// Build implements sinks.Config: the pool holds two connections per worker,
// and at least DefaultMaxConns.
func (c *Config) Build(env sinks.Env) (sinks.Sink, error) {
	cfg := *c
	cfg.Version = env.Version
	cfg.MaxConns = max(env.Workers*2, DefaultMaxConns)
	return New(cfg, env.Log)
}

// URLProblem says what is wrong with raw as an endpoint, "" if nothing. The
// answer never quotes the URL, which may carry credentials.
func URLProblem(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			// url.Error repeats the whole URL, credentials included.
			return "not a valid URL: " + ue.Err.Error()
		}
		return "not a valid URL: cannot be parsed"
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "must be a URL starting with http:// or https://"
	}
	if u.Host == "" {
		return "must name a host, such as https://example.com/hook"
	}
	return ""
}

// checkHeaders checks header names: valid, not one hookrouter sets, and not
// given twice in different cases. Values are templates, parsed by New.
func checkHeaders(headers map[string]string) []sinks.FieldError {
	names := make([]string, 0, len(headers))
	for name := range headers {
		names = append(names, name)
	}
	slices.Sort(names)
	var errs []sinks.FieldError
	seen := map[string]string{}
	for _, name := range names {
		field := "headers." + name
		if !validHeaderName(name) {
			errs = append(errs, sinks.Errorf(field, "%q is not a valid HTTP header name", name))
			continue
		}
		canon := string(fasthttp.AppendNormalizedHeaderKey(nil, name))
		if slices.ContainsFunc(reserved, func(r string) bool { return strings.EqualFold(canon, r) }) {
			errs = append(errs, sinks.Errorf(field, "set by hookrouter, cannot be configured"))
			continue
		}
		lower := strings.ToLower(name)
		if other, dup := seen[lower]; dup {
			errs = append(errs, sinks.Errorf(field, "header %q is also given as %q (header names ignore case)", name, other))
			continue
		}
		seen[lower] = name
	}
	return errs
}

// signingKey decodes a signing secret: "whsec_" then base64, or else the
// string's bytes.
func signingKey(secret string) ([]byte, error) {
	enc, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return []byte(secret), nil
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(key) == 0 {
		// The decoder's error quotes an offset only, but say less: this is a
		// secret.
		return nil, fmt.Errorf("not valid base64 after whsec_")
	}
	return key, nil
}
