package ingress

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// CertReloader serves the ingress certificate and replaces it when the
// files change or Reload is called (SIGHUP), without touching sessions in
// progress: each new handshake simply gets the current certificate.
type CertReloader struct {
	certFile, keyFile string
	log               zerolog.Logger

	mu      sync.RWMutex
	cert    *tls.Certificate
	modTime time.Time
}

// NewCertReloader loads the certificate once; it fails if that fails.
func NewCertReloader(certFile, keyFile string, log zerolog.Logger) (*CertReloader, error) {
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again. On error the previous certificate stays.
func (r *CertReloader) Reload() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("ingress TLS certificate: %w", err)
	}
	mt := r.latestModTime()
	r.mu.Lock()
	r.cert, r.modTime = &cert, mt
	r.mu.Unlock()
	r.log.Info().Str("cert", r.certFile).Msg("TLS certificate loaded")
	return nil
}

func (r *CertReloader) latestModTime() time.Time {
	var t time.Time
	for _, f := range []string{r.certFile, r.keyFile} {
		if st, err := os.Stat(f); err == nil && st.ModTime().After(t) {
			t = st.ModTime()
		}
	}
	return t
}

// Watch reloads when the files' modification time changes, until ctx ends.
func (r *CertReloader) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.mu.RLock()
			seen := r.modTime
			r.mu.RUnlock()
			if mt := r.latestModTime(); mt.After(seen) {
				if err := r.Reload(); err != nil {
					r.log.Error().Err(err).Msg("certificate files changed but could not be loaded; keeping the old one")
					r.mu.Lock()
					r.modTime = mt // do not retry until they change again
					r.mu.Unlock()
				}
			}
		}
	}
}

// GetCertificate implements tls.Config.GetCertificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert, nil
}

// ServerTLSConfig is the ingress TLS configuration: TLS 1.2 and newer, and
// for TLS 1.2 only forward-secret AEAD cipher suites.
func ServerTLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: getCert,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}
