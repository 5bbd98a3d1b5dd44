package oauth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Entra ID authorities (login endpoints) of the Microsoft clouds.
const (
	AuthorityGlobal       = "https://login.microsoftonline.com"
	AuthorityUSGovernment = "https://login.microsoftonline.us"
	AuthorityChina        = "https://login.chinacloudapi.cn"
)

// Scopes of the Microsoft resources jetrelay sends through.
const (
	ScopeExchangeOnline = "https://outlook.office365.com/.default" // SMTP XOAUTH2
	ScopeGraph          = "https://graph.microsoft.com/.default"   // Graph sendMail
)

// EntraOptions configure NewEntra: an app registration in a Microsoft
// Entra ID tenant, client credentials flow (v2.0 endpoint), with either a
// client secret or a certificate.
type EntraOptions struct {
	// Authority is the login endpoint, https (default AuthorityGlobal).
	Authority string
	// TenantID is the tenant's ID (a GUID) or one of its domains
	// (contoso.onmicrosoft.com).
	TenantID string
	// ClientID is the app registration's Application (client) ID.
	ClientID string
	// Scope is the resource's .default scope: ScopeExchangeOnline for
	// SMTP, ScopeGraph for Graph.
	Scope string

	// Exactly one credential: ClientSecret, or a certificate with its
	// RSA key, as Certificate or as CertificatePEM and KeyPEM (KeyPEM
	// empty: CertificatePEM holds both).
	ClientSecret           string
	Certificate            *tls.Certificate
	CertificatePEM, KeyPEM []byte

	// HTTPClient makes the requests (nil: the default transport).
	HTTPClient *http.Client
	// Timeout bounds one token request (default 30 s).
	Timeout time.Duration
}

type entra struct {
	name     string
	tokenURL string
	o        EntraOptions
	cert     *assertionKey // nil: client secret
}

// NewEntra returns a Source of Entra ID app-only tokens.
func NewEntra(o EntraOptions) (Source, error) {
	if o.Authority == "" {
		o.Authority = AuthorityGlobal
	}
	au, err := url.Parse(strings.TrimRight(o.Authority, "/"))
	if err != nil || au.Scheme != "https" || au.Host == "" || au.User != nil || au.RawQuery != "" {
		return nil, fmt.Errorf("oauth: entra: authority %q is not an https URL", o.Authority)
	}
	switch {
	case o.TenantID == "" || strings.ContainsAny(o.TenantID, "/?#% "):
		return nil, fmt.Errorf("oauth: entra: tenant ID %q is empty or not a tenant ID or domain", o.TenantID)
	case o.ClientID == "":
		return nil, errors.New("oauth: entra: client ID is empty")
	case o.Scope == "":
		return nil, errors.New("oauth: entra: scope is empty (e.g. " + ScopeExchangeOnline + ")")
	}
	p := &entra{tokenURL: au.String() + "/" + o.TenantID + "/oauth2/v2.0/token", o: o}
	hasCert := o.Certificate != nil || len(o.CertificatePEM) > 0
	switch {
	case o.ClientSecret != "" && hasCert:
		return nil, errors.New("oauth: entra: both a client secret and a certificate given; use one")
	case o.ClientSecret == "" && !hasCert:
		return nil, errors.New("oauth: entra: no client secret and no certificate")
	case hasCert:
		if p.cert, err = loadAssertionKey(o.Certificate, o.CertificatePEM, o.KeyPEM); err != nil {
			return nil, fmt.Errorf("oauth: entra: %w", err)
		}
	}
	p.name = "entra "
	if au.String() != AuthorityGlobal {
		p.name += au.Host + " "
	}
	p.name += "tenant " + o.TenantID + " client " + short(o.ClientID)
	return newCache("entra", p.name, o.Timeout, p.fetch), nil
}

func (p *entra) fetch(ctx context.Context) (Token, error) {
	cfg := clientcredentials.Config{
		ClientID:     p.o.ClientID,
		ClientSecret: p.o.ClientSecret,
		TokenURL:     p.tokenURL,
		Scopes:       []string{p.o.Scope},
		AuthStyle:    oauth2.AuthStyleInParams, // client_secret_post, as documented
	}
	secrets := []string{p.o.ClientSecret}
	if p.cert != nil {
		// A fresh assertion for each request: its jti is unique.
		a, err := p.cert.sign(p.o.ClientID, p.tokenURL, time.Now())
		if err != nil {
			return Token{}, &Error{Provider: "entra", Source: p.name, Err: fmt.Errorf("signing the client assertion: %w", err)}
		}
		cfg.EndpointParams = url.Values{"client_assertion_type": {assertionType}, "client_assertion": {a}}
		secrets = append(secrets, a)
	}
	ctx, x := newExchange(ctx, p.o.HTTPClient)
	sent := time.Now()
	t, err := cfg.Token(ctx)
	if err != nil {
		return Token{}, x.failure("entra", p.name, err, secrets...)
	}
	return tokenOf(t, sent), nil
}

// short is the start of an identifier, enough to recognise it.
func short(id string) string {
	if r := []rune(id); len(r) > 8 {
		return string(r[:8]) + "…"
	}
	return id
}
