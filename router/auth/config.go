package auth

import (
	"fmt"
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// Defaults applied when the config leaves a field empty.
const (
	DefaultHeader          = "Authorization"
	DefaultSignatureHeader = "X-Signature"
	DefaultTolerance       = 5 * time.Minute
)

// types lists the authentication types, in the order problems list them.
func types() []string {
	return []string{TypeHeader, TypeBearer, TypeHMACSHA256, TypeStandardWebhooks, TypeNone}
}

// Config says how a source authenticates its sender: the keys of a source's
// auth section in the config file.
type Config struct {
	// Type is header | bearer | hmac-sha256 | standard-webhooks | none.
	Type string `yaml:"type"`
	// Header names the header carrying the secret (header) or the signature
	// (hmac-sha256). Default Authorization for header, X-Signature for
	// hmac-sha256.
	Header string `yaml:"header"`
	Secret string `yaml:"secret"`
	// Secrets are several secrets, any of which is accepted, for rotation:
	// [NEW, OLD] while senders move to NEW. Either Secret or Secrets.
	Secrets []string `yaml:"secrets"`
	// Tolerance bounds the age of a standard-webhooks timestamp. Default 5m.
	Tolerance time.Duration `yaml:"tolerance"`
}

// Default sets the fields left zero that c's type uses to their defaults.
func (c *Config) Default() {
	switch c.Type {
	case TypeHeader:
		if c.Header == "" {
			c.Header = DefaultHeader
		}
	case TypeHMACSHA256:
		if c.Header == "" {
			c.Header = DefaultSignatureHeader
		}
	case TypeStandardWebhooks:
		if c.Tolerance == 0 {
			c.Tolerance = DefaultTolerance
		}
	}
}

// Validate reports every problem of a defaulted c. A field that c's type does
// not use is a problem: Default fills only the ones it uses.
func (c *Config) Validate() []sinks.FieldError {
	if c.Type == "" {
		return []sinks.FieldError{sinks.Required("type", "required: how the source authenticates its sender, one of "+strings.Join(types(), ", "))}
	}
	switch c.Type {
	case TypeHeader, TypeBearer, TypeHMACSHA256, TypeStandardWebhooks, TypeNone:
	default:
		return []sinks.FieldError{sinks.NotOneOf("type", "auth type", c.Type, types()...)}
	}
	var errs []sinks.FieldError
	if c.Header != "" && c.Type != TypeHeader && c.Type != TypeHMACSHA256 {
		errs = append(errs, notFor("header", c.Type, "only header and hmac-sha256 auth read a header of your choice"))
	}
	if c.Tolerance != 0 && c.Type != TypeStandardWebhooks {
		errs = append(errs, notFor("tolerance", c.Type, "only standard-webhooks auth checks a timestamp"))
	}
	if c.Header != "" && !isToken(c.Header) {
		errs = append(errs, sinks.Errorf("header", "%q is not a valid HTTP header name", c.Header))
	}
	switch {
	case c.Type == TypeNone && c.Secret != "":
		errs = append(errs, sinks.Errorf("secret", "auth type none takes no secret: remove it, or choose the auth type that uses it"))
	case c.Type == TypeNone && c.Secrets != nil:
		errs = append(errs, sinks.Errorf("secrets", "auth type none takes no secrets: remove them, or choose the auth type that uses them"))
	case c.Secret != "" && c.Secrets != nil:
		errs = append(errs, sinks.Errorf("secrets", "give secret or secrets, not both: list every accepted secret under secrets"))
	case c.Type != TypeNone && c.Secrets != nil:
		if len(c.Secrets) == 0 {
			errs = append(errs, sinks.Required("secrets", fmt.Sprintf("required: %s auth needs at least one secret", c.Type)))
		}
		for i, sec := range c.Secrets {
			if strings.TrimSpace(sec) == "" {
				errs = append(errs, sinks.Required(fmt.Sprintf("secrets[%d]", i), "secret is empty"))
			}
		}
	case c.Type != TypeNone && strings.TrimSpace(c.Secret) == "":
		errs = append(errs, sinks.Required("secret", fmt.Sprintf("required: %s auth needs a secret", c.Type)))
	}
	return errs
}

// AllSecrets returns the accepted secrets: Secrets, or Secret alone.
func (c *Config) AllSecrets() []string {
	if c.Secrets != nil {
		return c.Secrets
	}
	if c.Secret == "" {
		return nil
	}
	return []string{c.Secret}
}

// notFor is the problem of a field that type typ does not use.
func notFor(field, typ, why string) sinks.FieldError {
	return sinks.Errorf(field, "does not apply to auth type %s (%s)", typ, why)
}

// isToken reports whether s is an HTTP token, as header names must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
