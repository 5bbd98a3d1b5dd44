package oauth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// ClientAuth is how a client presents its secret (RFC 6749 2.3.1).
type ClientAuth int

const (
	// ClientAuthAuto tries HTTP Basic, then the form, and remembers
	// what worked.
	ClientAuthAuto ClientAuth = iota
	// ClientAuthBasic: HTTP Basic (client_secret_basic).
	ClientAuthBasic
	// ClientAuthPost: in the form (client_secret_post).
	ClientAuthPost
)

// GenericOptions configure NewGeneric: any OAuth 2.0 token endpoint,
// client credentials grant.
type GenericOptions struct {
	// TokenURL is the token endpoint (https; http only on loopback).
	TokenURL     string
	ClientID     string
	ClientSecret string
	Scopes       []string
	// EndpointParams are extra form parameters (audience, resource…).
	EndpointParams url.Values
	// ClientAuth is how the secret is sent (default ClientAuthAuto).
	ClientAuth ClientAuth

	// HTTPClient makes the requests (nil: the default transport).
	HTTPClient *http.Client
	// Timeout bounds one token request (default 30 s).
	Timeout time.Duration
}

type generic struct {
	name string
	cfg  *clientcredentials.Config // kept: it remembers ClientAuthAuto's finding
	hc   *http.Client
}

// NewGeneric returns a Source of client credentials tokens.
func NewGeneric(o GenericOptions) (Source, error) {
	if err := checkTokenURL(o.TokenURL); err != nil {
		return nil, fmt.Errorf("oauth: oauth2: %w", err)
	}
	if o.ClientID == "" {
		return nil, errors.New("oauth: oauth2: client ID is empty")
	}
	style := map[ClientAuth]oauth2.AuthStyle{
		ClientAuthAuto:  oauth2.AuthStyleAutoDetect,
		ClientAuthBasic: oauth2.AuthStyleInHeader,
		ClientAuthPost:  oauth2.AuthStyleInParams,
	}[o.ClientAuth]
	u, _ := url.Parse(o.TokenURL)
	p := &generic{
		name: "oauth2 " + u.Host + u.Path + " client " + short(o.ClientID),
		cfg: &clientcredentials.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret,
			TokenURL: o.TokenURL, Scopes: o.Scopes, EndpointParams: o.EndpointParams, AuthStyle: style},
		hc: o.HTTPClient,
	}
	return newCache("oauth2", p.name, o.Timeout, p.fetch), nil
}

func (p *generic) fetch(ctx context.Context) (Token, error) {
	ctx, x := newExchange(ctx, p.hc)
	sent := time.Now()
	t, err := p.cfg.Token(ctx)
	if err != nil {
		return Token{}, x.failure("oauth2", p.name, err, p.cfg.ClientSecret)
	}
	return tokenOf(t, sent), nil
}

// checkTokenURL: an absolute https URL (http only to a loopback
// address), without credentials in it.
func checkTokenURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "" || u.User != nil:
		return fmt.Errorf("token URL %q is not an absolute URL without credentials", s)
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	}
	return fmt.Errorf("token URL %q is not https", s)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
