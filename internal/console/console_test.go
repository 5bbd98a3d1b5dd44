package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/deadletter"
	"github.com/jetrelay/jetrelay/ingress"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/console"
	"github.com/jetrelay/jetrelay/internal/filter"
	"github.com/jetrelay/jetrelay/internal/testenv"
	"github.com/rs/zerolog"
)

const (
	testUser = "admin"
	testPass = "correct horse battery staple"
)

// fixture is a real relay (embedded broker, ingress, delivery to a
// scripted sink) with the console enabled, as `serve` wires it.
type fixture struct {
	t     *testing.T
	sink  *testenv.Sink
	relay *testenv.Relay
	base  string
	// refuse: recipients containing "bounce" get 550, "later" get 451.
	refuse atomic.Bool
}

func usersFile(t *testing.T) string {
	f := filepath.Join(t.TempDir(), "console-users.yaml")
	if err := ingress.AddUser(f, testUser, testPass, nil); err != nil {
		t.Fatal(err)
	}
	return f
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t}
	f.refuse.Store(true)
	f.sink = testenv.NewSink(t, testenv.SinkOptions{})
	f.sink.OnRcpt(func(r string) *smtp.SMTPError {
		switch {
		case !f.refuse.Load():
			return nil
		case strings.Contains(r, "bounce"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "mailbox unavailable"}
		case strings.Contains(r, "later"):
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	})
	cfg := testenv.TestConfig(t)
	cfg.Delivery.Smarthost = config.StringList{f.sink.Addr}
	cfg.Delivery.SmarthostTLS = "none"
	// A route with a password nobody sends to: the configuration page
	// must not show it.
	cfg.Delivery.Routes = map[string]config.Route{"partner.test": {Host: f.sink.Addr, TLS: "none", Username: "relay", Password: "s3cret-smarthost-password", AllowPlainAuth: true}}
	cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Hour)}
	cfg.Console.Enabled = true
	cfg.Console.Listen = "127.0.0.1:0"
	cfg.Console.UsersFile = usersFile(t)
	f.relay = testenv.StartRelay(t, cfg, app.Options{})
	f.base = "http://" + f.relay.App.ConsoleAddr().String()
	return f
}

// send submits a message and returns its queue ID.
func (f *fixture) send(from string, to ...string) string {
	f.t.Helper()
	res, err := testenv.Send(f.relay.Addr(), testenv.Mail{From: from, To: to, Data: testenv.RFC5322("console test", testenv.Body(200))})
	if err != nil {
		f.t.Fatal(err)
	}
	return res.QueueID
}

func (f *fixture) deadLetters() int {
	n := 0
	_, err := deadletter.NewStore(f.relay.App.Broker()).List(context.Background(), filter.Filter{}, 0, 0, func(*deadletter.Entry) bool { n++; return true })
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

// browser is an HTTP client with cookies that does not follow redirects.
type browser struct {
	t    *testing.T
	c    *http.Client
	base string
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(req *http.Request) (int, string, http.Header) {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

func (b *browser) get(path string) (int, string, http.Header) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.base+path, nil)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) (int, string, http.Header) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var (
	csrfRe  = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	tokenRe = regexp.MustCompile(`name="token" value="([^"]+)"`)
)

func find(t *testing.T, re *regexp.Regexp, body string) string {
	t.Helper()
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("%s not found in:\n%s", re, body)
	}
	return m[1]
}

// login signs in and returns the session's CSRF token.
func (b *browser) login(user, pass string) (int, string) {
	b.t.Helper()
	_, page, _ := b.get("/login")
	code, body, _ := b.post("/login", url.Values{"token": {find(b.t, tokenRe, page)}, "user": {user}, "password": {pass}, "next": {"/"}})
	if code != http.StatusSeeOther {
		return code, body
	}
	_, home, _ := b.get("/")
	return code, find(b.t, csrfRe, home)
}

func (b *browser) mustLogin() string {
	b.t.Helper()
	code, csrf := b.login(testUser, testPass)
	if code != http.StatusSeeOther {
		b.t.Fatalf("sign-in: %d\n%s", code, csrf)
	}
	return csrf
}

func TestUnauthenticatedRefused(t *testing.T) {
	f := newFixture(t)
	qid := f.send("app@corp.test", "bounce@dest.test")
	b := newBrowser(t, f.base)
	for _, p := range []string{"/", "/queue", "/deadletters", "/message/" + qid, "/message/" + qid + "/body", "/config", "/send"} {
		code, _, h := b.get(p)
		if code != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/login?next=") {
			t.Errorf("GET %s without a session: %d %q, want a redirect to sign in", p, code, h.Get("Location"))
		}
	}
	req, _ := http.NewRequest(http.MethodGet, f.base+"/overview/stats", nil)
	req.Header.Set("HX-Request", "true")
	if code, _, _ := b.do(req); code != http.StatusUnauthorized {
		t.Errorf("htmx fragment without a session: %d, want 401", code)
	}
	for _, p := range []string{"/queue/" + qid + "/delete", "/deadletters/" + qid + "/replay", "/deadletters/bulk", "/send"} {
		if code, _, _ := b.post(p, url.Values{"csrf": {"x"}, "action": {"purge"}, "all": {"yes"}}); code != http.StatusUnauthorized {
			t.Errorf("POST %s without a session: %d, want 401", p, code)
		}
	}
	// The static assets are public; htmx is served from the binary.
	if code, body, _ := b.get("/static/htmx.min.js"); code != 200 || !strings.Contains(body, "htmx") {
		t.Errorf("htmx: %d", code)
	}
}

func TestSignIn(t *testing.T) {
	f := newFixture(t)
	b := newBrowser(t, f.base)
	if code, body := b.login(testUser, "wrong"); code != http.StatusUnauthorized || !strings.Contains(body, "Wrong user name or password") {
		t.Fatalf("wrong password: %d", code)
	}
	if code, _ := b.login("nobody", testPass); code != http.StatusUnauthorized {
		t.Fatalf("unknown user: %d", code)
	}
	// A sign-in form without its token (login CSRF) is refused.
	if code, _, _ := b.post("/login", url.Values{"user": {testUser}, "password": {testPass}}); code != http.StatusForbidden {
		t.Fatalf("sign-in without the form's token: %d", code)
	}
	csrf := b.mustLogin()
	if code, body, _ := b.get("/"); code != 200 || !strings.Contains(body, "Overview") || !strings.Contains(body, testUser) {
		t.Fatalf("overview after sign-in: %d", code)
	}
	// Sign out ends the session.
	if code, _, _ := b.post("/logout", url.Values{"csrf": {csrf}}); code != http.StatusSeeOther {
		t.Fatalf("sign out: %d", code)
	}
	if code, _, _ := b.get("/"); code != http.StatusSeeOther {
		t.Fatalf("after sign-out: %d", code)
	}
}

// Sign-in attempts are limited per client address: five at once, then
// refused until time passes (a clock of the test's, so that no attempt
// is given back while the test runs).
func TestSignInLimited(t *testing.T) {
	f := newFixture(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	cfg := *f.relay.Cfg
	s, err := console.New(console.Options{Config: &cfg, Broker: f.relay.App.Broker(), Log: zerolog.Nop(),
		Now: func() time.Time { return time.Unix(0, now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	b := newBrowser(t, srv.URL)
	for i := 1; i <= 5; i++ {
		if code, _ := b.login(testUser, "wrong"); code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d, want 401", i, code)
		}
	}
	// The right password does not get through either, from any browser
	// at that address.
	if code, body := newBrowser(t, srv.URL).login(testUser, testPass); code != http.StatusTooManyRequests || !strings.Contains(body, "Too many attempts") {
		t.Fatalf("sixth attempt: %d, want 429", code)
	}
	now.Add(int64(time.Minute))
	if code, _ := b.login(testUser, testPass); code != http.StatusSeeOther {
		t.Fatalf("a minute later: %d, want signed in", code)
	}
}

func TestCSRF(t *testing.T) {
	f := newFixture(t)
	qid := f.send("app@corp.test", "bounce@dest.test")
	testenv.Eventually(t, 30*time.Second, func() bool { return f.deadLetters() == 1 }, "not dead-lettered")
	b := newBrowser(t, f.base)
	csrf := b.mustLogin()
	for _, form := range []url.Values{{}, {"csrf": {"forged"}}} {
		if code, body, _ := b.post("/deadletters/"+qid+"/purge", form); code != http.StatusForbidden || !strings.Contains(body, "CSRF") {
			t.Fatalf("purge with csrf %q: %d %s", form.Get("csrf"), code, body)
		}
	}
	// The right token from a foreign page (Origin) is refused too.
	req, _ := http.NewRequest(http.MethodPost, f.base+"/deadletters/"+qid+"/purge", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	if code, _, _ := b.do(req); code != http.StatusForbidden {
		t.Fatalf("foreign origin: %d", code)
	}
	if f.deadLetters() != 1 {
		t.Fatal("a refused request changed something")
	}
	// With the token (in the header, as htmx sends it) it works.
	req, _ = http.NewRequest(http.MethodPost, f.base+"/deadletters/"+qid+"/purge", nil)
	req.Header.Set("X-CSRF-Token", csrf)
	if code, _, h := b.do(req); code != http.StatusSeeOther || !strings.Contains(h.Get("Location"), "purged") {
		t.Fatalf("purge with the token: %d %s", code, h.Get("Location"))
	}
	if n := f.deadLetters(); n != 0 {
		t.Fatalf("%d dead letters after purge", n)
	}
}

// The console's transport rules and the trusted proxy, with requests from
// addresses a test cannot connect from.
func TestRemoteBrowsersAndProxy(t *testing.T) {
	f := newFixture(t)
	cfg := *f.relay.Cfg
	cfg.Console.TrustedProxies = config.StringList{"192.0.2.10"}
	cfg.Console.ProxyUserHeader = "X-Remote-User"
	mk := func(c config.Config) *console.Server {
		s, err := console.New(console.Options{Config: &c, Broker: f.relay.App.Broker(), Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	s := mk(cfg)
	req := func(remote string, hdr map[string]string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "http://console.example/config", nil)
		r.RemoteAddr = remote
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w
	}
	if w := req("198.51.100.7:5555", nil); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "plain HTTP") {
		t.Fatalf("remote browser over plain HTTP: %d", w.Code)
	}
	if w := req("127.0.0.1:5555", nil); w.Code != http.StatusSeeOther {
		t.Fatalf("local browser without a session: %d", w.Code)
	}
	// A proxy not in the list cannot name a user.
	if w := req("127.0.0.1:5555", map[string]string{"X-Remote-User": "mallory"}); w.Code != http.StatusSeeOther {
		t.Fatalf("untrusted proxy header: %d", w.Code)
	}
	// The trusted proxy over HTTPS names the user: signed in.
	w := req("192.0.2.10:443", map[string]string{"X-Remote-User": "alice", "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.5"})
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "alice") || strings.Contains(w.Body.String(), "s3cret-smarthost-password") {
		t.Fatalf("trusted proxy: %d", w.Code)
	}
	if c := w.Result().Cookies(); len(c) == 0 || !c[0].Secure || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie: %+v", c)
	}
	// The trusted proxy over plain HTTP for a remote browser: refused.
	if w := req("192.0.2.10:80", map[string]string{"X-Remote-User": "alice", "X-Forwarded-For": "203.0.113.5"}); w.Code != http.StatusForbidden {
		t.Fatalf("trusted proxy, plain HTTP: %d", w.Code)
	}
	// Unless the admin allowed it.
	cfg.Console.AllowInsecureRemote = true
	s = mk(cfg)
	if w := req("198.51.100.7:5555", nil); w.Code != http.StatusSeeOther {
		t.Fatalf("remote browser allowed: %d", w.Code)
	}
}

// Sessions end after console.session_timeout without a request.
func TestSessionExpires(t *testing.T) {
	f := newFixture(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	cfg := *f.relay.Cfg
	s, err := console.New(console.Options{Config: &cfg, Broker: f.relay.App.Broker(), Log: zerolog.Nop(),
		Now: func() time.Time { return time.Unix(0, now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	b := newBrowser(t, srv.URL)
	b.mustLogin()
	now.Add(int64(cfg.Console.SessionTimeout.D() - time.Minute))
	if code, _, _ := b.get("/config"); code != 200 {
		t.Fatalf("within the timeout: %d", code)
	}
	now.Add(int64(cfg.Console.SessionTimeout.D() + time.Second))
	if code, _, _ := b.get("/config"); code != http.StatusSeeOther {
		t.Fatalf("after the timeout: %d, want a redirect to sign in", code)
	}
}

func TestPages(t *testing.T) {
	f := newFixture(t)
	dead := f.send("app@corp.test", "bounce@dest.test")
	deferred := f.send("db@corp.test", "later@slow.test")
	testenv.Eventually(t, 30*time.Second, func() bool { return f.deadLetters() == 1 }, "not dead-lettered")
	testenv.Eventually(t, 30*time.Second, func() bool { return f.relay.State().Scheduled == 1 }, "not deferred")
	f.send("app@corp.test", "ok@dest.test")
	// At the sink: that message and the bounce (DSN) of the dead one.
	f.sink.WaitFor(t, 2, 30*time.Second)

	b := newBrowser(t, f.base)
	csrf := b.mustLogin()
	check := func(path string, want ...string) string {
		t.Helper()
		code, body, h := b.get(path)
		if code != 200 {
			t.Fatalf("GET %s: %d\n%s", path, code, body)
		}
		if h.Get("Content-Security-Policy") == "" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: security headers missing", path)
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: %q missing in:\n%s", path, w, body)
			}
		}
		return body
	}
	t.Run("overview", func(t *testing.T) {
		// The delivered message and the DSN; the dead letter.
		var last string
		defer func() {
			if t.Failed() {
				t.Log(last)
			}
		}()
		testenv.Eventually(t, 30*time.Second, func() bool {
			_, last, _ = b.get("/overview/stats")
			return strings.Contains(last, ">2 delivered<") && strings.Contains(last, ">1 dead-lettered<")
		}, "chart does not count the delivered and the dead-lettered messages")
		body := check("/", `id="n-deferred">1<`, `id="n-dead">1<`, "slow.test", "<svg", "connected")
		if strings.Contains(body, `id="n-oldest">-<`) {
			t.Error("no oldest message age")
		}
		check("/overview/stats", `hx-trigger="every 10s"`)
	})
	t.Run("queue", func(t *testing.T) {
		check("/queue", deferred, "later@slow.test", "451", "deferred")
		for _, q := range []string{"rcpt=later", "domain=slow.test", "from=db@", "reply=try+again", "older=0s"} {
			check("/queue?"+q, deferred)
		}
		for _, q := range []string{"rcpt=nobody", "domain=dest.test", "from=app@", "reply=550", "older=1h"} {
			if body := check("/queue?" + q); strings.Contains(body, deferred) {
				t.Errorf("queue?%s shows %s", q, deferred)
			}
		}
		if code, body, _ := b.get("/queue?older=soon"); code != http.StatusBadRequest || !strings.Contains(body, "older than") {
			t.Errorf("bad duration: %d", code)
		}
	})
	t.Run("message", func(t *testing.T) {
		check("/message/"+deferred, "later@slow.test", "scheduled, next attempt", "Subject: console test", "451 4.3.0", "Retry now")
		check("/message/"+dead, "bounce@dest.test", "dead-lettered", "rejected", "Replay", "Purge")
		code, body, h := b.get("/message/" + dead + "/body")
		if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") || !strings.Contains(body, "Subject: console test") {
			t.Errorf("body: %d %s", code, h.Get("Content-Type"))
		}
		if code, _, _ := b.get("/message/0000000000000000"); code != http.StatusNotFound {
			t.Errorf("unknown message: %d", code)
		}
	})
	t.Run("deadletters", func(t *testing.T) {
		check("/deadletters", dead, "bounce@dest.test", "rejected", "550 5.1.1")
		check("/deadletters?rcpt=bounce", dead)
		check("/deadletters?reply=rejected", dead)
		if body := check("/deadletters?reply=expired"); strings.Contains(body, dead) {
			t.Error("filter by reason shows a dead letter of another reason")
		}
	})
	t.Run("config", func(t *testing.T) {
		body := check("/config", "smarthost", "&lt;redacted&gt;")
		if strings.Contains(body, "s3cret-smarthost-password") {
			t.Error("the configuration page shows a secret")
		}
	})
	t.Run("retry", func(t *testing.T) {
		code, _, h := b.post("/queue/"+deferred+"/retry", url.Values{"csrf": {csrf}})
		if code != http.StatusSeeOther || !strings.Contains(h.Get("Location"), "made+due+now") {
			t.Fatalf("retry: %d %s", code, h.Get("Location"))
		}
		// The next attempt happens at once and is deferred again.
		testenv.Eventually(t, 30*time.Second, func() bool {
			_, body, _ := b.get("/message/" + deferred)
			return strings.Contains(body, "<td>2</td>")
		}, "retry now did not lead to attempt 2")
	})
	t.Run("delete", func(t *testing.T) {
		code, _, h := b.post("/queue/"+deferred+"/delete", url.Values{"csrf": {csrf}})
		if code != http.StatusSeeOther || !strings.Contains(h.Get("Location"), "deleted") {
			t.Fatalf("delete: %d %s", code, h.Get("Location"))
		}
		check("/deadletters?reply=deleted", deferred)
	})
	t.Run("replay to another route", func(t *testing.T) {
		if code, _, _ := b.post("/deadletters/"+dead+"/replay", url.Values{"csrf": {csrf}, "route": {"no-port"}}); code != http.StatusBadRequest {
			t.Fatalf("route without a port: %d", code)
		}
		other := testenv.NewSink(t, testenv.SinkOptions{})
		code, _, h := b.post("/deadletters/"+dead+"/replay", url.Values{"csrf": {csrf}, "route": {other.Addr}})
		if code != http.StatusSeeOther || !strings.Contains(h.Get("Location"), "queued+again") {
			t.Fatalf("replay: %d %s", code, h.Get("Location"))
		}
		got := other.WaitFor(t, 1, 30*time.Second)
		if got[0].QueueID() != dead {
			t.Fatalf("replayed to the other route: %s", got[0].QueueID())
		}
	})
	t.Run("bulk replay", func(t *testing.T) {
		f.refuse.Store(false)
		// The deleted message is the one dead letter left.
		code, _, h := b.post("/deadletters/bulk", url.Values{"csrf": {csrf}, "action": {"replay"}, "rcpt": {"later@"}})
		if code != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/ops/") {
			t.Fatalf("bulk replay: %d %s", code, h.Get("Location"))
		}
		op := h.Get("Location")
		testenv.Eventually(t, 30*time.Second, func() bool {
			code, body, _ := b.get(op + "/progress")
			return code == 286 && strings.Contains(body, "1 of 1 done")
		}, "bulk replay did not finish")
		check(op, "Bulk replay", "1 of 1 done")
		testenv.Eventually(t, 30*time.Second, func() bool { return len(f.sink.ByQueueID()[deferred]) == 1 }, "replayed message not delivered")
		if code, _, _ := b.post("/deadletters/bulk", url.Values{"csrf": {csrf}, "action": {"purge"}}); code != http.StatusBadRequest {
			t.Fatalf("bulk purge without a filter and without 'all': %d", code)
		}
	})
	t.Run("send", func(t *testing.T) {
		check("/send", "jetrelay-console@relay.test")
		code, body, h := b.post("/send", url.Values{"csrf": {csrf}, "from": {"ops@corp.test"}, "to": {"alerts@dest.test"}, "subject": {"hello"}, "body": {"test"}})
		if code != http.StatusSeeOther {
			t.Fatalf("send: %d\n%s", code, body)
		}
		loc := h.Get("Location")
		testenv.Eventually(t, 30*time.Second, func() bool {
			code, body, _ := b.get(loc + "/status")
			return code == 286 && strings.Contains(body, "delivered") && strings.Contains(body, "250")
		}, "the test message's outcome is not shown")
		check(loc, "alerts@dest.test", "delivered")
		if code, body, _ := b.post("/send", url.Values{"csrf": {csrf}, "to": {""}}); code != http.StatusUnprocessableEntity || !strings.Contains(body, "at least one recipient") {
			t.Fatalf("send without recipients: %d", code)
		}
	})
	t.Run("purge", func(t *testing.T) {
		f.refuse.Store(true)
		q := f.send("app@corp.test", "bounce2@dest.test")
		testenv.Eventually(t, 30*time.Second, func() bool { return f.deadLetters() == 1 }, "not dead-lettered")
		code, _, h := b.post("/deadletters/bulk", url.Values{"csrf": {csrf}, "action": {"purge"}, "all": {"yes"}})
		if code != http.StatusSeeOther {
			t.Fatalf("bulk purge: %d", code)
		}
		testenv.Eventually(t, 30*time.Second, func() bool {
			code, _, _ := b.get(h.Get("Location") + "/progress")
			return code == 286
		}, "bulk purge did not finish")
		if n := f.deadLetters(); n != 0 {
			t.Fatalf("%d dead letters after purging all (%s)", n, q)
		}
	})
}

// syncBuffer is a log sink the console's goroutines and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(s.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// Every action is logged with the user who took it (and the msg_id); a
// refused one is logged with the user too.
func TestAuditLog(t *testing.T) {
	f := newFixture(t)
	qid := f.send("app@corp.test", "bounce@dest.test")
	testenv.Eventually(t, 30*time.Second, func() bool { return f.deadLetters() == 1 }, "not dead-lettered")
	var logs syncBuffer
	cfg := *f.relay.Cfg
	s, err := console.New(console.Options{Config: &cfg, Broker: f.relay.App.Broker(), Log: zerolog.New(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	b := newBrowser(t, srv.URL)
	csrf := b.mustLogin()
	if code, _, _ := b.post("/deadletters/"+qid+"/purge", url.Values{"csrf": {"forged"}}); code != http.StatusForbidden {
		t.Fatalf("forged token: %d", code)
	}
	if code, _, _ := b.get("/message/" + qid + "/body"); code != 200 {
		t.Fatalf("body: %d", code)
	}
	if code, _, _ := b.post("/deadletters/"+qid+"/purge", url.Values{"csrf": {csrf}}); code != http.StatusSeeOther {
		t.Fatalf("purge: %d", code)
	}
	want := map[string]bool{"sign-in": false, "view body": false, "deadletter purge": false, "refused": false}
	for _, l := range logs.lines() {
		if l["component"] != "console" {
			continue
		}
		if l["message"] == "console: refused a state change without a valid CSRF token" && l["user"] == testUser {
			want["refused"] = true
		}
		if strings.Contains(fmt.Sprint(l["message"]), "signed in") && l["user"] == testUser {
			want["sign-in"] = true
		}
		a, _ := l["action"].(string)
		if _, ok := want[a]; ok {
			if l["user"] != testUser || l["msg_id"] != qid || l["remote"] != "127.0.0.1" || l["level"] != "info" {
				t.Errorf("audit line without user, msg_id or remote: %v", l)
			}
			want[a] = true
		}
	}
	for k, ok := range want {
		if !ok {
			t.Errorf("no audit line for %s in:\n%s", k, logs.b.String())
		}
	}
}
