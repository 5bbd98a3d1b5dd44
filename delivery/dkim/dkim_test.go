package dkim_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/jetrelay/jetrelay/delivery/dkim"
)

// zone is a resolver over a map of TXT records.
type zone map[string][]string

func (z zone) LookupTXT(_ context.Context, name string) ([]string, error) {
	if v, ok := z[strings.TrimSuffix(name, ".")]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (z zone) lookup(name string) ([]string, error) { return z.LookupTXT(context.Background(), name) }

func mustKey(t testing.TB, typ, domain, selector string) *dkim.Key {
	t.Helper()
	bits := 0
	if typ == dkim.TypeRSA {
		bits = 2048
	}
	s, err := dkim.Generate(typ, bits)
	if err != nil {
		t.Fatal(err)
	}
	return &dkim.Key{Domain: domain, Selector: selector, Signer: s}
}

// publish puts the record of k into z, split into strings as keygen
// prints it (a TXT lookup joins them).
func publish(t testing.TB, z zone, k *dkim.Key) {
	t.Helper()
	rec, err := dkim.Record(k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	z[dkim.RecordName(k.Selector, k.Domain)] = []string{strings.Join(dkim.SplitTXT(rec), "")}
}

func opener(msg []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(msg)), nil }
}

const testMsg = "From: Alerts <alerts@example.com>\r\nTo: ops@example.net\r\nSubject: disk  full\r\n" +
	"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nThe disk is full.\r\n\r\n\r\n"

// verify runs go-msgauth's verifier and returns the verification of
// domain's signature.
func verify(t *testing.T, z zone, msg []byte, domain string) error {
	t.Helper()
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{LookupTXT: z.lookup})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	for _, v := range vs {
		if v.Domain == domain {
			return v.Err
		}
	}
	t.Fatalf("no signature of %s among %d", domain, len(vs))
	return nil
}

func TestSignVerifies(t *testing.T) {
	for _, typ := range []string{dkim.TypeRSA, dkim.TypeEd25519} {
		t.Run(typ, func(t *testing.T) {
			z := zone{}
			k := mustKey(t, typ, "Example.COM.", "s1")
			publish(t, z, &dkim.Key{Domain: "example.com", Selector: "s1", Signer: k.Signer})
			s, err := dkim.NewSigner(dkim.Options{Keys: []*dkim.Key{k}})
			if err != nil {
				t.Fatal(err)
			}
			sig, err := s.Sign(opener([]byte(testMsg)), nil, "")
			if err != nil {
				t.Fatal(err)
			}
			if sig.Key == nil || sig.Key.Domain != "example.com" || sig.FromDomain != "example.com" {
				t.Fatalf("signature %+v", sig)
			}
			field := string(sig.Field)
			for _, want := range []string{"a=" + typ + "-sha256", "c=relaxed/relaxed", "d=example.com", "s=s1",
				"h=From:From:To:Cc:Subject:Date:Message-ID:MIME-Version:Content-Type:Content-Transfer-Encoding:Reply-To"} {
				if !strings.Contains(strings.NewReplacer("\r\n ", "", " ", "").Replace(field), strings.ReplaceAll(want, " ", "")) {
					t.Errorf("signature lacks %s:\n%s", want, field)
				}
			}
			signed := append(append([]byte{}, sig.Field...), testMsg...)
			if err := verify(t, z, signed, "example.com"); err != nil {
				t.Fatalf("does not verify: %v", err)
			}
			if err := dkim.VerifyMessage(context.Background(), z, signed, "example.com"); err != nil {
				t.Fatalf("VerifyMessage: %v", err)
			}

			// The check can fail: a changed signed header, a changed body, a
			// second From (over-signed), another key in DNS.
			for name, bad := range map[string]string{
				"subject":     strings.Replace(string(signed), "Subject: disk  full", "Subject: disk fine", 1),
				"body":        strings.Replace(string(signed), "The disk is full.", "The disk is fine.", 1),
				"second from": strings.Replace(string(signed), "To: ops", "From: <evil@example.org>\r\nTo: ops", 1),
				"added cc":    strings.Replace(string(signed), "To: ops", "Cc: <evil@example.org>\r\nTo: ops", 1),
			} {
				if err := verify(t, z, []byte(bad), "example.com"); err == nil {
					t.Errorf("%s: tampered message verifies", name)
				}
			}
			// Relaxed canonicalisation: whitespace and trailing empty lines
			// may change, an unsigned header may be added.
			benign := strings.Replace(string(signed), "Subject: disk  full", "Subject:   disk full ", 1)
			benign = strings.Replace(benign, "\r\n\r\nThe disk", "\r\nX-Spam: no\r\n\r\nThe disk", 1) + "\r\n"
			if err := verify(t, z, []byte(benign), "example.com"); err != nil {
				t.Errorf("relaxed changes fail: %v", err)
			}
			other := mustKey(t, typ, "example.com", "s1")
			publish(t, z, other)
			if err := verify(t, z, signed, "example.com"); err == nil {
				t.Error("verifies against another key")
			}
		})
	}
}

// TestKeyChoice: From's domain, its parent, the route's fallback, the
// global fallback, none; with no key the body is not read to the end.
func TestKeyChoice(t *testing.T) {
	ex := mustKey(t, dkim.TypeEd25519, "example.com", "a")
	relay := mustKey(t, dkim.TypeEd25519, "relay.example.net", "b")
	glob := mustKey(t, dkim.TypeEd25519, "global.example.org", "c")
	with := func(fallback string) *dkim.Signer {
		s, err := dkim.NewSigner(dkim.Options{Keys: []*dkim.Key{ex, relay, glob}, Fallback: fallback})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := []struct {
		from, route, global, want string
	}{
		{"From: a@example.com", "", "", "example.com"},
		{"FROM: \"Ops, Team\" <a@Mail.Example.COM>", "", "", "example.com"},
		{"From: a@example.org", "relay.example.net", "global.example.org", "relay.example.net"},
		{"From: a@example.org", "", "global.example.org", "global.example.org"},
		{"From: a@example.org", "", "", ""},
		{"From: a@example.org", "nokey.example", "", ""},
		{"From: undisclosed (no address)", "", "global.example.org", "global.example.org"},
		{"From: a@example.com (comment) junk <<", "", "", "example.com"},
		{"From:\r\n a@example.com", "", "", "example.com"},
		{"Sender: a@example.com", "", "", ""},
	}
	for _, c := range cases {
		body := &countingReader{r: strings.NewReader(c.from + "\r\nSubject: x\r\n\r\n" + strings.Repeat("body line\r\n", 100000))}
		sig, err := with(c.global).Sign(func() (io.ReadCloser, error) { return io.NopCloser(body), nil }, nil, c.route)
		if err != nil {
			t.Fatalf("%q: %v", c.from, err)
		}
		got := ""
		if sig.Key != nil {
			got = sig.Key.Domain
		}
		if got != c.want {
			t.Errorf("%q route %q global %q: signed by %q, want %q", c.from, c.route, c.global, got, c.want)
		}
		if c.want == "" && (sig.Field != nil || body.n > 100000) {
			t.Errorf("%q: unsigned, but field %q and %d octets read", c.from, sig.Field, body.n)
		}
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p[:min(len(p), 4096)])
	c.n += n
	return n, err
}

// TestSignWire: what is hashed is what the wire transform writes, not
// what was read.
func TestSignWire(t *testing.T) {
	z := zone{}
	k := mustKey(t, dkim.TypeEd25519, "example.com", "s")
	publish(t, z, k)
	s, _ := dkim.NewSigner(dkim.Options{Keys: []*dkim.Key{k}})
	upper := func(w io.Writer) io.WriteCloser { return upperWriter{w} }
	sig, err := s.Sign(opener([]byte(testMsg)), upper, "")
	if err != nil {
		t.Fatal(err)
	}
	wire := append(append([]byte{}, sig.Field...), bytes.ToUpper([]byte(testMsg))...)
	if err := verify(t, z, wire, "example.com"); err != nil {
		t.Errorf("the transformed message does not verify: %v", err)
	}
	if err := verify(t, z, append(append([]byte{}, sig.Field...), testMsg...), "example.com"); err == nil {
		t.Error("the message as read verifies, so the transform was not hashed")
	}
}

type upperWriter struct{ w io.Writer }

func (u upperWriter) Write(p []byte) (int, error) { return u.w.Write(bytes.ToUpper(p)) }
func (u upperWriter) Close() error                { return nil }

func TestSignEdges(t *testing.T) {
	z := zone{}
	k := mustKey(t, dkim.TypeEd25519, "example.com", "s")
	publish(t, z, k)
	s, _ := dkim.NewSigner(dkim.Options{Keys: []*dkim.Key{k}})
	// Header only, no empty line: signed as an empty body.
	sig, err := s.Sign(opener([]byte("From: a@example.com\r\nSubject: x")), nil, "")
	if err != nil || sig.Key == nil {
		t.Fatalf("header-only message: %v %+v", err, sig)
	}
	if err := verify(t, z, append(sig.Field, "From: a@example.com\r\nSubject: x\r\n\r\n"...), "example.com"); err != nil {
		t.Errorf("header-only: %v", err)
	}
	// A read failure is ErrRead.
	boom := errors.New("broker gone")
	_, err = s.Sign(func() (io.ReadCloser, error) { return nil, boom }, nil, "")
	if !errors.Is(err, dkim.ErrRead) || !errors.Is(err, boom) {
		t.Errorf("open failure: %v", err)
	}
	_, err = s.Sign(func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(strings.NewReader("From: a@example.com\r\n\r\nbody"), errReader{boom})), nil
	}, nil, "")
	if !errors.Is(err, dkim.ErrRead) || !errors.Is(err, boom) {
		t.Errorf("read failure: %v", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestNewSignerRefuses(t *testing.T) {
	k := mustKey(t, dkim.TypeEd25519, "example.com", "s")
	for name, o := range map[string]dkim.Options{
		"no from":          {Keys: []*dkim.Key{k}, Headers: []string{"To", "Subject"}},
		"bad name":         {Keys: []*dkim.Key{k}, Headers: []string{"From", "Sub ject"}},
		"two keys":         {Keys: []*dkim.Key{k, mustKey(t, dkim.TypeEd25519, "EXAMPLE.com", "t")}},
		"fallback unknown": {Keys: []*dkim.Key{k}, Fallback: "other.example"},
	} {
		if _, err := dkim.NewSigner(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	k := mustKey(t, dkim.TypeRSA, "example.com", "s2026")
	rec, _ := dkim.Record(k.Signer)
	other := mustKey(t, dkim.TypeRSA, "example.com", "s2026")
	otherRec, _ := dkim.Record(other.Signer)
	ed := mustKey(t, dkim.TypeEd25519, "example.com", "s2026")
	edRec, _ := dkim.Record(ed.Signer)
	name := "s2026._domainkey.example.com"
	cases := []struct {
		name    string
		z       zone
		problem string // "" matches
	}{
		{"match", zone{name: {rec}}, ""},
		{"match with spaces", zone{name: {strings.Replace(rec, "p=", "p = ", 1)[:40] + " " + strings.Replace(rec, "p=", "p = ", 1)[40:]}}, ""},
		{"missing", zone{}, "no TXT record at s2026._domainkey.example.com"},
		{"other key", zone{name: {otherRec}}, "publishes another key"},
		{"other type", zone{name: {edRec}}, "type ed25519"},
		{"revoked", zone{name: {"v=DKIM1; k=rsa; p="}}, "revoked"},
		{"two", zone{name: {rec, otherRec}}, "2 DKIM key records"},
		{"not dkim", zone{name: {"google-site-verification=abc"}}, "none is a DKIM key record"},
		{"bad", zone{name: {"v=DKIM2; p=abc"}}, "does not read as a DKIM key"},
	}
	for _, c := range cases {
		res, err := dkim.Check(ctx, c.z, k)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if res.Name != name {
			t.Errorf("%s: looked up %s", c.name, res.Name)
		}
		switch {
		case c.problem == "" && (!res.OK() || !res.Verified):
			t.Errorf("%s: %q, verified %v", c.name, res.Problem, res.Verified)
		case c.problem != "" && !strings.Contains(res.Problem, c.problem):
			t.Errorf("%s: problem %q, want %q", c.name, res.Problem, c.problem)
		}
	}
}

func TestRecordSplit(t *testing.T) {
	k := mustKey(t, dkim.TypeRSA, "example.com", "s")
	rec, _ := dkim.Record(k.Signer)
	parts := dkim.SplitTXT(rec)
	if len(parts) < 2 || strings.Join(parts, "") != rec {
		t.Fatalf("split %d parts", len(parts))
	}
	for _, p := range parts {
		if len(p) > 255 {
			t.Errorf("part of %d octets", len(p))
		}
	}
	line := dkim.ZoneLine("s", "example.com", rec)
	if !strings.HasPrefix(line, "s._domainkey.example.com. IN TXT (") || strings.Count(line, "\"") != 2*len(parts) {
		t.Errorf("zone line:\n%s", line)
	}
	ed := mustKey(t, dkim.TypeEd25519, "example.com", "s")
	erec, _ := dkim.Record(ed.Signer)
	if !strings.HasPrefix(erec, "v=DKIM1; k=ed25519; p=") || len(dkim.SplitTXT(erec)) != 1 {
		t.Errorf("ed25519 record %q", erec)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	for _, typ := range []string{dkim.TypeEd25519, dkim.TypeRSA} {
		k := mustKey(t, typ, "example.com", "s")
		path := filepath.Join(dir, typ+".pem")
		if err := dkim.WriteKey(path, k.Signer, false); err != nil {
			t.Fatal(err)
		}
		if runtime.GOOS != "windows" {
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %o", typ, fi.Mode().Perm())
			}
		}
		b, _ := os.ReadFile(path)
		if !bytes.HasPrefix(b, []byte("-----BEGIN PRIVATE KEY-----")) {
			t.Errorf("%s: not PKCS#8 PEM", typ)
		}
		got, err := dkim.ReadKey(path)
		if err != nil || dkim.KeyType(got) != typ || !got.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Signer.Public()) {
			t.Fatalf("%s: read back %v", typ, err)
		}
		if w := dkim.KeyWarnings(path, got); len(w) != 0 {
			t.Errorf("%s: warnings %q", typ, w)
		}
		if err := dkim.WriteKey(path, k.Signer, false); !errors.Is(err, dkim.ErrExists) {
			t.Errorf("%s: overwrote without force: %v", typ, err)
		}
		if err := dkim.WriteKey(path, mustKey(t, typ, "example.com", "s").Signer, true); err != nil {
			t.Errorf("%s: force: %v", typ, err)
		}
		if again, _ := dkim.ReadKey(path); again.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Signer.Public()) {
			t.Errorf("%s: force did not replace the key", typ)
		}
		if runtime.GOOS != "windows" {
			os.Chmod(path, 0o644)
			if w := dkim.KeyWarnings(path, got); len(w) != 1 || !strings.Contains(w[0], "chmod 600") {
				t.Errorf("%s: readable key: %q", typ, w)
			}
		}
	}

	// PKCS#1 as opendkim-genkey writes it; refusals in words.
	rk, _ := rsa.GenerateKey(rand.Reader, 1024)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})
	if s, err := dkim.ParseKey(pkcs1); err != nil || dkim.KeyType(s) != dkim.TypeRSA {
		t.Errorf("PKCS#1: %v", err)
	} else if w := dkim.KeyWarnings("k.pem", s); len(w) == 0 || !strings.Contains(w[0], "1024 bits") {
		t.Errorf("1024-bit key: %q", w)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	pubDER, _ := x509.MarshalPKIXPublicKey(rk.Public())
	for name, c := range map[string]struct {
		pem  []byte
		want string
	}{
		"garbage": {[]byte("hello"), "not a PEM private key"},
		"ecdsa":   {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}), "cannot sign DKIM"},
		"public":  {pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), "not a private key"},
		"damaged": {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), "does not parse"},
	} {
		_, err := dkim.ParseKey(c.pem)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestNames(t *testing.T) {
	for s, ok := range map[string]bool{"s1": true, "2026-01.mail": true, "-a": false, "a-": false, "a_b": false, "": false, "a..b": false, strings.Repeat("a", 64): false} {
		if dkim.ValidSelector(s) != ok {
			t.Errorf("selector %q: want %v", s, ok)
		}
	}
	for d, ok := range map[string]bool{"example.com": true, "example.com.": true, "a.b-c.example": true, "localhost": false, "ex ample.com": false, "a@b.com": false} {
		if dkim.ValidDomain(d) != ok {
			t.Errorf("domain %q: want %v", d, ok)
		}
	}
}
