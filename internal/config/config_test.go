package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/ingress"
)

// designSample is the configuration block of design.md, verbatim in its
// keys: these spellings are part of the product's interface.
const designSample = `
hostname: relay.example.com
data_dir: ./data
broker:
  url: ""
  listen: ""
  replicas: 1
  credentials: ""
ingress:
  listen: ["127.0.0.1:2525"]
  tls_listen: []
  tls: { cert: "", key: "" }
  relay_networks: ["127.0.0.0/8", "::1/128"]
  users_file: ""
  max_message_bytes: 26214400
  max_recipients: 100
delivery:
  port: 25
  smarthost: ""
  smarthost_tls: opportunistic
  smarthost_username: ""
  smarthost_password: ""
  routes: {}
  concurrency: 32
  retry: { schedule: [1m, 5m, 15m, 30m, 1h, 2h, 4h], max_age: 120h }
  dns_server: ""
deadletter:
  retention: 720h
http:
  listen: "127.0.0.1:8025"
log:
  level: info
  format: json
`

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "jetrelay.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsValidate(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	d := Default()
	if d.Ingress.Listen[0] != "127.0.0.1:2525" || d.DataDir != "./data" || d.Ingress.MaxMessageBytes != 26214400 {
		t.Fatalf("zero-config defaults changed: %+v", d.Ingress)
	}
}

func TestDesignSampleLoads(t *testing.T) {
	cfg, _, err := Load(writeFile(t, designSample), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("design sample does not validate: %v", err)
	}
	if cfg.Hostname != "relay.example.com" || len(cfg.Delivery.Retry.Schedule) != 7 ||
		cfg.Delivery.Retry.Schedule[4].D() != time.Hour || cfg.Delivery.Retry.MaxAge.D() != 120*time.Hour ||
		len(cfg.Delivery.Smarthost) != 0 || len(cfg.Broker.URL) != 0 {
		t.Fatalf("unexpected values: %+v", cfg)
	}
}

func TestLayering(t *testing.T) {
	file := writeFile(t, `
hostname: from-file.example
delivery:
  smarthost: "mail.example.com:587"
  retry: { schedule: [1m], max_age: 5d }
  routes:
    corp.example: { host: "10.0.0.5:25", tls: required }
`)
	env := []string{
		"JETRELAY_HOSTNAME=from-env.example",
		"JETRELAY_INGRESS_LISTEN=127.0.0.1:2526, [::1]:2526",
		"JETRELAY_DELIVERY_RETRY_SCHEDULE=10s,1m",
		"JETRELAY_INGRESS_MAX_MESSAGE_BYTES=10MiB",
		"JETRELAY_NO_SUCH_KEY=1",
		"PATH=/usr/bin",
	}
	cfg, src, err := Load(file, env, map[string]string{"hostname": "from-flag.example", "delivery.concurrency": "4"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hostname != "from-flag.example" {
		t.Errorf("flag did not win: %q", cfg.Hostname)
	}
	if got := strings.Join(cfg.Ingress.Listen, "|"); got != "127.0.0.1:2526|[::1]:2526" {
		t.Errorf("env list: %q", got)
	}
	if cfg.Delivery.Retry.Schedule[0].D() != 10*time.Second || cfg.Delivery.Retry.MaxAge.D() != 120*time.Hour {
		t.Errorf("retry: %+v", cfg.Delivery.Retry)
	}
	if cfg.Ingress.MaxMessageBytes != 10<<20 || cfg.Delivery.Concurrency != 4 {
		t.Errorf("sizes/ints: %d %d", cfg.Ingress.MaxMessageBytes, cfg.Delivery.Concurrency)
	}
	if cfg.Delivery.Smarthost[0] != "mail.example.com:587" || cfg.Delivery.Routes["corp.example"].TLS != "required" {
		t.Errorf("file values lost: %+v", cfg.Delivery)
	}
	if len(src.Warnings) != 1 || !strings.Contains(src.Warnings[0], "JETRELAY_NO_SUCH_KEY") {
		t.Errorf("warnings: %v", src.Warnings)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("validate: %v", err)
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	_, _, err := Load(writeFile(t, "ingress:\n  lisen: [\"127.0.0.1:25\"]\n"), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Fatalf("typo not reported: %v", err)
	}
}

func TestValidateReportsEverything(t *testing.T) {
	cfg := Default()
	cfg.Ingress.RelayNetworks = StringList{"10.0.0.0/33", "not-an-ip"}
	cfg.Delivery.SmarthostTLS = "sometimes"
	cfg.Delivery.Smarthost = StringList{"smtp.example.com:smtp", "two words"}
	cfg.Delivery.Concurrency = 0
	cfg.Log.Level = "loud"
	cfg.Broker.URL = StringList{"http://x:1"}
	cfg.Delivery.Routes = map[string]Route{"corp.example": {}}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no errors")
	}
	for _, want := range []string{
		`ingress.relay_networks: "10.0.0.0/33"`, `ingress.relay_networks: "not-an-ip"`,
		"delivery.smarthost_tls", `delivery.smarthost: "smtp.example.com:smtp" has no valid port`,
		`delivery.smarthost: "two words" is neither host:port nor a host name`, "delivery.concurrency",
		"log.level", "broker.url", "delivery.routes.corp.example.host: needs host",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestRedacted(t *testing.T) {
	cfg := Default()
	cfg.Delivery.SmarthostPassword = "hunter2"
	cfg.Broker.Token = "s3cret"
	cfg.Delivery.SmarthostOAuth = OAuth{Provider: "entra", TenantID: "t", ClientID: "c", ClientSecret: "entra-secret"}
	cfg.Delivery.Routes = map[string]Route{"corp.example": {Host: "10.0.0.5:25", Password: "routepw", Username: "u",
		OAuth: OAuth{Provider: "oauth2", ClientSecret: "route-oauth-secret"}}}
	out, err := cfg.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"hunter2", "s3cret", "routepw", "entra-secret", "route-oauth-secret"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("secret %q in output:\n%s", secret, out)
		}
	}
	if !strings.Contains(string(out), "<redacted>") {
		t.Error("no redaction marker")
	}
	if cfg.Delivery.SmarthostPassword != "hunter2" || cfg.Delivery.Routes["corp.example"].Password != "routepw" {
		t.Error("Redacted modified the config")
	}
	// The rendered config loads back.
	if _, _, err := Load(writeFile(t, string(out)), nil, nil); err != nil {
		t.Errorf("redacted output does not load: %v", err)
	}
}

func TestParseDurationAndSize(t *testing.T) {
	durs := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90s", 90 * time.Second, true}, {"5m", 5 * time.Minute, true}, {"120h", 120 * time.Hour, true},
		{"5d", 120 * time.Hour, true}, {"2w", 14 * 24 * time.Hour, true}, {"0", 0, true},
		{"", 0, false}, {"5", 0, false}, {"-1m", 0, false}, {"xd", 0, false},
	}
	for _, tc := range durs {
		got, err := ParseDuration(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got.D() != tc.want) {
			t.Errorf("ParseDuration(%q) = %v, %v", tc.in, got, err)
		}
	}
	sizes := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"26214400", 26214400, true}, {"25MiB", 25 << 20, true}, {"10MB", 10e6, true},
		{"512KiB", 512 << 10, true}, {"1GiB", 1 << 30, true}, {"-1", 0, false}, {"lots", 0, false},
	}
	for _, tc := range sizes {
		got, err := ParseByteSize(tc.in)
		if (err == nil) != tc.ok || (tc.ok && int64(got) != tc.want) {
			t.Errorf("ParseByteSize(%q) = %v, %v", tc.in, got, err)
		}
	}
	for _, d := range []Duration{Duration(5 * time.Minute), Duration(120 * time.Hour), Duration(90 * time.Second)} {
		back, err := ParseDuration(d.String())
		if err != nil || back != d {
			t.Errorf("%v does not round trip: %v %v", d, back, err)
		}
	}
}

func TestSetUnknownKey(t *testing.T) {
	if err := Default().Set("ingress.nope", "1"); err == nil {
		t.Fatal("unknown key accepted")
	}
	if len(Keys()) < 40 {
		t.Fatalf("Keys() = %d keys", len(Keys()))
	}
}

// config check catches what an OAuth, Graph, trust or rate-limit setup
// gets wrong, each naming its key.
func TestValidateRoutes(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secretFile := file("secret", "s3cret\n")
	unreadable := filepath.Join(dir, "missing.pem")
	notPEM := file("ca.txt", "not a certificate")
	sa := file("sa.json", `{"type":"service_account","client_email":"relay@p.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n"}`)
	t.Setenv("JETRELAY_TEST_SECRET", "from-env")
	entra := OAuth{Provider: "entra", TenantID: "contoso.onmicrosoft.com", ClientID: "3a1b", ClientSecretFile: secretFile}
	tests := []struct {
		name  string
		route Route
		want  string // "" valid
	}{
		{"entra with a secret file", Route{Host: "smtp.office365.com:587", TLS: "required", Username: "alerts@corp.example", OAuth: entra}, ""},
		{"entra secret from the environment", Route{Host: "h:587", Username: "a@b", OAuth: OAuth{Provider: "entra", TenantID: "t", ClientID: "c", ClientSecretEnv: "JETRELAY_TEST_SECRET"}}, ""},
		{"missing tenant ID", Route{Host: "h:587", Username: "a@b", OAuth: OAuth{Provider: "entra", ClientID: "c", ClientSecret: "x"}}, "oauth.tenant_id: Entra ID needs the tenant ID"},
		{"secret inline and by file", Route{Host: "h:587", Username: "a@b", OAuth: OAuth{Provider: "entra", TenantID: "t", ClientID: "c", ClientSecret: "x", ClientSecretFile: secretFile}}, "oauth.client_secret: given more than once"},
		{"secret variable not set", Route{Host: "h:587", Username: "a@b", OAuth: OAuth{Provider: "entra", TenantID: "t", ClientID: "c", ClientSecretEnv: "JETRELAY_NOT_SET_ANYWHERE"}}, "environment variable JETRELAY_NOT_SET_ANYWHERE is not set"},
		{"unreadable key file", Route{Host: "h:587", Username: "a@b", OAuth: OAuth{Provider: "entra", TenantID: "t", ClientID: "c", CertificateFile: unreadable, KeyFile: unreadable}}, "oauth.certificate_file: open"},
		{"secret and certificate", Route{Host: "h:587", Username: "a@b", OAuth: OAuth{Provider: "entra", TenantID: "t", ClientID: "c", ClientSecret: "x", CertificateFile: unreadable, KeyFile: unreadable}}, "not both"},
		{"no secret at all", Route{Host: "h:587", Username: "a@b", OAuth: OAuth{Provider: "entra", TenantID: "t", ClientID: "c"}}, "needs a client secret"},
		{"password and OAuth", Route{Host: "h:587", Username: "a@b", Password: "p", OAuth: entra}, "set a password or OAuth, not both"},
		{"XOAUTH2 needs the mailbox", Route{Host: "h:587", OAuth: entra}, "username: OAuth on SMTP needs the mailbox"},
		{"unknown provider", Route{Host: "h:587", Username: "a@b", OAuth: OAuth{Provider: "okta"}}, "oauth.provider: must be entra, google or oauth2"},
		{"google", Route{Host: "smtp.gmail.com:587", Username: "a@corp.example", OAuth: OAuth{Provider: "google", ServiceAccountFile: sa}}, ""},
		{"google key that is not one", Route{Host: "smtp.gmail.com:587", Username: "a@b", OAuth: OAuth{Provider: "google", ServiceAccountFile: secretFile}}, "is not a JSON key"},
		{"generic needs a token URL", Route{Host: "h:587", Username: "a@b", OAuth: OAuth{Provider: "oauth2", ClientID: "c", ClientSecret: "s"}}, "oauth.token_url: needs the token endpoint"},
		{"token URL over http", Route{Host: "h:587", Username: "a@b", OAuth: OAuth{Provider: "oauth2", ClientID: "c", ClientSecret: "s", TokenURL: "http://idp/token"}}, "is not an https URL"},
		{"graph", Route{Transport: "graph", OAuth: entra}, ""},
		{"graph without OAuth", Route{Transport: "graph"}, "the graph transport needs an OAuth credential"},
		{"graph with hosts", Route{Transport: "graph", Host: "h:25", OAuth: entra}, "not to hosts"},
		{"graph with google", Route{Transport: "graph", OAuth: OAuth{Provider: "google", ServiceAccountFile: sa}}, "works with provider entra"},
		{"unknown transport", Route{Host: "h:25", Transport: "carrier-pigeon"}, "transport: must be smtp or graph"},
		{"CA file that is not PEM", Route{Host: "h:25", TLSCAFile: notPEM}, "holds no PEM certificate"},
		{"client certificate without key", Route{Host: "h:25", TLSCertFile: notPEM}, "tls_cert_file and tls_key_file go together"},
		{"rate limit window", Route{Host: "h:25", RateLimit: RateLimit{Messages: 30, Per: Duration(time.Millisecond)}}, "rate_limit.per: must be at least 1s"},
		{"negative limit", Route{Host: "h:25", RateLimit: RateLimit{Connections: -1}}, "limits cannot be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			cfg.Delivery.Routes = map[string]Route{"corp.example": tc.route}
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected problems: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("want %q, got %v", tc.want, err)
			case err != nil && !strings.Contains(err.Error(), "delivery.routes.corp.example."):
				t.Fatalf("the problem does not name its key: %v", err)
			case err != nil && strings.Contains(err.Error(), "s3cret"):
				t.Fatalf("a secret in the report: %v", err)
			}
		})
	}
	// The smart host's flat keys are checked the same way, under their names.
	cfg := Default()
	cfg.Delivery.Smarthost = StringList{"smtp.office365.com:587"}
	cfg.Delivery.SmarthostUsername = "alerts@corp.example"
	cfg.Delivery.SmarthostOAuth = OAuth{Provider: "entra", ClientID: "c", ClientSecretFile: secretFile}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "delivery.smarthost_oauth.tenant_id: Entra ID needs the tenant ID") {
		t.Fatalf("smart host OAuth: %v", err)
	}
}

// config check's reading of a file: every problem at once, each with its
// line and key in words, and the rest of the file still read.
func TestFileProblemsAllAtOnce(t *testing.T) {
	path := writeFile(t, `hostname: relay.corp.example
ingress:
  relay_network: ["10.0.0.0/8"]
  max_recipients: lots
delivery:
  smarthost: smtp.corp.example
  retry:
    max_age: 5 days
    schedule: [1m, soon]
  concurrency: [4]
  routes:
    corp.example: {host: "10.0.0.5:25", tsl: required}
smarthost_tls: required
deadletter: 30d
log:
  level: debug
  level: info
`)
	cfg, src, err := Load(path, []string{"JETRELAY_DELIVERY_PORT=twenty-five"}, map[string]string{"http.listne": "x"})
	if err == nil {
		t.Fatal("no problems reported")
	}
	got := err.Error()
	for _, want := range []string{
		path + ":3: ingress.relay_network: unknown key; did you mean `relay_networks`?",
		path + ":4: ingress.max_recipients: `lots` is not a whole number",
		path + ":8: delivery.retry.max_age: `5 days` is not a duration such as 30s, 5m, 2h or 5d",
		path + ":9: delivery.retry.schedule: `soon` is not a duration",
		path + ":10: delivery.concurrency: expected a whole number such as 100, got a list",
		path + ":12: delivery.routes.corp.example.tsl: unknown key; did you mean `tls`?",
		path + ":13: smarthost_tls: unknown key; did you mean `delivery.smarthost_tls`?",
		path + ":14: deadletter: expected a section of keys",
		path + ":17: log.level: given twice (first on line 16)",
		"environment variable JETRELAY_DELIVERY_PORT (delivery.port): `twenty-five` is not a whole number",
		"flag for http.listne: no configuration key \"http.listne\"; did you mean `http.listen`?",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	for _, leak := range []string{"!!str", "config.Ingress", "not found in type", "unmarshal"} {
		if strings.Contains(got, leak) {
			t.Errorf("Go internals in the report (%q):\n%s", leak, got)
		}
	}
	// The rest of the file was read; the keys in error kept their defaults.
	if cfg == nil || cfg.Hostname != "relay.corp.example" || cfg.Delivery.Smarthost[0] != "smtp.corp.example" ||
		cfg.Ingress.MaxRecipients != 100 || cfg.Log.Level != "info" || cfg.Delivery.Routes["corp.example"].Host != "10.0.0.5:25" {
		t.Fatalf("the file was not read past its problems: %+v", cfg)
	}
	if w := src.Where("delivery.smarthost"); w != path+":6" {
		t.Errorf("Where(delivery.smarthost) = %q", w)
	}
}

func TestYAMLSyntaxErrorNamesItsLine(t *testing.T) {
	path := writeFile(t, "ingress:\n  listen: [\"127.0.0.1:25\"\n  max_recipients: 5\n")
	_, _, err := Load(path, nil, nil)
	if err == nil || !strings.HasPrefix(err.Error(), path+":") || !strings.Contains(err.Error(), "not valid YAML") {
		t.Fatalf("syntax error: %v", err)
	}
}

// Validation problems of values from the file name their line too.
func TestValidationProblemsNameTheirLine(t *testing.T) {
	path := writeFile(t, "hostname: relay.corp.example\ndelivery:\n  concurrency: 0\n  routes:\n    corp.example:\n      tls: sometimes\n      host: h:25\n")
	cfg, src, err := Load(path, []string{"JETRELAY_LOG_LEVEL=loud"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := src.Locate(cfg.Validate()).Error()
	for _, want := range []string{
		path + ":3: delivery.concurrency: must be between 1 and 10000, got 0",
		path + ":6: delivery.routes.corp.example.tls: must be none",
		"environment variable JETRELAY_LOG_LEVEL: log.level: must be",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}

// A smart host without a port is port 25 (and config check says so); a
// host name without a domain and a route weaker than the smart host are
// warned about.
func TestSmarthostWithoutPortAndWarnings(t *testing.T) {
	path := writeFile(t, `hostname: relay
delivery:
  smarthost: smtp.corp.example
  smarthost_tls: required
  routes:
    partner.example: {host: "mx.partner.example:25"}
    secure.example: {host: "mx.secure.example:25", tls: implicit}
    plain.example: {host: "10.0.0.9", tls: none}
`)
	cfg, src, err := Load(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a smart host without a port is refused: %v", err)
	}
	all := strings.Join(src.Warnings, "\n")
	for _, want := range []string{
		`hostname "relay" is not a fully-qualified domain name`,
		"delivery.routes.partner.example.tls is opportunistic, weaker than delivery.smarthost_tls (required)",
		"delivery.routes.plain.example.tls is none, weaker than delivery.smarthost_tls (required): mail for plain.example may travel without TLS",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing warning %q in:\n%s", want, all)
		}
	}
	if strings.Contains(all, "secure.example") {
		t.Errorf("implicit TLS is not weaker than required:\n%s", all)
	}
	notes := strings.Join(src.Notes, "\n")
	for _, want := range []string{
		"delivery.smarthost smtp.corp.example has no port: port 25 is used (smtp.corp.example:25)",
		"delivery.routes.plain.example host 10.0.0.9 has no port: port 25 is used (10.0.0.9:25)",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("missing note %q in:\n%s", want, notes)
		}
	}
	// A fully-qualified name (with or without the root dot) is fine.
	for _, h := range []string{"relay.corp.example", "relay.corp.example."} {
		_, src, err := Load(writeFile(t, "hostname: "+h+"\n"), nil, nil)
		if err != nil || len(src.Warnings) != 0 {
			t.Errorf("hostname %s: %v %v", h, err, src.Warnings)
		}
	}
}

func TestSuggestions(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"ingress:\n  relay_netwroks: []\n", "did you mean `relay_networks`?"},
		{"delivery:\n  smarthost_pasword: x\n", "did you mean `smarthost_password`?"},
		{"delivery:\n  retry:\n    maxage: 1h\n", "did you mean `max_age`?"},
		{"relay_networks: []\n", "did you mean `ingress.relay_networks`?"},
		{"log:\n  colour: false\n", "(the keys in log are: format, level)"},
	} {
		_, _, err := Load(writeFile(t, tc.yaml), nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: want %q, got %v", tc.yaml, tc.want, err)
		}
	}
}

// Anchors, aliases and merge keys read as yaml reads them.
func TestAnchorsAndMerges(t *testing.T) {
	cfg, _, err := Load(writeFile(t, `hostname: relay.corp.example
x-tls: &tls {tls: required, username: relay@corp.example, password: pw}
delivery:
  routes:
    a.example: {<<: *tls, host: "a:25"}
    b.example: {<<: *tls, host: "b:25", tls: implicit}
`), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "x-tls: unknown key") {
		t.Fatalf("unknown top-level key not reported: %v", err)
	}
	a, b := cfg.Delivery.Routes["a.example"], cfg.Delivery.Routes["b.example"]
	if a.TLS != "required" || a.Username != "relay@corp.example" || a.Host != "a:25" || b.TLS != "implicit" {
		t.Fatalf("merge: %+v %+v", a, b)
	}
}

// The ingress keys of issue 16: defaults from ingress.DefaultOptions, and
// what validation refuses.
func TestIngressConformanceKeys(t *testing.T) {
	d, in := Default(), ingress.DefaultOptions()
	if d.Ingress.CommandDeadline.D() != in.CommandDeadline || d.Ingress.CommandDeadline.D() != 5*time.Minute ||
		d.Ingress.MinDataRate != in.MinDataRate || d.Ingress.MinDataRate != 500 ||
		strings.Join(d.Ingress.InsecureAuthNetworks, ",") != "127.0.0.0/8,::1/128" || d.Ingress.AllowInsecureAuth {
		t.Fatalf("defaults: %+v", d.Ingress)
	}
	cfg, _, err := Load(writeFile(t, `
ingress:
  command_deadline: 10m
  min_data_rate: 100
  allow_insecure_auth: true
  insecure_auth_networks: ["10.1.2.0/24", "10.1.3.17"]
`), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Ingress.CommandDeadline.D() != 10*time.Minute || cfg.Ingress.MinDataRate != 100 || len(cfg.Ingress.InsecureAuthNetworks) != 2 {
		t.Fatalf("loaded: %+v", cfg.Ingress)
	}
	cfg = Default()
	cfg.Ingress.CommandDeadline = Duration(500 * time.Millisecond)
	cfg.Ingress.MinDataRate = 0
	cfg.Ingress.InsecureAuthNetworks = StringList{"10.0.0.0/33"}
	cfg.Ingress.AuthLockout = Duration(48 * time.Hour)
	cfg.Ingress.AuthFailureWindow = 0
	err = cfg.Validate()
	for _, want := range []string{"ingress.command_deadline", "ingress.min_data_rate", `ingress.insecure_auth_networks: "10.0.0.0/33"`, "ingress.auth_lockout", "ingress.auth_failure_window"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

// delivery.mta_sts: defaults from delivery.DefaultOptions, a file that
// sets every key loads and validates, and config check names each bad
// value with its line.
func TestMTASTSKeys(t *testing.T) {
	d := Default().Delivery.MTASTS
	if !d.On() || d.HTTPSPort != 443 || d.FetchTimeout.D() != 10*time.Second || d.MaxReportDomains != 100 {
		t.Fatalf("defaults: %+v", d)
	}
	if (MTASTS{}).On() != true {
		t.Fatal("MTA-STS is off when the key is absent")
	}
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, selfSignedPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := Load(writeFile(t, `
delivery:
  mta_sts:
    enabled: false
    ca_file: `+ca+`
    https_port: 8443
    fetch_timeout: 5s
    report_dir: `+dir+`
    report_organization: relay.corp.example
    report_contact: postmaster@corp.example
    max_report_domains: 10
`), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if m := cfg.Delivery.MTASTS; m.On() || m.CAFile != ca || m.HTTPSPort != 8443 || m.FetchTimeout.D() != 5*time.Second || m.ReportDir != dir ||
		m.ReportOrganization != "relay.corp.example" || m.ReportContact != "postmaster@corp.example" || m.MaxReportDomains != 10 {
		t.Fatalf("loaded: %+v", m)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, `hostname: relay.corp.example
delivery:
  mta_sts:
    ca_file: `+notPEM+`
    https_port: 70000
    fetch_timeout: 10ms
    report_dir: `+filepath.Join(dir, "missing")+`
    max_report_domains: -1
`)
	cfg, src, err := Load(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := src.Locate(cfg.Validate()).Error()
	for _, want := range []string{
		path + ":4: delivery.mta_sts.ca_file: " + notPEM + " holds no PEM certificate",
		path + ":5: delivery.mta_sts.https_port: must be a TCP port",
		path + ":6: delivery.mta_sts.fetch_timeout: must be between 100ms and 5m",
		path + ":7: delivery.mta_sts.report_dir:",
		path + ":8: delivery.mta_sts.max_report_domains: must be 0",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	cfg = Default()
	cfg.Delivery.MTASTS.CAFile = filepath.Join(dir, "absent.pem")
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "delivery.mta_sts.ca_file") {
		t.Fatalf("a missing CA file: %v", err)
	}
}

// selfSignedPEM is a throwaway CA certificate in PEM.
func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
