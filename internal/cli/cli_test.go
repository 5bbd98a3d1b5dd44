package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/ingress"
)

func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("hostname: relay.example.com\ndelivery:\n  smarthost: mail.example.com:587\n  smarthost_username: u\n  smarthost_password: hunter2\n"), 0o600)
	code, out, errs := run(t, "", "config", "check", "--config", good)
	if code != 0 {
		t.Fatalf("valid config: exit %d\n%s%s", code, out, errs)
	}
	if strings.Contains(out, "hunter2") || !strings.Contains(out, "<redacted>") || !strings.Contains(out, "mail.example.com:587") {
		t.Fatalf("effective config not redacted or incomplete:\n%s", out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("ingress:\n  relay_networks: [\"10.0.0.0/33\"]\n  max_recipients: 0\ndelivery:\n  smarthost_tls: maybe\nlog:\n  level: chatty\n"), 0o600)
	code, _, errs = run(t, "", "config", "check", "--config", bad)
	if code != 1 {
		t.Fatalf("invalid config: exit %d", code)
	}
	for _, want := range []string{"ingress.relay_networks", "ingress.max_recipients", "delivery.smarthost_tls", "log.level", "4 problem(s)"} {
		if !strings.Contains(errs, want) {
			t.Errorf("problem list lacks %q:\n%s", want, errs)
		}
	}
	t.Setenv("JETRELAY_DELIVERY_CONCURRENCY", "7")
	code, out, _ = run(t, "", "config", "check", "--config", good, "--set", "delivery.port=2525")
	if code != 0 || !strings.Contains(out, "concurrency: 7") || !strings.Contains(out, "port: 2525") ||
		!strings.Contains(out, "JETRELAY_DELIVERY_CONCURRENCY") {
		t.Fatalf("overrides not shown:\n%s", out)
	}
	if code, _, errs := run(t, "", "config", "check", "--config", filepath.Join(dir, "missing.yaml")); code != 1 || !strings.Contains(errs, "missing.yaml") {
		t.Fatalf("missing file: %d %s", code, errs)
	}
}

func TestUserAdd(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.yaml")
	code, _, errs := run(t, "s3cret\n", "user", "add", "dbmail", "--users-file", file, "--allow-sender", "*@corp.example")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	u, err := ingress.LoadUsers(file)
	if err != nil {
		t.Fatal(err)
	}
	usr, ok := u.Check("dbmail", "s3cret")
	if !ok || usr.MaySend("x@other.example") || !usr.MaySend("x@corp.example") {
		t.Fatalf("user not written as asked: %v %+v", ok, usr)
	}
}

func TestVersionAndDefaultSendServer(t *testing.T) {
	if code, out, _ := run(t, "", "version"); code != 0 || !strings.HasPrefix(out, "jetrelay ") {
		t.Fatalf("version: %d %q", code, out)
	}
	for in, want := range map[string]string{"0.0.0.0:25": "127.0.0.1:25", "[::]:587": "[::1]:587", "10.0.0.1:2525": "10.0.0.1:2525", ":2525": "127.0.0.1:2525"} {
		if got := defaultSendServer([]string{in}); got != want {
			t.Errorf("defaultSendServer(%s) = %s", in, got)
		}
	}
}

func TestOperatorCommandsExplainUnreachableBroker(t *testing.T) {
	dir := t.TempDir()
	code, _, errs := run(t, "", "queue", "list", "--data-dir", dir)
	if code != 1 || !strings.Contains(errs, "no broker.url") || !strings.Contains(errs, "jetrelay serve") {
		t.Fatalf("no broker: %d %s", code, errs)
	}
	code, _, errs = run(t, "", "deadletter", "list", "--data-dir", dir, "--broker-url", "nats://127.0.0.1:1")
	if code != 1 || !strings.Contains(errs, "cannot reach the broker at nats://127.0.0.1:1") {
		t.Fatalf("unreachable broker: %d %s", code, errs)
	}
	if code, _, errs := run(t, "", "deadletter", "replay"); code != 1 || !strings.Contains(errs, "--all") {
		t.Fatalf("replay without a selection: %d %s", code, errs)
	}
}

// config check reports the problems of reading the file and those of the
// values together, each with its line, and prints notes and warnings.
func TestConfigCheckEverythingAtOnce(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "relay.yaml")
	os.WriteFile(file, []byte(`hostname: relay
ingress:
  relay_network: ["10.0.0.0/8"]
  max_recipients: lots
delivery:
  smarthost: smtp.corp.example
  concurrency: 0
  retry:
    max_age: 5 days
log:
  level: chatty
`), 0o600)
	code, out, errs := run(t, "", "config", "check", "--config", file)
	if code != 1 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{
		"5 problem(s)",
		file + ":3: ingress.relay_network: unknown key; did you mean `relay_networks`?",
		file + ":4: ingress.max_recipients: `lots` is not a whole number",
		file + ":9: delivery.retry.max_age: `5 days` is not a duration",
		file + ":7: delivery.concurrency: must be between 1 and 10000, got 0",
		file + ":11: log.level: must be trace, debug, info, warn or error, got \"chatty\"",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("missing %q in:\n%s", want, errs)
		}
	}
	for _, want := range []string{
		"# note: delivery.smarthost smtp.corp.example has no port: port 25 is used (smtp.corp.example:25)",
		`# warning: hostname "relay" is not a fully-qualified domain name`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}
