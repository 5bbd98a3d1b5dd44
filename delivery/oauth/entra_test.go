package oauth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jetrelay/jetrelay/delivery/oauth"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

func TestEntraSecret(t *testing.T) {
	srv, o := entraSecret(t)
	src := newEntra(t, o)
	tok := mustToken(t, src, srv)
	if again := mustToken(t, src, srv); again != tok {
		t.Errorf("second Token = %q, want the cached %q", again.Value, tok.Value)
	}
	if n := srv.Requests(testenv.GrantClientCredentials); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
	f := srv.LastForm()
	if f.Get("client_secret") != secret || f.Get("scope") != oauth.ScopeExchangeOnline || f.Get("client_id") != clientID {
		t.Errorf("form = %v", f)
	}
	if got, want := src.Name(), "entra 127.0.0.1"; !strings.HasPrefix(got, want) || strings.Contains(got, secret) {
		t.Errorf("Name = %q", got)
	}
}

func TestEntraCertificate(t *testing.T) {
	cert, certPEM, keyPEM := testenv.NewRSACertificate(t, "jetrelay")
	for _, tc := range []struct {
		name string
		set  func(o *oauth.EntraOptions)
	}{
		{"tls.Certificate", func(o *oauth.EntraOptions) { o.Certificate = &cert }},
		{"PEM cert and key", func(o *oauth.EntraOptions) { o.CertificatePEM, o.KeyPEM = certPEM, keyPEM }},
		{"PEM bundle", func(o *oauth.EntraOptions) { o.CertificatePEM = append(append([]byte{}, certPEM...), keyPEM...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testenv.NewOAuthServer(t)
			srv.AddEntraApp(testenv.EntraApp{Tenant: tenant, ClientID: clientID, Cert: cert.Leaf, Scopes: []string{oauth.ScopeGraph}})
			o := oauth.EntraOptions{Authority: srv.URL, TenantID: tenant, ClientID: clientID, Scope: oauth.ScopeGraph, HTTPClient: srv.Client}
			tc.set(&o)
			src := newEntra(t, o)
			tok := mustToken(t, src, srv)
			f := srv.LastForm()
			if f.Has("client_secret") || f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
				t.Errorf("form = %v", f)
			}
			// The assertion as sent (the server checked the signature).
			claims := jwt.MapClaims{}
			a, _, err := jwt.NewParser().ParseUnverified(f.Get("client_assertion"), claims)
			if err != nil {
				t.Fatal(err)
			}
			if a.Header["alg"] != "RS256" || a.Header["x5t"] == nil || a.Header["x5t#S256"] == nil {
				t.Errorf("header = %v", a.Header)
			}
			exp, _ := claims.GetExpirationTime()
			iat, _ := claims.GetIssuedAt()
			if claims["aud"] != srv.EntraTokenURL(tenant) || claims["iss"] != clientID || claims["sub"] != clientID ||
				claims["jti"] == "" || exp == nil || iat == nil || exp.Sub(iat.Time).Minutes() != 10 {
				t.Errorf("claims = %v", claims)
			}
			// A fresh assertion per request.
			src.Invalidate(tok.Value)
			mustToken(t, src, srv)
			claims2 := jwt.MapClaims{}
			if _, _, err := jwt.NewParser().ParseUnverified(srv.LastForm().Get("client_assertion"), claims2); err != nil || claims2["jti"] == claims["jti"] {
				t.Errorf("second assertion jti %v (first %v), %v", claims2["jti"], claims["jti"], err)
			}
		})
	}
}

func TestEntraCertificateNotRegistered(t *testing.T) {
	registered, _, _ := testenv.NewRSACertificate(t, "registered")
	other, _, _ := testenv.NewRSACertificate(t, "other")
	srv := testenv.NewOAuthServer(t)
	srv.AddEntraApp(testenv.EntraApp{Tenant: tenant, ClientID: clientID, Cert: registered.Leaf})
	src := newEntra(t, oauth.EntraOptions{Authority: srv.URL, TenantID: tenant, ClientID: clientID,
		Scope: oauth.ScopeExchangeOnline, Certificate: &other, HTTPClient: srv.Client})
	e := mustFail(t, src)
	if e.Temporary || e.Status != 401 || e.Code != "invalid_client" || !strings.Contains(e.Description, "AADSTS700027") {
		t.Errorf("error = %#v", e)
	}
	if !strings.Contains(e.Advice(), "certificate") {
		t.Errorf("Advice = %q", e.Advice())
	}
	noSecrets(t, e)
}

// TestEntraErrors: each refusal of the fake Entra ID comes back as a
// permanent *Error with its status, code, AADSTS code and advice, and
// without the secret.
func TestEntraErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		set        func(o *oauth.EntraOptions)
		status     int
		code       string
		aadsts     int
		adviceWord string
	}{
		{"wrong secret", func(o *oauth.EntraOptions) { o.ClientSecret = "wrong-" + secret }, 401, "invalid_client", 7000215, "client secret"},
		{"unknown tenant", func(o *oauth.EntraOptions) { o.TenantID = "fabrikam.onmicrosoft.com" }, 400, "invalid_request", 90002, "tenant"},
		{"unknown client", func(o *oauth.EntraOptions) { o.ClientID = "00000000-0000-0000-0000-000000000000" }, 400, "unauthorized_client", 700016, "client ID"},
		{"wrong scope", func(o *oauth.EntraOptions) { o.Scope = "https://outlook.office.com/SMTP.Send" }, 400, "invalid_scope", 70011, "scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, o := entraSecret(t)
			tc.set(&o)
			e := mustFail(t, newEntra(t, o))
			if e.Temporary || e.Status != tc.status || e.Code != tc.code || e.Provider != "entra" ||
				len(e.ErrorCodes) != 1 || e.ErrorCodes[0] != tc.aadsts {
				t.Errorf("error = %#v", e)
			}
			if !strings.Contains(e.Advice(), tc.adviceWord) {
				t.Errorf("Advice = %q, want it to mention %q", e.Advice(), tc.adviceWord)
			}
			if !strings.Contains(e.Error(), "HTTP") || !strings.HasPrefix(e.Error(), "entra 127.0.0.1") {
				t.Errorf("Error() = %q", e.Error())
			}
			noSecrets(t, e, secret, "wrong-"+secret)
			if srv.Issued() != 0 {
				t.Errorf("issued %d tokens", srv.Issued())
			}
		})
	}
}

// TestEntraSecretRotation: the cached token outlives a rotation; a fetch
// with the old secret then fails, one with the new secret works.
func TestEntraSecretRotation(t *testing.T) {
	srv, o := entraSecret(t)
	old := newEntra(t, o)
	tok := mustToken(t, old, srv)
	srv.SetSecret(clientID, secret, "new-secret") // both, during the rotation
	o2 := o
	o2.ClientSecret = "new-secret"
	mustToken(t, newEntra(t, o2), srv)
	srv.SetSecret(clientID, "new-secret")
	if got := mustToken(t, old, srv); got != tok {
		t.Errorf("cached token replaced: %q, want %q", got.Value, tok.Value)
	}
	old.Invalidate(tok.Value)
	if e := mustFail(t, old); e.Temporary || !strings.Contains(e.Description, "AADSTS7000215") {
		t.Errorf("error = %#v", e)
	}
}

func TestEntraOptions(t *testing.T) {
	cert, certPEM, keyPEM := testenv.NewRSACertificate(t, "jetrelay")
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ecKey)
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})
	pki := testenv.NewPKI(t)
	ecCert := pki.Cert
	ok := oauth.EntraOptions{TenantID: tenant, ClientID: clientID, Scope: oauth.ScopeExchangeOnline, ClientSecret: secret}
	for _, tc := range []struct {
		name    string
		set     func(o *oauth.EntraOptions)
		wantErr string // "": valid
		name2   string
	}{
		{"secret, global", func(o *oauth.EntraOptions) {}, "", "entra tenant contoso.onmicrosoft.com client 3a1b2c3d…"},
		{"US government", func(o *oauth.EntraOptions) { o.Authority = oauth.AuthorityUSGovernment + "/" }, "", "entra login.microsoftonline.us tenant contoso.onmicrosoft.com client 3a1b2c3d…"},
		{"China", func(o *oauth.EntraOptions) { o.Authority = oauth.AuthorityChina }, "", "entra login.chinacloudapi.cn tenant"},
		{"certificate", func(o *oauth.EntraOptions) { o.ClientSecret, o.Certificate = "", &cert }, "", "entra tenant"},
		{"http authority", func(o *oauth.EntraOptions) { o.Authority = "http://login.microsoftonline.com" }, "https", ""},
		{"no tenant", func(o *oauth.EntraOptions) { o.TenantID = "" }, "tenant", ""},
		{"tenant with a slash", func(o *oauth.EntraOptions) { o.TenantID = "a/b" }, "tenant", ""},
		{"no client", func(o *oauth.EntraOptions) { o.ClientID = "" }, "client ID", ""},
		{"no scope", func(o *oauth.EntraOptions) { o.Scope = "" }, "scope", ""},
		{"no credential", func(o *oauth.EntraOptions) { o.ClientSecret = "" }, "no client secret", ""},
		{"both credentials", func(o *oauth.EntraOptions) { o.CertificatePEM, o.KeyPEM = certPEM, keyPEM }, "both", ""},
		{"key not matching", func(o *oauth.EntraOptions) { o.ClientSecret, o.CertificatePEM, o.KeyPEM = "", certPEM, ecPEM }, "certificate", ""},
		{"EC certificate", func(o *oauth.EntraOptions) { o.ClientSecret, o.Certificate = "", &ecCert }, "RSA", ""},
		{"not PEM", func(o *oauth.EntraOptions) { o.ClientSecret, o.CertificatePEM = "", []byte("nope") }, "certificate", ""},
		{"empty tls.Certificate", func(o *oauth.EntraOptions) { o.ClientSecret, o.Certificate = "", &tls.Certificate{} }, "no certificate", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.set(&o)
			src, err := oauth.NewEntra(o)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("NewEntra: %v", err)
			case tc.wantErr == "" && !strings.HasPrefix(src.Name(), tc.name2):
				t.Errorf("Name = %q, want %q…", src.Name(), tc.name2)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("NewEntra error = %v, want one about %q", err, tc.wantErr)
			case err != nil && strings.Contains(err.Error(), secret):
				t.Errorf("error leaks the secret: %v", err)
			}
		})
	}
}
