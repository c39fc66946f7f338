// Package auth checks that a webhook request comes from the configured sender,
// before its body is parsed.
//
// Every secret comparison is constant-time and compares fixed-size digests, so
// neither the secret's content nor its length shows in how long a rejection
// takes. Verifiers do not depend on the HTTP server: they read headers through
// the one-method Headers interface, which *fasthttp.RequestHeader satisfies.
package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"
)

// The authentication types a source can declare (config: sources[].auth.type).
const (
	TypeHeader           = "header"
	TypeBearer           = "bearer"
	TypeHMACSHA256       = "hmac-sha256"
	TypeStandardWebhooks = "standard-webhooks"
	TypeNone             = "none"
)

// Standard Webhooks header names.
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// Headers gives read access to a request's headers; names are matched
// case-insensitively and a missing header reads as empty.
// *fasthttp.RequestHeader implements it.
type Headers interface {
	Peek(name string) []byte
}

// Verifier decides whether a request is authentic. Verify is safe for
// concurrent use and must not retain h or body.
type Verifier interface {
	Verify(h Headers, body []byte) bool
	// ReadsBody reports whether Verify needs the body. When it does not
	// (header, bearer, none), ingress decides before reading the body, so
	// a stranger's body is never buffered; it then passes a nil body.
	ReadsBody() bool
}

// Option tunes a Verifier built by New.
type Option func(*options)

type options struct {
	now func() time.Time
}

// WithClock sets the clock standard-webhooks timestamps are checked against
// (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// New builds the verifier cfg describes. It fails on an unknown type, a
// missing secret, or a malformed standard-webhooks secret.
func New(cfg Config, opts ...Option) (Verifier, error) {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	secrets := cfg.AllSecrets()
	if cfg.Type != TypeNone {
		if len(secrets) == 0 {
			return nil, fmt.Errorf("auth %s: secret is empty", cfg.Type)
		}
		for _, sec := range secrets {
			if sec == "" {
				return nil, fmt.Errorf("auth %s: a secret is empty", cfg.Type)
			}
		}
	}
	switch cfg.Type {
	case TypeHeader:
		return &headerVerifier{name: or(cfg.Header, DefaultHeader), digests: digests(secrets)}, nil
	case TypeBearer:
		return &bearerVerifier{name: or(cfg.Header, DefaultHeader), digests: digests(secrets)}, nil
	case TypeHMACSHA256:
		v := &hmacVerifier{name: or(cfg.Header, DefaultSignatureHeader)}
		for _, sec := range secrets {
			v.macs = append(v.macs, newMACPool([]byte(sec)))
		}
		return v, nil
	case TypeStandardWebhooks:
		tol := cfg.Tolerance
		switch {
		case tol < 0:
			return nil, fmt.Errorf("auth %s: tolerance %v is negative", cfg.Type, tol)
		case tol == 0:
			tol = DefaultTolerance
		}
		v := &standardWebhooksVerifier{tolerance: tol, now: o.now}
		for _, sec := range secrets {
			key, err := webhookKey(sec)
			if err != nil {
				return nil, err
			}
			v.macs = append(v.macs, newMACPool(key))
		}
		return v, nil
	case TypeNone:
		return noneVerifier{}, nil
	case "":
		return nil, errors.New("auth type is empty")
	default:
		return nil, fmt.Errorf("auth type %q is unknown (want header, bearer, hmac-sha256, standard-webhooks or none)", cfg.Type)
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// webhookKey decodes a Standard Webhooks secret: "whsec_" then base64, or,
// without the prefix, the raw bytes of the string.
func webhookKey(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return []byte(secret), nil
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		if key, err = base64.RawStdEncoding.DecodeString(b64); err != nil {
			// The decoder's error would quote a position in the secret only,
			// but say nothing of the secret itself anyway.
			return nil, errors.New("auth standard-webhooks: secret after whsec_ is not valid base64")
		}
	}
	if len(key) == 0 {
		return nil, errors.New("auth standard-webhooks: secret after whsec_ is empty")
	}
	return key, nil
}

func digests(secrets []string) [][sha256.Size]byte {
	out := make([][sha256.Size]byte, len(secrets))
	for i, sec := range secrets {
		out[i] = sha256.Sum256([]byte(sec))
	}
	return out
}

// equalDigest reports whether v is one of the secrets whose SHA-256 digests
// are wants. Hashing v first makes each comparison fixed-size: the duration
// depends on len(v), which the sender chose, and on how many secrets there
// are, never on their content or length. Every digest is compared, so the
// time does not tell which one matched.
func equalDigest(v []byte, wants [][sha256.Size]byte) bool {
	got := sha256.Sum256(v)
	ok := 0
	for i := range wants {
		ok |= subtle.ConstantTimeCompare(got[:], wants[i][:])
	}
	return ok == 1
}

// headerVerifier accepts a request whose header carries the bare secret, as
// the messaging platform sends it in Authorization.
type headerVerifier struct {
	name    string
	digests [][sha256.Size]byte
}

func (*headerVerifier) ReadsBody() bool { return false }

func (v *headerVerifier) Verify(h Headers, _ []byte) bool {
	return equalDigest(h.Peek(v.name), v.digests)
}

// bearerVerifier accepts "Authorization: Bearer <secret>"; the scheme is
// case-insensitive (RFC 9110 §11.1).
type bearerVerifier struct {
	name    string
	digests [][sha256.Size]byte
}

func (*bearerVerifier) ReadsBody() bool { return false }

func (v *bearerVerifier) Verify(h Headers, _ []byte) bool {
	token, ok := cutPrefixFold(h.Peek(v.name), "bearer ")
	// The digest is compared even without the scheme, so that both
	// rejections take the same time.
	return equalDigest(trimSpace(token), v.digests) && ok
}

// hmacVerifier accepts a request whose header carries the HMAC-SHA256 of the
// raw body, hex or base64, with an optional "sha256=" prefix.
type hmacVerifier struct {
	name string
	macs []*macPool // one per accepted secret
}

func (*hmacVerifier) ReadsBody() bool { return true }

func (v *hmacVerifier) Verify(h Headers, body []byte) bool {
	sig, _ := cutPrefixFold(trimSpace(h.Peek(v.name)), "sha256=")
	var want [sha256.Size]byte
	if !decodeSignature(sig, &want) {
		return false
	}
	// Every key is tried, so the time does not tell which one matched.
	matched := false
	for _, mp := range v.macs {
		m := mp.get()
		m.h.Write(body)
		if hmac.Equal(m.h.Sum(m.sum[:0]), want[:]) {
			matched = true
		}
		mp.put(m)
	}
	return matched
}

// decodeSignature decodes a 32-byte signature written in hex (64 characters)
// or base64 (standard or URL alphabet, padded or not) into dst. The length
// tells the encodings apart: 64 characters of base64 would be 48 bytes.
func decodeSignature(sig []byte, dst *[sha256.Size]byte) bool {
	switch len(sig) {
	case hex.EncodedLen(sha256.Size):
		n, err := hex.Decode(dst[:], sig)
		return err == nil && n == sha256.Size
	default:
		return decodeBase64(sig, dst)
	}
}

// decodeBase64 decodes a 32-byte value in any of the four base64 variants.
func decodeBase64(s []byte, dst *[sha256.Size]byte) bool {
	var buf [sha256.Size + 3]byte // DecodedLen of 44 characters is 33
	var enc *base64.Encoding
	switch len(s) {
	case base64.StdEncoding.EncodedLen(sha256.Size):
		enc = base64.StdEncoding
	case base64.RawStdEncoding.EncodedLen(sha256.Size):
		enc = base64.RawStdEncoding
	default:
		// Checked first: Decode panics if buf is too small for s.
		return false
	}
	n, err := enc.Decode(buf[:], s)
	if err != nil {
		urlEnc := base64.URLEncoding
		if enc == base64.RawStdEncoding {
			urlEnc = base64.RawURLEncoding
		}
		n, err = urlEnc.Decode(buf[:], s)
	}
	if err != nil || n != sha256.Size {
		return false
	}
	copy(dst[:], buf[:n])
	return true
}

// standardWebhooksVerifier implements the Standard Webhooks scheme: the
// signed content is "<webhook-id>.<webhook-timestamp>.<body>", the signature
// header a space-separated list of "v1,<base64>" of which one must match, and
// the timestamp must be within the tolerance of now, which bounds replays.
type standardWebhooksVerifier struct {
	macs      []*macPool // one per accepted secret
	tolerance time.Duration
	now       func() time.Time
}

func (*standardWebhooksVerifier) ReadsBody() bool { return true }

func (v *standardWebhooksVerifier) Verify(h Headers, body []byte) bool {
	id, ts, sigs := h.Peek(HeaderWebhookID), h.Peek(HeaderWebhookTimestamp), h.Peek(HeaderWebhookSignature)
	if len(id) == 0 || len(sigs) == 0 {
		return false
	}
	sec, ok := parseUnix(ts)
	if !ok {
		return false
	}
	age := v.now().Sub(time.Unix(sec, 0))
	if age > v.tolerance || age < -v.tolerance {
		return false
	}

	// Every key and every listed signature is checked, so the time taken
	// does not tell which one matched.
	matched := false
	for _, mp := range v.macs {
		m := mp.get()
		m.h.Write(id)
		m.h.Write(dot)
		m.h.Write(ts)
		m.h.Write(dot)
		m.h.Write(body)
		mac := m.h.Sum(m.sum[:0])
		for rest := sigs; len(rest) > 0; {
			var sig []byte
			sig, rest = cutSpace(rest)
			b64, isV1 := cutPrefixFold(sig, "v1,")
			var want [sha256.Size]byte
			if isV1 && decodeBase64(b64, &want) && hmac.Equal(mac, want[:]) {
				matched = true
			}
		}
		mp.put(m)
	}
	return matched
}

var dot = []byte{'.'}

// parseUnix parses a decimal count of seconds; at most 18 digits, so it cannot
// overflow.
func parseUnix(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

type noneVerifier struct{}

func (noneVerifier) Verify(Headers, []byte) bool { return true }

func (noneVerifier) ReadsBody() bool { return false }

// macPool reuses HMAC states, whose creation allocates, across requests.
type macPool struct{ p sync.Pool }

type macState struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

func newMACPool(key []byte) *macPool {
	key = append([]byte(nil), key...)
	mp := &macPool{}
	mp.p.New = func() any { return &macState{h: hmac.New(sha256.New, key)} }
	return mp
}

func (mp *macPool) get() *macState {
	m := mp.p.Get().(*macState)
	m.h.Reset()
	return m
}

func (mp *macPool) put(m *macState) { mp.p.Put(m) }

// cutPrefixFold removes an ASCII prefix matched case-insensitively.
func cutPrefixFold(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) {
		return b, false
	}
	for i := range len(prefix) {
		if lower(b[i]) != prefix[i] {
			return b, false
		}
	}
	return b[len(prefix):], true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// cutSpace returns the first space-separated field of b and the rest.
func cutSpace(b []byte) (field, rest []byte) {
	b = trimSpace(b)
	for i, c := range b {
		if c == ' ' || c == '\t' {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}
