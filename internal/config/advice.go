package config

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/jetrelay/jetrelay/delivery"
)

// warnings are settings that are valid but probably not what was meant.
func (c *Config) warnings() []string {
	var out []string
	if h := strings.TrimSuffix(c.Hostname, "."); h != "" && !strings.Contains(h, ".") {
		if _, err := netip.ParseAddr(h); err != nil {
			out = append(out, fmt.Sprintf("hostname %q is not a fully-qualified domain name: it is the name jetrelay gives in EHLO and Received, and many mail servers refuse or distrust one without a domain; set hostname: (e.g. relay.corp.example)", c.Hostname))
		}
	}
	sh := c.Delivery.SmarthostRoute()
	if (len(sh.Hosts) > 0) && sh.Transport != "graph" {
		shTLS := policyOrDefault(sh.TLS)
		doms := make([]string, 0, len(c.Delivery.Routes))
		for d := range c.Delivery.Routes {
			doms = append(doms, d)
		}
		sort.Strings(doms)
		for _, d := range doms {
			r := c.Delivery.Routes[d]
			if r.Transport == "graph" {
				continue
			}
			rTLS := policyOrDefault(r.TLS)
			if tlsStrength(rTLS) < tlsStrength(shTLS) {
				out = append(out, fmt.Sprintf("delivery.routes.%s.tls is %s, weaker than delivery.smarthost_tls (%s): mail for %s may travel %s, although mail through the smart host may not; set tls: %s on the route if that is not intended",
					d, rTLS, shTLS, d, weakness(rTLS), shTLS))
			}
		}
	}
	return append(out, c.dkimWarnings()...)
}

// notes say how a setting is read where that is not obvious.
func (c *Config) notes() []string {
	var out []string
	for _, h := range c.Delivery.Smarthost {
		if hp, ok := hopWithoutPort(h); ok {
			out = append(out, fmt.Sprintf("delivery.smarthost %s has no port: port 25 is used (%s); write host:587 for a submission port", h, hp))
		}
	}
	doms := make([]string, 0, len(c.Delivery.Routes))
	for d := range c.Delivery.Routes {
		doms = append(doms, d)
	}
	sort.Strings(doms)
	for _, d := range doms {
		r := c.Delivery.Routes[d]
		for _, h := range append(StringList{r.Host}, r.Hosts...) {
			if hp, ok := hopWithoutPort(h); ok {
				out = append(out, fmt.Sprintf("delivery.routes.%s host %s has no port: port 25 is used (%s)", d, h, hp))
			}
		}
	}
	return out
}

func policyOrDefault(p string) delivery.TLSPolicy {
	if p == "" {
		return delivery.TLSOpportunistic
	}
	return delivery.TLSPolicy(p)
}

// tlsStrength orders the policies: no TLS, TLS when offered without a
// verified certificate, TLS with a verified certificate.
func tlsStrength(p delivery.TLSPolicy) int {
	switch p {
	case delivery.TLSNone:
		return 0
	case delivery.TLSOpportunistic:
		return 1
	case delivery.TLSRequired, delivery.TLSImplicit:
		return 2
	}
	return 1
}

func weakness(p delivery.TLSPolicy) string {
	if p == delivery.TLSNone {
		return "without TLS"
	}
	return "without TLS when the next hop does not offer it or its certificate fails verification"
}
