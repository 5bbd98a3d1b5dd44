package testenv

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// STSServer is an HTTPS server on 127.0.0.1 that serves MTA-STS policy
// files (RFC 8461) at https://mta-sts.<domain>:<Port>/.well-known/mta-sts.txt
// for the domains a test publishes, with a certificate from PKI (the
// test CA) for each mta-sts.<domain>. It counts the requests per domain.
// Publish also sets the _mta-sts TXT record and the mta-sts.<domain>
// address in DNS.
type STSServer struct {
	PKI  *PKI
	Port int

	t   testing.TB
	dns *DNS
	srv *httptest.Server

	mu       sync.Mutex
	policies map[string]STSResponse
	requests map[string]int
}

// STSResponse is what the server answers for a domain.
type STSResponse struct {
	Policy string
	// ContentType (default "text/plain; charset=utf-8").
	ContentType string
	// Status (default 200); Location is sent with a 3xx.
	Status   int
	Location string
}

// NewSTSServer starts the server for the given domains' policy hosts,
// with a certificate that pki (nil: a new one) issues; it stops when the
// test ends.
func NewSTSServer(t testing.TB, dns *DNS, pki *PKI, domains ...string) *STSServer {
	t.Helper()
	names := make([]string, len(domains))
	for i, d := range domains {
		names[i] = "mta-sts." + d
	}
	if pki == nil {
		pki = NewPKI(t)
	}
	s := &STSServer{PKI: pki, t: t, dns: dns, policies: map[string]STSResponse{}, requests: map[string]int{}}
	_, _, cert := pki.Issue(t, "mta-sts", names...)
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests want
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	s.Port = s.srv.Listener.Addr().(*net.TCPAddr).Port
	return s
}

// Publish serves policy for domain and publishes the TXT record with id.
func (s *STSServer) Publish(domain, id, policy string) {
	s.Serve(domain, STSResponse{Policy: policy})
	s.SetID(domain, id)
}

// Serve sets what the server answers for domain (DNS unchanged but for
// the policy host's address).
func (s *STSServer) Serve(domain string, r STSResponse) {
	s.mu.Lock()
	s.policies[strings.ToLower(domain)] = r
	s.mu.Unlock()
	s.dns.SetAddr("mta-sts."+domain, "127.0.0.1")
}

// SetID publishes the TXT record "v=STSv1; id=<id>;".
func (s *STSServer) SetID(domain, id string) {
	s.dns.SetTXT("_mta-sts."+domain, []string{"v=STSv1; id=" + id + ";"})
}

// Requests counts the policy requests for domain so far.
func (s *STSServer) Requests(domain string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[strings.ToLower(domain)]
}

func (s *STSServer) serve(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	domain, ok := strings.CutPrefix(strings.ToLower(host), "mta-sts.")
	s.mu.Lock()
	s.requests[domain]++
	resp, known := s.policies[domain]
	s.mu.Unlock()
	if !ok || !known || r.URL.Path != "/.well-known/mta-sts.txt" {
		http.NotFound(w, r)
		return
	}
	ct := resp.ContentType
	if ct == "" {
		ct = "text/plain; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	if resp.Location != "" {
		w.Header().Set("Location", resp.Location)
	}
	if resp.Status != 0 {
		w.WriteHeader(resp.Status)
	}
	_, _ = w.Write([]byte(resp.Policy))
}
