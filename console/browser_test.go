package console_test

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/console"
)

// screenshots, when set, is a directory the browser test copies the
// README's screenshots to (make screenshots: docs/img).
var screenshots = flag.String("screenshots", "", "copy console-overview.png and console-payment.png to this directory")

// chromium returns the path of a Chromium or Chrome binary: $PAYSTREAM_CHROMIUM,
// else the first of the usual names on $PATH; "" when there is none.
func chromium() string {
	if p := os.Getenv("PAYSTREAM_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestBrowser drives the console with headless Chromium as an operator
// would: the overview, a payment search, its timeline, a replay's preview
// and the replay itself. It saves a screenshot of each step in the test's
// artifact directory (go test -artifacts keeps them, under -outputdir) and,
// with -screenshots DIR, copies the README's two to DIR.
func TestBrowser(t *testing.T) {
	path := chromium()
	if path == "" {
		t.Skip("no Chromium installed (apt-get install chromium, or set PAYSTREAM_CHROMIUM): the browser test needs one; .ci/run installs it")
	}
	b := startFleet(t)
	b.history(t, 2400)
	b.seed(t)
	ts, _ := serve(t, b, console.Config{AllowActions: true, ProxyHeader: "X-Forwarded-User", Refresh: time.Minute})

	actx, acancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Flag("disable-gpu", true),
		chromedp.Flag("hide-scrollbars", true), chromedp.WindowSize(1280, 900))...)
	defer acancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, tcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer tcancel()

	dir := t.ArtifactDir()
	shot := func(name string, full bool) {
		t.Helper()
		var (
			png []byte
			err error
		)
		if full {
			png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
		} else {
			png, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
		}
		require.NoError(t, err, "screenshot %s", name)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), png, 0o644))
		t.Logf("screenshot %s", filepath.Join(dir, name))
	}
	// The reverse proxy's identity header on every request of the tab.
	header := chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"X-Forwarded-User": "oncall"}})
		return err
	})
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		require.NoError(t, err, "text of %s", sel)
		return s
	}

	// The overview.
	require.NoError(t, chromedp.Do(ctx, header, chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(ts.URL+"/"), chromedp.WaitVisible(chromedp.CSS("svg.chart"))))
	require.Contains(t, text("#verdict-h"), "Healthy")
	require.Contains(t, text("section[aria-labelledby=workers-h]"), "worker-1")
	shot("console-overview.png", true)

	// A search by payment id, then the payment's timeline.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/payments"), chromedp.WaitVisible(chromedp.CSS("#id")),
		chromedp.SendKeys(chromedp.CSS("#id"), "pay_011")))
	// The search is a navigation (a GET form): wait for the page it loads.
	// Waiting for #matches alone could pass on the unfiltered list, which
	// has one too, and read it while the navigation replaces the page.
	_, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("#search")))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("#matches"))))
	require.Contains(t, text("#matches"), "1 match")
	shot("console-search.png", false)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`a[href="/payments/pay_011"]`)),
		chromedp.WaitVisible(chromedp.CSS("ol.timeline"))))
	require.Contains(t, text("ol.timeline"), "dead letter")
	shot("console-payment-failed.png", true)

	// The replay: select the exhausted dead letter, preview, run.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/dlq?reason=exhausted"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="seq"]`)), chromedp.Click(chromedp.CSS(`input[name="seq"]`)),
		chromedp.Click(chromedp.CSS("#preview-selected")), chromedp.WaitVisible(chromedp.CSS("#preview-summary"))))
	require.Contains(t, text("#preview-summary"), "1 would be re-published")
	shot("console-replay-preview.png", true)
	b.gw.Heal()
	require.NoError(t, chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#rate"), "25"), chromedp.Click(chromedp.CSS("#run-replay")),
		// The job's page reloads itself (console.js) until the replay ends.
		chromedp.WaitVisible(chromedp.CSS("#job-summary"))))
	require.Contains(t, text("#job-summary"), "published 1")
	shot("console-replay-done.png", true)

	// The payment goes through; its timeline now tells the take-over.
	require.Eventually(t, func() bool {
		err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/payments/pay_011"), chromedp.WaitVisible(chromedp.CSS("ol.timeline")))
		return err == nil && strings.Contains(text("h1"), "succeeded")
	}, 20*time.Second, 100*time.Millisecond)
	shot("console-payment.png", true)

	// The audit, and the overview on a phone.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/audit"), chromedp.WaitVisible(chromedp.CSS("table.list"))))
	require.Contains(t, text("table.list"), "oncall")
	shot("console-audit.png", false)
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)),
		chromedp.Navigate(ts.URL+"/"), chromedp.WaitVisible(chromedp.CSS("svg.chart"))))
	shot("console-overview-phone.png", false)

	if *screenshots != "" {
		require.NoError(t, os.MkdirAll(*screenshots, 0o755))
		for _, name := range []string{"console-overview.png", "console-payment.png"} {
			png, err := os.ReadFile(filepath.Join(dir, name))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(*screenshots, name), png, 0o644))
		}
	}
}
