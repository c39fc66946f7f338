// Package console is the operator console: HTML pages on the admin
// listener, rendered on the server with html/template from files embedded
// in the binary, with plain CSS and a little plain JavaScript. Nothing is
// built with Node and nothing is loaded from the network.
//
// The console reads the router through Backend (package router implements
// it; the console never imports package router) and adds its routes to the
// admin listener's route table, so the admin guard (package admin) decides
// who may see a page. The console adds its login form, whose cookie the
// guard accepts, and a CSRF token on every form that changes something.
//
// Every value that comes from an event is written by html/template (which
// escapes it) or, in live mode, set with textContent; no payload ever goes
// into a URL.
package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hookrouter/hookrouter/router/admin"
	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/dryrun"
	"github.com/hookrouter/hookrouter/router/journal"
	"github.com/hookrouter/hookrouter/router/rules"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// Backend is the router as the console sees it.
type Backend interface {
	// Health returns the admin listener's /health document. The console
	// reads it by its JSON field names — the ones the spec documents — so
	// it shows what operators and scripts see, whatever the Go type.
	Health() any
	// Metrics gathers the router's metrics (events by source, rejections
	// by reason, rule matches, journal drops).
	Metrics() prometheus.Gatherer
	// Config returns the config in force.
	Config() *config.File
	// Test is `hookrouter test -explain` with the config in force: no
	// network, no writes.
	Test(source string, h rules.Headers, body []byte) (*dryrun.Report, error)
	// Journal is the router's journal, nil when journal.enabled is false.
	Journal() *journal.Journal
	// ReplayEvent re-queues a journaled event to sink, or to all its
	// sinks when sink is "", as POST /-/events/{id}/replay does. It
	// returns the sinks it re-queued to and those it left alone, with why.
	ReplayEvent(ctx context.Context, id, sink string) (requeued []string, skipped map[string]string, err error)
}

// Options configure a Console.
type Options struct {
	Backend Backend
	// Guard is the admin listener's guard: the login form checks the token
	// with it and sets the session cookie it accepts.
	Guard *admin.Guard
	Log   *slog.Logger
	// SampleEvery is how often the overview's rates and bars are sampled;
	// default 10s.
	SampleEvery time.Duration
}

// Console serves the console pages. Create it with New, add Routes to the
// admin route table, and Close it when the router stops.
type Console struct {
	b     Backend
	guard *admin.Guard
	log   *slog.Logger
	pages map[string]*template.Template
	// csrfKey signs CSRF tokens; a new one each start, so a form left open
	// across a restart is refused and the page has to be loaded again.
	csrfKey []byte

	hist    *history
	stop    chan struct{}
	stopped sync.WaitGroup
	once    sync.Once
}

// New creates a Console and starts sampling the router for the overview.
func New(opts Options) (*Console, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.SampleEvery <= 0 {
		opts.SampleEvery = 10 * time.Second
	}
	c := &Console{b: opts.Backend, guard: opts.Guard, log: opts.Log, pages: map[string]*template.Template{},
		csrfKey: make([]byte, 32), hist: newHistory(opts.SampleEvery, historyLen), stop: make(chan struct{})}
	rand.Read(c.csrfKey)
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, err
		}
		c.pages[name] = t
	}
	c.hist.add(c.sample())
	c.stopped.Add(1)
	go c.sampleLoop(opts.SampleEvery)
	return c, nil
}

// Close stops the sampling.
func (c *Console) Close() {
	c.once.Do(func() { close(c.stop) })
	c.stopped.Wait()
}

func (c *Console) sampleLoop(every time.Duration) {
	defer c.stopped.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.hist.add(c.sample())
		}
	}
}

// Routes are the console's entries for the admin route table.
func (c *Console) Routes() []admin.Route {
	op, pub := admin.Operator, admin.Public
	h := func(f func(http.ResponseWriter, *http.Request)) http.Handler { return c.headers(http.HandlerFunc(f)) }
	assets, _ := fs.Sub(assetFS, "assets")
	return []admin.Route{
		{Pattern: "GET /{$}", Access: op, Handler: h(c.overview)},
		{Pattern: "GET /events", Access: op, Handler: h(c.events)},
		{Pattern: "GET /events/{id}", Access: op, Handler: h(c.event)},
		{Pattern: "POST /events/{id}/replay", Access: op, Handler: h(c.replayEvent)},
		{Pattern: "GET /dead-letters", Access: op, Handler: h(c.deadLetters)},
		{Pattern: "POST /dead-letters/replay", Access: op, Handler: h(c.replayDeadLetters)},
		{Pattern: "GET /rules", Access: op, Handler: h(c.rules)},
		{Pattern: "POST /rules/test", Access: op, Handler: h(c.ruleTest)},
		{Pattern: "GET /login", Access: pub, Handler: h(c.loginForm)},
		{Pattern: "POST /login", Access: pub, Handler: h(c.login)},
		{Pattern: "POST /logout", Access: pub, Handler: h(c.logout)},
		// The stylesheet and script, which the login form needs too.
		{Pattern: "GET /assets/", Access: pub, Handler: c.headers(http.StripPrefix("/assets/", http.FileServerFS(assets)))},
	}
}

// Unauthorized answers a request the admin guard refused: a browser asking
// for a console page is sent to the login form; anything else (the API,
// /metrics) gets admin.Unauthorized's 401.
func (c *Console) Unauthorized(w http.ResponseWriter, r *http.Request) {
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && isPage(r.URL.Path) &&
		strings.Contains(r.Header.Get("Accept"), "text/html") {
		http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	admin.Unauthorized(w, r)
}

// isPage reports whether path is one of the console's pages (not the API,
// /health, /metrics or the profiler).
func isPage(path string) bool {
	switch {
	case path == "/", path == "/events", path == "/dead-letters", path == "/rules":
		return true
	case strings.HasPrefix(path, "/events/"):
		return true
	}
	return false
}

// contentSecurity lets pages load only the console's own files: no inline
// script, nothing from another origin, no framing.
const contentSecurity = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// headers sets the headers every console answer carries.
func (c *Console) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurity)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if !strings.HasPrefix(r.URL.Path, "/assets/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// page is what every page template gets.
type page struct {
	Title string
	Nav   string // which tab is current
	CSRF  string
	// LoggedIn is set when a token is configured (so there is a log out).
	LoggedIn bool
	// Refresh, when set, is how often (seconds) the page's main part
	// reloads itself.
	Refresh int
	Data    any
}

// render writes page name with data. A request with the header
// X-Console-Part gets only the page's main part (the self-refreshing
// overview fetches that).
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	t := c.pages[name]
	p.CSRF = c.csrfToken(w, r)
	p.LoggedIn = c.guard != nil && c.guard.Enabled()
	var buf bytes.Buffer
	tmpl := "layout.html"
	if r.Header.Get("X-Console-Part") != "" {
		tmpl = "main"
	}
	if err := t.ExecuteTemplate(&buf, tmpl, p); err != nil {
		c.log.Error("console template", "page", name, "error", err)
		http.Error(w, "console template failed; see the log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Vary", "X-Console-Part")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// health decodes the backend's /health document into h.
func (c *Console) health() healthDoc {
	var h healthDoc
	b, err := json.Marshal(c.b.Health())
	if err == nil {
		err = json.Unmarshal(b, &h)
	}
	if err != nil {
		c.log.Warn("console cannot read health", "error", err)
	}
	return h
}

// ctx bounds the work a page does for one request.
func pageContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 10*time.Second)
}
