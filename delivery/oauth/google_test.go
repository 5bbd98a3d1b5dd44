package oauth_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jetrelay/jetrelay/delivery/oauth"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

const (
	saEmail = "relay@jetrelay-test.iam.gserviceaccount.com"
	mailbox = "alerts@corp.example"
)

func googleSetup(t *testing.T) (*testenv.OAuthServer, []byte) {
	t.Helper()
	srv := testenv.NewOAuthServer(t)
	key := srv.AddServiceAccount(t, testenv.GoogleAccount{Email: saEmail, Subjects: []string{mailbox}})
	return srv, key
}

func newGoogle(t *testing.T, o oauth.GoogleOptions) oauth.Source {
	t.Helper()
	src, err := oauth.NewGoogle(o)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestGoogle(t *testing.T) {
	srv, key := googleSetup(t)
	src := newGoogle(t, oauth.GoogleOptions{KeyJSON: key, Subject: mailbox, HTTPClient: srv.Client})
	if got, want := src.Name(), "google service account "+saEmail+" as "+mailbox; got != want {
		t.Errorf("Name = %q, want %q", got, want)
	}
	tok := mustToken(t, src, srv)
	if got := mustToken(t, src, srv); got != tok {
		t.Errorf("not cached")
	}
	if n := srv.Requests(testenv.GrantJWTBearer); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(srv.LastForm().Get("assertion"), claims); err != nil {
		t.Fatal(err)
	}
	if claims["sub"] != mailbox || claims["iss"] != saEmail || claims["scope"] != oauth.ScopeGmail || claims["aud"] != srv.TokenURL() {
		t.Errorf("assertion claims = %v", claims)
	}
}

// TestGoogleTokenURL: TokenURL replaces the key's token_uri (here the
// real Google's, which must not be asked).
func TestGoogleTokenURL(t *testing.T) {
	srv, key := googleSetup(t)
	var m map[string]any
	if err := json.Unmarshal(key, &m); err != nil {
		t.Fatal(err)
	}
	m["token_uri"] = "https://oauth2.googleapis.com/token"
	key, _ = json.Marshal(m)
	src := newGoogle(t, oauth.GoogleOptions{KeyJSON: key, Subject: mailbox, TokenURL: srv.TokenURL(), HTTPClient: srv.Client})
	mustToken(t, src, srv)
}

func TestGoogleErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		o          func(key []byte) oauth.GoogleOptions
		status     int
		code       string
		adviceWord string
	}{
		{"subject not delegated", func(key []byte) oauth.GoogleOptions {
			return oauth.GoogleOptions{KeyJSON: key, Subject: "ceo@corp.example"}
		}, 401, "unauthorized_client", "Domain-wide delegation"},
		{"scope not delegated", func(key []byte) oauth.GoogleOptions {
			return oauth.GoogleOptions{KeyJSON: key, Subject: mailbox, Scopes: []string{"https://www.googleapis.com/auth/gmail.send"}}
		}, 401, "unauthorized_client", "Domain-wide delegation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, key := googleSetup(t)
			o := tc.o(key)
			o.HTTPClient = srv.Client
			e := mustFail(t, newGoogle(t, o))
			if e.Temporary || e.Status != tc.status || e.Code != tc.code || e.Provider != "google" {
				t.Errorf("error = %#v", e)
			}
			if !strings.Contains(e.Advice(), tc.adviceWord) {
				t.Errorf("Advice = %q", e.Advice())
			}
			noSecrets(t, e)
		})
	}
}

// TestGoogleKeyReplaced: a deleted key (the account got a new one) is
// invalid_grant, with advice about the key.
func TestGoogleKeyReplaced(t *testing.T) {
	srv, oldKey := googleSetup(t)
	srv.AddServiceAccount(t, testenv.GoogleAccount{Email: saEmail, Subjects: []string{mailbox}})
	e := mustFail(t, newGoogle(t, oauth.GoogleOptions{KeyJSON: oldKey, Subject: mailbox, HTTPClient: srv.Client}))
	if e.Temporary || e.Status != 400 || e.Code != "invalid_grant" || !strings.Contains(e.Advice(), "key") {
		t.Errorf("error = %#v, advice %q", e, e.Advice())
	}
	noSecrets(t, e)
}

func TestGoogleOptions(t *testing.T) {
	_, key := googleSetup(t)
	var m map[string]any
	_ = json.Unmarshal(key, &m)
	m["private_key"] = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
	badKey, _ := json.Marshal(m)
	for _, tc := range []struct {
		name    string
		o       oauth.GoogleOptions
		wantErr string
	}{
		{"no subject", oauth.GoogleOptions{KeyJSON: key}, "subject"},
		{"not JSON", oauth.GoogleOptions{KeyJSON: []byte("{"), Subject: mailbox}, "key"},
		{"user credentials", oauth.GoogleOptions{KeyJSON: []byte(`{"type":"authorized_user"}`), Subject: mailbox}, "key"},
		{"bad private key", oauth.GoogleOptions{KeyJSON: badKey, Subject: mailbox}, "private_key"},
		{"http token URL", oauth.GoogleOptions{KeyJSON: key, Subject: mailbox, TokenURL: "http://oauth2.googleapis.com/token"}, "https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := oauth.NewGoogle(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("NewGoogle error = %v, want one about %q", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error quotes the key: %v", err)
			}
		})
	}
}
