package console_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// countDialogs counts the JavaScript dialogs the tab opens, closing each.
func countDialogs(t *testing.T, tab context.Context) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	if err := chromedp.Listen(tab, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			n.Add(1)
			go chromedp.Call(tab, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{})
		}
	}); err != nil {
		t.Fatal(err)
	}
	return &n
}

// TestEventJourney: find an event by its id on the events page, open it,
// see its attempts and its payload (whose <script> stays text), press
// replay, confirm, and see the delivery arrive again at the destination.
func TestEventJourney(t *testing.T) {
	d := newDest(t)
	e := startRouter(t, baseConfig, d.URL, testToken)
	xss := `<script>alert(1)</script>`
	id := e.send(fmt.Sprintf(inbound, "m-journey", xss))
	other := e.send(fmt.Sprintf(inbound, "m-other", "hello"))
	waitDelivered(t, d, id, 1)
	waitDelivered(t, d, other, 1)

	tab := newBrowser(t)
	dialogs := countDialogs(t, tab)
	// The viewer is in Jakarta: times show in their zone.
	if _, err := chromedp.Call(tab, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Asia/Jakarta"}); err != nil {
		t.Fatal(err)
	}
	login(t, tab, e, "/events")
	do(t, tab, "both events listed",
		chromedp.WaitVisible(css(`tr[data-id="`+id+`"]`)),
		chromedp.WaitVisible(css(`tr[data-id="`+other+`"]`)))
	// The search box is focused with "/", as the page says. (The key
	// event's character is typed into it too: the DevTools protocol sends
	// it apart from the keydown the page cancels, so it is cleared.)
	do(t, tab, "focus the search", chromedp.KeyEvent("/"))
	if f := get(t, tab, "focus", chromedp.Evaluate[string](`document.activeElement.name`)); f != "q" {
		t.Errorf("/ focused %q, want the search box", f)
	}
	do(t, tab, "search by id",
		chromedp.SetValue(css(`input[name=q]`), id),
		chromedp.Submit(css(`input[name=q]`)),
		chromedp.WaitNotPresent(css(`tr[data-id="`+other+`"]`)),
		chromedp.WaitVisible(css(`tr[data-id="`+id+`"]`)),
	)
	if n := get(t, tab, "rows", chromedp.Evaluate[int](`document.querySelectorAll("#events tbody tr[data-id]").length`)); n != 1 {
		t.Errorf("%d rows for a search by id, want 1", n)
	}
	do(t, tab, "open the event",
		chromedp.Click(css(`tr[data-id="`+id+`"] a`)),
		chromedp.WaitVisible(css(`#event-id`)),
		chromedp.WaitVisible(css(`.delivery-panel[data-sink="crm"] .timeline li.ok`)),
	)
	if loc := get(t, tab, "location", chromedp.Location()); !strings.HasSuffix(loc, "/events/"+id) {
		t.Errorf("event page at %s, want its own URL /events/%s", loc, id)
	}
	utc := get(t, tab, "received", chromedp.AttributeValue(css(`#received`), "datetime"))
	at, err := time.Parse(time.RFC3339Nano, utc.Value)
	if err != nil {
		t.Fatalf("received datetime %q: %v", utc.Value, err)
	}
	jakarta := time.FixedZone("WIB", 7*3600)
	if shown := text(t, tab, `#received`); !strings.HasPrefix(shown, at.In(jakarta).Format("2006-01-02 15:04:05")) {
		t.Errorf("received shown as %q, want %s in the viewer's zone", shown, at.In(jakarta))
	}
	if st := text(t, tab, `.delivery-panel[data-sink="crm"] .state`); st != "delivered" {
		t.Errorf("crm delivery %q, want delivered", st)
	}
	if p := text(t, tab, `#payload`); !strings.Contains(p, xss) {
		t.Errorf("payload %q does not show %s as text", p, xss)
	}
	if verdict := text(t, tab, `[data-rule="wa-inbound"]`); !strings.Contains(verdict, "matched") {
		t.Errorf("rule verdict %q", verdict)
	}
	do(t, tab, "replay to crm, confirmed",
		chromedp.Click(css(`.delivery-panel[data-sink="crm"] summary.replay`)),
		chromedp.WaitVisible(css(`.delivery-panel[data-sink="crm"] .confirm-replay`)),
		chromedp.Click(css(`.delivery-panel[data-sink="crm"] .confirm-replay`)),
		chromedp.WaitVisible(css(`#notice`)),
	)
	if n := text(t, tab, `#notice`); !strings.Contains(n, "Replayed to crm") {
		t.Errorf("notice %q", n)
	}
	// The notice came in a cookie, once: not in the URL, where a link could
	// make the console say anything, and not again on a reload.
	if loc := get(t, tab, "location", chromedp.Location()); !strings.HasSuffix(loc, "/events/"+id) {
		t.Errorf("after replay at %s, want /events/%s", loc, id)
	}
	for _, u := range []string{e.admin + "/events/" + id, e.admin + "/events/" + id + "?notice=Call+support+at+555"} {
		do(t, tab, "reload "+u, chromedp.Navigate(u), chromedp.WaitVisible(css(`#event-id`)))
		if n := get(t, tab, "notices", chromedp.Evaluate[int](`document.querySelectorAll("#notice").length`)); n != 0 {
			t.Errorf("%s shows a notice: %q", u, text(t, tab, `#notice`))
		}
	}
	waitDelivered(t, d, id, 2)
	// The journey says where the replay came from.
	reloadUntil(t, tab, e.admin+"/events/"+id, `.delivery-panel[data-sink="crm"] .timeline li.replayed`)
	if st := text(t, tab, `.delivery-panel[data-sink="crm"] .timeline li.replayed`); !strings.Contains(st, "replay via console") {
		t.Errorf("replay step %q, want it to say via console", st)
	}
	if n := get(t, tab, "scripts", chromedp.Evaluate[int](`document.querySelectorAll("main script").length`)); n != 0 || dialogs.Load() != 0 {
		t.Errorf("%d script elements in the page, %d dialogs", n, dialogs.Load())
	}
	// No payload in any URL the console made.
	links := get(t, tab, "links", chromedp.Evaluate[[]string](`[...document.querySelectorAll("a[href], form[action]")].map(e => e.href || e.action)`))
	for _, l := range links {
		if strings.Contains(l, "script") || strings.Contains(l, "m-journey") {
			t.Errorf("a payload value in a URL: %s", l)
		}
	}
}

// TestEventNotFound: an unknown id is a 404 page that says why.
func TestEventNotFound(t *testing.T) {
	d := newDest(t)
	e := startRouter(t, baseConfig, d.URL, testToken)
	code, body := e.get("/events/0123456789abcdef", "Authorization", "Bearer "+testToken)
	if code != http.StatusNotFound || !strings.Contains(body, "no event with this id") {
		t.Errorf("unknown event: %d %s", code, body)
	}
}

// TestLiveMode: with live mode on, a new event appears on the events page
// without a reload, and its delivery's state follows. (TestXSSStaysText
// checks that the rows live mode builds hold payload values as text.)
func TestLiveMode(t *testing.T) {
	d := newDest(t)
	e := startRouter(t, baseConfig, d.URL, testToken)
	tab := newBrowser(t)
	login(t, tab, e, "/events")
	do(t, tab, "live on", chromedp.Click(css(`#live`)), chromedp.WaitVisible(css(`#live[aria-pressed=true]`)))
	// The stream is open once the browser has connected; an event sent
	// before that would be missed, so wait for the connection.
	do(t, tab, "stream open", chromedp.Poll[chromedp.Void](`document.getElementById("live").dataset.open === "1"`, chromedp.WithPollingTimeout(10*time.Second)))
	id := e.send(fmt.Sprintf(inbound, "m-live", "live"))
	do(t, tab, "row appears", chromedp.WaitVisible(css(`tr[data-id="`+id+`"]`)))
	do(t, tab, "delivered", chromedp.WaitVisible(css(`tr[data-id="`+id+`"] .badge.ok[data-sink="crm"]`)))
	if cell := text(t, tab, `tr[data-id="`+id+`"] td:nth-child(4)`); cell != "channel.message_in" {
		t.Errorf("event type cell %q", cell)
	}
}

// TestDeadLetters: a delivery the destination refuses for good is on the
// dead-letters page; selected and replayed once the destination is fixed,
// it arrives, and the page shows it as replayed.
func TestDeadLetters(t *testing.T) {
	d := newDest(t)
	e := startRouter(t, baseConfig, d.URL, testToken)
	d.setStatus(http.StatusBadRequest) // permanent: dead-lettered at once
	id := e.send(fmt.Sprintf(inbound, "m-dead", "refused"))
	tab := newBrowser(t)
	login(t, tab, e, "/dead-letters")
	row := `#dead tr[data-id="` + id + `"][data-sink="crm"]`
	// The journal writes in the background: load the page until the row
	// is there.
	reloadUntil(t, tab, e.admin+"/dead-letters?sink=crm", row)
	if le := text(t, tab, row+` .lasterror`); !strings.Contains(le, "400") {
		t.Errorf("last error %q, want the 400", le)
	}
	d.setStatus(0)
	do(t, tab, "select and replay",
		chromedp.Click(css(row+` input[name=pick]`)),
		chromedp.Click(css(`#replay-selected`)),
		chromedp.WaitVisible(css(`#confirm-replay`)),
		chromedp.Click(css(`#confirm-replay`)),
		chromedp.WaitVisible(css(`#results`)),
	)
	if r := text(t, tab, `#results`); !strings.Contains(r, "Replayed to crm") {
		t.Errorf("results %q", r)
	}
	waitDelivered(t, d, id, 1)
	reloadUntil(t, tab, e.admin+"/dead-letters?sink=crm", row+` .replayed .badge`)
}
