package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// needTool finds an interoperability peer. CI installs them and sets
// JETRELAY_REQUIRE_INTEROP=1, so there a missing tool fails the test
// instead of skipping it.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("JETRELAY_REQUIRE_INTEROP") == "1" {
			t.Fatalf("%s is required (apt-get install %s)", name, name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// swaks, the SMTP Swiss army knife, authenticates with AUTH LOGIN and
// PLAIN over STARTTLS and over implicit TLS, from an address outside
// relay_networks.
func TestInteropSwaks(t *testing.T) {
	swaks := needTool(t, "swaks")
	f := newFrontDoor(t, nil)
	n := 0
	for _, mech := range []string{"LOGIN", "PLAIN"} {
		for _, implicit := range []bool{false, true} {
			server, tlsFlag := f.addr(), "--tls"
			if implicit {
				server, tlsFlag = f.tlsAddr(), "--tls-on-connect"
			}
			host, port, _ := strings.Cut(server, ":")
			args := []string{"--server", host, "--port", port, tlsFlag, "--local-interface", "127.0.0.2",
				"--auth", mech, "--auth-user", "app", "--auth-password", "pa55",
				"--from", "app@client.test", "--to", "ops@example.test", "--header", "Subject: swaks " + mech, "--timeout", "30"}
			out, err := exec.Command(swaks, args...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "queued as") {
				t.Fatalf("swaks %s implicit=%v: %v\n%s", mech, implicit, err, out)
			}
			if !strings.Contains(string(out), "AUTH "+mech) {
				t.Fatalf("swaks did not use AUTH %s:\n%s", mech, out)
			}
			n++
		}
	}
	msgs := f.sink.WaitFor(t, n, 30*time.Second)
	for _, m := range msgs {
		if !strings.Contains(string(m.Data), "with ESMTPSA id") {
			t.Fatalf("not recorded as authenticated over TLS:\n%.300s", m.Data)
		}
	}
	// AUTH over plaintext is refused (not even offered).
	host, port, _ := strings.Cut(f.addr(), ":")
	out, err := exec.Command(swaks, "--server", host, "--port", port, "--local-interface", "127.0.0.2",
		"--auth", "LOGIN", "--auth-user", "app", "--auth-password", "pa55",
		"--from", "app@client.test", "--to", "ops@example.test", "--timeout", "30").CombinedOutput()
	if err == nil || strings.Contains(string(out), "queued as") {
		t.Fatalf("swaks authenticated in plaintext:\n%s", out)
	}
}

// Python's smtplib, as used by countless scripts: STARTTLS and implicit
// TLS, AUTH LOGIN in the initial-response form (as .NET and PowerShell
// send it) and AUTH PLAIN.
func TestInteropPythonSmtplib(t *testing.T) {
	py := needTool(t, "python3")
	f := newFrontDoor(t, nil)
	script := `
import smtplib, ssl, sys
from email.message import EmailMessage
host, port, tlsport, cafile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
def msg(subject):
    m = EmailMessage()
    m["From"] = "app@client.test"; m["To"] = "ops@example.test"; m["Subject"] = subject
    m.set_content("hello from smtplib")
    return m
for mech in ("LOGIN", "PLAIN"):
    s = smtplib.SMTP(host, port, source_address=("127.0.0.2", 0), timeout=30)
    s.starttls(context=ctx)
    s.ehlo()
    s.user, s.password = "app", "pa55"
    code, resp = s.auth(mech, getattr(s, "auth_" + mech.lower()), initial_response_ok=True)
    assert code == 235, (code, resp)
    s.send_message(msg("smtplib starttls " + mech))
    s.quit()
    s = smtplib.SMTP_SSL(host, tlsport, context=ctx, source_address=("127.0.0.2", 0), timeout=30)
    s.ehlo()
    s.user, s.password = "app", "pa55"
    code, resp = s.auth(mech, getattr(s, "auth_" + mech.lower()), initial_response_ok=True)
    assert code == 235, (code, resp)
    s.send_message(msg("smtplib implicit " + mech))
    s.quit()
# a wrong password is refused with 535
s = smtplib.SMTP(host, port, source_address=("127.0.0.2", 0), timeout=30)
s.starttls(context=ctx)
try:
    s.login("app", "nope")
    sys.exit("wrong password accepted")
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535, e
print("ok")
`
	host, port, _ := strings.Cut(f.addr(), ":")
	_, tlsPort, _ := strings.Cut(f.tlsAddr(), ":")
	caPath := f.pki.CAFile(t)
	out, err := exec.Command(py, "-c", script, host, port, tlsPort, caPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("smtplib: %v\n%s", err, out)
	}
	f.sink.WaitFor(t, 4, 30*time.Second)
}
