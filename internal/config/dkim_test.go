package config

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/delivery/dkim"
)

func writeKey(t *testing.T, dir, name, typ string, mode os.FileMode) string {
	t.Helper()
	s, err := dkim.Generate(typ, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := dkim.WriteKey(p, s, false); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDKIMConfig: a good DKIM section loads without a problem; each
// mistake is reported at its line, in words; warnings for a key others
// can read and for DKIM on a Graph route.
func TestDKIMConfig(t *testing.T) {
	dir := t.TempDir()
	ed := writeKey(t, dir, "ed.pem", dkim.TypeEd25519, 0o600)
	rsa := writeKey(t, dir, "rsa.pem", dkim.TypeRSA, 0o600)
	good := `
hostname: relay.example.com
delivery:
  dkim:
    domains:
      example.com: { selector: s2026, key_file: ` + ed + `, type: ed25519 }
      relay.example.net:
        selector: rsa.2026
        key_file: ` + rsa + `
    fallback_domain: relay.example.net
  smarthost: mail.example.net:587
  smarthost_dkim_domain: example.com
  routes:
    corp.example: { host: "10.0.0.5:25", dkim_domain: relay.example.net }
`
	cfg, src, err := Load(writeFile(t, good), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("good DKIM config: %v", err)
	}
	if len(src.Warnings) != 0 {
		t.Errorf("warnings: %q", src.Warnings)
	}
	if got := cfg.Delivery.DKIM.Domains["example.com"]; got.Selector != "s2026" || got.KeyFile != ed {
		t.Errorf("decoded %+v", got)
	}
	if strings.Join(cfg.Delivery.DKIM.Headers, ",") != strings.Join(dkim.DefaultHeaders(), ",") {
		t.Errorf("default headers %v", cfg.Delivery.DKIM.Headers)
	}
	if cfg.Delivery.SmarthostRoute().DKIMDomain != "example.com" {
		t.Error("the smart host's dkim domain is not in its route")
	}

	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	bad := `
delivery:
  dkim:
    domains:
      example.com: { selector: s2026, key_file: ` + ed + `, type: rsa }
      "-bad.example": { selector: -s-, key_file: ` + rsa + ` }
      nokey.example: { selector: s1 }
      garbage.example: { selector: s1, key_file: ` + garbage + ` }
      missing.example: { selector: s1, key_file: ` + filepath.Join(dir, "nope.pem") + ` }
      odd.example: { key_file: ` + rsa + `, type: dsa }
    headers: [To, "Sub ject"]
    fallback_domain: other.example
  routes:
    corp.example: { host: "10.0.0.5:25", dkim_domain: unknown.example }
`
	cfg, src, err = Load(writeFile(t, bad), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	verr := src.Locate(cfg.Validate())
	if verr == nil {
		t.Fatal("bad DKIM config validates")
	}
	msg := verr.Error()
	for _, want := range []string{
		`delivery.dkim.domains.example.com.type: is rsa, but ` + ed + ` holds an ed25519 key`,
		`delivery.dkim.domains.-bad.example: "-bad.example" is not a domain name`,
		`delivery.dkim.domains.-bad.example.selector: "-s-" is not a selector`,
		`delivery.dkim.domains.nokey.example.key_file: needs the private key file (make one with: jetrelay dkim keygen --domain nokey.example --selector s1`,
		`delivery.dkim.domains.garbage.example.key_file: ` + garbage + `: not a PEM private key`,
		`delivery.dkim.domains.missing.example.key_file: open ` + filepath.Join(dir, "nope.pem"),
		`delivery.dkim.domains.odd.example.selector: needs a selector`,
		`delivery.dkim.domains.odd.example.type: must be rsa or ed25519, got "dsa"`,
		`delivery.dkim.headers: "Sub ject" is not a header field name`,
		`delivery.dkim.headers: must include From`,
		`delivery.dkim.fallback_domain: "other.example" has no key`,
		`delivery.routes.corp.example.dkim_domain: "unknown.example" has no key`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	// Each problem names its line in the file.
	for _, l := range strings.Split(msg, "\n") {
		if !strings.Contains(l, "jetrelay.yaml:") {
			t.Errorf("no file:line: %s", l)
		}
	}

	// Warnings: a key others can read; DKIM on Graph.
	if runtime.GOOS != "windows" {
		os.Chmod(ed, 0o644)
	}
	graph := `
delivery:
  dkim:
    domains:
      example.com: { selector: s2026, key_file: ` + ed + ` }
  routes:
    m365.example:
      transport: graph
      dkim_domain: example.com
      oauth: { provider: entra, tenant_id: t, client_id: c, client_secret: s }
`
	_, src, err = Load(writeFile(t, graph), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(src.Warnings, "\n")
	if runtime.GOOS != "windows" && !strings.Contains(all, "delivery.dkim.domains.example.com.key_file: the private key "+ed+" can be read by other users (mode 0644)") {
		t.Errorf("no permission warning:\n%s", all)
	}
	if !strings.Contains(all, "delivery.routes.m365.example.dkim_domain is set, but the graph transport") {
		t.Errorf("no Graph warning:\n%s", all)
	}
	if strings.Contains(all, "PRIVATE KEY") {
		t.Error("a warning shows key material")
	}
}
