package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/delivery/mtasts"
	"github.com/jetrelay/jetrelay/delivery/tlsrpt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// MTA-STS (RFC 8461) for direct MX delivery, and TLS reporting (RFC 8460)
// of the sessions it governs. Only destinations of kind "mx" are
// concerned: a smart host or a route is a next hop the operator chose,
// with its own TLS policy.
//
// Precedence with the TLS policy of MX delivery (delivery.mx_tls): an
// enforce policy can only make it stricter. It makes TLS required with a
// certificate valid for the MX host's name (chained to the system's roots,
// or the configured CA file), whatever mx_tls says (implicit stays
// implicit, verified), and restricts delivery to the MX hosts its mx
// patterns allow. A testing policy changes nothing in the delivery; each
// session is checked against the policy and a would-be failure is
// counted and logged. Without a policy (none, mode none, or one that
// could not be fetched) mx_tls alone applies.

// MTASTSOptions configure MTA-STS and TLS reporting (Enabled false: off).
type MTASTSOptions struct {
	Enabled bool
	// RootCAs verify MX hosts under a policy and the policy hosts (nil:
	// the system's roots, or Options.RootCAs when set).
	RootCAs *x509.CertPool
	// HTTPSPort of the policy hosts (0: 443; another only for tests).
	HTTPSPort int
	// FetchTimeout bounds a policy fetch (0: mtasts.DefaultFetchTimeout).
	FetchTimeout time.Duration
	// ReportDir receives the daily TLS reports ("": none written);
	// ReportOrganization and ReportContact fill them in.
	ReportDir                         string
	ReportOrganization, ReportContact string
	// MaxReportDomains caps the policy_domain label of the metric.
	MaxReportDomains int
	// ReportFlushInterval: how often the counts go to the broker (0:
	// tlsrpt.DefaultFlushInterval).
	ReportFlushInterval time.Duration
}

// sts is a worker's MTA-STS state.
type sts struct {
	cache  *mtasts.Cache
	report *tlsrpt.Recorder
	roots  *x509.CertPool // nil: the system's
	log    zerolog.Logger
}

func newSTS(b *broker.Client, r *Router, o MTASTSOptions, roots *x509.CertPool, reg prometheus.Registerer, log zerolog.Logger) *sts {
	if o.RootCAs != nil {
		roots = o.RootCAs
	}
	var cstore mtasts.Store
	var rstore tlsrpt.Store
	if b != nil {
		cstore, rstore = b, b
	}
	host, _ := os.Hostname()
	return &sts{
		cache: mtasts.NewCache(mtasts.CacheOptions{
			Store:    cstore,
			Resolver: r.resolver,
			Fetcher:  mtasts.NewFetcher(mtasts.FetcherOptions{RootCAs: roots, Resolver: r.resolver, Port: o.HTTPSPort, Timeout: o.FetchTimeout}),
		}),
		report: tlsrpt.New(tlsrpt.Options{
			Store: rstore, Registerer: reg, Dir: o.ReportDir,
			Organization: o.ReportOrganization, Contact: o.ReportContact,
			Holder:        host + "-" + strconv.Itoa(os.Getpid()),
			FlushInterval: o.ReportFlushInterval, MaxDomains: o.MaxReportDomains,
			Log: log,
		}),
		roots: roots,
		log:   log,
	}
}

// stsPolicy is the policy that applies to one delivery.
type stsPolicy struct {
	domain string
	p      *mtasts.Policy
}

func (p *stsPolicy) enforce() bool { return p != nil && p.p.Mode == mtasts.ModeEnforce }

// key names the policy a connection met: a changed policy (other mx
// patterns) does not reuse a connection the old one allowed.
func (p *stsPolicy) key() string { return p.domain + "\n" + p.p.Text }

// lookup finds the policy of an MX destination (nil: none applies). A
// policy that a domain publishes but that could not be had is counted
// as a failed session for the domain's report.
func (s *sts) lookup(ctx context.Context, domain string, log zerolog.Logger) *stsPolicy {
	l := s.cache.Get(ctx, domain)
	if l.StoreErr != nil {
		log.Warn().Err(l.StoreErr).Msg("MTA-STS policy cache in the broker unavailable; using this process's memory")
	}
	if l.Failure != "" {
		ev := log.Info()
		if l.Policy != nil {
			ev = ev.Str("using", "the cached policy "+l.ID)
		}
		ev.Str("result", string(l.Failure)).Err(l.Err).Msg("MTA-STS policy could not be had")
		if l.Policy == nil {
			s.report.Record(tlsrpt.Session{Domain: domain, Result: string(l.Failure), Info: errText(l.Err)})
		}
	}
	if l.Policy == nil || l.Policy.Mode == mtasts.ModeNone {
		return nil
	}
	if l.Source == "fetched" {
		log.Info().Str("mode", string(l.Policy.Mode)).Str("id", l.ID).Strs("mx", l.Policy.MX).Dur("max_age", l.Policy.MaxAge).Msg("MTA-STS policy fetched")
	}
	return &stsPolicy{domain: domain, p: l.Policy}
}

// tighten is the destination under an enforce policy: TLS required (or
// implicit) and verified against the MTA-STS roots.
func (s *sts) tighten(d *Destination) *Destination {
	cp := *d
	if cp.TLS != TLSImplicit {
		cp.TLS = TLSRequired
	}
	cp.Verify, cp.TLSSkipVerify = true, false
	cp.RootCAs = s.roots
	return &cp
}

// record counts one session with host under policy p.
func (s *sts) record(p *stsPolicy, h hop, result string, err error) {
	ip := h.addr
	if host, _, e := net.SplitHostPort(h.addr); e == nil {
		ip = host
	}
	s.report.Record(tlsrpt.Session{Domain: p.domain, Mode: string(p.p.Mode), Policy: p.p.Text, MX: p.p.MX,
		Result: result, MXHost: h.name, IP: ip, Info: errText(err)})
}

// stsError: an enforce policy is not met; the delivery waits (temporary).
type stsError struct {
	domain string
	host   string // "" when no MX host matched
	result string // the RFC 8460 result-type
	err    error
}

func (e *stsError) Error() string {
	if e.host == "" {
		return fmt.Sprintf("MTA-STS policy of %s (enforce) not met: %s (%s)", e.domain, e.err, e.result)
	}
	return fmt.Sprintf("MTA-STS policy of %s (enforce) not met by %s: %s (%s)", e.domain, e.host, e.err, e.result)
}
func (e *stsError) Unwrap() error { return e.err }

// filterMX keeps the hops an enforce policy allows; when none is left it
// returns the error for the delivery.
func (s *sts) filterMX(p *stsPolicy, hops []hop, log zerolog.Logger) ([]hop, error) {
	var ok []hop
	var names []string
	for _, h := range hops {
		if p.p.Matches(h.name) {
			ok = append(ok, h)
			continue
		}
		if len(names) == 0 || names[len(names)-1] != h.name {
			names = append(names, h.name)
		}
	}
	if len(ok) == 0 {
		err := &stsError{domain: p.domain, result: tlsrpt.ValidationFailure,
			err: fmt.Errorf("no MX host (%s) matches the policy's mx patterns (%s)", strings.Join(names, ", "), strings.Join(p.p.MX, ", "))}
		s.report.Record(tlsrpt.Session{Domain: p.domain, Mode: string(p.p.Mode), Policy: p.p.Text, MX: p.p.MX,
			Result: tlsrpt.ValidationFailure, MXHost: names[0], Info: err.err.Error()})
		return nil, err
	}
	if len(names) > 0 {
		log.Info().Strs("skipped", names).Msg("MTA-STS enforce policy: skipping MX hosts its mx patterns do not allow")
	}
	return ok, nil
}

// verifyCert is the check of a testing policy: would the MX host's
// certificate pass (valid for its name, chained to the roots)?
func verifyCert(cs tls.ConnectionState, name string, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter})
	return err
}

// tlsResult maps a certificate or handshake failure to its RFC 8460
// result-type.
func tlsResult(err error) string {
	var (
		he x509.HostnameError
		ci x509.CertificateInvalidError
		ua x509.UnknownAuthorityError
	)
	switch {
	case errors.As(err, &he):
		return tlsrpt.CertificateHostMismatch
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return tlsrpt.CertificateExpired
	case errors.As(err, &ua):
		return tlsrpt.CertificateNotTrusted
	}
	return tlsrpt.ValidationFailure
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// stsSession counts a session that did not meet the policy. Under
// enforce it returns the error that ends the session; under testing it
// logs the failure there would have been and returns err unchanged.
func (t *smtpTransport) stsSession(pol *stsPolicy, h hop, result string, err error, log zerolog.Logger) error {
	t.sts.record(pol, h, result, err)
	if pol.enforce() {
		return &stsError{domain: pol.domain, host: h.name, result: result, err: err}
	}
	log.Info().Str("host", h.name).Str("result", result).Err(err).
		Msg("MTA-STS testing policy: this session would fail under enforce; delivering as the TLS policy allows")
	return err
}

// stsConnected counts a session that got through connect: it met the
// policy, or (testing) its certificate or MX name would not have. A
// failed STARTTLS was counted where it failed.
func (t *smtpTransport) stsConnected(pol *stsPolicy, h hop, c *smtpConn, dest *Destination, certErr error, log zerolog.Logger) {
	switch {
	case c.tlsDesc == "" && dest.TLS == TLSNone:
		_ = t.stsSession(pol, h, tlsrpt.ValidationFailure, errors.New("TLS is off for MX delivery (delivery.mx_tls: none)"), log)
	case c.tlsDesc == "":
	case certErr != nil:
		_ = t.stsSession(pol, h, tlsResult(certErr), certErr, log)
	case !pol.p.Matches(h.name):
		_ = t.stsSession(pol, h, tlsrpt.ValidationFailure,
			fmt.Errorf("MX host %s does not match the policy's mx patterns (%s)", h.name, strings.Join(pol.p.MX, ", ")), log)
	default:
		c.stsMet = pol.key()
		t.sts.record(pol, h, tlsrpt.Success, nil)
	}
}
