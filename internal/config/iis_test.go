package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/pickup"
)

// The keys of issue 18 B: connection control, the pickup directory,
// masquerade and the NDR copy: loaded, defaulted from the stages, and
// checked in words.
func TestIISParityKeys(t *testing.T) {
	d := Default()
	if d.Ingress.Pickup.PollInterval.D() != pickup.DefaultOptions().PollInterval || d.Ingress.Pickup.StableFor.D() != 2*time.Second || d.Ingress.Pickup.Dir != "" {
		t.Fatalf("pickup defaults: %+v", d.Ingress.Pickup)
	}
	dir := t.TempDir()
	cfg, _, err := Load(writeFile(t, `
ingress:
  connection_allow: ["10.0.0.0/8", "192.0.2.7"]
  connection_deny: 10.9.0.0/16
  pickup:
    dir: `+filepath.Join(dir, "Pickup")+`
    stable_for: 5s
delivery:
  masquerade_domain: corp.example
  ndr_copy_to: postmaster@corp.example
  routes:
    partner.example: {host: "10.0.0.5:25", masquerade_domain: out.corp.example, ndr_copy_to: partners@corp.example}
`), []string{"JETRELAY_INGRESS_PICKUP_POLL_INTERVAL=500ms"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	in, dv := cfg.Ingress, cfg.Delivery
	if len(in.ConnectionAllow) != 2 || len(in.ConnectionDeny) != 1 || in.Pickup.StableFor.D() != 5*time.Second ||
		in.Pickup.PollInterval.D() != 500*time.Millisecond || dv.MasqueradeDomain != "corp.example" || dv.NDRCopyTo != "postmaster@corp.example" ||
		dv.Routes["partner.example"].MasqueradeDomain != "out.corp.example" || dv.Routes["partner.example"].NDRCopyTo != "partners@corp.example" {
		t.Fatalf("loaded: %+v %+v", in, dv)
	}

	bad := Default()
	bad.Ingress.ConnectionDeny = StringList{"10.0.0.0/33"}
	bad.Ingress.ConnectionAllow = StringList{"somewhere"}
	bad.Ingress.Pickup = Pickup{Dir: dir, BadmailDir: dir + "/", PollInterval: Duration(time.Millisecond)}
	bad.Delivery.MasqueradeDomain = "app@corp.example"
	bad.Delivery.NDRCopyTo = "Postmaster <pm@corp.example>"
	bad.Delivery.Routes = map[string]Route{"p.example": {Host: "h:25", MasqueradeDomain: "corp", NDRCopyTo: "nobody"}}
	err = bad.Validate()
	for _, want := range []string{
		`ingress.connection_deny: "10.0.0.0/33" is neither`,
		`ingress.connection_allow: "somewhere" is neither`,
		"ingress.pickup.poll_interval: must be at least 100ms",
		"ingress.pickup.badmail_dir: must not be the pickup directory itself",
		`delivery.masquerade_domain: "app@corp.example" is not a domain name`,
		`delivery.ndr_copy_to: "Postmaster <pm@corp.example>" is not an address`,
		`delivery.routes.p.example.masquerade_domain: "corp" is not a domain name`,
		`delivery.routes.p.example.ndr_copy_to: "nobody" is not an address`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	lone := Default()
	lone.Ingress.Pickup.BadmailDir = dir
	if err := lone.Validate(); err == nil || !strings.Contains(err.Error(), "ingress.pickup.badmail_dir: needs ingress.pickup.dir") {
		t.Errorf("badmail_dir alone: %v", err)
	}
}
