package oauth_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/delivery/oauth"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// TestRefreshBeforeExpiry: with 2 s tokens, a caller asking all the time
// never gets a token the server considers expired, and gets new ones.
func TestRefreshBeforeExpiry(t *testing.T) {
	srv, o := entraSecret(t)
	srv.SetExpiresIn(2)
	src := newEntra(t, o)
	seen := map[string]bool{}
	testenv.Eventually(t, 15*time.Second, func() bool {
		tok := mustToken(t, src, srv) // fails if the server says it expired
		if !time.Now().Before(tok.Expiry) {
			t.Fatalf("token returned at or after its expiry %v", tok.Expiry)
		}
		seen[tok.Value] = true
		return len(seen) >= 3
	}, "tokens not refreshed")
	if n := srv.Requests(testenv.GrantClientCredentials); n > 4 {
		t.Errorf("%d requests for 3 tokens: refreshing too eagerly", n)
	}
}

// TestNoExpiresIn: a token without expires_in lives an hour.
func TestNoExpiresIn(t *testing.T) {
	srv, o := entraSecret(t)
	srv.SetExpiresIn(0)
	tok := mustToken(t, newEntra(t, o), srv)
	if d := time.Until(tok.Expiry); d < 59*time.Minute || d > time.Hour {
		t.Errorf("expiry in %v, want about an hour", d)
	}
}

// TestExpiryFromRequest: the expiry is counted from when the request was
// sent, so a slow answer does not make the token outlive the server's.
func TestExpiryFromRequest(t *testing.T) {
	srv, o := entraSecret(t)
	srv.SetExpiresIn(60)
	before := time.Now()
	tok := mustToken(t, newEntra(t, o), srv)
	if tok.Expiry.After(time.Now().Add(60*time.Second)) || tok.Expiry.Before(before.Add(60*time.Second)) {
		t.Errorf("expiry %v not 60 s after the request (sent after %v)", tok.Expiry, before)
	}
}

func TestInvalidate(t *testing.T) {
	srv, o := entraSecret(t)
	src := newEntra(t, o)
	tok := mustToken(t, src, srv)
	src.Invalidate("some-other-token")
	src.Invalidate("")
	if got := mustToken(t, src, srv); got != tok {
		t.Fatalf("Invalidate of another value dropped the token")
	}
	srv.Revoke(tok.Value) // the SMTP server refused it
	src.Invalidate(tok.Value)
	got := mustToken(t, src, srv)
	if got.Value == tok.Value {
		t.Fatalf("same token after Invalidate")
	}
	if n := srv.Requests(testenv.GrantClientCredentials); n != 2 {
		t.Errorf("requests = %d, want 2", n)
	}
	srv.RevokeAll()
	if srv.Valid(got.Value) {
		t.Errorf("RevokeAll left a token valid")
	}
}

// concurrently runs n callers of Token at once, with the server holding
// the request until they are all started.
func concurrently(t *testing.T, srv *testenv.OAuthServer, src oauth.Source, n int) ([]oauth.Token, []error) {
	t.Helper()
	release := srv.Hold()
	defer release()
	toks, errs := make([]oauth.Token, n), make([]error, n)
	var started, done sync.WaitGroup
	started.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			started.Done()
			toks[i], errs[i] = src.Token(ctxT(t))
		}()
	}
	started.Wait()
	testenv.Eventually(t, 5*time.Second, func() bool { return srv.Requests(testenv.GrantClientCredentials) >= 1 }, "no request")
	release()
	done.Wait()
	return toks, errs
}

func TestSingleFlight(t *testing.T) {
	srv, o := entraSecret(t)
	src := newEntra(t, o)
	toks, errs := concurrently(t, srv, src, 20)
	for i := range toks {
		if errs[i] != nil || toks[i] != toks[0] || !srv.Valid(toks[i].Value) {
			t.Errorf("caller %d: %v %v", i, toks[i].Value, errs[i])
		}
	}
	if n := srv.Requests(testenv.GrantClientCredentials); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
}

// TestDown: a 503 is a temporary error, shared by concurrent callers and
// remembered briefly (no hammering), then the endpoint is asked again.
func TestDown(t *testing.T) {
	srv, o := entraSecret(t)
	srv.SetDown(503)
	src := newEntra(t, o)
	_, errs := concurrently(t, srv, src, 20)
	for _, err := range errs {
		var e *oauth.Error
		if !errors.As(err, &e) || !e.Temporary || e.Status != 503 || e.Code != "temporarily_unavailable" {
			t.Fatalf("error = %#v", err)
		}
		if !strings.Contains(e.Advice(), "temporary") {
			t.Errorf("Advice = %q", e.Advice())
		}
	}
	for range 10 {
		if e := mustFail(t, src); !e.Temporary {
			t.Fatal(e)
		}
	}
	if n := srv.Requests(testenv.GrantClientCredentials); n != 1 {
		t.Errorf("requests = %d, want 1 (shared, then remembered)", n)
	}
	srv.SetUp()
	testenv.Eventually(t, 5*time.Second, func() bool {
		_, err := src.Token(ctxT(t))
		return err == nil
	}, "no token after the endpoint came back")
	if n := srv.Requests(testenv.GrantClientCredentials); n > 4 {
		t.Errorf("requests = %d: the failure was not remembered", n)
	}
}

// TestHanging: the caller's deadline wins over an endpoint that does not
// answer; the error is temporary; the fetch nobody waits for is dropped,
// so the next caller gets a token once the endpoint answers.
func TestHanging(t *testing.T) {
	srv, o := entraSecret(t)
	srv.SetDown(0)
	src := newEntra(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := src.Token(ctx)
	var e *oauth.Error
	if !errors.As(err, &e) || !e.Temporary || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %#v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("returned after %v", d)
	}
	if !strings.Contains(e.Advice(), "in time") {
		t.Errorf("Advice = %q", e.Advice())
	}
	srv.SetUp()
	mustToken(t, src, srv)
}

// TestTimeout: the provider's Timeout bounds a fetch for a caller
// without a deadline.
func TestTimeout(t *testing.T) {
	srv, o := entraSecret(t)
	srv.SetDown(0)
	o.Timeout = 300 * time.Millisecond
	_, err := newEntra(t, o).Token(context.Background())
	var e *oauth.Error
	if !errors.As(err, &e) || !e.Temporary || e.Status != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %#v", err)
	}
}

// TestRefreshFailsTokenStillValid: while the early refresh fails, the
// cached token is returned until it is about to expire, never after.
func TestRefreshFailsTokenStillValid(t *testing.T) {
	srv, o := entraSecret(t)
	srv.SetExpiresIn(3)
	src := newEntra(t, o)
	tok := mustToken(t, src, srv)
	srv.SetDown(503)
	var last error
	testenv.Eventually(t, 10*time.Second, func() bool {
		got, err := src.Token(ctxT(t))
		if err != nil {
			last = err
			return true
		}
		if got != tok || !srv.Valid(got.Value) || !time.Now().Before(got.Expiry) {
			t.Fatalf("got %+v (valid %v), want the cached %+v", got, srv.Valid(got.Value), tok)
		}
		return false
	}, "never failed")
	var e *oauth.Error
	if !errors.As(last, &e) || !e.Temporary || e.Status != 503 {
		t.Errorf("error = %#v", last)
	}
	if srv.Requests(testenv.GrantClientCredentials) < 2 {
		t.Errorf("no refresh was tried")
	}
	if time.Until(tok.Expiry) > time.Second {
		t.Errorf("failed %v before the token's expiry", time.Until(tok.Expiry))
	}
}

// TestUntrustedEndpoint: a token endpoint whose certificate does not
// verify is not a temporary failure.
func TestUntrustedEndpoint(t *testing.T) {
	_, o := entraSecret(t)
	o.HTTPClient = nil // the system roots do not know the test CA
	e := mustFail(t, newEntra(t, o))
	if e.Temporary || e.Status != 0 || !strings.Contains(e.Advice(), "TLS certificate") {
		t.Errorf("error = %#v, advice %q", e, e.Advice())
	}
}

// TestUnreachable: nothing listening is temporary.
func TestUnreachable(t *testing.T) {
	srv, o := entraSecret(t)
	srv.Close()
	e := mustFail(t, newEntra(t, o))
	if !e.Temporary || e.Status != 0 || !strings.Contains(e.Advice(), "could not be reached") {
		t.Errorf("error = %#v, advice %q", e, e.Advice())
	}
	noSecrets(t, e, secret)
}
