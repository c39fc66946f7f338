// Package admin serves hookrouter's admin listener (admin_listen): the
// operator's API, the console, /metrics and the profiler, on net/http.
//
// Every endpoint is one Route in one table, and every Route names its Access
// rule: Handler refuses a route without one, so a new endpoint cannot forget
// its guard. The guard runs before the route's handler and does not wrap the
// http.ResponseWriter, so handlers keep http.Flusher (server-sent events) and
// the other optional interfaces.
package admin

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Access is the rule a route's requests must satisfy.
type Access int

const (
	// Public routes answer without credentials. Only for what a user needs
	// before logging in (the console's login form and its stylesheet).
	Public Access = iota + 1
	// Operator routes need the admin token when admin.token is set: either
	// "Authorization: Bearer TOKEN" or the console's session cookie.
	// Without a token they are open to whoever reaches admin_listen
	// (by default 127.0.0.1 only).
	Operator
)

func (a Access) String() string {
	switch a {
	case Public:
		return "public"
	case Operator:
		return "operator"
	}
	return fmt.Sprintf("Access(%d)", int(a))
}

// Route is one admin endpoint.
type Route struct {
	// Pattern is an http.ServeMux pattern, with its method:
	// "POST /-/reload", "GET /-/events/{id}". The mux answers 405 with
	// Allow for another method.
	Pattern string
	Access  Access
	Handler http.Handler
}

// SessionCookie is the name of the console's login cookie. Its value is
// Guard.SessionValue, never the token itself.
const SessionCookie = "hookrouter_session"

// Guard decides whether a request carries the admin token. The token is
// read on every request, so a reload that changes admin.token applies at
// once.
type Guard struct {
	token func() string
}

// NewGuard returns a guard for the token that token returns; "" means no
// token is configured and every request is let through.
func NewGuard(token func() string) *Guard { return &Guard{token: token} }

// Enabled reports whether a token is configured.
func (g *Guard) Enabled() bool { return g.token() != "" }

// Allowed reports whether r carries the token, as a Bearer credential or as
// the session cookie. Both comparisons are constant-time over fixed-size
// digests, so neither the token nor its length shows in timing.
func (g *Guard) Allowed(r *http.Request) bool {
	tok := g.token()
	if tok == "" {
		return true
	}
	okBearer := false
	if cred, found := cutPrefixFold(r.Header.Get("Authorization"), "Bearer "); found {
		okBearer = equal(strings.TrimSpace(cred), tok)
	}
	okCookie := false
	if c, err := r.Cookie(SessionCookie); err == nil {
		okCookie = equal(c.Value, sessionValue(tok))
	}
	return okBearer || okCookie
}

// TokenMatches reports, in constant time, whether s is the admin token (the
// console's login form checks what the user typed with it). It is false
// when no token is configured.
func (g *Guard) TokenMatches(s string) bool {
	tok := g.token()
	return tok != "" && equal(s, tok)
}

// SessionValue is the value of the session cookie for the token in force:
// an HMAC of a fixed label under the token, so the cookie does not carry the
// token, and changing the token logs every session out. "" without a token.
func (g *Guard) SessionValue() string {
	tok := g.token()
	if tok == "" {
		return ""
	}
	return sessionValue(tok)
}

func sessionValue(tok string) string {
	m := hmac.New(sha256.New, []byte(tok))
	m.Write([]byte("hookrouter console session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// equal compares a and b in constant time over their SHA-256 digests, so the
// time taken does not depend on the secret's length either.
func equal(a, b string) bool {
	da, db := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(da[:], db[:]) == 1
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// Options tunes Handler.
type Options struct {
	// Unauthorized answers a request the guard refused; default
	// Unauthorized (401 JSON). The console may answer its pages with a
	// redirect to its login form instead.
	Unauthorized http.Handler
}

// Handler serves routes behind g. Every route must name its Access, and
// patterns must be valid and distinct: Handler returns an error otherwise
// (and a test of the real table catches it).
//
// A request that matches no route (404, 405) is treated as Operator, so a
// stranger cannot even learn which paths exist. State-changing requests
// from another origin are refused (http.CrossOriginProtection), so the
// console's cookie cannot be used by a cross-site form.
func Handler(routes []Route, g *Guard, opts Options) (http.Handler, error) {
	mux := http.NewServeMux()
	access := make(map[string]Access, len(routes))
	for _, rt := range routes {
		if rt.Access != Public && rt.Access != Operator {
			return nil, fmt.Errorf("admin route %q has no access rule", rt.Pattern)
		}
		if rt.Handler == nil {
			return nil, fmt.Errorf("admin route %q has no handler", rt.Pattern)
		}
		if _, dup := access[rt.Pattern]; dup {
			return nil, fmt.Errorf("admin route %q is registered twice", rt.Pattern)
		}
		if err := register(mux, rt); err != nil {
			return nil, err
		}
		access[rt.Pattern] = rt.Access
	}
	denied := opts.Unauthorized
	if denied == nil {
		denied = http.HandlerFunc(Unauthorized)
	}
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.Enabled() && rebound(r) {
			JSON(w, http.StatusForbidden, bodyRebound)
			return
		}
		_, pattern := mux.Handler(r)
		if access[pattern] != Public && !g.Allowed(r) {
			denied.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
	return http.NewCrossOriginProtection().Handler(h), nil
}

var bodyRebound = []byte(`{"error":"Forbidden","detail":"without admin.token, the admin listener on a loopback address answers only requests addressed to an IP address or localhost"}`)

// rebound reports whether r reached a loopback listener under a name other
// than localhost. Without a token, loopback is the admin listener's only
// protection, and DNS rebinding gets around it: a page on another site
// points its own name at 127.0.0.1, so that the browser, seeing one origin,
// lets it send requests (a POST /-/replay) and read the answers. Its Host is
// still that name. Tools on the host address it as 127.0.0.1 or localhost.
func rebound(r *http.Request) bool {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	tcp, _ := local.(*net.TCPAddr)
	if tcp == nil || !tcp.IP.IsLoopback() {
		return false
	}
	host := r.Host
	if host == "" {
		return false // HTTP/1.0 without Host: not a browser
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if _, err := netip.ParseAddr(host); err == nil {
		return false
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return host != "localhost" && !strings.HasSuffix(host, ".localhost")
}

// register adds rt to mux, turning the mux's panic on a bad or conflicting
// pattern into an error.
func register(mux *http.ServeMux, rt Route) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("admin route %q: %v", rt.Pattern, p)
		}
	}()
	mux.Handle(rt.Pattern, rt.Handler)
	return nil
}

// Unauthorized answers 401 {"error":"Unauthorized"}, asking for a Bearer
// token.
func Unauthorized(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="hookrouter admin"`)
	JSON(w, http.StatusUnauthorized, []byte(`{"error":"Unauthorized"}`))
}

// JSON writes a JSON answer.
func JSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(body)
}
