package config

import (
	"fmt"
	"sort"
	"strings"

	"github.com/jetrelay/jetrelay/delivery/dkim"
)

// validateDKIM checks delivery.dkim and the routes' dkim_domain: domain
// names, selectors (DNS labels), key files that read and parse as an RSA
// or Ed25519 key of the stated type, header names, and fallbacks that
// name a configured domain. Key material never appears in a message.
func (c *Config) validateDKIM(add func(string, string, ...any)) {
	dc := c.Delivery.DKIM
	seen := map[string]string{}
	for _, d := range sortedKeys(dc.Domains) {
		k := dc.Domains[d]
		key := "delivery.dkim.domains." + d
		norm := dkim.NormalizeDomain(d)
		if !dkim.ValidDomain(d) {
			add(key, "%q is not a domain name such as example.com", d)
		}
		if first, dup := seen[norm]; dup {
			add(key, "the same domain as %s: one key per domain", first)
		}
		seen[norm] = d
		switch {
		case k.Selector == "":
			add(key+".selector", "needs a selector, the name the public key is published under (<selector>._domainkey.%s)", norm)
		case !dkim.ValidSelector(k.Selector):
			add(key+".selector", "%q is not a selector: DNS labels of letters, digits and hyphens (not first or last), separated by dots", k.Selector)
		}
		switch k.Type {
		case "", dkim.TypeRSA, dkim.TypeEd25519:
		default:
			add(key+".type", "must be rsa or ed25519, got %q", k.Type)
		}
		if k.KeyFile == "" {
			add(key+".key_file", "needs the private key file (make one with: jetrelay dkim keygen --domain %s --selector %s --out FILE)", norm, orWord(k.Selector, "SELECTOR"))
			continue
		}
		s, err := dkim.ReadKey(k.KeyFile)
		if err != nil {
			add(key+".key_file", "%v", err)
			continue
		}
		if k.Type != "" && dkim.KeyType(s) != k.Type {
			add(key+".type", "is %s, but %s holds an %s key", k.Type, k.KeyFile, dkim.KeyType(s))
		}
	}
	if len(dc.Headers) == 0 {
		add("delivery.dkim.headers", "needs at least From")
	} else {
		from := false
		for _, h := range dc.Headers {
			if !dkim.ValidFieldName(h) {
				add("delivery.dkim.headers", "%q is not a header field name", h)
			}
			from = from || strings.EqualFold(h, "From")
		}
		if !from {
			add("delivery.dkim.headers", "must include From (RFC 6376 §5.4)")
		}
	}
	known := func(key, d string) {
		if d != "" && seen[dkim.NormalizeDomain(d)] == "" {
			add(key, "%q has no key: add it under delivery.dkim.domains", d)
		}
	}
	known("delivery.dkim.fallback_domain", dc.FallbackDomain)
	known("delivery.smarthost_dkim_domain", c.Delivery.SmarthostDKIMDomain)
	for _, d := range sortedKeys(c.Delivery.Routes) {
		known("delivery.routes."+d+".dkim_domain", c.Delivery.Routes[d].DKIMDomain)
	}
}

// dkimWarnings: key files others can read, short RSA keys, and DKIM
// settings on Graph routes, which are never signed.
func (c *Config) dkimWarnings() []string {
	var out []string
	dc := c.Delivery.DKIM
	for _, d := range sortedKeys(dc.Domains) {
		k := dc.Domains[d]
		if k.KeyFile == "" {
			continue
		}
		if s, err := dkim.ReadKey(k.KeyFile); err == nil {
			for _, w := range dkim.KeyWarnings(k.KeyFile, s) {
				out = append(out, "delivery.dkim.domains."+d+".key_file: "+w)
			}
		}
	}
	const graphNote = "the graph transport sends through Microsoft 365, which builds the message itself and signs it with the tenant's own DKIM keys (Exchange Online: Email authentication settings → DKIM): jetrelay does not sign it"
	if c.Delivery.SmarthostTransport == "graph" {
		if c.Delivery.SmarthostDKIMDomain != "" {
			out = append(out, "delivery.smarthost_dkim_domain is set, but "+graphNote)
		} else if len(dc.Domains) > 0 {
			out = append(out, "delivery.dkim.domains is set, but mail through the smart host goes by Microsoft Graph: "+graphNote)
		}
	}
	for _, d := range sortedKeys(c.Delivery.Routes) {
		if r := c.Delivery.Routes[d]; r.Transport == "graph" && r.DKIMDomain != "" {
			out = append(out, fmt.Sprintf("delivery.routes.%s.dkim_domain is set, but %s", d, graphNote))
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func orWord(s, word string) string {
	if s == "" {
		return word
	}
	return s
}
