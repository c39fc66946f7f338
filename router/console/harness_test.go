package console_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/hookrouter/hookrouter/router"
	"github.com/hookrouter/hookrouter/router/config"
)

// chromium is the browser the tests drive: $CHROMIUM, else Debian's.
func chromium() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// browser is one headless Chromium for the package's tests, started by
// the first test that needs it (starting one takes seconds) and stopped by
// TestMain. Each test gets a tab in a browser context of its own, so
// cookies do not leak from one test to the next.
var browser struct {
	once    sync.Once
	ctx     context.Context
	cancel  func()
	dataDir string
	err     error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if browser.cancel != nil {
		browser.cancel()
		os.RemoveAll(browser.dataDir)
	}
	os.Exit(code)
}

func startBrowser() {
	if _, err := exec.LookPath(chromium()); err != nil {
		browser.err = err
		return
	}
	browser.dataDir, browser.err = os.MkdirTemp("", "hookrouter-chromium-")
	if browser.err != nil {
		return
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium()),
		chromedp.UserDataDir(browser.dataDir), // a fresh profile
		chromedp.NoSandbox,                    // as root in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		// Without these, Chromium keeps trying to reach Google's hosts,
		// which this machine's closed network refuses.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1440, 960),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(actx)
	browser.ctx, browser.cancel = ctx, func() { cancelBrowser(); cancelAlloc() }
	// The first action starts the browser, with no deadline of its own:
	// one would stop the browser when it passed.
	browser.err = chromedp.Do(ctx)
}

// newBrowser returns a fresh tab of the shared browser. Without a browser
// the test fails in CI (CI is set) and is skipped elsewhere, saying why.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	browser.once.Do(startBrowser)
	if err := browser.err; err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("cannot start a browser (%s): %v; install the chromium package (.ci/run does)", chromium(), err)
		}
		t.Skipf("no browser (%s): %v; install the chromium package or set CHROMIUM (in CI this fails)", chromium(), err)
	}
	tab, cancel := chromedp.NewContext(browser.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("new tab: %v", err)
	}
	return tab
}

// do runs steps in the tab with a deadline, failing the test with what was
// being done, and the page it had, when one fails.
func do(t *testing.T, tab context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		failPage(t, tab, what, err)
	}
}

// get runs one action that returns a value, as do does.
func get[T any](t *testing.T, tab context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		failPage(t, tab, what, err)
	}
	return v
}

// text is the visible text of the first element sel matches.
func text(t *testing.T, tab context.Context, sel string) string {
	t.Helper()
	return get(t, tab, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))
}

func failPage(t *testing.T, tab context.Context, what string, err error) {
	t.Helper()
	hctx, cancel := context.WithTimeout(tab, 3*time.Second)
	defer cancel()
	html, _ := chromedp.Run(hctx, chromedp.OuterHTML(chromedp.CSS("main")))
	if len(html) > 4000 {
		html = html[:4000] + "…"
	}
	t.Fatalf("%s: %v\npage:\n%s", what, err, html)
}

// dest is a real HTTP destination that records what arrives and can be
// told to fail.
type dest struct {
	*httptest.Server
	mu     sync.Mutex
	status int
	bodies [][]byte
	ids    []string
	got    chan struct{}
}

func newDest(t *testing.T) *dest {
	d := &dest{got: make(chan struct{}, 1000)}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		d.mu.Lock()
		status := d.status
		if status == 0 {
			d.bodies = append(d.bodies, body)
			d.ids = append(d.ids, r.Header.Get("X-Hookrouter-Event-Id"))
		}
		d.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
			return
		}
		d.got <- struct{}{}
	}))
	t.Cleanup(d.Close)
	return d
}

func (d *dest) setStatus(s int) {
	d.mu.Lock()
	d.status = s
	d.mu.Unlock()
}

// received returns the event ids delivered so far.
func (d *dest) received() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.ids...)
}

// env is a real router serving a config file from a temp dir, with its
// ingress and admin listeners on 127.0.0.1.
type env struct {
	t       *testing.T
	r       *router.Router
	ingress string
	admin   string
	dir     string
}

const (
	testSecret = "s3cret-for-tests"
	testToken  = "admin-token-for-tests"
)

// baseConfig routes every event to crm (an http sink at DEST); TOKEN and
// DATA are replaced.
const baseConfig = `
admin:
  token: TOKEN
data_dir: DATA
sources:
  - name: platform
    path: /webhook
    auth: {type: header, header: Authorization, secret: ` + testSecret + `}
queue: {backend: memory}
sinks:
  crm:
    type: http
    url: DEST
    timeout: 2s
    retry: {max_attempts: 3, initial_backoff: 20ms, max_backoff: 50ms}
    breaker: {failures: 2, open_for: 1m}
rules:
  - name: everything-to-crm
    when: "true"
    to: [crm]
  - name: wa-inbound
    when: event == "channel.message_in" && message?.channel?.engine == "wa"
    to: [crm]
  - name: vip-candidate
    when: message?.bisnis?.id in ["biz_1"]
    to: [crm]
    shadow: true
`

// startRouter serves cfg (with DEST, TOKEN and DATA replaced) on fresh
// listeners.
func startRouter(t *testing.T, cfg, destURL, token string) *env {
	t.Helper()
	dir := t.TempDir()
	cfg = strings.NewReplacer("DEST", destURL, "TOKEN", token, "DATA", filepath.Join(dir, "data")).Replace(cfg)
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	r, err := router.New(f, router.Options{ConfigPath: path, Version: "test", Log: log, ConsoleSampleEvery: 500 * time.Millisecond})
	if err != nil {
		t.Fatalf("router: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Serve(ln, aln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-done
	})
	return &env{t: t, r: r, ingress: "http://" + ln.Addr().String(), admin: "http://" + aln.Addr().String(), dir: dir}
}

// send posts an event to the ingress and returns its event id.
func (e *env) send(body string) string {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.ingress+"/webhook", strings.NewReader(body))
	req.Header.Set("Authorization", testSecret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		e.t.Fatalf("send: %d %s", resp.StatusCode, b)
	}
	return resp.Header.Get("X-Hookrouter-Event-Id")
}

// post sends body to the ingress with the given secret and returns the
// status.
func (e *env) post(body, secret string) int {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.ingress+"/webhook", strings.NewReader(body))
	req.Header.Set("Authorization", secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// get fetches an admin path with optional headers (name, value pairs).
func (e *env) get(path string, headers ...string) (int, string) {
	e.t.Helper()
	return e.do(http.MethodGet, path, nil, headers...)
}

func (e *env) do(method, path string, body []byte, headers ...string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.admin+path, bytes.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// cookies are the cookies the tab sends to its current page.
func cookies(t *testing.T, tab context.Context) []*network.Cookie {
	t.Helper()
	res, err := chromedp.Call(tab, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatalf("cookies: %v", err)
	}
	return res.Cookies
}

// waitDelivered waits until d has received id n times.
func waitDelivered(t *testing.T, d *dest, id string, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if got := countOf(d.received(), id); got >= n {
			return
		}
		select {
		case <-d.got:
		case <-deadline:
			t.Fatalf("event %s delivered %d times, want %d", id, countOf(d.received(), id), n)
		}
	}
}

// reloadUntil loads url until sel is on the page, for what the journal's
// background writer has not written yet.
func reloadUntil(t *testing.T, tab context.Context, url, sel string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		do(t, tab, "load "+url, chromedp.Navigate(url))
		n := get(t, tab, "look for "+sel, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)))
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			failPage(t, tab, "waiting for "+sel, fmt.Errorf("not there after 15s"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func countOf(ids []string, id string) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}
