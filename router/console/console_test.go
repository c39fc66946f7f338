package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

const inbound = `{"event":"channel.message_in","message":{"id":"%s","sender_name":"Rina","channel":{"engine":"wa","name":"WA Toko"},"content":{"text":%q}}}`

// css is a CSS selector.
func css(s string) chromedp.CSS { return chromedp.CSS(s) }

// login opens a console page without a session, checks that the login form
// is shown instead, and logs in with the token.
func login(t *testing.T, tab context.Context, e *env, path string) {
	t.Helper()
	do(t, tab, "open "+path, chromedp.Navigate(e.admin+path), chromedp.WaitVisible(css(`#token`)))
	if loc := get(t, tab, "location", chromedp.Location()); !strings.Contains(loc, "/login?next=") {
		t.Errorf("without a session %s went to %s, want the login form", path, loc)
	}
	do(t, tab, "log in",
		chromedp.SendKeys(css(`#token`), testToken),
		chromedp.Submit(css(`#token`)),
		chromedp.WaitVisible(css(`nav`)),
	)
}

// TestLogin: without the token the console shows the login form and the
// API answers 401; a wrong token is refused; the right one opens the pages
// through an HttpOnly, SameSite=Strict cookie that is not the token.
func TestLogin(t *testing.T) {
	d := newDest(t)
	e := startRouter(t, baseConfig, d.URL, testToken)
	for _, p := range []string{"GET /health", "GET /metrics", "POST /-/reload", "GET /rules"} {
		method, path, _ := strings.Cut(p, " ")
		if code, body := e.do(method, path, nil); code != 401 || !strings.Contains(body, "Unauthorized") {
			t.Errorf("%s without the token: %d %s, want 401", p, code, body)
		}
	}
	if code, _ := e.get("/", "Accept", "text/html"); code != http.StatusSeeOther {
		t.Errorf("GET / from a browser without the token: %d, want 303 to the login form", code)
	}
	if code, _ := e.get("/", "Authorization", "Bearer "+testToken); code != 200 {
		t.Errorf("GET / with the Bearer token: %d", code)
	}

	tab := newBrowser(t)
	do(t, tab, "wrong token",
		chromedp.Navigate(e.admin+"/rules"),
		chromedp.WaitVisible(css(`#token`)),
		chromedp.SendKeys(css(`#token`), "not-the-token"),
		chromedp.Submit(css(`#token`)),
		chromedp.WaitVisible(css(`.error`)),
	)
	if msg := text(t, tab, ".error"); !strings.Contains(msg, "not the admin token") {
		t.Errorf("wrong token: %q", msg)
	}
	login(t, tab, e, "/rules")
	loc := get(t, tab, "location", chromedp.Location())
	if u, _ := url.Parse(loc); u.Path != "/rules" {
		t.Errorf("after login at %s, want /rules (the page asked for)", loc)
	}
	found := false
	for _, c := range cookies(t, tab) {
		if c.Name != "hookrouter_session" {
			continue
		}
		found = true
		if !c.HTTPOnly || c.SameSite != "Strict" || strings.Contains(c.Value, testToken) {
			t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, not the token", c)
		}
	}
	if !found {
		t.Error("no session cookie after login")
	}
	for _, p := range []string{"/", "/events", "/dead-letters", "/rules"} {
		do(t, tab, "open "+p, chromedp.Navigate(e.admin+p), chromedp.WaitVisible(css(`main h1`)))
		if title := get(t, tab, "title", chromedp.Title()); !strings.HasSuffix(title, "· hookrouter") {
			t.Errorf("%s: title %q", p, title)
		}
	}
	// Log out: the pages ask for the token again.
	do(t, tab, "log out",
		chromedp.Click(css(`.logout button`)),
		chromedp.WaitVisible(css(`#token`)),
		chromedp.Navigate(e.admin+"/"),
		chromedp.WaitVisible(css(`#token`)),
	)
}

// TestBreakerOpens: the overview, refreshing itself, shows the sink's
// breaker open while its real destination fails, and the failures as bars.
func TestBreakerOpens(t *testing.T) {
	d := newDest(t)
	e := startRouter(t, baseConfig, d.URL, testToken)
	tab := newBrowser(t)
	login(t, tab, e, "/")
	if b := text(t, tab, `tr[data-sink="crm"] .breaker`); b != "closed" {
		t.Fatalf("breaker %q before any failure", b)
	}
	d.setStatus(http.StatusInternalServerError)
	for i := range 3 {
		e.send(fmt.Sprintf(inbound, fmt.Sprintf("fail-%d", i), "hello"))
	}
	// No navigation: the page refreshes its own main part.
	do(t, tab, "breaker turns open", chromedp.WaitVisible(css(`tr[data-sink="crm"] .breaker.bad`)))
	if b := text(t, tab, `tr[data-sink="crm"] .breaker`); b != "open" {
		t.Errorf("breaker %q, want open", b)
	}
	do(t, tab, "failures drawn", chromedp.WaitVisible(css(`tr[data-sink="crm"] svg.bars rect.failed`)))
	if le := text(t, tab, `tr[data-sink="crm"] .lasterror`); !strings.Contains(le, "500") {
		t.Errorf("last error %q, want the destination's 500", le)
	}
}

// TestTesterEscapes: the rule tester shows each rule's verdict and each
// delivery's body; a payload's <script> stays text, and no dialog opens.
func TestTesterEscapes(t *testing.T) {
	d := newDest(t)
	e := startRouter(t, baseConfig, d.URL, testToken)
	tab := newBrowser(t)
	var dialogs atomic.Int32
	if err := chromedp.Listen(tab, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialogs.Add(1)
			go chromedp.Call(tab, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{})
		}
	}); err != nil {
		t.Fatal(err)
	}
	login(t, tab, e, "/rules")
	xss := `<script>alert(1)</script><img src=x onerror=alert(2)>`
	do(t, tab, "run the tester",
		chromedp.SetValue(css(`#payload`), fmt.Sprintf(inbound, "m-xss", xss)),
		chromedp.Click(css(`#run-test`)),
		chromedp.WaitVisible(css(`#report`)),
	)
	if body := text(t, tab, `.delivery[data-sink="crm"] pre`); !strings.Contains(body, xss) {
		t.Errorf("crm body %q does not show the payload's text as text", body)
	}
	wa := text(t, tab, `.verdicts tr[data-rule="wa-inbound"] .verdict`)
	vip := text(t, tab, `.verdicts tr[data-rule="vip-candidate"] .verdict`)
	if wa != "matched" || vip != "no" {
		t.Errorf("verdicts wa-inbound %q vip-candidate %q", wa, vip)
	}
	// Why wa-inbound matched, part by part (hookrouter test -explain).
	if why := text(t, tab, `.verdicts tr[data-rule="wa-inbound"] .explain`); !strings.Contains(why, `message?.channel?.engine == "wa" → true`) {
		t.Errorf("wa-inbound explained as %q", why)
	}
	n := get(t, tab, "count", chromedp.Evaluate[int](`document.querySelectorAll("main script, main img").length`))
	if n != 0 || dialogs.Load() != 0 {
		t.Errorf("%d script/img elements from the payload, %d dialogs", n, dialogs.Load())
	}
	// The payload went in the POST body, not the URL.
	if loc := get(t, tab, "location", chromedp.Location()); strings.Contains(loc, "m-xss") || strings.Contains(loc, "script") {
		t.Errorf("payload in the URL: %s", loc)
	}
	do(t, tab, "invalid payload",
		chromedp.SetValue(css(`#payload`), `{"event": `),
		chromedp.Click(css(`#run-test`)),
		chromedp.WaitVisible(css(`#test-error`)),
	)
	if msg := text(t, tab, `#test-error`); !strings.Contains(msg, "invalid payload") {
		t.Errorf("invalid payload: %q", msg)
	}
}

// TestCSRF: a console form posted without its token, or with a token that
// does not go with the browser's CSRF cookie, is refused even with a valid
// credential; so is a cross-site post.
func TestCSRF(t *testing.T) {
	d := newDest(t)
	e := startRouter(t, baseConfig, d.URL, testToken)
	form := url.Values{"payload": {`{"event":"x"}`}, "source": {"platform"}}.Encode()
	ct := "application/x-www-form-urlencoded"
	auth := "Bearer " + testToken
	if code, _ := e.do(http.MethodPost, "/rules/test", []byte(form), "Content-Type", ct, "Authorization", auth); code != 403 {
		t.Errorf("no CSRF token: %d, want 403", code)
	}
	if code, _ := e.do(http.MethodPost, "/rules/test", []byte(form+"&csrf=forged"), "Content-Type", ct, "Authorization", auth,
		"Cookie", "hookrouter_csrf=AAAAAAAAAAAAAAAAAAAAAAAA"); code != 403 {
		t.Errorf("forged CSRF token: %d, want 403", code)
	}
	if code, _ := e.do(http.MethodPost, "/login", []byte("token="+testToken), "Content-Type", ct,
		"Sec-Fetch-Site", "cross-site"); code != 403 {
		t.Errorf("cross-site login post: %d, want 403", code)
	}
}

// TestLoginNext: after login the browser goes back to the page it asked
// for, never to another host (an open redirect would let a phishing link
// borrow the console's name).
func TestLoginNext(t *testing.T) {
	d := newDest(t)
	e := startRouter(t, baseConfig, d.URL, testToken)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(e.admin + "/login")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no CSRF token in the login form:\n%s", b)
	}
	for _, tc := range []struct{ next, want string }{
		{"/events?state=dead_letter", "/events?state=dead_letter"},
		{"//evil.example/x", "/"},
		{"/\\evil.example", "/"},
		{"https://evil.example/", "/"},
		{"", "/"},
	} {
		form := url.Values{"csrf": {string(m[1])}, "token": {testToken}, "next": {tc.next}}
		resp, err := c.PostForm(e.admin+"/login", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != tc.want {
			t.Errorf("next %q: %d to %q, want 303 to %q", tc.next, resp.StatusCode, loc, tc.want)
		}
	}
}

// TestReloadError: after a reload that fails, the overview shows the error
// with its line, and the rules page says the file on disk is invalid while
// the rules in force stay.
func TestReloadError(t *testing.T) {
	d := newDest(t)
	e := startRouter(t, baseConfig, d.URL, testToken)
	path := filepath.Join(e.dir, "rules.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), "to: [crm]", "to: [crm, nope]", 1)
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	auth := []string{"Authorization", "Bearer " + testToken}
	if code, body := e.do(http.MethodPost, "/-/reload", nil, auth...); code != 400 {
		t.Fatalf("reload of a bad file: %d %s", code, body)
	}
	_, page := e.get("/", auth...)
	if !strings.Contains(page, `id="reload-error"`) || !strings.Contains(page, `unknown sink &#34;nope&#34;`) {
		t.Errorf("overview does not show the reload error:\n%s", page)
	}
	_, page = e.get("/rules", auth...)
	if !strings.Contains(page, "the file on disk is invalid") || !strings.Contains(page, `data-rule="everything-to-crm"`) {
		t.Errorf("rules page after a failed reload:\n%s", page)
	}
}
