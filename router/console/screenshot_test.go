package console_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// screenshotConfig has a few sinks and rules, so that every page shows more
// than one of each. DEST is crm, OPS the ops webhook.
const screenshotConfig = `
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
    retry: {max_attempts: 3, initial_backoff: 100ms, max_backoff: 200ms}
    breaker: {failures: 3, open_for: 5s}
    workers: 2
  ops:
    type: http
    url: OPS
    body: '{"device": device?.name, "state": event}'
  archive:
    type: file
    path: DATA/archive.jsonl
rules:
  - name: archive-everything
    when: "true"
    to: [archive]
  - name: whatsapp-inbound
    when: event == "channel.message_in" && message?.channel?.engine == "wa"
    to: [crm]
  - name: device-state
    when: event in ["device.connected", "device.disconnected"]
    to: [ops]
  - name: vip-candidate
    when: message?.bisnis?.id in ["biz_1", "biz_2"]
    to: [crm]
    shadow: true
`

// TestScreenshots takes the README's screenshots of every page, from a real
// router with real events, when HOOKROUTER_SCREENSHOTS names a directory:
//
//	HOOKROUTER_SCREENSHOTS=$PWD/docs go test -run Screenshots ./router/console
func TestScreenshots(t *testing.T) {
	dir := os.Getenv("HOOKROUTER_SCREENSHOTS")
	if dir == "" {
		t.Skip("set HOOKROUTER_SCREENSHOTS=DIR to write the console's screenshots there")
	}
	crm, ops := newDest(t), newDest(t)
	e := startRouter(t, strings.ReplaceAll(screenshotConfig, "OPS", ops.URL), crm.URL, testToken)
	tab := newBrowser(t)
	// A laptop's screen: the pages are laid out for 1366 px.
	if _, err := chromedp.Call(tab, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: 1366, Height: 768, DeviceScaleFactor: 1}); err != nil {
		t.Fatal(err)
	}
	// The platform is Indonesian: show times as a viewer in Jakarta sees them.
	if _, err := chromedp.Call(tab, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Asia/Jakarta"}); err != nil {
		t.Fatal(err)
	}
	do(t, tab, "login page", chromedp.Navigate(e.admin+"/"), chromedp.WaitVisible(css(`#token`)))
	shot(t, tab, dir, "console-login.png")
	login(t, tab, e, "/")

	texts := []string{"Halo kak, pesanan saya sudah dikirim?", "Terima kasih!", "<script>alert(1)</script> stays text", "Mau tanya stok warna merah ada?"}
	names := []string{"Rina", "Budi", "Sari", "Dewi"}
	for i := range 24 {
		body := fmt.Sprintf(`{"event":"channel.message_in","message":{"id":"msg_%04d","sender_name":%q,"channel":{"engine":"wa","name":"WA Toko Utama"},"content":{"text":%q}}}`,
			i, names[i%4], texts[i%4])
		if i%6 == 5 {
			body = fmt.Sprintf(`{"event":"device.connected","device":{"id":"dev_wa_01","name":"WA Toko Utama"},"timestamp":%d}`, 1738057000+i)
		}
		e.send(body)
		time.Sleep(150 * time.Millisecond) // spread over the bars; not synchronisation
	}
	// A sender with an old secret, and a broken payload: rejected.
	for range 3 {
		e.post(`{"event":"device.connected"}`, "old-secret")
	}
	e.post(`{"event": "channel.message_in", `, testSecret)
	// crm refuses two events for good (dead letters), then fails for a
	// while: its breaker opens.
	crm.setStatus(http.StatusUnprocessableEntity)
	dead := e.send(`{"event":"channel.message_in","message":{"id":"msg_refused","sender_name":"Andi","channel":{"engine":"wa","name":"WA Toko Utama"},"content":{"text":"Alamat saya berubah"}}}`)
	dead2 := e.send(`{"event":"channel.message_in","message":{"id":"msg_refused_2","sender_name":"Wati","channel":{"engine":"wa","name":"WA Toko Utama"},"content":{"text":"Batalkan pesanan"}}}`)
	reloadUntil(t, tab, e.admin+"/dead-letters", `#dead tr[data-id="`+dead2+`"]`)
	crm.setStatus(http.StatusServiceUnavailable)
	for i := range 5 {
		e.send(fmt.Sprintf(`{"event":"channel.message_in","message":{"id":"msg_f%02d","sender_name":"Joko","channel":{"engine":"wa","name":"WA Toko Utama"},"content":{"text":"Pesanan belum sampai"}}}`, i))
	}
	do(t, tab, "breaker open", chromedp.Navigate(e.admin+"/"), chromedp.WaitVisible(css(`tr[data-sink="crm"] .breaker.bad`)))
	shot(t, tab, dir, "console-overview.png")

	do(t, tab, "events", chromedp.Navigate(e.admin+"/events"), chromedp.WaitVisible(css(`tr[data-id="`+dead2+`"]`)))
	shot(t, tab, dir, "console-events.png")

	// crm is back: replay the first dead letter from the console.
	crm.setStatus(0)
	do(t, tab, "replay a dead letter", chromedp.Navigate(e.admin+"/dead-letters"),
		chromedp.Click(css(`#dead tr[data-id="`+dead+`"] input[name=pick]`)),
		chromedp.Click(css(`#replay-selected`)), chromedp.Click(css(`#confirm-replay`)), chromedp.WaitVisible(css(`#results`)))
	waitDelivered(t, crm, dead, 1)
	reloadUntil(t, tab, e.admin+"/events/"+dead, `.delivery-panel[data-sink="crm"] .timeline li.ok`)
	shot(t, tab, dir, "console-event.png")
	reloadUntil(t, tab, e.admin+"/dead-letters", `#dead tr[data-id="`+dead+`"] .replayed .badge`)
	shot(t, tab, dir, "console-dead-letters.png")

	do(t, tab, "rules", chromedp.Navigate(e.admin+"/rules"), chromedp.WaitVisible(css(`#tester`)),
		chromedp.SetValue(css(`#payload`), `{"event":"channel.message_in","message":{"id":"msg_0001","sender_name":"Rina","bisnis":{"id":"biz_1"},"channel":{"engine":"wa","name":"WA Toko Utama"},"content":{"text":"Halo <b>kak</b>"}}}`),
		chromedp.Click(css(`#run-test`)), chromedp.WaitVisible(css(`#report`)))
	shot(t, tab, dir, "console-rules.png")
}

func shot(t *testing.T, tab context.Context, dir, name string) {
	t.Helper()
	png := get(t, tab, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
