package oauth

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/oauth2"
)

// exchange is the HTTP client of one fetch. It ties each request to the
// fetch's context (x/oauth2/jwt sends its request without one) and
// records what the transport saw, so that a failure is classified the
// same way whatever x/oauth2 made of it.
type exchange struct {
	base http.RoundTripper
	ctx  context.Context

	mu     sync.Mutex
	status int
	err    error
	url    string // of the last request, without its query
}

// newExchange returns ctx carrying the exchange's client for x/oauth2,
// built on hc (nil: the default transport).
func newExchange(ctx context.Context, hc *http.Client) (context.Context, *exchange) {
	x := &exchange{base: http.DefaultTransport, ctx: ctx}
	client := &http.Client{Transport: x}
	if hc != nil {
		if hc.Transport != nil {
			x.base = hc.Transport
		}
		client.CheckRedirect, client.Jar, client.Timeout = hc.CheckRedirect, hc.Jar, hc.Timeout
	}
	return context.WithValue(ctx, oauth2.HTTPClient, client), x
}

func (x *exchange) RoundTrip(req *http.Request) (*http.Response, error) {
	// Cancelled when either the request's own context (the client's
	// Timeout) or the fetch ends; the fetch's context always ends.
	ctx, cancel := context.WithCancel(req.Context())
	context.AfterFunc(x.ctx, cancel)
	resp, err := x.base.RoundTrip(req.WithContext(ctx))
	x.mu.Lock()
	x.err = err
	x.url = (&url.URL{Scheme: req.URL.Scheme, Host: req.URL.Host, Path: req.URL.Path}).String()
	if err == nil {
		x.status = resp.StatusCode
	}
	x.mu.Unlock()
	return resp, err
}

// failure turns what a token request ended with into an *Error, without
// any of secrets (nor anything that looks like a JWT) in it.
func (x *exchange) failure(provider, name string, err error, secrets ...string) *Error {
	x.mu.Lock()
	status, terr, u := x.status, x.err, x.url
	x.mu.Unlock()
	e := &Error{Provider: provider, Source: name}
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.Response != nil:
		e.Status = re.Response.StatusCode
		parseErrorBody(e, re.Body)
		if e.Code == "" {
			e.Code = re.ErrorCode
		}
		if e.Description == "" {
			e.Description = re.ErrorDescription
		}
		e.Temporary = temporaryStatus(e.Status) || temporaryCode(e.Code)
		e.RetryAfter = retryAfter(re.Response.Header.Get("Retry-After"))
	case terr != nil:
		// No answer: unreachable, refused, timed out; but a certificate
		// that does not verify will not verify later either.
		var cv *tls.CertificateVerificationError
		e.Temporary, e.Err = !errors.As(terr, &cv), terr
		if _, ok := terr.(*url.Error); !ok {
			e.Err = &url.Error{Op: "Post", URL: u, Err: terr}
		}
	case x.ctx.Err() != nil:
		e.Temporary, e.Err = true, x.ctx.Err()
	case status/100 == 2:
		// Not x/oauth2's message: it could quote the answer.
		e.Status, e.Err = status, errNoToken
	default:
		// A local failure (the key, the assertion).
		e.Err = err
	}
	redact(e, secrets)
	return e
}

var errNoToken = errors.New("the answer has no usable access token")

func temporaryStatus(status int) bool {
	return status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout
}

func temporaryCode(code string) bool {
	return code == "temporarily_unavailable" || code == "server_error"
}

// parseErrorBody reads an OAuth error answer (RFC 6749 5.2, plus
// Entra's error_codes); an answer that is not one is quoted, short.
func parseErrorBody(e *Error, body []byte) {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		e.Description = snippet(body)
		return
	}
	_ = json.Unmarshal(m["error"], &e.Code) // not a string: left empty
	_ = json.Unmarshal(m["error_description"], &e.Description)
	_ = json.Unmarshal(m["error_codes"], &e.ErrorCodes)
}

func snippet(body []byte) string {
	s := strings.Join(strings.FieldsFunc(string(body), unicode.IsSpace), " ")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return strings.ToValidUTF8(s, "")
}

func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

var jwtLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`)

// redact removes the secrets, and anything that looks like a JWT (an
// assertion, a token), from what e says.
func redact(e *Error, secrets []string) {
	e.Code = redactString(e.Code, secrets)
	e.Description = redactString(e.Description, secrets)
	if e.Err != nil {
		if msg := e.Err.Error(); redactString(msg, secrets) != msg {
			e.Err = errors.New(redactString(msg, secrets))
		}
	}
}

func redactString(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[redacted]")
			s = strings.ReplaceAll(s, url.QueryEscape(sec), "[redacted]")
		}
	}
	return jwtLike.ReplaceAllString(s, "[redacted JWT]")
}

// tokenOf is t with its expiry counted from sent, when the request was
// sent (x/oauth2 counts from the answer): never later than the
// endpoint's. No expires_in: one hour.
func tokenOf(t *oauth2.Token, sent time.Time) Token {
	secs := t.ExpiresIn
	if secs <= 0 {
		switch v := t.Extra("expires_in").(type) {
		case float64:
			secs = int64(v)
		case int64:
			secs = v
		case string:
			secs, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	life := defaultLifetime
	if secs > 0 {
		life = time.Duration(secs) * time.Second
	}
	return Token{Value: t.AccessToken, Expiry: sent.Add(life)}
}
