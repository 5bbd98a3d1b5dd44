package testenv

import (
	"context"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// post sends a form and returns the status and the JSON answer.
func post(t *testing.T, s *OAuthServer, path string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := s.Client.PostForm(s.URL+path, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func sign(t *testing.T, key *rsa.PrivateKey, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOAuthServerEntraAssertion: the fake Entra ID checks a client
// assertion's signature, x5t, aud, iss, sub and time.
func TestOAuthServerEntraAssertion(t *testing.T) {
	s := NewOAuthServer(t)
	cert, _, _ := NewRSACertificate(t, "app")
	other, _, _ := NewRSACertificate(t, "other")
	s.AddEntraApp(EntraApp{Tenant: "t1", ClientID: "app", Cert: cert.Leaf})
	endpoint := s.EntraTokenURL("t1")
	sum := sha1.Sum(cert.Leaf.Raw) //nolint:gosec
	x5t := base64.RawURLEncoding.EncodeToString(sum[:])
	now := time.Now()
	good := jwt.MapClaims{"aud": endpoint, "iss": "app", "sub": "app", "jti": "1", "nbf": now.Unix(), "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for kk, vv := range good {
			c[kk] = vv
		}
		c[k] = v
		return c
	}
	key := cert.PrivateKey.(*rsa.PrivateKey)
	for _, tc := range []struct {
		name      string
		assertion string
		status    int
		aadsts    float64
	}{
		{"valid", sign(t, key, map[string]any{"x5t": x5t}, good), 200, 0},
		{"wrong x5t", sign(t, key, map[string]any{"x5t": "AAAA"}, good), 401, 700027},
		{"signed by another key", sign(t, other.PrivateKey.(*rsa.PrivateKey), map[string]any{"x5t": x5t}, good), 401, 700027},
		{"expired", sign(t, key, map[string]any{"x5t": x5t}, with("exp", now.Add(-time.Minute).Unix())), 401, 700024},
		{"no exp", sign(t, key, map[string]any{"x5t": x5t}, with("exp", nil)), 401, 50027},
		{"wrong aud", sign(t, key, map[string]any{"x5t": x5t}, with("aud", s.EntraTokenURL("t2"))), 401, 50027},
		{"wrong iss", sign(t, key, map[string]any{"x5t": x5t}, with("iss", "other")), 401, 50027},
		{"wrong sub", sign(t, key, map[string]any{"x5t": x5t}, with("sub", "other")), 401, 50027},
		{"garbage", "not.a.jwt", 401, 50027},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := post(t, s, "/t1/oauth2/v2.0/token", url.Values{"grant_type": {GrantClientCredentials}, "client_id": {"app"},
				"scope": {"https://graph.microsoft.com/.default"}, "client_assertion_type": {assertionType}, "client_assertion": {tc.assertion}})
			if status != tc.status {
				t.Fatalf("status %d %v, want %d", status, m, tc.status)
			}
			if tc.status == 200 {
				if tok, _ := m["access_token"].(string); !s.Valid(tok) || m["expires_in"] != float64(3599) {
					t.Errorf("answer %v", m)
				}
				return
			}
			codes, _ := m["error_codes"].([]any)
			if m["error"] != "invalid_client" || len(codes) != 1 || codes[0] != tc.aadsts ||
				!strings.HasPrefix(m["error_description"].(string), "AADSTS") {
				t.Errorf("answer %v", m)
			}
		})
	}
}

// TestOAuthServerGoogleAssertion: the fake Google checks the assertion's
// signature, issuer, audience, time, subject and scope.
func TestOAuthServerGoogleAssertion(t *testing.T) {
	s := NewOAuthServer(t)
	keyJSON := s.AddServiceAccount(t, GoogleAccount{Email: "sa@p.iam.gserviceaccount.com", Subjects: []string{"a@corp.example"}})
	var k struct {
		PrivateKey string `json:"private_key"`
		TokenURI   string `json:"token_uri"`
	}
	if err := json.Unmarshal(keyJSON, &k); err != nil || k.TokenURI != s.TokenURL() {
		t.Fatalf("key %s: %v", keyJSON, err)
	}
	b, _ := pem.Decode([]byte(k.PrivateKey))
	pk, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key := pk.(*rsa.PrivateKey)
	now := time.Now()
	claims := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{"iss": "sa@p.iam.gserviceaccount.com", "sub": "a@corp.example", "scope": "https://mail.google.com/",
			"aud": s.TokenURL(), "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		if k != "" {
			c[k] = v
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		status int
		code   string
	}{
		{"valid", claims("", nil), 200, ""},
		{"subject not delegated", claims("sub", "b@corp.example"), 401, "unauthorized_client"},
		{"scope not delegated", claims("scope", "https://www.googleapis.com/auth/gmail.send"), 401, "unauthorized_client"},
		{"no scope", claims("scope", ""), 400, "invalid_scope"},
		{"unknown account", claims("iss", "x@p.iam.gserviceaccount.com"), 400, "invalid_grant"},
		{"wrong audience", claims("aud", "https://oauth2.googleapis.com/token"), 400, "invalid_grant"},
		{"expired", claims("exp", now.Add(-time.Minute).Unix()), 400, "invalid_grant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := post(t, s, "/token", url.Values{"grant_type": {GrantJWTBearer}, "assertion": {sign(t, key, nil, tc.claims)}})
			if status != tc.status || (tc.code != "" && m["error"] != tc.code) {
				t.Errorf("answer %d %v, want %d %s", status, m, tc.status, tc.code)
			}
		})
	}
	// A replaced key no longer signs for the account.
	s.AddServiceAccount(t, GoogleAccount{Email: "sa@p.iam.gserviceaccount.com", Subjects: []string{"a@corp.example"}})
	status, m := post(t, s, "/token", url.Values{"grant_type": {GrantJWTBearer}, "assertion": {sign(t, key, nil, claims("", nil))}})
	if status != 400 || m["error_description"] != "Invalid JWT Signature." {
		t.Errorf("answer %d %v", status, m)
	}
	if n := s.Requests(GrantJWTBearer); n != 8 {
		t.Errorf("requests = %d, want 8", n)
	}
}

// TestOAuthServerScript: expiry, revocation, SetDown and Close.
func TestOAuthServerScript(t *testing.T) {
	s := NewOAuthServer(t)
	s.AddClient("c", "x")
	form := url.Values{"grant_type": {GrantClientCredentials}, "client_id": {"c"}, "client_secret": {"x"}}
	s.SetExpiresIn(1)
	_, m := post(t, s, "/token", form)
	short, _ := m["access_token"].(string)
	if !s.Valid(short) || s.Valid("nope") {
		t.Fatalf("answer %v", m)
	}
	Eventually(t, 5*time.Second, func() bool { return !s.Valid(short) }, "token did not expire")
	s.SetExpiresIn(0)
	_, m = post(t, s, "/token", form)
	if _, ok := m["expires_in"]; ok || !s.Valid(m["access_token"].(string)) {
		t.Errorf("answer %v", m)
	}
	s.RevokeAll()
	if s.Valid(m["access_token"].(string)) || s.Issued() != 2 {
		t.Errorf("revoked token valid, or %d issued", s.Issued())
	}
	s.SetDown(429)
	if status, _ := post(t, s, "/token", form); status != 429 {
		t.Errorf("status %d, want 429", status)
	}
	s.SetDown(0)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.TokenURL(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if _, err := s.Client.Do(req); err == nil {
		t.Errorf("a hanging server answered")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := s.Client.PostForm(s.TokenURL(), form)
		if err == nil {
			resp.Body.Close()
		}
	}()
	Eventually(t, 5*time.Second, func() bool { return s.Requests(GrantClientCredentials) == 5 }, "request not received")
	s.Close() // ends the hanging request
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close left a request hanging")
	}
}
