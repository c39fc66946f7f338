package console_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// xss breaks out of an attribute (either quote), opens a tag with a handler
// and a script, and ends a script block: a value from a payload that is
// written anywhere without escaping runs or adds an element.
const xss = `"'><img src=x onerror=alert(1)><script>alert(2)</script></script>`

// noInjection fails the test when the page has an element or handler that
// came from a payload, a dialog opened, or a link or form carries a payload
// value.
func noInjection(t *testing.T, tab context.Context, where string, dialogs *atomic.Int32) {
	t.Helper()
	n := get(t, tab, "injected elements", chromedp.Evaluate[int](
		`document.querySelectorAll("main script, img, [onerror]").length`))
	if n != 0 || dialogs.Load() != 0 {
		t.Errorf("%s: %d injected elements, %d dialogs", where, n, dialogs.Load())
	}
	urls := get(t, tab, "urls", chromedp.Evaluate[[]string](
		`[location.href, ...[...document.querySelectorAll("a[href], form[action]")].map(e => e.href || e.action)]`))
	for _, u := range urls {
		if strings.Contains(u, "onerror") || strings.Contains(u, "script") || strings.Contains(u, "img") {
			t.Errorf("%s: a payload value in a URL: %s", where, u)
		}
	}
}

// TestXSSStaysText: an event whose type, message id (so its dedup key),
// sender and text are markup is shown as text on every page that shows it —
// the events table in live mode (built by console.js) and loaded, the event
// page, the dead letters, the tester's recent events (an attribute read by
// console.js) and its report — and is never put into a URL.
func TestXSSStaysText(t *testing.T) {
	d := newDest(t)
	e := startRouter(t, baseConfig, d.URL, testToken)
	d.setStatus(http.StatusBadRequest) // dead-lettered at once
	// The payload's bytes hold the markup as it is, not \u003c escapes.
	var body strings.Builder
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	enc.Encode(map[string]any{"event": xss, "message": map[string]any{
		"id": xss, "sender_name": xss, "content": map[string]any{"text": xss}}})

	tab := newBrowser(t)
	dialogs := countDialogs(t, tab)
	if _, err := chromedp.Call(tab, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Asia/Jakarta"}); err != nil {
		t.Fatal(err)
	}
	login(t, tab, e, "/events")
	do(t, tab, "live on", chromedp.Click(css(`#live`)),
		chromedp.Poll[chromedp.Void](`document.getElementById("live").dataset.open === "1"`, chromedp.WithPollingTimeout(10*time.Second)))
	id := e.send(body.String())
	row := `tr[data-id="` + id + `"]`
	do(t, tab, "live row", chromedp.WaitVisible(css(row)))
	if got := text(t, tab, row+` td:nth-child(4)`); got != xss {
		t.Errorf("live row's event type %q, want %q as text", got, xss)
	}
	noInjection(t, tab, "events, live", dialogs)

	reloadUntil(t, tab, e.admin+"/events", row+` .badge.bad[data-sink="crm"]`)
	if got := text(t, tab, row+` td.key`); got != xss+"_"+xss {
		t.Errorf("dedup key %q, want the payload's text", got)
	}
	noInjection(t, tab, "events", dialogs)

	do(t, tab, "event page", chromedp.Navigate(e.admin+"/events/"+id), chromedp.WaitVisible(css(`#payload`)))
	if p := text(t, tab, `#payload`); strings.Count(p, `<img src=x onerror=alert(1)>`) != 4 {
		t.Errorf("payload %q does not show the four values as text", p)
	}
	noInjection(t, tab, "event page", dialogs)

	reloadUntil(t, tab, e.admin+"/dead-letters", `#dead `+row)
	if got := text(t, tab, `#dead `+row+` td:nth-child(4)`); got != xss {
		t.Errorf("dead letter's event type %q", got)
	}
	noInjection(t, tab, "dead letters", dialogs)

	do(t, tab, "tester", chromedp.Navigate(e.admin+"/rules"), chromedp.WaitVisible(css(`#recent`)))
	opt := get(t, tab, "recent event", chromedp.Evaluate[string](`document.querySelector('#recent option[value="`+id+`"]').textContent`))
	if !strings.Contains(opt, " · "+xss+" · ") {
		t.Errorf("recent event %q does not show its type as text", opt)
	}
	if !strings.Contains(opt, "GMT+7") {
		t.Errorf("recent event %q: its time is not in the viewer's zone (Jakarta)", opt)
	}
	do(t, tab, "load and test", chromedp.SetValue(css(`#recent`), id), chromedp.Click(css(`#load-event`)), chromedp.WaitVisible(css(`#report`)))
	if got := text(t, tab, `#dedup-key`); got != xss+"_"+xss {
		t.Errorf("tester's dedup key %q", got)
	}
	if b := text(t, tab, `.delivery[data-sink="crm"] pre`); !strings.Contains(b, `"sender_name": `) || strings.Count(b, "onerror") != 4 {
		t.Errorf("tester's crm body %q", b)
	}
	noInjection(t, tab, "tester", dialogs)
}
