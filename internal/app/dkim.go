package app

import (
	"fmt"

	"github.com/jetrelay/jetrelay/delivery/dkim"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/rs/zerolog"
)

// DKIMKeys reads the keys of delivery.dkim.domains, by domain.
func DKIMKeys(dc config.DKIM) ([]*dkim.Key, error) {
	var keys []*dkim.Key
	for d, k := range dc.Domains {
		s, err := dkim.ReadKey(k.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("delivery.dkim.domains.%s.key_file: %w", d, err)
		}
		keys = append(keys, &dkim.Key{Domain: dkim.NormalizeDomain(d), Selector: k.Selector, Signer: s, File: k.KeyFile})
	}
	return keys, nil
}

// DKIMSigner builds delivery's signer from delivery.dkim: nil when no
// domain has a key. It logs each key it loaded by domain, selector and
// type (never the key).
func DKIMSigner(cfg *config.Config, log zerolog.Logger) (*dkim.Signer, error) {
	dc := cfg.Delivery.DKIM
	if len(dc.Domains) == 0 {
		return nil, nil
	}
	keys, err := DKIMKeys(dc)
	if err != nil {
		return nil, err
	}
	s, err := dkim.NewSigner(dkim.Options{Keys: keys, Headers: dc.Headers, Fallback: dc.FallbackDomain})
	if err != nil {
		return nil, fmt.Errorf("delivery.dkim: %w", err)
	}
	for _, k := range s.Keys() {
		log.Info().Str("component", "delivery").Str("dkim_domain", k.Domain).Str("dkim_selector", k.Selector).
			Str("key_type", k.Type()).Msg("DKIM signing key loaded")
	}
	return s, nil
}
