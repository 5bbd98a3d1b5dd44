package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/internal/testenv"
)

// printedRecord reads the record keygen printed: its name, and the
// strings of its zone-file form.
func printedRecord(t *testing.T, out string) (string, []string) {
	t.Helper()
	m := regexp.MustCompile(`name:  (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no record name in:\n%s", out)
	}
	_, zone, ok := strings.Cut(out, "In a zone file:")
	if !ok {
		_, zone, ok = strings.Cut(out, "In a zone file:\n")
	}
	if !ok {
		t.Fatalf("no zone-file form in:\n%s", out)
	}
	zone, _, _ = strings.Cut(zone, "\n\n\n")
	zone, _, _ = strings.Cut(zone, "Then add")
	var strs []string
	for _, q := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(zone, -1) {
		strs = append(strs, q[1])
	}
	return m[1], strs
}

// TestDKIMKeygenAndCheck: keygen writes a 0600 key and prints its record
// (RSA split into strings of at most 255 characters); check finds the
// record on a local DNS server and says it matches, and says in words
// when it is missing or another key, with exit status 1.
func TestDKIMKeygenAndCheck(t *testing.T) {
	dir := t.TempDir()
	dns := testenv.NewDNS(t)
	for _, typ := range []string{"rsa", "ed25519"} {
		key := filepath.Join(dir, typ+".key")
		code, out, errs := run(t, "", "dkim", "keygen", "--domain", "Example.COM", "--selector", "jr-"+typ, "--type", typ, "--out", key)
		if code != 0 {
			t.Fatalf("%s keygen: exit %d\n%s%s", typ, code, out, errs)
		}
		if runtime.GOOS != "windows" {
			if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s key file: %v %v", typ, err, fi.Mode())
			}
		}
		b, _ := os.ReadFile(key)
		if strings.Contains(out, string(b[30:60])) {
			t.Fatal("keygen printed the private key")
		}
		name, strs := printedRecord(t, out)
		if name != "jr-"+typ+"._domainkey.example.com" {
			t.Errorf("%s: record name %q", typ, name)
		}
		for _, s := range strs {
			if len(s) > 255 {
				t.Errorf("%s: a string of %d characters", typ, len(s))
			}
		}
		if typ == "rsa" && len(strs) < 2 || typ == "ed25519" && len(strs) != 1 {
			t.Errorf("%s: %d strings", typ, len(strs))
		}
		if !strings.HasPrefix(strings.Join(strs, ""), "v=DKIM1; k="+typ+"; p=") {
			t.Errorf("%s: record %q", typ, strings.Join(strs, ""))
		}
		// Never overwrites without --force.
		if code, _, errs := run(t, "", "dkim", "keygen", "--domain", "example.com", "--selector", "x", "--type", typ, "--out", key); code == 0 || !strings.Contains(errs, "--force") {
			t.Errorf("%s: overwrote the key: %d %s", typ, code, errs)
		}
		if b2, _ := os.ReadFile(key); string(b2) != string(b) {
			t.Errorf("%s: key changed", typ)
		}

		cfgFile := filepath.Join(dir, typ+".yaml")
		os.WriteFile(cfgFile, []byte("hostname: relay.example.com\ndelivery:\n  dns_server: "+dns.Addr+
			"\n  dkim:\n    domains:\n      example.com: { selector: jr-"+typ+", key_file: "+key+" }\n"), 0o600)
		check := func() (int, string, string) {
			return run(t, "", "dkim", "check", "--config", cfgFile, "--domain", "example.com")
		}

		code, out, errs = check()
		if code != 1 || !strings.Contains(out, "NOT OK: jr-"+typ+"._domainkey.example.com: no TXT record") || !strings.Contains(out, "resolver "+dns.Addr) {
			t.Errorf("%s: missing record: exit %d\n%s%s", typ, code, out, errs)
		}
		dns.SetTXT(name, strs)
		code, out, errs = check()
		if code != 0 || !strings.HasPrefix(out, "OK: jr-"+typ+"._domainkey.example.com publishes the key in "+key) {
			t.Errorf("%s: published record: exit %d\n%s%s", typ, code, out, errs)
		}

		// Another key at the same name.
		other := filepath.Join(dir, typ+"-other.key")
		_, out2, _ := run(t, "", "dkim", "keygen", "--domain", "example.com", "--selector", "jr-"+typ, "--type", typ, "--out", other)
		_, otherStrs := printedRecord(t, out2)
		dns.SetTXT(name, otherStrs)
		code, out, _ = check()
		if code != 1 || !strings.Contains(out, "publishes another key") {
			t.Errorf("%s: other key: exit %d\n%s", typ, code, out)
		}
		// --key checks a key file not configured yet.
		if code, out, errs := run(t, "", "dkim", "check", "--config", cfgFile, "--domain", "example.com", "--key", other); code != 0 {
			t.Errorf("%s: --key: exit %d\n%s%s", typ, code, out, errs)
		}
		// record prints the configured key's record.
		code, out, _ = run(t, "", "dkim", "record", "--config", cfgFile, "--domain", "example.com")
		if _, recStrs := printedRecord(t, out); code != 0 || strings.Join(recStrs, "") != strings.Join(strs, "") {
			t.Errorf("%s: record: exit %d\n%s", typ, code, out)
		}
	}
	for _, args := range [][]string{
		{"dkim", "keygen", "--domain", "localhost", "--selector", "s"},
		{"dkim", "keygen", "--domain", "example.com", "--selector", "-s"},
		{"dkim", "keygen", "--domain", "example.com", "--selector", "s", "--type", "dsa"},
		{"dkim", "keygen", "--domain", "example.com", "--selector", "s", "--bits", "512"},
		{"dkim", "keygen", "--domain", "example.com", "--selector", "s", "--type", "ed25519", "--bits", "4096"},
	} {
		if code, _, errs := run(t, "", append(args, "--out", filepath.Join(dir, "never.key"))...); code != 2 || errs == "" {
			t.Errorf("%v: exit %d %q", args, code, errs)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "never.key")); err == nil {
		t.Error("a refused keygen wrote a file")
	}
}
