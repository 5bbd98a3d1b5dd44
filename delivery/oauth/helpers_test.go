package oauth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/delivery/oauth"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

const (
	tenant   = "contoso.onmicrosoft.com"
	clientID = "3a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"
	secret   = "Qx8~s3cr3t.value-NOT-the-id"
)

// entraSecret is a fake Entra ID with one app (client secret) and the
// options of a Source for it.
func entraSecret(t *testing.T) (*testenv.OAuthServer, oauth.EntraOptions) {
	t.Helper()
	srv := testenv.NewOAuthServer(t)
	srv.AddEntraApp(testenv.EntraApp{Tenant: tenant, ClientID: clientID, Secrets: []string{secret}})
	return srv, oauth.EntraOptions{
		Authority: srv.URL, TenantID: tenant, ClientID: clientID, Scope: oauth.ScopeExchangeOnline,
		ClientSecret: secret, HTTPClient: srv.Client, Timeout: 10 * time.Second,
	}
}

func newEntra(t *testing.T, o oauth.EntraOptions) oauth.Source {
	t.Helper()
	src, err := oauth.NewEntra(o)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mustToken gets a token that the server says is valid.
func mustToken(t *testing.T, src oauth.Source, srv *testenv.OAuthServer) oauth.Token {
	t.Helper()
	tok, err := src.Token(ctxT(t))
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if tok.Value == "" || tok.Expiry.IsZero() {
		t.Fatalf("Token = %+v", tok)
	}
	if srv != nil && !srv.Valid(tok.Value) {
		t.Fatalf("token %q is not valid at the server", tok.Value)
	}
	return tok
}

// mustFail gets the *oauth.Error of a failing Token.
func mustFail(t *testing.T, src oauth.Source) *oauth.Error {
	t.Helper()
	tok, err := src.Token(ctxT(t))
	if err == nil {
		t.Fatalf("Token = %+v, want an error", tok)
	}
	var oe *oauth.Error
	if !errors.As(err, &oe) {
		t.Fatalf("error %T %v is not an *oauth.Error", err, err)
	}
	return oe
}

// noSecrets fails if the error says any of secrets, or a JWT.
func noSecrets(t *testing.T, e *oauth.Error, secrets ...string) {
	t.Helper()
	for _, s := range []string{e.Error(), e.Description, e.Code, e.Advice()} {
		for _, sec := range secrets {
			if sec != "" && strings.Contains(s, sec) {
				t.Errorf("error leaks a secret: %q", s)
			}
		}
		if strings.Contains(s, "eyJ") {
			t.Errorf("error carries a JWT: %q", s)
		}
	}
}
