package cli

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"time"

	"github.com/jetrelay/jetrelay/delivery/dkim"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/spf13/cobra"
)

func init() { extraCommands = append(extraCommands, newDKIMCmd) }

func newDKIMCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dkim",
		Short: "Make DKIM keys, print their DNS records, check what DNS publishes",
		Long: `DKIM signs the mail jetrelay delivers over SMTP with a key of the sending
domain (the From header's), so receivers can tell it really comes from
that domain. Set it up in three steps:

  jetrelay dkim keygen --domain example.com --selector jr2026 --out /etc/jetrelay/dkim/example.com.key
  (publish the TXT record it prints, add the key under delivery.dkim.domains)
  jetrelay dkim check --domain example.com

Mail sent through Microsoft Graph is not signed by jetrelay: Microsoft 365
signs it with the tenant's own keys.`,
	}
	cmd.AddCommand(newDKIMKeygenCmd(g), newDKIMCheckCmd(g), newDKIMRecordCmd(g))
	return cmd
}

func newDKIMKeygenCmd(g *globals) *cobra.Command {
	var domain, selector, typ, out string
	var bits int
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen --domain D --selector S [--type rsa|ed25519] [--bits 2048] [--out FILE]",
		Short: "Generate a DKIM private key and print the DNS record that publishes it",
		Long: `keygen writes a new private key (PEM, PKCS#8) readable by its owner only
(mode 0600), and prints the TXT record to publish at
<selector>._domainkey.<domain> and the configuration to add. It never
replaces an existing file unless --force is given.

--type rsa (2048 bits by default) is what every receiver verifies;
ed25519 (RFC 8463) is shorter and faster but not verified everywhere yet.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			domain = dkim.NormalizeDomain(domain)
			if err := checkNames(domain, selector); err != nil {
				return err
			}
			if out == "" {
				out = domain + "." + selector + ".key"
			}
			if typ == dkim.TypeEd25519 && cmd.Flags().Changed("bits") {
				return exitError{code: 2, msg: "--bits is for RSA keys; an Ed25519 key has no size to choose"}
			}
			if typ == dkim.TypeEd25519 {
				bits = 0
			}
			key, err := dkim.Generate(typ, bits)
			if err != nil {
				return exitError{code: 2, msg: err.Error()}
			}
			if err := dkim.WriteKey(out, key, force); err != nil {
				return exitError{code: 1, msg: err.Error()}
			}
			fmt.Fprintf(g.stdout, "Wrote a new %s private key to %s (mode 0600: keep it readable by jetrelay's user only).\n\n", describeKey(key), out)
			if err := printRecord(g.stdout, domain, selector, key); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "\nThen add the key to the configuration:\n\n"+
				"delivery:\n  dkim:\n    domains:\n      %s:\n        selector: %s\n        key_file: %s\n\n"+
				"and check what DNS publishes (it may take the record's TTL to appear):\n\n  jetrelay dkim check --domain %s\n",
				domain, selector, out, domain)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&domain, "domain", "", "the signing domain (d=), usually the From addresses' domain")
	f.StringVar(&selector, "selector", "", "the selector (s=): the key is published at <selector>._domainkey.<domain>")
	f.StringVar(&typ, "type", dkim.TypeRSA, "key type: rsa or ed25519")
	f.IntVar(&bits, "bits", dkim.RecommendedRSABits, "RSA key size in bits")
	f.StringVar(&out, "out", "", "private key file to write (default <domain>.<selector>.key in the current directory)")
	f.BoolVar(&force, "force", false, "replace an existing key file (the record published for the old key then no longer matches)")
	_ = cmd.MarkFlagRequired("domain")
	_ = cmd.MarkFlagRequired("selector")
	return cmd
}

func checkNames(domain, selector string) error {
	if !dkim.ValidDomain(domain) {
		return exitError{code: 2, msg: fmt.Sprintf("--domain %q is not a domain name such as example.com", domain)}
	}
	if !dkim.ValidSelector(selector) {
		return exitError{code: 2, msg: fmt.Sprintf("--selector %q is not a selector: DNS labels of letters, digits and hyphens, separated by dots (e.g. jr2026)", selector)}
	}
	return nil
}

func describeKey(k crypto.Signer) string {
	if n := dkim.RSABits(k); n > 0 {
		return fmt.Sprintf("RSA %d-bit", n)
	}
	return "Ed25519"
}

// printRecord prints the TXT record of key: name and value, and the
// zone-file form split into strings of at most 255 characters.
func printRecord(w io.Writer, domain, selector string, key crypto.Signer) error {
	rec, err := dkim.Record(key)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Publish this DNS TXT record:\n\n  name:  %s\n  value: %s\n\n", dkim.RecordName(selector, domain), rec)
	if parts := dkim.SplitTXT(rec); len(parts) > 1 {
		fmt.Fprintf(w, "The value is longer than 255 characters, the most one DNS string holds: enter it as\n"+
			"%d strings in one record (most DNS consoles split it themselves). In a zone file:\n\n%s\n", len(parts), dkim.ZoneLine(selector, domain, rec))
	} else {
		fmt.Fprintf(w, "In a zone file:\n\n%s\n", dkim.ZoneLine(selector, domain, rec))
	}
	return nil
}

// dkimKey loads the configuration and the key of domain (normalized) for
// dkim check and dkim record. With --key a configuration that does not
// load is no obstacle (the key file says it all); without, it is.
func (g *globals) dkimKey(domain, selector, keyFile string) (*config.Config, *dkim.Key, error) {
	cfg, _, err := g.load(nil)
	if cfg == nil {
		return nil, nil, err
	}
	if err != nil && keyFile == "" {
		return nil, nil, exitError{code: 1, msg: "configuration does not load (run `jetrelay config check`):\n" + err.Error()}
	}
	key, err := configuredKey(cfg, domain, selector, keyFile)
	if err != nil {
		return nil, nil, err
	}
	return cfg, key, nil
}

// configuredKey finds domain's key in the configuration, or reads
// keyFile; selector overrides the configured one.
func configuredKey(cfg *config.Config, domain, selector, keyFile string) (*dkim.Key, error) {
	var entry *config.DKIMKey
	for d, k := range cfg.Delivery.DKIM.Domains {
		if dkim.NormalizeDomain(d) == domain {
			entry = &k
		}
	}
	if keyFile == "" {
		if entry == nil {
			return nil, exitError{code: 1, msg: fmt.Sprintf("%s has no key under delivery.dkim.domains in the configuration; give --key FILE to check a key file that is not configured yet", domain)}
		}
		keyFile = entry.KeyFile
	}
	if selector == "" && entry != nil {
		selector = entry.Selector
	}
	if selector == "" {
		return nil, exitError{code: 2, msg: "give --selector (the key file does not say under which selector it is published)"}
	}
	if err := checkNames(domain, selector); err != nil {
		return nil, err
	}
	s, err := dkim.ReadKey(keyFile)
	if err != nil {
		return nil, exitError{code: 1, msg: err.Error()}
	}
	return &dkim.Key{Domain: domain, Selector: selector, Signer: s, File: keyFile}, nil
}

func newDKIMCheckCmd(g *globals) *cobra.Command {
	var domain, selector, keyFile, dnsServer string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check --domain D [--selector S] [--key FILE] [--dns-server HOST:PORT]",
		Short: "Check that DNS publishes the configured DKIM key",
		Long: `check looks up <selector>._domainkey.<domain> (the selector and key of
delivery.dkim.domains, or --selector and --key) with the resolver delivery
uses (delivery.dns_server, else the system's; --dns-server overrides
it), and says whether the record publishes the key: it compares the
public key, then signs a test message with the key and verifies it
against the record as a receiver would. It exits 0 when it matches, 1
when the record is missing, another key, revoked, or the lookup fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			domain = dkim.NormalizeDomain(domain)
			cfg, key, err := g.dkimKey(domain, selector, keyFile)
			if err != nil {
				return err
			}
			if dnsServer == "" {
				dnsServer = cfg.Delivery.DNSServer
			}
			resolverName := "the system resolver"
			if dnsServer != "" {
				resolverName = "resolver " + dnsServer
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			res, err := dkim.Check(ctx, dkim.NewResolver(dnsServer), key)
			if err != nil {
				return exitError{code: 1, msg: fmt.Sprintf("%v (asked %s)", err, resolverName)}
			}
			if res.OK() {
				fmt.Fprintf(g.stdout, "OK: %s publishes the key in %s (%s, selector %s): it matches, and a message signed with it verifies against the record.\n",
					res.Name, key.File, describeKey(key.Signer), key.Selector)
				return nil
			}
			fmt.Fprintf(g.stdout, "NOT OK: %s: %s (asked %s).\n", res.Name, res.Problem, resolverName)
			for _, r := range res.Records {
				fmt.Fprintf(g.stdout, "  published: %s\n", r)
			}
			fmt.Fprintln(g.stdout)
			if err := printRecord(g.stdout, domain, key.Selector, key.Signer); err != nil {
				return err
			}
			return exitError{code: 1}
		},
	}
	f := cmd.Flags()
	f.StringVar(&domain, "domain", "", "the signing domain to check")
	f.StringVar(&selector, "selector", "", "the selector to look up (default: the configured one)")
	f.StringVar(&keyFile, "key", "", "a private key file to check instead of the configured one (e.g. right after keygen)")
	f.StringVar(&dnsServer, "dns-server", "", "DNS server host:port to ask (default: delivery.dns_server, else the system's)")
	f.DurationVar(&timeout, "timeout", 15*time.Second, "how long the lookup may take")
	_ = cmd.MarkFlagRequired("domain")
	return cmd
}

func newDKIMRecordCmd(g *globals) *cobra.Command {
	var domain, selector, keyFile string
	cmd := &cobra.Command{
		Use:   "record --domain D [--selector S] [--key FILE]",
		Short: "Print the DNS record of a configured DKIM key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			domain = dkim.NormalizeDomain(domain)
			_, key, err := g.dkimKey(domain, selector, keyFile)
			if err != nil {
				return err
			}
			return printRecord(g.stdout, domain, key.Selector, key.Signer)
		},
	}
	f := cmd.Flags()
	f.StringVar(&domain, "domain", "", "the signing domain")
	f.StringVar(&selector, "selector", "", "the selector (default: the configured one)")
	f.StringVar(&keyFile, "key", "", "a private key file instead of the configured one")
	_ = cmd.MarkFlagRequired("domain")
	return cmd
}
