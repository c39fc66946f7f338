package sinks

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrClosed is returned (wrapped) by Send on a sink that has been closed. It
// is retryable: the delivery belongs to whichever sink instance replaced this
// one, for example after a reload.
var ErrClosed = errors.New("sink closed")

// permanentError marks a failure that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that the dispatcher dead-letters the delivery at once
// instead of retrying it, and the breaker does not count it as a failure of
// the destination. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err (or anything it wraps) was marked Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// retryAfterError is a retryable failure with a minimum wait before the next try.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// RetryAfter wraps a retryable err with the delay the destination asked for
// (for example from a Retry-After header). The dispatcher waits at least that
// long before the next attempt.
func RetryAfter(err error, after time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryAfterError{err: err, after: after}
}

// RetryAfterOf returns the delay requested by a RetryAfter error in err's chain.
func RetryAfterOf(err error) (time.Duration, bool) {
	var r *retryAfterError
	if errors.As(err, &r) {
		return r.after, true
	}
	return 0, false
}

// StatusError is an unsuccessful HTTP answer from a destination.
type StatusError struct {
	Code int
	// Snippet is the start of the response body, for the dead-letter record.
	Snippet string
}

func (e *StatusError) Error() string {
	if e.Snippet == "" {
		return fmt.Sprintf("http status %d", e.Code)
	}
	return fmt.Sprintf("http status %d: %s", e.Code, e.Snippet)
}

// CheckStatus is the single classification of HTTP answers, shared by every
// HTTP-speaking sink: 2xx is success (nil); 408, 429 and 5xx are retryable,
// honouring a Retry-After header given in seconds or as an HTTP date; any
// other status is permanent. body may be nil; at most 200 bytes of it are kept.
func CheckStatus(code int, retryAfter string, body []byte) error {
	if code >= 200 && code < 300 {
		return nil
	}
	err := &StatusError{Code: code, Snippet: snippet(body)}
	switch {
	case code == 408 || code == 429 || code >= 500:
		if d, ok := ParseRetryAfter(retryAfter, time.Now()); ok {
			return RetryAfter(err, d)
		}
		return err
	default:
		return Permanent(err)
	}
}

// ParseRetryAfter parses a Retry-After header value: delay-seconds or an
// HTTP-date. It reports false for an empty or malformed value.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	if t, err := time.Parse(time.RFC1123, v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d, true
		}
		return 0, true
	}
	return 0, false
}

func snippet(body []byte) string {
	body = bytes.TrimSpace(body)
	if len(body) > 200 {
		body = body[:200]
	}
	return string(bytes.ToValidUTF8(body, []byte("?")))
}

// RedactURL returns u with any user:password removed and the query string
// replaced, so that it can appear in errors and logs. Slack webhook URLs carry
// their secret in the path; use RedactPath for those.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable url)"
	}
	if p.User != nil {
		p.User = url.User("REDACTED")
	}
	if p.RawQuery != "" {
		p.RawQuery = "REDACTED"
	}
	return p.String()
}

// RedactPath returns only the scheme and host of u, for URLs whose path is a
// secret (such as Slack incoming webhooks).
func RedactPath(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable url)"
	}
	return p.Scheme + "://" + p.Host + "/REDACTED"
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// Scrubbed returns an error whose text is msg with every non-empty secret
// in it replaced by REDACTED, for a client library's error that may quote
// a password or token; errors.Is and errors.As still see err.
func Scrubbed(err error, msg string, secrets ...string) error {
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "REDACTED")
		}
	}
	return &scrubbedError{err: err, msg: msg}
}

type scrubbedError struct {
	err error
	msg string
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }
