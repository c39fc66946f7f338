package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/router/admin"
)

// csrfCookie holds a random value per browser; a form's CSRF token is an
// HMAC of it under the console's key. A page from another origin can neither
// read the token nor compute it, and a cookie planted by a neighbour on the
// same host (cookies do not separate ports) is useless without the key.
const csrfCookie = "hookrouter_csrf"

// csrfField is the form field that carries the token.
const csrfField = "csrf"

// sessionLifetime is how long a login lasts in the browser. The cookie's
// value does not expire by itself: changing admin.token logs every session
// out.
const sessionLifetime = 12 * time.Hour

// csrfToken returns the CSRF token for r's browser, giving it a CSRF cookie
// first if it has none.
func (c *Console) csrfToken(w http.ResponseWriter, r *http.Request) string {
	v := ""
	if ck, err := r.Cookie(csrfCookie); err == nil && len(ck.Value) >= 16 {
		v = ck.Value
	} else {
		b := make([]byte, 18)
		rand.Read(b)
		v = base64.RawURLEncoding.EncodeToString(b)
		http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: v, Path: "/", HttpOnly: true,
			SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
		// The request being answered uses the token too.
		r.AddCookie(&http.Cookie{Name: csrfCookie, Value: v})
	}
	return c.sign(v)
}

func (c *Console) sign(v string) string {
	m := hmac.New(sha256.New, c.csrfKey)
	m.Write([]byte("csrf:" + v))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF reports whether r's form carries the token for r's CSRF
// cookie, answering 403 when it does not.
func (c *Console) checkCSRF(w http.ResponseWriter, r *http.Request) bool {
	ck, err := r.Cookie(csrfCookie)
	if err == nil && hmac.Equal([]byte(r.PostFormValue(csrfField)), []byte(c.sign(ck.Value))) {
		return true
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusForbidden)
	w.Write([]byte("Forbidden: this form is stale or came from another site. Load the page again and retry.\n"))
	return false
}

type loginData struct {
	Next    string
	Failed  bool
	NoToken bool
}

func (c *Console) loginForm(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "login", page{Title: "Log in", Data: loginData{
		Next: safeNext(r.URL.Query().Get("next")), NoToken: !c.guard.Enabled()}})
}

// login checks the token typed into the form and, when it is the admin
// token, sets the session cookie the admin guard accepts.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if !c.checkCSRF(w, r) {
		return
	}
	next := safeNext(r.PostFormValue("next"))
	if !c.guard.TokenMatches(r.PostFormValue("token")) {
		c.log.Warn("console login refused", "remote", r.RemoteAddr)
		c.render(w, r, http.StatusUnauthorized, "login", page{Title: "Log in", Data: loginData{Next: next, Failed: true}})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: admin.SessionCookie, Value: c.guard.SessionValue(), Path: "/",
		MaxAge: int(sessionLifetime.Seconds()), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if !c.checkCSRF(w, r) {
		return
	}
	http.SetCookie(w, &http.Cookie{Name: admin.SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// safeNext keeps a post-login destination on this console: a path, never
// another host ("//evil", "/\evil", "https://…").
func safeNext(s string) string {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.HasPrefix(s, "/\\") || strings.ContainsAny(s, "\r\n") {
		return "/"
	}
	return s
}

// noticeCookie carries what a replay did to the event page it redirects to
// (post, redirect, get: reloading the page does not replay again). It is a
// cookie, not a query parameter, so that a link cannot make the console say
// what its author wants; it is signed with the console's key, so that a
// neighbour on the same host (cookies do not separate ports) cannot either.
const noticeCookie = "hookrouter_notice"

func (c *Console) setNotice(w http.ResponseWriter, r *http.Request, id, text string) {
	v := base64.RawURLEncoding.EncodeToString([]byte(id + "\n" + text))
	http.SetCookie(w, &http.Cookie{Name: noticeCookie, Value: v + "." + c.sign("notice:"+v), Path: "/events/",
		MaxAge: 60, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}

// takeNotice returns the notice left for event id's page, and clears it.
func (c *Console) takeNotice(w http.ResponseWriter, r *http.Request, id string) string {
	ck, err := r.Cookie(noticeCookie)
	if err != nil {
		return ""
	}
	http.SetCookie(w, &http.Cookie{Name: noticeCookie, Value: "", Path: "/events/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	v, mac, _ := strings.Cut(ck.Value, ".")
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || !hmac.Equal([]byte(mac), []byte(c.sign("notice:"+v))) {
		return ""
	}
	forID, text, _ := strings.Cut(string(b), "\n")
	if forID != id {
		return ""
	}
	return text
}
