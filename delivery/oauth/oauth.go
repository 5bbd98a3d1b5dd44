// Package oauth gets OAuth 2.0 access tokens for jetrelay's outbound
// authentication, app-only (no user interaction): SMTP XOAUTH2 and
// OAUTHBEARER to smart hosts and routes, and the Microsoft Graph
// transport. Providers: Microsoft Entra ID (client credentials with a
// client secret or a certificate), Google Workspace (a service account
// with domain-wide delegation), and any OAuth 2.0 token endpoint (client
// credentials).
//
// Invariants:
//
//   - A Source caches its token and fetches a new one before the cached
//     one expires (5 minutes before, or a fifth of the lifetime for
//     short-lived tokens); concurrent callers share one fetch. A token
//     is never returned at or after the expiry the endpoint gave it
//     (counted from when the request was sent; no expires_in: one hour).
//   - If the early refresh fails, the cached token is still returned
//     while it is valid, so that a token endpoint outage costs nothing
//     until the token actually expires.
//   - A failed fetch is remembered briefly (a second, or the endpoint's
//     Retry-After up to a minute) and shared: a down endpoint is not
//     hammered, and a fixed one is used again soon.
//   - A caller's context bounds its wait, not the shared fetch; a fetch
//     nobody waits for any more is cancelled, and every fetch is bounded
//     by the provider's Timeout.
//   - Invalidate drops a token a server refused, so that the next Token
//     fetches a fresh one (the caller retries once, never in a loop).
//   - Every failure is an *Error that says whether it is temporary (the
//     token endpoint down, slow or overloaded: try again later) or not
//     (the credential or its setup is wrong: an operator must act), names
//     the provider and the HTTP status, and never contains a secret (nor
//     an assertion, a private key or a token, even when the endpoint
//     quotes them back). Error.Advice says what an administrator can do.
package oauth

import (
	"context"
	"fmt"
	"time"
)

// Source is a cached supply of access tokens for one credential.
type Source interface {
	// Token returns a valid access token, fetching one when none is
	// cached or the cached one is about to expire.
	Token(ctx context.Context) (Token, error)
	// Invalidate drops the cached token if it is value (a server refused
	// it), so that the next Token fetches a new one.
	Invalidate(value string)
	// Name says which provider and credential, for logs and errors,
	// without secrets: "entra tenant 72f9… client 3a1b…".
	Name() string
}

// Token is an access token.
type Token struct {
	Value  string
	Expiry time.Time // zero: unknown (treated as one hour after the fetch)
}

// Error is a failure to get a token.
type Error struct {
	// Provider is "entra", "google" or "oauth2".
	Provider string
	// Source names the credential (Source.Name).
	Source string
	// Status is the token endpoint's HTTP status (0: no answer).
	Status int
	// Code is the OAuth error code ("invalid_client",
	// "unauthorized_client", "invalid_grant", "invalid_scope"…), and
	// Description the provider's explanation (for Entra it starts with
	// the AADSTS code).
	Code, Description string
	// Temporary: the endpoint could not be reached, timed out, or answered
	// 5xx or 429; the same request may succeed later. Otherwise the
	// credential, the tenant, the consent or the scope is wrong (or the
	// endpoint's TLS certificate does not verify).
	Temporary bool
	// ErrorCodes are Entra's numeric error codes (error_codes: 7000215
	// for AADSTS7000215), if the endpoint sent any.
	ErrorCodes []int
	// RetryAfter is the wait the endpoint asked for (Retry-After on a
	// 429 or 503), if any.
	RetryAfter time.Duration
	// Err is the underlying error, if any (never one that carries a
	// secret, an assertion or a token).
	Err error
}

func (e *Error) Error() string {
	s := e.Provider + " token"
	if e.Source != "" {
		s = e.Source + ": token"
	}
	switch {
	case e.Status != 0 && e.Code != "":
		s += fmt.Sprintf(": HTTP %d %s", e.Status, e.Code)
	case e.Status != 0:
		s += fmt.Sprintf(": HTTP %d", e.Status)
	case e.Code != "":
		s += ": " + e.Code
	}
	if e.Description != "" {
		s += ": " + e.Description
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }
