package mtasts_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/delivery/mtasts"
	"github.com/jetrelay/jetrelay/internal/testenv"
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
	dns.SetTXT("_mta-sts.bad.test", "v=STSv1; id=a", "v=STSv1; id=b")
	if l = c.Get(ctx, "bad.test"); l.Policy != nil || l.Failure != mtasts.FailInvalid {
		t.Fatalf("two TXT records: %+v", l)
	}
	// A policy host that is down: no policy, a fetch error.
	srv.SetID("down.test", "x")
	if l = c.Get(ctx, "down.test"); l.Policy != nil || l.Failure != mtasts.FailFetch {
		t.Fatalf("policy host down: %+v", l)
	}
}
