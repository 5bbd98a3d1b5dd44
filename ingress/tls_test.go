package ingress_test

import (
	"context"
	"crypto/tls"
	"os"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/ingress"
	"github.com/jetrelay/jetrelay/internal/testenv"
	"github.com/rs/zerolog"
)

// The certificate is replaced when its files change, without a signal.
func TestCertReloaderWatchesFiles(t *testing.T) {
	pki := testenv.NewPKI(t)
	r, err := ingress.NewCertReloader(pki.CertFile, pki.KeyFile, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	first, _ := r.GetCertificate(&tls.ClientHelloInfo{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Watch(ctx, 20*time.Millisecond)

	certFile, keyFile, next := pki.Issue(t, "next")
	later := time.Now().Add(2 * time.Second)
	for _, f := range [][2]string{{keyFile, pki.KeyFile}, {certFile, pki.CertFile}} {
		data, _ := os.ReadFile(f[0])
		if err := os.WriteFile(f[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
		_ = os.Chtimes(f[1], later, later)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		c, _ := r.GetCertificate(&tls.ClientHelloInfo{})
		return string(c.Certificate[0]) == string(next.Certificate[0])
	}, "certificate not reloaded after its files changed")
	// A broken file keeps the old certificate.
	if err := os.WriteFile(pki.CertFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(pki.CertFile, later.Add(time.Second), later.Add(time.Second))
	if err := r.Reload(); err == nil {
		t.Fatal("a broken certificate file loaded")
	}
	if c, _ := r.GetCertificate(&tls.ClientHelloInfo{}); string(c.Certificate[0]) == string(first.Certificate[0]) {
		t.Fatal("reverted to the very first certificate")
	}
}
