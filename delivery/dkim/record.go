package dkim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
)

// RecordName is where a key is published: <selector>._domainkey.<domain>.
func RecordName(selector, domain string) string {
	return selector + "._domainkey." + strings.TrimSuffix(domain, ".")
}

// publicKeyData is the p= value: the SubjectPublicKeyInfo of an RSA key
// (RFC 6376 §3.6.1), the raw 32 octets of an Ed25519 key (RFC 8463 §4.2).
func publicKeyData(pub crypto.PublicKey) (string, string, error) {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(p)
		if err != nil {
			return "", "", err
		}
		return TypeRSA, base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return TypeEd25519, base64.StdEncoding.EncodeToString(p), nil
	}
	return "", "", fmt.Errorf("a %T cannot sign DKIM", pub)
}

// Record is the TXT record's value that publishes a key's public half:
// "v=DKIM1; k=ed25519; p=…".
func Record(s crypto.Signer) (string, error) {
	k, p, err := publicKeyData(s.Public())
	if err != nil {
		return "", err
	}
	return "v=DKIM1; k=" + k + "; p=" + p, nil
}

// SplitTXT cuts a record value into the character-strings of one TXT
// record, each at most 255 octets (RFC 1035 §3.3): a 2048-bit RSA key
// does not fit in one. Verifiers join them without a separator.
func SplitTXT(v string) []string {
	var out []string
	for len(v) > 255 {
		out = append(out, v[:255])
		v = v[255:]
	}
	return append(out, v)
}

// ZoneLine is the record in zone-file form, split as SplitTXT does:
// `s._domainkey.example.com. IN TXT ( "v=DKIM1; …" "…" )`.
func ZoneLine(selector, domain, value string) string {
	parts := SplitTXT(value)
	var b strings.Builder
	fmt.Fprintf(&b, "%s. IN TXT ", RecordName(selector, domain))
	if len(parts) == 1 {
		fmt.Fprintf(&b, "%q", parts[0])
		return b.String()
	}
	b.WriteString("(")
	for _, p := range parts {
		fmt.Fprintf(&b, "\n    %q", p)
	}
	b.WriteString(" )")
	return b.String()
}

// PublishedKey is a parsed DKIM key record (RFC 6376 §3.6.1).
type PublishedKey struct {
	Version string // v=, "" or DKIM1
	Type    string // k=, rsa by default
	Data    string // p=, without whitespace; "" means the key was revoked
	Tags    map[string]string
}

// ParseRecord reads a key record's value (the TXT record's strings
// joined).
func ParseRecord(txt string) (*PublishedKey, error) {
	r := &PublishedKey{Type: TypeRSA, Tags: map[string]string{}}
	for _, part := range strings.Split(txt, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not a tag=value pair", strings.TrimSpace(part))
		}
		k = strings.TrimSpace(k)
		v = strings.Join(strings.Fields(v), "")
		if _, dup := r.Tags[k]; dup {
			return nil, fmt.Errorf("the tag %s= is given twice", k)
		}
		r.Tags[k] = v
	}
	if v, ok := r.Tags["v"]; ok {
		r.Version = v
		if v != "DKIM1" {
			return nil, fmt.Errorf("v=%s: a DKIM key record says v=DKIM1", v)
		}
	}
	if k, ok := r.Tags["k"]; ok {
		r.Type = strings.ToLower(k)
	}
	p, ok := r.Tags["p"]
	if !ok {
		return nil, errors.New("the record has no p= (public key) tag")
	}
	r.Data = p
	return r, nil
}

// Matches says whether the record publishes s's public half, and if not,
// why, in words.
func (r *PublishedKey) Matches(s crypto.Signer) error {
	k, p, err := publicKeyData(s.Public())
	if err != nil {
		return err
	}
	switch {
	case r.Data == "":
		return errors.New("the record has an empty p=: the key is revoked")
	case r.Type != k:
		return fmt.Errorf("the record is for a key of type %s (k=%s), the configured key is %s", r.Type, r.Type, k)
	case r.Data != p:
		return errors.New("the record publishes another key (p= differs from the configured key's public half)")
	}
	return nil
}

// Resolver looks up TXT records; *net.Resolver is one.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// NewResolver is a resolver that asks the DNS server at addr
// ("host:port"), or the system's when addr is "".
func NewResolver(addr string) *net.Resolver {
	if addr == "" {
		return net.DefaultResolver
	}
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// CheckResult is what Check found.
type CheckResult struct {
	Name    string   // the name looked up
	Records []string // the TXT records found there
	// Problem is "" when the record matches the key, else what is wrong,
	// in words (missing, several, unreadable, another key, revoked).
	Problem string
	// Verified: a message signed with the key verified against the
	// published record with go-msgauth's verifier.
	Verified bool
}

// OK reports whether the record matches.
func (c *CheckResult) OK() bool { return c.Problem == "" }

// Check looks up the record of key and says whether it publishes key's
// public half; it then signs a probe message with the key and verifies it
// against the published record, as a receiver would. A failed lookup is
// an error; a record that is missing or does not match is a Problem.
func Check(ctx context.Context, res Resolver, key *Key) (*CheckResult, error) {
	out := &CheckResult{Name: RecordName(key.Selector, key.Domain)}
	txts, err := res.LookupTXT(ctx, out.Name+".")
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsNotFound:
		out.Problem = fmt.Sprintf("no TXT record at %s: publish the record `jetrelay dkim keygen` printed (or `jetrelay dkim record`)", out.Name)
		return out, nil
	case err != nil:
		return nil, fmt.Errorf("looking up %s: %w", out.Name, err)
	}
	out.Records = txts
	var dkims []string
	for _, t := range txts {
		if squeezed := strings.Join(strings.Fields(t), ""); strings.HasPrefix(squeezed, "v=DKIM") || strings.Contains(squeezed, "p=") {
			dkims = append(dkims, t)
		}
	}
	switch len(dkims) {
	case 0:
		out.Problem = fmt.Sprintf("%s has TXT records, but none is a DKIM key record (v=DKIM1; k=…; p=…)", out.Name)
		return out, nil
	case 1:
	default:
		out.Problem = fmt.Sprintf("%s has %d DKIM key records; receivers fail a signature when there is more than one (RFC 6376 §3.6.2.2): keep one", out.Name, len(dkims))
		return out, nil
	}
	rec, err := ParseRecord(dkims[0])
	if err != nil {
		out.Problem = fmt.Sprintf("the record at %s does not read as a DKIM key: %v", out.Name, err)
		return out, nil
	}
	if err := rec.Matches(key.Signer); err != nil {
		out.Problem = err.Error()
		return out, nil
	}
	if err := verifyProbe(ctx, res, key); err != nil {
		out.Problem = fmt.Sprintf("the record matches the key, but a message signed with it does not verify: %v", err)
		return out, nil
	}
	out.Verified = true
	return out, nil
}

// verifyProbe signs a short message with key and verifies it against the
// published record.
func verifyProbe(ctx context.Context, res Resolver, key *Key) error {
	msg := []byte("From: <dkim-check@" + key.Domain + ">\r\nTo: <dkim-check@" + key.Domain + ">\r\nSubject: jetrelay dkim check\r\n\r\nprobe\r\n")
	s, err := NewSigner(Options{Keys: []*Key{key}})
	if err != nil {
		return err
	}
	sig, err := s.Sign(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(msg)), nil }, nil, "")
	if err != nil {
		return err
	}
	return VerifyMessage(ctx, res, append(sig.Field, msg...), key.Domain)
}
