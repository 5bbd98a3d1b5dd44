package console_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// The console in a real browser: headless Chromium driven by chromedp
// against a relay wired as `serve` wires it (embedded broker, ingress,
// delivery to a scripted sink), with real queued and dead-lettered mail.
//
// Screenshots of every page go to $JETRELAY_SCREENSHOTS (default: a
// directory under the system's temporary directory), for a reviewer to
// look at; they are never committed.

// chromium finds the browser: $JETRELAY_CHROMIUM, or Debian's chromium
// (installed by .ci/run), or Google's.
func chromium(t *testing.T) string {
	if p := os.Getenv("JETRELAY_CHROMIUM"); p != "" {
		return p
	}
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("JETRELAY_REQUIRE_INTEROP") != "" {
		t.Fatal("no chromium binary (install Debian's chromium package; .ci/run does); JETRELAY_REQUIRE_INTEROP is set, so this is a failure")
	}
	t.Skip("no chromium binary on PATH (install Debian's chromium package, or set JETRELAY_CHROMIUM): the browser test needs one")
	return ""
}

func screenshotDir(t *testing.T) string {
	dir := os.Getenv("JETRELAY_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "jetrelay-console-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("console screenshots: %s", dir)
	return dir
}

func TestBrowser(t *testing.T) {
	exe := chromium(t)
	shots := screenshotDir(t)
	f := newFixture(t)
	dead := f.send("app@corp.test", "bounce@dest.test")
	deferred := f.send("db@corp.test", "later@slow.test")
	testenv.Eventually(t, 60*time.Second, func() bool { return f.deadLetters() == 1 }, "not dead-lettered")
	testenv.Eventually(t, 60*time.Second, func() bool { return f.relay.State().Scheduled == 1 }, "not deferred")

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	// Every wait below is bounded by this.
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	defer cancel()

	run := func(what string, actions ...chromedp.Action) {
		t.Helper()
		if err := chromedp.Run(ctx, actions...); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%s: timed out (%v)", what, err)
			}
			t.Fatalf("%s: %v", what, err)
		}
	}
	shot := func(name string) {
		t.Helper()
		var png []byte
		run("screenshot "+name, chromedp.FullScreenshot(&png, 100)) // 100: PNG, not JPEG
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// fetch makes a request from the page, with the browser's cookies,
	// and returns its status.
	fetch := func(method, path, body string) int {
		t.Helper()
		var status int
		js := fmt.Sprintf(`fetch(%q, {method: %q, credentials: "same-origin", redirect: "manual",
			headers: {"Content-Type": "application/x-www-form-urlencoded"}%s}).then(r => r.status)`,
			path, method, map[bool]string{true: "", false: fmt.Sprintf(", body: %q", body)}[body == ""])
		run("fetch "+method+" "+path, chromedp.Evaluate(js, &status, func(p *runtime.EvaluateParams) *runtime.EvaluateParams {
			return p.WithAwaitPromise(true)
		}))
		return status
	}

	// Not signed in: a page sends the browser to the sign-in page, a
	// state change is refused.
	var loc string
	run("open the dead letters without a session",
		chromedp.Navigate(f.base+"/deadletters"),
		chromedp.WaitVisible(`#login`, chromedp.ByID),
		chromedp.Location(&loc),
	)
	if !strings.Contains(loc, "/login?next=") {
		t.Fatalf("without a session the browser is at %s, want the sign-in page", loc)
	}
	shot("login")
	if st := fetch("POST", "/deadletters/"+dead+"/purge", "csrf=x"); st != http.StatusUnauthorized {
		t.Fatalf("POST without a session: %d, want 401", st)
	}

	// Sign in: back to the page asked for.
	run("sign in",
		chromedp.SendKeys(`#user`, testUser, chromedp.ByID),
		chromedp.SendKeys(`#password`, testPass, chromedp.ByID),
		chromedp.Click(`#signin`, chromedp.ByID),
		chromedp.WaitVisible(`#deadletters`, chromedp.ByID),
		chromedp.Location(&loc),
	)
	if !strings.HasSuffix(loc, "/deadletters") {
		t.Fatalf("after sign-in the browser is at %s", loc)
	}

	// Overview, with the live parts filled.
	run("overview",
		chromedp.Navigate(f.base+"/"),
		chromedp.WaitVisible(`#chart`, chromedp.ByID),
		chromedp.WaitVisible(`#shape`, chromedp.ByID),
	)
	var n string
	run("overview counts", chromedp.Text(`#n-dead`, &n, chromedp.ByID))
	if strings.TrimSpace(n) != "1" {
		t.Errorf("overview shows %q dead letters, want 1", n)
	}
	shot("overview")

	// Queue and the deferred message.
	run("queue",
		chromedp.Navigate(f.base+"/queue"),
		chromedp.WaitVisible(`a[href="/message/`+deferred+`"]`, chromedp.ByQuery),
	)
	shot("queue")
	run("message",
		chromedp.Click(`a[href="/message/`+deferred+`"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`//*[contains(text(), "later@slow.test")]`, chromedp.BySearch),
	)
	shot("message")

	// A POST without the CSRF token, from the signed-in browser: refused,
	// and the dead letter is still there.
	if st := fetch("POST", "/deadletters/"+dead+"/purge", "back=/deadletters"); st != http.StatusForbidden {
		t.Fatalf("POST without the CSRF token: %d, want 403", st)
	}
	if f.deadLetters() != 1 {
		t.Fatal("a POST without the CSRF token purged the dead letter")
	}

	// Find the dead letter by recipient, and replay it: the destination
	// accepts it now.
	run("find the dead letter by recipient",
		chromedp.Navigate(f.base+"/deadletters"),
		chromedp.WaitVisible(`#f-rcpt`, chromedp.ByID),
		chromedp.SendKeys(`#f-rcpt`, "bounce@", chromedp.ByID),
		chromedp.Click(`#apply`, chromedp.ByID),
	)
	// The unfiltered list shows the same link: wait for the filtered
	// page's address before looking at the list (the list seen before the
	// form's navigation had ended once made this step look at the old
	// page). The address is read again while the navigation may still
	// destroy the page it is read from.
	testenv.Eventually(t, time.Minute, func() bool {
		return chromedp.Run(ctx, chromedp.Location(&loc)) == nil && strings.Contains(loc, "rcpt=bounce%40")
	}, "the filter form did not lead to the filtered dead letters")
	run("the filtered list",
		chromedp.WaitVisible(`#deadletters a[href="/message/`+dead+`"]`, chromedp.ByQuery),
	)
	shot("deadletters")
	f.refuse.Store(false)
	var flash string
	run("replay",
		chromedp.Click(`#deadletters button.replay`, chromedp.ByQuery),
		chromedp.WaitVisible(`#flash`, chromedp.ByID),
		chromedp.Text(`#flash`, &flash, chromedp.ByID),
	)
	if !strings.Contains(flash, dead) || !strings.Contains(flash, "queued again") {
		t.Fatalf("after replay the page says %q", flash)
	}
	testenv.Eventually(t, 60*time.Second, func() bool {
		for _, m := range f.sink.ByQueueID()[dead] {
			if strings.Join(m.Rcpts, ",") == "bounce@dest.test" {
				return true
			}
		}
		return false
	}, "the replayed dead letter %s was not delivered at the destination", dead)
	testenv.Eventually(t, 60*time.Second, func() bool { return f.deadLetters() == 0 }, "the replayed dead letter is still listed")

	// Configuration, read-only and redacted.
	var cfgText string
	run("config",
		chromedp.Navigate(f.base+"/config"),
		chromedp.WaitVisible(`main`, chromedp.ByQuery),
		chromedp.Text(`main`, &cfgText, chromedp.ByQuery),
	)
	if strings.Contains(cfgText, "s3cret-smarthost-password") || !strings.Contains(cfgText, "<redacted>") {
		t.Error("the configuration page shows a secret, or does not redact it")
	}
	shot("config")

	// Send a test message and watch its outcome arrive.
	run("send page",
		chromedp.Navigate(f.base+"/send"),
		chromedp.WaitVisible(`#send`, chromedp.ByID),
	)
	shot("send")
	var outcome string
	run("send a test message",
		chromedp.SendKeys(`#to`, "alerts@dest.test", chromedp.ByID),
		chromedp.Click(`#send-button`, chromedp.ByID),
		chromedp.WaitVisible(`#outcomes`, chromedp.ByID),
		// htmx refreshes the outcome until it is final.
		chromedp.WaitVisible(`//p[@id="follow-state" and contains(., "Every recipient has an outcome")]`, chromedp.BySearch),
		chromedp.Text(`#outcomes`, &outcome, chromedp.ByID),
	)
	if !strings.Contains(outcome, "alerts@dest.test") || !strings.Contains(outcome, "delivered") || !strings.Contains(outcome, "250") {
		t.Errorf("the test message's outcome: %q", outcome)
	}
	shot("send-result")
}
