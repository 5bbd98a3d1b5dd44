package mtasts_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/delivery/mtasts"
	"github.com/jetrelay/jetrelay/internal/testenv"
	"github.com/rs/zerolog"
)

const enforce = "version: STSv1\r\nmode: enforce\r\nmx: *.a.test\r\nmax_age: 86400\r\n"

func resolver(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

func fetcher(srv *testenv.STSServer, dns *testenv.DNS) *mtasts.Fetcher {
	return mtasts.NewFetcher(mtasts.FetcherOptions{RootCAs: srv.PKI.Pool, Resolver: resolver(dns.Addr), Port: srv.Port, Timeout: 5 * time.Second})
}

// The fetch follows RFC 8461 §3.3: each rule it enforces is shown to
// refuse what breaks it, with the RFC 8460 result-type.
func TestFetch(t *testing.T) {
	dns := testenv.NewDNS(t)
	srv := testenv.NewSTSServer(t, dns, nil, "a.test", "redirect.test", "html.test", "missing.test", "big.test", "invalid.test")
	srv.Serve("a.test", testenv.STSResponse{Policy: enforce})
	srv.Serve("redirect.test", testenv.STSResponse{Status: http.StatusFound, Location: "https://mta-sts.a.test/.well-known/mta-sts.txt"})
	srv.Serve("html.test", testenv.STSResponse{Policy: enforce, ContentType: "text/html"})
	srv.Serve("missing.test", testenv.STSResponse{Status: http.StatusNotFound})
	srv.Serve("big.test", testenv.STSResponse{Policy: enforce + strings.Repeat("x: y\r\n", mtasts.MaxPolicySize/6+1)})
	srv.Serve("invalid.test", testenv.STSResponse{Policy: "version: STSv1\r\nmode: enforce\r\n"})
	// a policy host whose certificate is for another name
	dns.SetAddr("mta-sts.wrongcert.test", "127.0.0.1")
	f := fetcher(srv, dns)
	tests := []struct {
		domain  string
		failure mtasts.Failure
		text    string
	}{
		{"a.test", "", ""},
		{"redirect.test", mtasts.FailFetch, "redirects"},
		{"html.test", mtasts.FailFetch, "not text/plain"},
		{"missing.test", mtasts.FailFetch, "HTTP 404"},
		{"big.test", mtasts.FailFetch, "larger than"},
		{"invalid.test", mtasts.FailInvalid, "max_age"},
		{"wrongcert.test", mtasts.FailWebPKI, "certificate"},
		{"nxdomain.test", mtasts.FailFetch, "no such host"},
	}
	for _, tc := range tests {
		t.Run(tc.domain, func(t *testing.T) {
			p, err := f.Fetch(context.Background(), tc.domain)
			if tc.failure == "" {
				if err != nil || p.Mode != mtasts.ModeEnforce || !p.Matches("mx.a.test") {
					t.Fatalf("Fetch = %+v, %v", p, err)
				}
				return
			}
			var fe *mtasts.Error
			if !errors.As(err, &fe) || fe.Failure != tc.failure || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("Fetch = %+v, %v; want %s containing %q", p, err, tc.failure, tc.text)
			}
		})
	}
	// A CA the fetcher does not trust is sts-webpki-invalid.
	other := mtasts.NewFetcher(mtasts.FetcherOptions{RootCAs: testenv.NewPKI(t).Pool, Resolver: resolver(dns.Addr), Port: srv.Port})
	var fe *mtasts.Error
	if _, err := other.Fetch(context.Background(), "a.test"); !errors.As(err, &fe) || fe.Failure != mtasts.FailWebPKI {
		t.Fatalf("untrusted CA: %v", err)
	}
}

// The cache fetches once per TXT id, keeps a policy through a failed
// refresh and a vanished TXT record until it expires, and remembers a
// failed fetch for a while.
func TestCache(t *testing.T) {
	dns := testenv.NewDNS(t)
	srv := testenv.NewSTSServer(t, dns, nil, "a.test", "down.test")
	srv.Publish("a.test", "one", enforce)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	c := mtasts.NewCache(mtasts.CacheOptions{Fetcher: fetcher(srv, dns), Resolver: resolver(dns.Addr), RetryFetch: time.Minute, Now: func() time.Time { return now }})
	ctx := context.Background()

	l := c.Get(ctx, "a.test")
	if !l.Enforced() || l.ID != "one" || l.Source != "fetched" || l.Failure != "" || srv.Requests("a.test") != 1 {
		t.Fatalf("first lookup: %+v, %d requests", l, srv.Requests("a.test"))
	}
	if l = c.Get(ctx, "A.TEST."); !l.Enforced() || l.Source != "memory" || srv.Requests("a.test") != 1 {
		t.Fatalf("second lookup fetched again: %+v, %d requests", l, srv.Requests("a.test"))
	}
	// A new id: fetched again.
	srv.Publish("a.test", "two", strings.Replace(enforce, "enforce", "testing", 1))
	if l = c.Get(ctx, "a.test"); l.Policy == nil || l.Policy.Mode != mtasts.ModeTesting || l.ID != "two" || srv.Requests("a.test") != 2 {
		t.Fatalf("after the id changed: %+v, %d requests", l, srv.Requests("a.test"))
	}
	// A new id whose policy cannot be fetched: the cached policy stays,
	// the failure is reported, and it is not fetched again for a while.
	srv.Serve("a.test", testenv.STSResponse{Status: http.StatusInternalServerError})
	srv.SetID("a.test", "three")
	for i := 0; i < 2; i++ {
		if l = c.Get(ctx, "a.test"); l.Policy == nil || l.ID != "two" || l.Failure != mtasts.FailFetch || srv.Requests("a.test") != 3 {
			t.Fatalf("refresh failed (%d): %+v, %d requests", i, l, srv.Requests("a.test"))
		}
	}
	now = now.Add(2 * time.Minute)
	if c.Get(ctx, "a.test"); srv.Requests("a.test") != 4 {
		t.Fatalf("not fetched again after RetryFetch: %d requests", srv.Requests("a.test"))
	}
	// The TXT record disappears: the cached policy stays until max_age.
	dns.SetTXT("_mta-sts.a.test")
	if l = c.Get(ctx, "a.test"); l.Policy == nil || l.Failure != "" {
		t.Fatalf("without TXT, before expiry: %+v", l)
	}
	now = now.Add(25 * time.Hour)
	if l = c.Get(ctx, "a.test"); l.Policy != nil {
		t.Fatalf("without TXT, after expiry: %+v", l)
	}
	// No TXT at all, or an invalid one: no policy (the latter reported).
	if l = c.Get(ctx, "nothing.test"); l.Policy != nil || l.Failure != "" {
		t.Fatalf("no TXT: %+v", l)
	}
	dns.SetTXT("_mta-sts.bad.test", []string{"v=STSv1; id=a"}, []string{"v=STSv1; id=b"})
	if l = c.Get(ctx, "bad.test"); l.Policy != nil || l.Failure != mtasts.FailInvalid {
		t.Fatalf("two TXT records: %+v", l)
	}
	// A policy host that is down: no policy, a fetch error.
	srv.SetID("down.test", "x")
	if l = c.Get(ctx, "down.test"); l.Policy != nil || l.Failure != mtasts.FailFetch {
		t.Fatalf("policy host down: %+v", l)
	}
}

// A policy host that accepts the connection and never answers costs one
// fetch timeout, then the fetch fails as sts-policy-fetch-error.
func TestFetchTimeout(t *testing.T) {
	dns := testenv.NewDNS(t)
	pki := testenv.NewPKI(t)
	_, _, cert := pki.Issue(t, "slow", "mta-sts.slow.test")
	release := make(chan struct{})
	slow := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	slow.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	slow.StartTLS()
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) }) // runs first: no handler outlives the test
	dns.SetAddr("mta-sts.slow.test", "127.0.0.1")
	f := mtasts.NewFetcher(mtasts.FetcherOptions{RootCAs: pki.Pool, Resolver: resolver(dns.Addr),
		Port: slow.Listener.Addr().(*net.TCPAddr).Port, Timeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // bounds the test if the timeout did not
	defer cancel()
	p, err := f.Fetch(ctx, "slow.test")
	var fe *mtasts.Error
	if !errors.As(err, &fe) || fe.Failure != mtasts.FailFetch || ctx.Err() != nil {
		t.Fatalf("Fetch = %+v, %v (test context: %v); want sts-policy-fetch-error by the fetch timeout", p, err, ctx.Err())
	}
}

// A policy is used for its max_age and no longer: with the TXT id
// unchanged, the lookup after it expires fetches the policy again.
func TestCacheMaxAge(t *testing.T) {
	dns := testenv.NewDNS(t)
	srv := testenv.NewSTSServer(t, dns, nil, "a.test")
	srv.Publish("a.test", "one", strings.Replace(enforce, "86400", "600", 1))
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	c := mtasts.NewCache(mtasts.CacheOptions{Fetcher: fetcher(srv, dns), Resolver: resolver(dns.Addr), Now: func() time.Time { return now }})
	ctx := context.Background()
	if l := c.Get(ctx, "a.test"); !l.Enforced() || l.Policy.MaxAge != 10*time.Minute || srv.Requests("a.test") != 1 {
		t.Fatalf("first lookup: %+v, %d requests", l, srv.Requests("a.test"))
	}
	now = now.Add(10*time.Minute - time.Second)
	if l := c.Get(ctx, "a.test"); l.Source != "memory" || srv.Requests("a.test") != 1 {
		t.Fatalf("before max_age: %+v, %d requests", l, srv.Requests("a.test"))
	}
	now = now.Add(time.Second)
	if l := c.Get(ctx, "a.test"); !l.Enforced() || l.Source != "fetched" || srv.Requests("a.test") != 2 {
		t.Fatalf("at max_age: %+v, %d requests; want fetched again", l, srv.Requests("a.test"))
	}
	// Expired and the refresh fails: no policy applies any more.
	srv.Serve("a.test", testenv.STSResponse{Status: http.StatusServiceUnavailable})
	now = now.Add(10 * time.Minute)
	if l := c.Get(ctx, "a.test"); l.Policy != nil || l.Failure != mtasts.FailFetch {
		t.Fatalf("expired, refresh failed: %+v", l)
	}
}

// Caches of two processes share the broker's MAILSTS bucket: what one
// fetched the other uses without fetching, until the policy's max_age
// runs out.
func TestCacheSharedStore(t *testing.T) {
	ctx := context.Background()
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	cr := e.Credentials()
	b, err := broker.Connect(ctx, broker.ConnectOptions{Name: "test", URLs: []string{cr.URL}, User: cr.User, Password: cr.Password}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.Provision(ctx, broker.Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, QueueShards: 1}); err != nil {
		t.Fatal(err)
	}

	dns := testenv.NewDNS(t)
	srv := testenv.NewSTSServer(t, dns, nil, "a.test")
	srv.Publish("a.test", "one", enforce)
	now := time.Now()
	clock := func() time.Time { return now }
	newCache := func() *mtasts.Cache {
		return mtasts.NewCache(mtasts.CacheOptions{Store: b, Fetcher: fetcher(srv, dns), Resolver: resolver(dns.Addr), Now: clock})
	}
	if l := newCache().Get(ctx, "a.test"); l.Source != "fetched" || l.StoreErr != nil || srv.Requests("a.test") != 1 {
		t.Fatalf("first process: %+v, %d requests", l, srv.Requests("a.test"))
	}
	if rec, ok, err := b.LoadMTASTSPolicy(ctx, "a.test"); !ok || err != nil || rec.ID != "one" || !rec.Expires.Equal(rec.Fetched.Add(24*time.Hour)) {
		t.Fatalf("stored: %+v %v %v", rec, ok, err)
	}
	other := newCache()
	if l := other.Get(ctx, "a.test"); !l.Enforced() || l.Source != "store" || srv.Requests("a.test") != 1 {
		t.Fatalf("second process: %+v, %d requests; want the stored policy", l, srv.Requests("a.test"))
	}
	// Past max_age the stored policy is not used: a third process fetches.
	now = now.Add(25 * time.Hour)
	if l := newCache().Get(ctx, "a.test"); l.Source != "fetched" || srv.Requests("a.test") != 2 {
		t.Fatalf("after max_age: %+v, %d requests; want fetched again", l, srv.Requests("a.test"))
	}
}
