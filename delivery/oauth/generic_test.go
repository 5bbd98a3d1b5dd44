package oauth_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/delivery/oauth"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

func TestGeneric(t *testing.T) {
	for _, tc := range []struct {
		name string
		auth oauth.ClientAuth
		form bool // secret in the form
	}{
		{"auto", oauth.ClientAuthAuto, false},
		{"basic", oauth.ClientAuthBasic, false},
		{"post", oauth.ClientAuthPost, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testenv.NewOAuthServer(t)
			srv.AddClient("mailer", "s3cret", "smtp")
			src, err := oauth.NewGeneric(oauth.GenericOptions{TokenURL: srv.TokenURL(), ClientID: "mailer-client-1", ClientSecret: "s3cret",
				Scopes: []string{"smtp"}, ClientAuth: tc.auth, HTTPClient: srv.Client})
			if err != nil {
				t.Fatal(err)
			}
			if got := src.Name(); !strings.HasPrefix(got, "oauth2 127.0.0.1:") || !strings.HasSuffix(got, "/token client mailer-c…") {
				t.Errorf("Name = %q", got)
			}
			// Not registered under that ID yet: refused, permanently.
			e := mustFail(t, src)
			if e.Temporary || e.Status != 401 || e.Code != "invalid_client" || e.Provider != "oauth2" || !strings.Contains(e.Advice(), "client secret") {
				t.Errorf("error = %#v, advice %q", e, e.Advice())
			}
			noSecrets(t, e, "s3cret")

			srv.AddClient("mailer-client-1", "s3cret", "smtp")
			var tok oauth.Token
			testenv.Eventually(t, 5*time.Second, func() bool {
				var err error
				tok, err = src.Token(ctxT(t))
				return err == nil
			}, "no token after the client was registered")
			if !srv.Valid(tok.Value) {
				t.Errorf("token not valid")
			}
			if got := srv.LastForm().Has("client_secret"); got != tc.form {
				t.Errorf("secret in the form: %v, want %v", got, tc.form)
			}
		})
	}
}

func TestGenericOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		o       oauth.GenericOptions
		wantErr string
	}{
		{"https", oauth.GenericOptions{TokenURL: "https://idp.example/oauth2/token", ClientID: "a"}, ""},
		{"http loopback", oauth.GenericOptions{TokenURL: "http://127.0.0.1:8080/token", ClientID: "a"}, ""},
		{"http localhost", oauth.GenericOptions{TokenURL: "http://localhost:8080/token", ClientID: "a"}, ""},
		{"http elsewhere", oauth.GenericOptions{TokenURL: "http://idp.example/token", ClientID: "a"}, "https"},
		{"relative", oauth.GenericOptions{TokenURL: "/token", ClientID: "a"}, "absolute"},
		{"credentials in URL", oauth.GenericOptions{TokenURL: "https://a:b@idp.example/token", ClientID: "a"}, "credentials"},
		{"no client", oauth.GenericOptions{TokenURL: "https://idp.example/token"}, "client ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := oauth.NewGeneric(tc.o)
			if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("NewGeneric error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestNoSecretInErrors: an endpoint that quotes back everything it got
// (the secret, the assertion) does not make the error carry them.
func TestNoSecretInErrors(t *testing.T) {
	echo := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		u, p, _ := r.BasicAuth()
		_ = json.NewEncoder(w).Encode(map[string]any{
			"error":             "invalid_client",
			"error_description": "refused " + r.PostForm.Encode() + " basic " + u + ":" + p + " raw " + r.PostForm.Get("client_assertion") + " " + r.PostForm.Get("client_secret"),
		})
	}))
	t.Cleanup(echo.Close)
	const sec = "v3ry/s3cret+value="
	cert, _, _ := testenv.NewRSACertificate(t, "jetrelay")
	generic, err := oauth.NewGeneric(oauth.GenericOptions{TokenURL: echo.URL + "/token", ClientID: "c", ClientSecret: sec, HTTPClient: echo.Client()})
	if err != nil {
		t.Fatal(err)
	}
	post, err := oauth.NewGeneric(oauth.GenericOptions{TokenURL: echo.URL + "/token", ClientID: "c", ClientSecret: sec, ClientAuth: oauth.ClientAuthPost, HTTPClient: echo.Client()})
	if err != nil {
		t.Fatal(err)
	}
	entraSec := newEntra(t, oauth.EntraOptions{Authority: echo.URL, TenantID: tenant, ClientID: clientID, Scope: oauth.ScopeGraph, ClientSecret: sec, HTTPClient: echo.Client()})
	entraCert := newEntra(t, oauth.EntraOptions{Authority: echo.URL, TenantID: tenant, ClientID: clientID, Scope: oauth.ScopeGraph, Certificate: &cert, HTTPClient: echo.Client()})
	for _, src := range []oauth.Source{generic, post, entraSec, entraCert} {
		e := mustFail(t, src)
		if !strings.Contains(e.Description, "refused") {
			t.Errorf("%s: description %q", src.Name(), e.Description)
		}
		noSecrets(t, e, sec, url.QueryEscape(sec))
	}
}
