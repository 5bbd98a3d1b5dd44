package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Failure says why no policy could be had, in RFC 8460's result-types.
type Failure string

// Policy failures (RFC 8460 §4.3.1).
const (
	// FailFetch: the policy could not be fetched (HTTP status, redirect,
	// content type, size, timeout, connection).
	FailFetch Failure = "sts-policy-fetch-error"
	// FailInvalid: the policy (or the TXT record) does not parse.
	FailInvalid Failure = "sts-policy-invalid"
	// FailWebPKI: the policy host's certificate is not valid for
	// mta-sts.<domain>.
	FailWebPKI Failure = "sts-webpki-invalid"
)

// Error is a failure to get a domain's policy.
type Error struct {
	Domain  string
	Failure Failure
	Err     error
}

func (e *Error) Error() string {
	return fmt.Sprintf("MTA-STS policy of %s: %s: %v", e.Domain, e.Failure, e.Err)
}
func (e *Error) Unwrap() error { return e.Err }

// FetcherOptions configure a Fetcher.
type FetcherOptions struct {
	// RootCAs verify the policy host (nil: the system's).
	RootCAs *x509.CertPool
	// Resolver resolves mta-sts.<domain> (nil: the system's): the same
	// resolver as the MX lookups.
	Resolver *net.Resolver
	// Port is the HTTPS port (0: 443); another only for tests or a local
	// proxy.
	Port int
	// Timeout bounds one fetch, connection to body (0: DefaultFetchTimeout).
	Timeout time.Duration
}

// DefaultFetchTimeout bounds a policy fetch.
const DefaultFetchTimeout = 10 * time.Second

// Fetcher fetches policy files over HTTPS as RFC 8461 §3.3 requires:
// a certificate valid for mta-sts.<domain> chained to a trusted root, no
// redirects, status 200, Content-Type text/plain, at most MaxPolicySize
// bytes, within a timeout, no HTTP caching.
type Fetcher struct {
	client *http.Client
	port   int
}

// NewFetcher builds a Fetcher.
func NewFetcher(o FetcherOptions) *Fetcher {
	if o.Timeout <= 0 {
		o.Timeout = DefaultFetchTimeout
	}
	if o.Port == 0 {
		o.Port = 443
	}
	dialer := &net.Dialer{Timeout: o.Timeout, Resolver: o.Resolver}
	tr := &http.Transport{
		DialContext:         dialer.DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: o.Timeout,
		MaxIdleConns:        10,
		IdleConnTimeout:     30 * time.Second,
		ForceAttemptHTTP2:   true,
		DisableCompression:  true,
	}
	return &Fetcher{
		port: o.Port,
		client: &http.Client{
			Transport: tr,
			Timeout:   o.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
}

// URL is where a domain's policy is.
func (f *Fetcher) URL(domain string) string {
	host := "mta-sts." + domain
	if f.port != 443 {
		host = net.JoinHostPort(host, strconv.Itoa(f.port))
	}
	return "https://" + host + "/.well-known/mta-sts.txt"
}

// Fetch gets and parses domain's policy. A failure is an *Error with the
// RFC 8460 result-type.
func (f *Fetcher) Fetch(ctx context.Context, domain string) (*Policy, error) {
	fail := func(kind Failure, err error) (*Policy, error) {
		return nil, &Error{Domain: domain, Failure: kind, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL(domain), nil)
	if err != nil {
		return fail(FailFetch, err)
	}
	req.Header.Set("User-Agent", "jetrelay MTA-STS")
	resp, err := f.client.Do(req)
	if err != nil {
		if webPKI(err) {
			return fail(FailWebPKI, err)
		}
		return fail(FailFetch, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fail(FailFetch, fmt.Errorf("%s redirects (HTTP %d to %q); RFC 8461 forbids following it", f.URL(domain), resp.StatusCode, resp.Header.Get("Location")))
	case resp.StatusCode != http.StatusOK:
		return fail(FailFetch, fmt.Errorf("%s answered HTTP %d", f.URL(domain), resp.StatusCode))
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return fail(FailFetch, fmt.Errorf("%s has Content-Type %q, not text/plain", f.URL(domain), resp.Header.Get("Content-Type")))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return fail(FailFetch, fmt.Errorf("reading %s: %w", f.URL(domain), err))
	}
	if len(body) > MaxPolicySize {
		return fail(FailFetch, fmt.Errorf("%s is larger than %d bytes", f.URL(domain), MaxPolicySize))
	}
	p, err := Parse(string(body))
	if err != nil {
		return fail(FailInvalid, err)
	}
	return p, nil
}

// webPKI reports whether err is a certificate the client did not accept.
func webPKI(err error) bool {
	var (
		ha  x509.HostnameError
		ua  x509.UnknownAuthorityError
		ci  x509.CertificateInvalidError
		cve *tls.CertificateVerificationError
	)
	return errors.As(err, &cve) || errors.As(err, &ha) || errors.As(err, &ua) || errors.As(err, &ci)
}
