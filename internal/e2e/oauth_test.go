package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/cli"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

const (
	tenant  = "contoso.onmicrosoft.com"
	appID   = "3a1b5c7d-0000-4000-8000-123456789abc"
	mailbox = "alerts@corp.example"
)

// oauthRelay is a relay whose smart host offers only AUTH XOAUTH2 and
// takes the tokens of a fake identity provider.
type oauthRelay struct {
	idp   *testenv.OAuthServer
	sink  *testenv.Sink
	relay *testenv.Relay
	logs  *syncBuffer
	// refused counts tokens the smart host refused; last is the last
	// token it saw.
	refused atomic.Int32
	last    atomic.Value
}

// startOAuthRelay starts the provider, the smart host and the relay;
// prepare registers the credential with the provider and adjusts the
// configuration before the relay starts.
// mechs are the smart host's AUTH mechanisms (default XOAUTH2 only).
func startOAuthRelay(t *testing.T, o config.OAuth, prepare func(*oauthRelay, *config.Config), mechs ...string) *oauthRelay {
	t.Helper()
	r := &oauthRelay{idp: testenv.NewOAuthServer(t), logs: &syncBuffer{}}
	pki := testenv.NewPKI(t)
	r.sink = testenv.NewSink(t, testenv.SinkOptions{TLS: pki.ServerConfig(), AuthMechs: mechs, Bearer: func(user, token string) bool {
		r.last.Store(token)
		ok := user == mailbox && r.idp.Valid(token)
		if !ok {
			r.refused.Add(1)
		}
		return ok
	}})
	cfg := smarthostConfig(t, r.sink)
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Delivery.SmarthostTLS = "required"
	cfg.Delivery.SmarthostTLSCAFile = pki.CAFile(t)
	cfg.Delivery.SmarthostUsername = mailbox
	if o.Provider == "entra" {
		o.Authority = r.idp.URL
	}
	cfg.Delivery.SmarthostOAuth = o
	if prepare != nil {
		prepare(r, cfg)
	}
	r.relay = testenv.StartRelay(t, cfg, app.Options{HTTPClient: r.idp.Client}, testenv.WithLogs(r.logs))
	return r
}

func (r *oauthRelay) lastToken() string {
	s, _ := r.last.Load().(string)
	return s
}

func (r *oauthRelay) send(t *testing.T, subject string) string {
	t.Helper()
	res, err := testenv.Send(r.relay.Addr(), testenv.Mail{From: "dbmail@corp.example", To: []string{"oncall@example.test"}, Data: testenv.RFC5322(subject, testenv.Body(500))})
	if err != nil {
		t.Fatal(err)
	}
	return res.QueueID
}

func (r *oauthRelay) readyz(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.relay.App.HTTPAddr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (r *oauthRelay) metric(t *testing.T, name string) string {
	t.Helper()
	return r.relay.Metric(name)
}

func writeSecret(t *testing.T, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Mail flows through `serve` to a smart host that offers only XOAUTH2,
// with a token from Entra ID (a client secret, or a certificate's signed
// assertion) or from Google (a service account acting as the mailbox).
func TestXOAUTH2EndToEnd(t *testing.T) {
	_, certPEM, keyPEM := testenv.NewRSACertificate(t, "jetrelay")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "app.crt"), filepath.Join(dir, "app.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	entraApp := func(a testenv.EntraApp) func(*oauthRelay, *config.Config) {
		return func(r *oauthRelay, _ *config.Config) { r.idp.AddEntraApp(a) }
	}
	appCert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		oauth   config.OAuth
		prepare func(*oauthRelay, *config.Config)
		mechs   []string
	}{
		{"entra client secret", config.OAuth{Provider: "entra", TenantID: tenant, ClientID: appID, ClientSecretFile: writeSecret(t, "s3cret-value")},
			entraApp(testenv.EntraApp{Tenant: tenant, ClientID: appID, Secrets: []string{"s3cret-value"}}), nil},
		{"entra certificate", config.OAuth{Provider: "entra", TenantID: tenant, ClientID: appID, CertificateFile: certFile, KeyFile: keyFile},
			entraApp(testenv.EntraApp{Tenant: tenant, ClientID: appID, Cert: appCert.Leaf}), nil},
		{"google service account", config.OAuth{Provider: "google", ServiceAccountFile: filepath.Join(dir, "sa.json")},
			func(r *oauthRelay, cfg *config.Config) {
				key := r.idp.AddServiceAccount(t, testenv.GoogleAccount{Email: "relay@project.iam.gserviceaccount.com", Subjects: []string{mailbox}})
				if err := os.WriteFile(cfg.Delivery.SmarthostOAuth.ServiceAccountFile, key, 0o600); err != nil {
					t.Fatal(err)
				}
				cfg.Delivery.SmarthostOAuth.TokenURL = r.idp.TokenURL()
			}, nil},
		{"OAUTHBEARER where XOAUTH2 is not offered", config.OAuth{Provider: "entra", TenantID: tenant, ClientID: appID, ClientSecret: "s"},
			entraApp(testenv.EntraApp{Tenant: tenant, ClientID: appID, Secrets: []string{"s"}}), []string{"OAUTHBEARER"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startOAuthRelay(t, tc.oauth, tc.prepare, tc.mechs...)
			qid := r.send(t, tc.name)
			m := r.sink.WaitFor(t, 1, 30*time.Second)[0]
			if m.User != mailbox || !m.TLS || m.QueueID() != qid {
				t.Fatalf("delivered as %q (TLS %v), queue ID %s", m.User, m.TLS, m.QueueID())
			}
			if code, body := r.readyz(t); code != 200 {
				t.Fatalf("readyz %d: %s", code, body)
			}
			var metric string
			testenv.Eventually(t, 10*time.Second, func() bool {
				metric = r.metric(t, `jetrelay_outbound_auth_ok{route="smarthost"}`)
				return strings.HasSuffix(metric, " 1")
			}, "auth metric: %q", &metric)
		})
	}
}

// Tokens that expire mid-run are refreshed before they do; a token the
// server revokes is refused once, refreshed and retried in the same
// attempt; nothing is deferred for either.
func TestXOAUTH2TokenLifecycle(t *testing.T) {
	r := startOAuthRelay(t, config.OAuth{Provider: "entra", TenantID: tenant, ClientID: appID, ClientSecret: "inline-secret"},
		func(r *oauthRelay, cfg *config.Config) {
			r.idp.AddEntraApp(testenv.EntraApp{Tenant: tenant, ClientID: appID, Secrets: []string{"inline-secret"}})
			cfg.Delivery.MaxMessagesPerConnection = 1 // every message logs in anew
		})
	r.idp.SetExpiresIn(3)
	for i := 0; i < 3; i++ {
		r.send(t, fmt.Sprintf("expiring %d", i))
		r.sink.WaitFor(t, i+1, 30*time.Second)
		tok := r.lastToken()
		// The next message goes after the token it used has expired.
		testenv.Eventually(t, 30*time.Second, func() bool { return !r.idp.Valid(tok) }, "the token did not expire")
	}
	if r.refused.Load() != 0 {
		t.Fatalf("%d expired tokens reached the smart host", r.refused.Load())
	}
	// Revoked behind our back: one refusal, one refresh, delivered in the
	// same attempt.
	r.idp.SetExpiresIn(3600)
	r.send(t, "warm up")
	r.sink.WaitFor(t, 4, 30*time.Second)
	r.idp.RevokeAll()
	qid := r.send(t, "after revocation")
	m := r.sink.WaitFor(t, 5, 30*time.Second)
	if last := m[len(m)-1]; last.QueueID() != qid {
		t.Fatalf("last delivered %s, want %s", last.QueueID(), qid)
	}
	if n := r.refused.Load(); n != 1 {
		t.Fatalf("the smart host refused %d tokens, want 1 (the revoked one)", n)
	}
	r.relay.WaitQueueEmpty(30 * time.Second)
	if n := len(logLines(t, r.logs.String(), qid, "delivery attempt")); n != 1 {
		t.Fatalf("%d attempts for the message after the revocation, want 1", n)
	}
}

// The token endpoint down: messages wait in the queue (never bounced) and
// go out once it is back. A wrong client secret: they wait too, /readyz
// says outbound authentication is failing, the metric shows it, the log
// says what to do — and no output contains the secret.
func TestXOAUTH2Failures(t *testing.T) {
	t.Run("token endpoint down", func(t *testing.T) {
		r := startOAuthRelay(t, config.OAuth{Provider: "entra", TenantID: tenant, ClientID: appID, ClientSecret: "the-secret"},
			func(r *oauthRelay, _ *config.Config) {
				r.idp.AddEntraApp(testenv.EntraApp{Tenant: tenant, ClientID: appID, Secrets: []string{"the-secret"}})
				r.idp.SetDown(503)
			})
		qid := r.send(t, "while down")
		testenv.Eventually(t, 30*time.Second, func() bool {
			for _, q := range queued(t, r.relay) {
				if q.Scheduled && q.Job.QueueID == qid && strings.Contains(q.Job.LastError.String(), "HTTP 503") {
					return true
				}
			}
			return false
		}, "not deferred for the token endpoint")
		if len(deadLetters(t, r.relay)) != 0 || len(r.sink.Messages()) != 0 {
			t.Fatal("dead-lettered or delivered without a token")
		}
		r.idp.SetUp()
		mustJR(t, r.relay, "queue", "retry", qid)
		if m := r.sink.WaitFor(t, 1, 30*time.Second)[0]; m.QueueID() != qid {
			t.Fatalf("delivered %s", m.QueueID())
		}
	})
	t.Run("wrong client secret", func(t *testing.T) {
		const wrong = "wr0ng-s3cret-do-not-print"
		r := startOAuthRelay(t, config.OAuth{Provider: "entra", TenantID: tenant, ClientID: appID, ClientSecretFile: writeSecret(t, wrong)},
			func(r *oauthRelay, _ *config.Config) {
				r.idp.AddEntraApp(testenv.EntraApp{Tenant: tenant, ClientID: appID, Secrets: []string{"the-right-one"}})
			})
		qid := r.send(t, "bad secret")
		var body string
		testenv.Eventually(t, 30*time.Second, func() bool {
			var code int
			code, body = r.readyz(t)
			return code == 503 && strings.Contains(body, "outbound authentication failing") && strings.Contains(body, "smarthost")
		}, "readyz does not report the failing authentication: %q", &body)
		testenv.Eventually(t, 30*time.Second, func() bool {
			for _, q := range queued(t, r.relay) {
				if q.Job.QueueID == qid && q.Scheduled {
					return true
				}
			}
			return false
		}, "the message is not waiting in the queue")
		var m string
		testenv.Eventually(t, 10*time.Second, func() bool {
			m = r.metric(t, `jetrelay_outbound_auth_ok{route="smarthost"}`)
			return strings.HasSuffix(m, " 0")
		}, "auth metric: %q", &m)
		if len(deadLetters(t, r.relay)) != 0 || len(r.sink.Messages()) != 0 {
			t.Fatal("dead-lettered or delivered with a wrong secret")
		}
		logs := r.logs.String()
		if !strings.Contains(logs, "AADSTS7000215") || !strings.Contains(logs, "outbound authentication is failing") {
			t.Fatalf("the log does not say what is wrong:\n%s", logs)
		}
		show := mustJR(t, r.relay, "queue", "show", qid)
		for _, out := range []string{logs, body, show} {
			if strings.Contains(out, wrong) {
				t.Fatal("the secret appears in the output")
			}
		}
	})
}

// jetrelay auth test: a token and a test message through the route, or,
// when something is wrong, what to do about it, in words, and never the
// secret.
func TestAuthTestCommand(t *testing.T) {
	idp := testenv.NewOAuthServer(t)
	idp.AddEntraApp(testenv.EntraApp{Tenant: tenant, ClientID: appID, Secrets: []string{"right-secret"}})
	var accept atomic.Bool
	accept.Store(true)
	sinkPKI := testenv.NewPKI(t)
	sink := testenv.NewSink(t, testenv.SinkOptions{TLS: sinkPKI.ServerConfig(), Bearer: func(user, token string) bool {
		return accept.Load() && user == mailbox && idp.Valid(token)
	}})
	run := func(tenantID, secret string, args ...string) (string, int) {
		t.Helper()
		cfg := testenv.WriteConfig(t, fmt.Sprintf(`
hostname: relay.test
data_dir: %s
delivery:
  smarthost: %q
  smarthost_tls: required
  smarthost_tls_ca_file: %s
  smarthost_username: %s
  smarthost_oauth:
    provider: entra
    authority: %s
    tenant_id: %s
    client_id: %s
    client_secret_file: %s
    ca_file: %s
`, t.TempDir(), sink.Addr, sinkPKI.CAFile(t), mailbox, idp.URL, tenantID, appID, writeSecret(t, secret), idp.PKI.CAFile(t)))
		var out, errb strings.Builder
		code := cli.Main(append([]string{"auth", "test", "--config", cfg}, args...), strings.NewReader(""), &out, &errb)
		all := out.String() + errb.String()
		if strings.Contains(all, secret) {
			t.Fatalf("the secret in the output:\n%s", all)
		}
		return all, code
	}
	if out, code := run(tenant, "right-secret", "--send-to", "you@example.test"); code != 0 ||
		!strings.Contains(out, "smarthost: entra") || !strings.Contains(out, "tenant "+tenant) || !strings.Contains(out, "token OK") || !strings.Contains(out, "test message to you@example.test sent via") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if m := sink.WaitFor(t, 1, 10*time.Second)[0]; m.User != mailbox || !strings.Contains(string(m.Data), "Subject: jetrelay auth test") {
		t.Fatalf("test message %q as %q", m.Data, m.User)
	}
	for _, tc := range []struct {
		name, tenant, secret, want string
	}{
		{"wrong secret", tenant, "wrong-secret-value", "AADSTS7000215"},
		{"unknown tenant", "nowhere.onmicrosoft.com", "right-secret", "AADSTS90002"},
	} {
		out, code := run(tc.tenant, tc.secret)
		if code != 1 || !strings.Contains(out, "NO TOKEN") || !strings.Contains(out, tc.want) || !strings.Contains(out, "what to do:") {
			t.Errorf("%s: exit %d:\n%s", tc.name, code, out)
		}
	}
	accept.Store(false) // the token is fine, the smart host will not have it
	if out, code := run(tenant, "right-secret", "--send-to", "you@example.test"); code != 1 || !strings.Contains(out, "token OK") ||
		!strings.Contains(out, "NOT SENT") || !strings.Contains(out, "Add-MailboxPermission") {
		t.Fatalf("refused by the smart host: exit %d:\n%s", code, out)
	}
}
