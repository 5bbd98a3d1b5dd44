package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/cli"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// keygen runs `jetrelay dkim keygen` and publishes the record it printed
// (the zone-file strings, as an administrator would enter them) on the
// test's DNS server.
func keygen(t *testing.T, dns *testenv.DNS, dir, domain, selector, typ string) string {
	t.Helper()
	key := filepath.Join(dir, domain+".key")
	var out, errb bytes.Buffer
	if code := cli.Main([]string{"dkim", "keygen", "--domain", domain, "--selector", selector, "--type", typ, "--out", key},
		strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errb.String())
	}
	name := regexp.MustCompile(`name:  (\S+)`).FindStringSubmatch(out.String())
	_, zone, _ := strings.Cut(out.String(), "In a zone file:")
	zone, _, _ = strings.Cut(zone, "Then add")
	var strs []string
	for _, q := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(zone, -1) {
		strs = append(strs, q[1])
	}
	if name == nil || len(strs) == 0 {
		t.Fatalf("keygen printed no record:\n%s", out.String())
	}
	dns.SetTXT(name[1], strs)
	return key
}

// dkimVerify verifies a message as a receiver would: go-msgauth's
// verifier, keys looked up on the test's DNS server. It returns the
// result of domain's signature.
func dkimVerify(t *testing.T, dnsAddr string, msg []byte, domain string) error {
	t.Helper()
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, dnsAddr)
	}}
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return res.LookupTXT(ctx, name+".")
		},
	})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	for _, v := range vs {
		if v.Domain == domain {
			return v.Err
		}
	}
	return fmt.Errorf("no signature of %s (%d signatures)", domain, len(vs))
}

// TestDKIMSigned: through `serve`, mail from a domain with a key arrives
// at the destination signed, and verifies with go-msgauth against the
// record `jetrelay dkim keygen` printed, served by a local DNS server:
// RSA and Ed25519, a body from the object store, lines over 998 octets
// that had to be folded (re-encoded, broken) on the way, a route's
// fallback key for a From domain without one. A tampered header fails
// verification. The log names the key, the metric counts it.
func TestDKIMSigned(t *testing.T) {
	dns := testenv.NewDNS(t)
	dir := t.TempDir()
	rsaKey := keygen(t, dns, dir, "rsa.example", "jr2026", "rsa")
	edKey := keygen(t, dns, dir, "ed.example", "ed2026", "ed25519")

	sink := testenv.NewSink(t, testenv.SinkOptions{MaxLineLength: 998})
	cfg := smarthostConfig(t, sink)
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Delivery.DNSServer = dns.Addr
	cfg.Delivery.DKIM.Domains = map[string]config.DKIMKey{
		"rsa.example": {Selector: "jr2026", KeyFile: rsaKey},
		"ed.example":  {Selector: "ed2026", KeyFile: edKey, Type: "ed25519"},
	}
	cfg.Delivery.SmarthostDKIMDomain = "ed.example"
	var logs bytes.Buffer
	relay := testenv.StartRelay(t, cfg, app.Options{}, testenv.WithLogs(&logs))

	words := func(n int, w string) string { return strings.Repeat(w, n/len(w)+1)[:n] }
	msg := func(from, subject, extra, body string) []byte {
		return []byte(fmt.Sprintf("From: Alerts <%s>\r\nTo: <ops@example.test>\r\nSubject: %s\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n"+
			"Message-ID: <%s@client.test>\r\n%s\r\n\r\n%s", from, subject, strings.ReplaceAll(subject, " ", "-"), extra, body))
	}
	big := strings.Repeat(words(76, "0123456789abcdef ")+"\r\n", 3<<20/78)
	cases := []struct {
		subject, from, domain string
		data                  []byte
	}{
		{"rsa short", "app@rsa.example", "rsa.example", msg("app@rsa.example", "rsa short", "X-Mailer: Database Mail", "The disk is full.\r\n.dot line\r\n")},
		{"ed short", "app@ed.example", "ed.example", msg("app@ed.example", "ed short", "X-Mailer: Database Mail", "The disk is full.\r\n")},
		{"rsa big", "app@rsa.example", "rsa.example", msg("app@rsa.example", "rsa big", "X-Mailer: Database Mail", big)},
		{"rsa long lines", "app@rsa.example", "rsa.example", msg("app@rsa.example", "rsa long lines",
			"X-Long: "+words(3000, "alert-id=42; "), "Start.\r\n"+words(100000, "BizTalk BAM alert text ")+"\r\n."+words(2000, "x ")+"\r\n")},
		{"ed long multipart", "app@ed.example", "ed.example", msg("app@ed.example", "ed long multipart",
			"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1",
			"--b1\r\nContent-Type: text/plain\r\n\r\n"+words(5000, "text ")+"\r\n--b1\r\nContent-Type: application/octet-stream\r\n"+
				"Content-Transfer-Encoding: base64\r\n\r\n"+words(50000, "QUJDREVGR0g=")+"\r\n--b1--\r\n")},
		// No key for other.example: the smart host's fallback signs.
		{"fallback", "app@other.example", "ed.example", msg("app@other.example", "fallback", "X-Mailer: cron", "nightly job done\r\n")},
	}
	for _, c := range cases {
		if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: c.from, To: []string{"ops@example.test"}, Data: c.data}); err != nil {
			t.Fatalf("%s: %v", c.subject, err)
		}
	}
	sink.WaitFor(t, len(cases), 60*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	got := map[string][]byte{}
	for _, m := range sink.Messages() {
		for _, c := range cases {
			if bytes.Contains(m.Data, []byte("Subject: "+c.subject+"\r\n")) {
				got[c.subject] = m.Data
			}
		}
	}
	for _, c := range cases {
		data := got[c.subject]
		if data == nil {
			t.Fatalf("%s: not delivered", c.subject)
		}
		if err := dkimVerify(t, dns.Addr, data, c.domain); err != nil {
			t.Errorf("%s: does not verify as %s: %v", c.subject, c.domain, err)
		}
		// The signature is what the relay added, on top of its Received.
		if i := bytes.Index(data, []byte("DKIM-Signature:")); i < 0 || bytes.Count(data, []byte("DKIM-Signature:")) != 1 {
			t.Errorf("%s: %d signatures", c.subject, bytes.Count(data, []byte("DKIM-Signature:")))
		}
		// The check can fail: a changed signed header, a changed body.
		tampered := bytes.Replace(data, []byte("Subject: "+c.subject), []byte("Subject: "+c.subject+"!"), 1)
		if err := dkimVerify(t, dns.Addr, tampered, c.domain); err == nil {
			t.Errorf("%s: a changed Subject still verifies", c.subject)
		}
		if i := bytes.Index(data, []byte("\r\n\r\n")); i > 0 {
			body := append(append([]byte{}, data[:i+4]...), bytes.Replace(data[i+4:], []byte("e"), []byte("E"), 1)...)
			if err := dkimVerify(t, dns.Addr, body, c.domain); err == nil {
				t.Errorf("%s: a changed body still verifies", c.subject)
			}
		}
	}
	// The long lines were made to fit (the sink refuses longer ones), and
	// still verify (above).
	if !bytes.Contains(got["rsa long lines"], []byte("Content-Transfer-Encoding: quoted-printable")) {
		t.Error("the long text body was not re-encoded")
	}

	// The log names the key that signed, never the key.
	line := ""
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"dkim":"signed"`) && strings.Contains(l, `"dkim_domain":"rsa.example"`) {
			line = l
		}
	}
	if !strings.Contains(line, `"dkim_selector":"jr2026"`) || !strings.Contains(line, `"msg_id"`) {
		t.Errorf("no log line with the signing key: %q", line)
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Error("the log shows key material")
	}
	if m := relay.Metric(`jetrelay_dkim_signatures_total{domain="rsa.example",result="signed"}`); !strings.HasSuffix(m, " 3") {
		t.Errorf("metric: %q", m)
	}
	if m := relay.Metric(`jetrelay_dkim_signatures_total{domain="ed.example",result="signed"}`); !strings.HasSuffix(m, " 3") {
		t.Errorf("metric: %q", m)
	}
}

// TestDKIMUnsignedWithoutKey: a From domain without a key and no
// fallback goes out unsigned, counted as no_key.
func TestDKIMUnsignedWithoutKey(t *testing.T) {
	dns := testenv.NewDNS(t)
	dir := t.TempDir()
	key := keygen(t, dns, dir, "ed.example", "s1", "ed25519")
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	cfg := smarthostConfig(t, sink)
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Delivery.DKIM.Domains = map[string]config.DKIMKey{"ed.example": {Selector: "s1", KeyFile: key}}
	relay := testenv.StartRelay(t, cfg, app.Options{})
	data := []byte("From: <app@other.example>\r\nTo: <ops@example.test>\r\nSubject: x\r\n\r\nhello\r\n")
	if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@other.example", To: []string{"ops@example.test"}, Data: data}); err != nil {
		t.Fatal(err)
	}
	msgs := sink.WaitFor(t, 1, 30*time.Second)
	if bytes.Contains(msgs[0].Data, []byte("DKIM-Signature")) {
		t.Error("signed without a key for the From domain")
	}
	if !bytes.HasSuffix(msgs[0].Data, data[bytes.Index(data, []byte("\r\n\r\n")):]) {
		t.Error("the body changed")
	}
	if m := relay.Metric(`jetrelay_dkim_signatures_total{domain="none",result="no_key"}`); !strings.HasSuffix(m, " 1") {
		t.Errorf("metric: %q", m)
	}
}
