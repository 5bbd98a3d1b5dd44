package oauth

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is defined as the SHA-1 thumbprint
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// assertionType is the client_assertion_type of a signed JWT (RFC 7523).
const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionLifetime is how long a client assertion is valid.
const assertionLifetime = 10 * time.Minute

// assertionKey signs client assertions with a certificate's RSA key.
type assertionKey struct {
	key          *rsa.PrivateKey
	x5t, x5tS256 string // SHA-1 and SHA-256 thumbprints, base64url
}

// loadAssertionKey takes the certificate (and key) from cert, or from the
// PEM blocks (keyPEM empty: certPEM holds both).
func loadAssertionKey(cert *tls.Certificate, certPEM, keyPEM []byte) (*assertionKey, error) {
	if cert == nil {
		if len(keyPEM) == 0 {
			keyPEM = certPEM
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("certificate: %w", err)
		}
		cert = &c
	}
	if len(cert.Certificate) == 0 {
		return nil, errors.New("certificate: no certificate")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	key, ok := cert.PrivateKey.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("certificate: the key is not an RSA key (Entra ID signs client assertions with RS256)")
	}
	if pub, ok := leaf.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("certificate: the key does not match the certificate")
	}
	s1 := sha1.Sum(leaf.Raw) //nolint:gosec
	s256 := sha256.Sum256(leaf.Raw)
	return &assertionKey{
		key:     key,
		x5t:     base64.RawURLEncoding.EncodeToString(s1[:]),
		x5tS256: base64.RawURLEncoding.EncodeToString(s256[:]),
	}, nil
}

// sign makes a client assertion for clientID at the token endpoint aud.
func (k *assertionKey) sign(clientID, aud string, now time.Time) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"aud": aud,
		"iss": clientID,
		"sub": clientID,
		"jti": hex.EncodeToString(jti[:]),
		"nbf": now.Unix(),
		"iat": now.Unix(),
		"exp": now.Add(assertionLifetime).Unix(),
	})
	t.Header["x5t"] = k.x5t
	t.Header["x5t#S256"] = k.x5tS256
	return t.SignedString(k.key)
}
