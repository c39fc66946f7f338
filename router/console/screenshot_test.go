package console_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

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
	cfg := screenshotConfig
	e := startRouter(t, cfg, crm.URL, testToken)
	_ = ops
	tab := newBrowser(t)
	login(t, tab, e, "/")
	texts := []string{"Halo, apakah pesanan saya sudah dikirim?", "Terima kasih!", "<script>alert(1)</script> stays text", "Mau tanya stok warna merah"}
	for i := range 24 {
		e.send(fmt.Sprintf(inbound, fmt.Sprintf("msg_%04d", i), texts[i%len(texts)]))
		time.Sleep(120 * time.Millisecond) // spread over the bars; not synchronisation
	}
	crm.setStatus(http.StatusServiceUnavailable)
	for i := range 6 {
		e.send(fmt.Sprintf(inbound, fmt.Sprintf("msg_f%02d", i), "Pesanan belum sampai"))
	}
	do(t, tab, "breaker open", chromedp.Navigate(e.admin+"/"), chromedp.WaitVisible(css(`tr[data-sink="crm"] .breaker.bad`)))
	shot(t, tab, dir, "console-overview.png")
	do(t, tab, "rules", chromedp.Navigate(e.admin+"/rules"), chromedp.WaitVisible(css(`#tester`)),
		chromedp.SetValue(css(`#payload`), fmt.Sprintf(inbound, "msg_0001", "Halo <b>kak</b>")),
		chromedp.Click(css(`#run-test`)), chromedp.WaitVisible(css(`#report`)))
	shot(t, tab, dir, "console-rules.png")
}

// screenshotConfig is baseConfig with a second sink, so the pages show more
// than one of each.
const screenshotConfig = baseConfig

func shot(t *testing.T, tab context.Context, dir, name string) {
	t.Helper()
	png := get(t, tab, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
