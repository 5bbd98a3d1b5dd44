package testenv

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is the SHA-1 thumbprint
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Grant types, as OAuthServer.Requests counts them.
const (
	GrantClientCredentials = "client_credentials"
	GrantJWTBearer         = "urn:ietf:params:oauth:grant-type:jwt-bearer"
)

const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// OAuthServer is a fake OAuth 2.0 token service over TLS on loopback. It
// speaks Microsoft Entra ID's v2.0 token endpoint at
// /{tenant}/oauth2/v2.0/token (client credentials with a client secret or
// a certificate's signed assertion) and, at /token, Google's JWT bearer
// grant for service accounts and a plain client credentials grant. It
// checks what it gets like the real ones do and answers errors in their
// words. Tokens are distinct, expire, and can be revoked; the test can
// ask whether one is valid. It is safe for concurrent use.
type OAuthServer struct {
	URL    string       // https://127.0.0.1:port
	Client *http.Client // trusts the server's certificate
	PKI    *PKI

	t       testing.TB
	srv     *httptest.Server
	closing chan struct{}
	once    sync.Once

	mu        sync.Mutex
	apps      map[string]*EntraApp      // by client ID
	accounts  map[string]*googleAccount // by client_email
	clients   map[string]*oauthClient   // by client ID
	expiresIn int
	down      bool
	downCode  int
	gate      chan struct{}
	tokens    map[string]*issuedToken
	requests  map[string]int
	last      url.Values
	n         int
}

// EntraApp is an app registration the fake Entra ID knows.
type EntraApp struct {
	Tenant   string            // tenant ID or domain
	ClientID string            // application (client) ID
	Secrets  []string          // client secrets accepted
	Cert     *x509.Certificate // certificate accepted for assertions
	// Scopes accepted (default the Exchange Online and Graph .default
	// scopes).
	Scopes []string
}

// GoogleAccount is a service account with domain-wide delegation.
type GoogleAccount struct {
	Email    string   // client_email
	Subjects []string // mailboxes it may act as
	Scopes   []string // delegated scopes (default https://mail.google.com/)
}

type googleAccount struct {
	GoogleAccount
	key   *rsa.PublicKey
	keyID string
}

type oauthClient struct {
	secrets []string
	scopes  []string
}

type issuedToken struct {
	expiry  time.Time
	revoked bool
}

// NewOAuthServer starts a token server; it stops when the test ends.
func NewOAuthServer(t testing.TB) *OAuthServer {
	t.Helper()
	s := &OAuthServer{
		t: t, PKI: NewPKI(t), closing: make(chan struct{}), expiresIn: 3599,
		apps: map[string]*EntraApp{}, accounts: map[string]*googleAccount{}, clients: map[string]*oauthClient{},
		tokens: map[string]*issuedToken{}, requests: map[string]int{},
	}
	s.srv = httptest.NewUnstartedServer(s)
	s.srv.TLS = s.PKI.ServerConfig()
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	s.URL = s.srv.URL
	s.Client = &http.Client{Transport: &http.Transport{TLSClientConfig: s.PKI.ClientConfig("")}}
	t.Cleanup(s.Close)
	return s
}

// Close stops the server; requests left hanging by SetDown(0) end.
func (s *OAuthServer) Close() {
	s.once.Do(func() {
		close(s.closing)
		s.srv.Close()
		s.Client.CloseIdleConnections()
	})
}

// EntraTokenURL is the Entra token endpoint of tenant.
func (s *OAuthServer) EntraTokenURL(tenant string) string {
	return s.URL + "/" + tenant + "/oauth2/v2.0/token"
}

// TokenURL is the endpoint of Google's grant and of plain clients.
func (s *OAuthServer) TokenURL() string { return s.URL + "/token" }

// AddEntraApp registers (or replaces) an app.
func (s *OAuthServer) AddEntraApp(a EntraApp) {
	if len(a.Scopes) == 0 {
		a.Scopes = []string{"https://outlook.office365.com/.default", "https://graph.microsoft.com/.default"}
	}
	s.mu.Lock()
	s.apps[a.ClientID] = &a
	s.mu.Unlock()
}

// AddClient registers (or replaces) a plain client credentials client;
// no scopes: any scope.
func (s *OAuthServer) AddClient(clientID, secret string, scopes ...string) {
	s.mu.Lock()
	s.clients[clientID] = &oauthClient{secrets: []string{secret}, scopes: scopes}
	s.mu.Unlock()
}

// SetSecret makes secrets the ones accepted for an Entra app's or a
// plain client's ID (several: a rotation in progress).
func (s *OAuthServer) SetSecret(clientID string, secrets ...string) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[clientID]; a != nil {
		a.Secrets = secrets
	} else if c := s.clients[clientID]; c != nil {
		c.secrets = secrets
	} else {
		s.t.Fatalf("oauth server: no client %q", clientID)
	}
}

// AddServiceAccount registers a service account with a fresh RSA key and
// returns its JSON key, whose token_uri is this server. Adding the same
// email again replaces the key: the old one no longer works.
func (s *OAuthServer) AddServiceAccount(t testing.TB, a GoogleAccount) []byte {
	t.Helper()
	if len(a.Scopes) == 0 {
		a.Scopes = []string{"https://mail.google.com/"}
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var id [20]byte
	_, _ = rand.Read(id[:])
	keyID := hex.EncodeToString(id[:])
	j, err := json.Marshal(map[string]string{
		"type":                        "service_account",
		"project_id":                  "jetrelay-test",
		"private_key_id":              keyID,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                a.Email,
		"client_id":                   "1000000000000000000001",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   s.TokenURL(),
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
	})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.accounts[a.Email] = &googleAccount{GoogleAccount: a, key: &key.PublicKey, keyID: keyID}
	s.mu.Unlock()
	return j
}

// SetExpiresIn sets the lifetime of the tokens issued from now on, in
// seconds (default 3599); 0 omits expires_in (the token lives an hour).
func (s *OAuthServer) SetExpiresIn(secs int) { s.mu.Lock(); s.expiresIn = secs; s.mu.Unlock() }

// SetDown makes every request get status (503…), or hang until the
// client gives up or the server closes when status is 0.
func (s *OAuthServer) SetDown(status int) {
	s.mu.Lock()
	s.down, s.downCode = true, status
	s.mu.Unlock()
}

// Hold makes requests wait, from now on, until release is called (or the
// client gives up, or the server closes): a slow endpoint, for tests of
// callers arriving during a fetch.
func (s *OAuthServer) Hold() (release func()) {
	g := make(chan struct{})
	s.mu.Lock()
	s.gate = g
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.gate == g {
				s.gate = nil
			}
			s.mu.Unlock()
			close(g)
		})
	}
}

// SetUp ends SetDown.
func (s *OAuthServer) SetUp() { s.mu.Lock(); s.down = false; s.mu.Unlock() }

// Valid says whether token was issued here, is not revoked and has not
// expired.
func (s *OAuthServer) Valid(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.tokens[token]
	return it != nil && !it.revoked && time.Now().Before(it.expiry)
}

// Revoke makes token invalid.
func (s *OAuthServer) Revoke(token string) {
	s.mu.Lock()
	if it := s.tokens[token]; it != nil {
		it.revoked = true
	}
	s.mu.Unlock()
}

// RevokeAll makes every token issued so far invalid.
func (s *OAuthServer) RevokeAll() {
	s.mu.Lock()
	for _, it := range s.tokens {
		it.revoked = true
	}
	s.mu.Unlock()
}

// Requests is the number of requests with this grant_type so far
// (GrantClientCredentials, GrantJWTBearer), answered or not.
func (s *OAuthServer) Requests(grant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[grant]
}

// Issued is the number of tokens issued so far.
func (s *OAuthServer) Issued() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.tokens) }

// LastForm is the form of the last request (secrets included: a test
// server).
func (s *OAuthServer) LastForm() url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *OAuthServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request", "error_description": "malformed form"})
		return
	}
	grant := r.PostForm.Get("grant_type")
	s.mu.Lock()
	s.requests[grant]++
	s.last = r.PostForm
	down, code, gate := s.down, s.downCode, s.gate
	s.mu.Unlock()
	// A request left hanging never ends in an answer: returning from the
	// handler would send 200 with an empty body, which a client that
	// gives up at that very moment can still read (net/http's transport
	// races its own cancellation against the response).
	// http.ErrAbortHandler drops the connection without a reply.
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			panic(http.ErrAbortHandler)
		case <-s.closing:
			panic(http.ErrAbortHandler)
		}
	}
	if down {
		if code == 0 {
			select {
			case <-r.Context().Done():
			case <-s.closing:
			}
			panic(http.ErrAbortHandler)
		}
		writeJSON(w, code, map[string]any{"error": "temporarily_unavailable", "error_description": "the service is down (test)"})
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	switch {
	case len(parts) == 4 && parts[1] == "oauth2" && parts[2] == "v2.0" && parts[3] == "token":
		s.entra(w, r, parts[0])
	case r.URL.Path == "/token" && grant == GrantJWTBearer:
		s.google(w, r)
	case r.URL.Path == "/token" && grant == GrantClientCredentials:
		s.plain(w, r)
	case r.URL.Path == "/token":
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "unsupported_grant_type", "error_description": "grant_type " + grant})
	default:
		http.NotFound(w, r)
	}
}

// entra answers like https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token.
func (s *OAuthServer) entra(w http.ResponseWriter, r *http.Request, tenant string) {
	f := r.PostForm
	clientID, secret := f.Get("client_id"), f.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		clientID, secret = u, p
	}
	s.mu.Lock()
	var app *EntraApp
	known := false
	for _, a := range s.apps {
		if a.Tenant == tenant {
			known = true
			if a.ClientID == clientID {
				c := *a
				app = &c
			}
		}
	}
	s.mu.Unlock()
	switch {
	case f.Get("grant_type") != GrantClientCredentials:
		entraError(w, 400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type '"+f.Get("grant_type")+"'.")
	case !known:
		entraError(w, 400, "invalid_request", 90002, "Tenant '"+tenant+"' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.")
	case app == nil:
		entraError(w, 400, "unauthorized_client", 700016, "Application with identifier '"+clientID+"' was not found in the directory '"+tenant+"'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.")
	case f.Get("client_assertion_type") == assertionType:
		if code, desc := checkEntraAssertion(f.Get("client_assertion"), app, s.EntraTokenURL(tenant)); code != 0 {
			entraError(w, 401, "invalid_client", code, desc)
			return
		}
		s.entraScope(w, f, app)
	case secret != "":
		if !slices.Contains(app.Secrets, secret) {
			entraError(w, 401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '"+clientID+"'.")
			return
		}
		s.entraScope(w, f, app)
	default:
		entraError(w, 401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
	}
}

func (s *OAuthServer) entraScope(w http.ResponseWriter, f url.Values, app *EntraApp) {
	if !slices.Contains(app.Scopes, f.Get("scope")) {
		entraError(w, 400, "invalid_scope", 70011, "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope "+f.Get("scope")+" is not valid.")
		return
	}
	s.issue(w, "entra-", true)
}

// checkEntraAssertion validates a client assertion like Entra ID: an
// RS256 JWT signed by the app's certificate (x5t its SHA-1 thumbprint),
// for the endpoint, from and about the client, within its time.
func checkEntraAssertion(a string, app *EntraApp, endpoint string) (int, string) {
	if app.Cert == nil {
		return 700027, "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found.]"
	}
	sum := sha1.Sum(app.Cert.Raw) //nolint:gosec
	thumb := base64.RawURLEncoding.EncodeToString(sum[:])
	errX5t := errors.New("x5t")
	_, err := jwt.Parse(a, func(t *jwt.Token) (any, error) {
		if x, _ := t.Header["x5t"].(string); x != thumb {
			return nil, errX5t
		}
		return app.Cert.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(endpoint), jwt.WithIssuer(app.ClientID),
		jwt.WithSubject(app.ClientID), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	switch {
	case err == nil:
		return 0, ""
	case errors.Is(err, errX5t):
		return 700027, "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found.]"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return 700027, "Client assertion failed signature validation."
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return 700024, "Client assertion is not within its valid time range."
	}
	return 50027, "JWT token is invalid or malformed (" + err.Error() + ")."
}

func entraError(w http.ResponseWriter, status int, code string, n int, desc string) {
	var id [16]byte
	_, _ = rand.Read(id[:])
	trace := fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:])
	now := time.Now().UTC()
	writeJSON(w, status, map[string]any{
		"error":             code,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s", n, desc, trace, trace, now.Format("2006-01-02 15:04:05Z")),
		"error_codes":       []int{n},
		"timestamp":         now.Format("2006-01-02 15:04:05Z"),
		"trace_id":          trace,
		"correlation_id":    trace,
		"error_uri":         fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", n),
	})
}

// google answers like https://oauth2.googleapis.com/token for a service
// account's JWT bearer grant with domain-wide delegation.
func (s *OAuthServer) google(w http.ResponseWriter, r *http.Request) {
	a := r.PostForm.Get("assertion")
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(a, claims); err != nil {
		writeJSON(w, 400, map[string]any{"error": "invalid_grant", "error_description": "Invalid JWT: malformed"})
		return
	}
	iss, _ := claims["iss"].(string)
	s.mu.Lock()
	acct := s.accounts[iss]
	s.mu.Unlock()
	if acct == nil {
		writeJSON(w, 400, map[string]any{"error": "invalid_grant", "error_description": "Invalid grant: account not found"})
		return
	}
	claims = jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(a, claims, func(t *jwt.Token) (any, error) {
		if kid, ok := t.Header["kid"].(string); ok && kid != acct.keyID {
			return nil, jwt.ErrTokenSignatureInvalid
		}
		return acct.key, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(s.TokenURL()), jwt.WithIssuer(acct.Email),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	switch {
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		writeJSON(w, 400, map[string]any{"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
		return
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		writeJSON(w, 400, map[string]any{"error": "invalid_grant", "error_description": "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."})
		return
	case err != nil:
		writeJSON(w, 400, map[string]any{"error": "invalid_grant", "error_description": "Invalid JWT: " + err.Error()})
		return
	}
	sub, _ := claims["sub"].(string)
	scope, _ := claims["scope"].(string)
	if scope == "" {
		writeJSON(w, 400, map[string]any{"error": "invalid_scope", "error_description": "Empty or missing scope not allowed."})
		return
	}
	ok := sub != "" && slices.Contains(acct.Subjects, sub)
	for _, sc := range strings.Fields(scope) {
		ok = ok && slices.Contains(acct.Scopes, sc)
	}
	if !ok {
		writeJSON(w, 401, map[string]any{"error": "unauthorized_client", "error_description": "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested."})
		return
	}
	s.issue(w, "ya29.", false)
}

// plain answers a client credentials grant (secret in Basic or the form).
func (s *OAuthServer) plain(w http.ResponseWriter, r *http.Request) {
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, secret = u, p
	}
	s.mu.Lock()
	c := s.clients[id]
	ok := c != nil && slices.Contains(c.secrets, secret)
	var scopes []string
	if c != nil {
		scopes = c.scopes
	}
	s.mu.Unlock()
	if !ok {
		writeJSON(w, 401, map[string]any{"error": "invalid_client", "error_description": "Client authentication failed."})
		return
	}
	for _, sc := range strings.Fields(r.PostForm.Get("scope")) {
		if len(scopes) > 0 && !slices.Contains(scopes, sc) {
			writeJSON(w, 400, map[string]any{"error": "invalid_scope", "error_description": "Scope " + sc + " is not allowed."})
			return
		}
	}
	s.issue(w, "plain-", false)
}

// issue answers a new distinct token.
func (s *OAuthServer) issue(w http.ResponseWriter, prefix string, ext bool) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	s.mu.Lock()
	s.n++
	v := fmt.Sprintf("%s%d-%s", prefix, s.n, hex.EncodeToString(b[:]))
	secs := s.expiresIn
	life := time.Duration(secs) * time.Second
	if secs <= 0 {
		life = time.Hour
	}
	s.tokens[v] = &issuedToken{expiry: time.Now().Add(life)}
	s.mu.Unlock()
	body := map[string]any{"token_type": "Bearer", "access_token": v}
	if secs > 0 {
		body["expires_in"] = secs
		if ext {
			body["ext_expires_in"] = secs
		}
	}
	writeJSON(w, 200, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// NewRSACertificate makes a self-signed RSA certificate like one uploaded
// to an Entra app registration: the certificate, and its PEM forms.
func NewRSACertificate(t testing.TB, cn string) (cert tls.Certificate, certPEM, keyPEM []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return cert, certPEM, keyPEM
}
