package oauth

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"time"

	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"
)

// ScopeGmail is the scope of Gmail's SMTP (XOAUTH2).
const ScopeGmail = "https://mail.google.com/"

// GoogleOptions configure NewGoogle: a Google Cloud service account with
// domain-wide delegation in a Google Workspace domain, acting as one
// mailbox (JWT bearer grant).
type GoogleOptions struct {
	// KeyJSON is the service account's JSON key ("type":
	// "service_account").
	KeyJSON []byte
	// Subject is the mailbox to act as (alerts@corp.example).
	Subject string
	// Scopes asked for (default ScopeGmail). Each must be granted to the
	// service account's client ID in the Admin console.
	Scopes []string
	// TokenURL overrides the key's token_uri (tests).
	TokenURL string

	// HTTPClient makes the requests (nil: the default transport).
	HTTPClient *http.Client
	// Timeout bounds one token request (default 30 s).
	Timeout time.Duration
}

type googleSA struct {
	name string
	cfg  *jwt.Config
	hc   *http.Client
}

// NewGoogle returns a Source of Google tokens for o.Subject.
func NewGoogle(o GoogleOptions) (Source, error) {
	if o.Subject == "" {
		return nil, errors.New("oauth: google: no subject (the mailbox to act as)")
	}
	if len(o.Scopes) == 0 {
		o.Scopes = []string{ScopeGmail}
	}
	cfg, err := google.JWTConfigFromJSON(o.KeyJSON, o.Scopes...)
	if err != nil {
		return nil, fmt.Errorf("oauth: google: service account key: %w", err)
	}
	if cfg.Email == "" || len(cfg.PrivateKey) == 0 {
		return nil, errors.New("oauth: google: service account key: no client_email or private_key")
	}
	if o.TokenURL != "" {
		cfg.TokenURL = o.TokenURL
	}
	if err := checkTokenURL(cfg.TokenURL); err != nil {
		return nil, fmt.Errorf("oauth: google: %w", err)
	}
	cfg.Subject = o.Subject
	p := &googleSA{cfg: cfg, hc: o.HTTPClient,
		name: "google service account " + cfg.Email + " as " + o.Subject}
	if err := checkRSAKey(cfg.PrivateKey); err != nil {
		return nil, fmt.Errorf("oauth: google: service account key: %w", err)
	}
	return newCache("google", p.name, o.Timeout, p.fetch), nil
}

func (p *googleSA) fetch(ctx context.Context) (Token, error) {
	ctx, x := newExchange(ctx, p.hc)
	sent := time.Now()
	t, err := p.cfg.TokenSource(ctx).Token()
	if err != nil {
		return Token{}, x.failure("google", p.name, err)
	}
	return tokenOf(t, sent), nil
}

// checkRSAKey: the key (PEM, PKCS#8 or PKCS#1) parses and is RSA, as the
// JWT bearer grant's RS256 needs.
func checkRSAKey(keyPEM []byte) error {
	der := keyPEM
	if b, _ := pem.Decode(keyPEM); b != nil {
		der = b.Bytes
	}
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		if _, ok := k.(*rsa.PrivateKey); !ok {
			return errors.New("private_key is not an RSA key")
		}
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(der); err != nil {
		return errors.New("private_key does not parse (PKCS#8 or PKCS#1, PEM)")
	}
	return nil
}
