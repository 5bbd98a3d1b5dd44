package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Key types, as the DNS record's k= tag names them.
const (
	TypeRSA     = "rsa"
	TypeEd25519 = "ed25519"
)

// Key is a private key that signs for a domain under a selector.
type Key struct {
	Domain   string // d=, lower case, no trailing dot
	Selector string // s=
	Signer   crypto.Signer
	File     string // where it was read from, for messages
}

// Type is the key's type: TypeRSA or TypeEd25519.
func (k *Key) Type() string { return KeyType(k.Signer) }

// String names the key for logs: "example.com/s2025 (ed25519)". It never
// shows key material.
func (k *Key) String() string { return k.Domain + "/" + k.Selector + " (" + k.Type() + ")" }

// KeyType names a key's type ("" for one DKIM cannot use).
func KeyType(s crypto.Signer) string {
	switch p := s.Public().(type) {
	case *rsa.PublicKey:
		return TypeRSA
	case ed25519.PublicKey:
		_ = p
		return TypeEd25519
	}
	return ""
}

// MinRSABits is the smallest RSA key a verifier must accept (RFC 8301
// §3.2); RecommendedRSABits the size to use.
const (
	MinRSABits         = 1024
	RecommendedRSABits = 2048
)

// ReadKey reads a private key file: PEM, PKCS#8 ("PRIVATE KEY", what
// keygen writes) or PKCS#1 ("RSA PRIVATE KEY", what OpenDKIM's
// opendkim-genkey writes). The errors say what is wrong in words and
// never quote the key.
func ReadKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ParseKey parses a PEM private key (see ReadKey).
func ParseKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("not a PEM private key (expected -----BEGIN PRIVATE KEY-----, as `jetrelay dkim keygen` writes)")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PUBLIC KEY", "CERTIFICATE":
		return nil, fmt.Errorf("holds a %s, not a private key", strings.ToLower(block.Type))
	default:
		return nil, fmt.Errorf("holds a PEM %q block; expected PRIVATE KEY (PKCS#8) or RSA PRIVATE KEY (PKCS#1)", block.Type)
	}
	if err != nil {
		// Go's message names what is wrong with the structure, never the key.
		return nil, fmt.Errorf("the private key does not parse (damaged, or encrypted with a passphrase, which is not supported): %v", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok || KeyType(s) == "" {
		return nil, fmt.Errorf("a %T cannot sign DKIM: use an RSA or an Ed25519 key", key)
	}
	if rk, ok := s.(*rsa.PrivateKey); ok && rk.N.BitLen() < MinRSABits {
		return nil, fmt.Errorf("an RSA key of %d bits is too short: verifiers ignore keys under %d bits (RFC 8301); generate one of %d", rk.N.BitLen(), MinRSABits, RecommendedRSABits)
	}
	return s, nil
}

// KeyWarnings are the things about a key file that work but should not
// be so: a file others can read, an RSA key under the recommended size.
func KeyWarnings(path string, s crypto.Signer) []string {
	var out []string
	if rk, ok := s.(*rsa.PrivateKey); ok && rk.N.BitLen() < RecommendedRSABits {
		out = append(out, fmt.Sprintf("the RSA key in %s has %d bits; use %d (jetrelay dkim keygen --type rsa)", path, rk.N.BitLen(), RecommendedRSABits))
	}
	if runtime.GOOS != "windows" {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			out = append(out, fmt.Sprintf("the private key %s can be read by other users (mode %04o); make it readable by jetrelay's user only: chmod 600 %s", path, fi.Mode().Perm(), path))
		}
	}
	return out
}

// Generate makes a new key: TypeEd25519, or TypeRSA of bits (0: 2048).
func Generate(typ string, bits int) (crypto.Signer, error) {
	switch typ {
	case TypeEd25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	case TypeRSA:
		if bits == 0 {
			bits = RecommendedRSABits
		}
		if bits < MinRSABits || bits > 8192 {
			return nil, fmt.Errorf("RSA keys are %d to 8192 bits, got %d", MinRSABits, bits)
		}
		return rsa.GenerateKey(rand.Reader, bits)
	}
	return nil, fmt.Errorf("key type must be %s or %s, got %q", TypeEd25519, TypeRSA, typ)
}

// MarshalKey is the PEM (PKCS#8) form of a private key.
func MarshalKey(s crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(s)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ErrExists: WriteKey will not replace a file without force.
var ErrExists = errors.New("file exists")

// WriteKey writes a private key file readable by its owner only (0600).
// It refuses to replace an existing file unless force; a replaced file
// is written beside it and renamed over it, so a failure leaves the old
// key in place.
func WriteKey(path string, s crypto.Signer, force bool) error {
	b, err := MarshalKey(s)
	if err != nil {
		return err
	}
	if !force {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s: %w (give --force to replace it; the key published in DNS then no longer matches)", path, ErrExists)
			}
			return err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			os.Remove(path)
			return err
		}
		return f.Close()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".dkim-key-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ValidSelector reports whether s is a selector: one or more DNS labels
// separated by dots (RFC 6376 §3.1), each letters, digits and hyphens,
// not starting or ending with a hyphen, at most 63 octets.
func ValidSelector(s string) bool { return validLabels(s, 1) }

// ValidDomain reports whether d is a domain name of at least two labels
// (RFC 1035 syntax; a trailing dot is allowed).
func ValidDomain(d string) bool {
	d = strings.TrimSuffix(d, ".")
	return len(d) <= 253 && validLabels(d, 2)
}

func validLabels(s string, min int) bool {
	labels := strings.Split(s, ".")
	if len(labels) < min {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// RSABits is an RSA key's size in bits (0 for another type).
func RSABits(s crypto.Signer) int {
	if rk, ok := s.Public().(*rsa.PublicKey); ok {
		return rk.N.BitLen()
	}
	return 0
}
