// Package tlsrpt is SMTP TLS Reporting (RFC 8460) for the domains whose
// MTA-STS policy delivery applies: it counts, per policy domain, the
// sessions that met the policy and those that failed, by the RFC's
// result-types; it exposes them as Prometheus metrics; it adds them, every
// FlushInterval, to the day's counts in the broker (so that the counts of
// every worker process add up and survive restarts); and, when a report
// directory is configured, it writes each policy domain's daily report
// (RFC 8460 §4.4 JSON) once the UTC day is over. Sending the reports to
// the domains' rua addresses is not done here.
//
// Invariants:
//
//   - The metric's policy_domain label takes at most MaxDomains values
//     per process (then "_other"); result and mode are fixed sets.
//   - A count is added to the broker once: a flush that fails keeps the
//     counts for the next one (at-least-once only across a crash in the
//     middle of a flush, which may lose the unflushed counts instead).
//   - Exactly one process writes each day's report of a domain (a claim
//     in the broker), and a report is written whole or not at all
//     (written to a temporary file, then renamed).
package tlsrpt

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Result types of RFC 8460 §4.3 that jetrelay reports (DANE's are not:
// jetrelay does not do DANE).
const (
	Success                 = "success" // not a result-type: the metric's label for a session that met the policy
	StartTLSNotSupported    = "starttls-not-supported"
	CertificateHostMismatch = "certificate-host-mismatch"
	CertificateExpired      = "certificate-expired"
	CertificateNotTrusted   = "certificate-not-trusted"
	ValidationFailure       = "validation-failure"
	STSPolicyFetchError     = "sts-policy-fetch-error"
	STSPolicyInvalid        = "sts-policy-invalid"
	STSWebPKIInvalid        = "sts-webpki-invalid"
)

// Store adds up the counts of every worker (*broker.Client).
type Store interface {
	AddTLSReport(ctx context.Context, counts contracts.TLSReportCounts) error
	TLSReportsDue(ctx context.Context, day string) ([]contracts.TLSReportCounts, error)
	ClaimTLSReport(ctx context.Context, day, domain, holder string) (bool, error)
	ReleaseTLSReport(ctx context.Context, day, domain string) error
}

// Options configure a Recorder.
type Options struct {
	// Store is the broker (nil: metrics only).
	Store Store
	// Registerer takes the metric (nil: none).
	Registerer prometheus.Registerer
	// Dir receives the daily reports ("": none written).
	Dir string
	// Organization is the report's organization-name and the first part
	// of its file name; Contact its contact-info.
	Organization, Contact string
	// Holder names this process in the claim of a report it writes.
	Holder string
	// FlushInterval: how often counts go to the Store and due reports are
	// written (0: DefaultFlushInterval).
	FlushInterval time.Duration
	// MaxDomains caps the metric's policy_domain values (0: 100).
	MaxDomains int
	Now        func() time.Time
	Log        zerolog.Logger
}

// DefaultFlushInterval is how often counts are added to the broker.
const DefaultFlushInterval = 30 * time.Second

// Session is one SMTP session with a host of a domain that has a policy
// (or publishes one that could not be had).
type Session struct {
	// Domain is the policy domain (the recipient domain).
	Domain string
	// Mode is the policy's mode ("enforce", "testing"; "" none could be
	// had).
	Mode string
	// Policy is the policy file, MX its patterns ("" when none).
	Policy string
	MX     []string
	// Result is one of the result-types, or Success.
	Result string
	// MXHost and IP name the receiving host (empty for a policy failure).
	MXHost, IP string
	// Info is the additional-information of a failure.
	Info string
}

// Recorder counts sessions. Record is safe for concurrent use.
type Recorder struct {
	o        Options
	sessions *prometheus.CounterVec

	mu      sync.Mutex
	domains map[string]bool                       // metric label values in use
	pending map[string]*contracts.TLSReportCounts // by day and domain, not flushed yet
}

// New builds a Recorder.
func New(o Options) *Recorder {
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.MaxDomains <= 0 {
		o.MaxDomains = 100
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Organization == "" {
		o.Organization = "jetrelay"
	}
	r := &Recorder{
		o: o,
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetrelay_tlsrpt_sessions_total",
			Help: "Outbound SMTP sessions to domains with an MTA-STS policy, by policy domain (at most delivery.mta_sts.max_report_domains values, then _other), policy mode (enforce, testing, none when the policy could not be had) and RFC 8460 result (success or a result-type).",
		}, []string{"policy_domain", "mode", "result"}),
		domains: map[string]bool{},
		pending: map[string]*contracts.TLSReportCounts{},
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(r.sessions)
	}
	return r
}

// Record counts one session.
func (r *Recorder) Record(s Session) {
	mode := s.Mode
	if mode == "" {
		mode = "none"
	}
	day := r.o.Now().UTC().Format(time.DateOnly)
	r.mu.Lock()
	label := s.Domain
	if !r.domains[label] {
		if len(r.domains) >= r.o.MaxDomains {
			label = "_other"
		} else {
			r.domains[label] = true
		}
	}
	k := day + " " + s.Domain
	c := r.pending[k]
	if c == nil {
		c = &contracts.TLSReportCounts{Day: day, Domain: s.Domain, PolicyType: "sts"}
		r.pending[k] = c
	}
	delta := contracts.TLSReportCounts{Day: day, Domain: s.Domain, Policy: s.Policy, MX: s.MX}
	if s.Result == Success {
		delta.Success = 1
	} else {
		delta.Failure = 1
		delta.Details = []contracts.TLSFailureDetail{{ResultType: s.Result, MXHost: s.MXHost, ReceivingIP: s.IP, Count: 1, Info: s.Info}}
	}
	c.Merge(delta)
	r.mu.Unlock()
	r.sessions.WithLabelValues(label, mode, s.Result).Inc()
}

// Run flushes the counts to the Store every FlushInterval and writes the
// reports that are due, until ctx ends; then it flushes once more.
func (r *Recorder) Run(ctx context.Context) {
	if r.o.Store == nil {
		return
	}
	t := time.NewTicker(r.o.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := r.Flush(fctx); err != nil {
				r.o.Log.Warn().Err(err).Msg("TLS report counts not stored at shutdown; they are lost")
			}
			cancel()
			return
		case <-t.C:
			if err := r.Flush(ctx); err != nil {
				r.o.Log.Warn().Err(err).Msg("TLS report counts not stored yet; trying again at the next flush")
			}
			if r.o.Dir != "" {
				if _, err := r.WriteDue(ctx); err != nil {
					r.o.Log.Error().Err(err).Str("dir", r.o.Dir).Msg("writing the daily TLS reports failed; trying again at the next flush")
				}
			}
		}
	}
}

// Flush adds the counts recorded since the last flush to the Store;
// what it could not store is kept for the next.
func (r *Recorder) Flush(ctx context.Context) error {
	r.mu.Lock()
	pending := r.pending
	r.pending = map[string]*contracts.TLSReportCounts{}
	r.mu.Unlock()
	var firstErr error
	for k, c := range pending {
		if err := r.o.Store.AddTLSReport(ctx, *c); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			r.mu.Lock()
			if cur := r.pending[k]; cur != nil {
				c.Merge(*cur)
			}
			r.pending[k] = c
			r.mu.Unlock()
		}
	}
	return firstErr
}

// WriteDue writes the report of every policy domain and day that is over
// (by two flush intervals, so every worker's counts are in) and not
// written yet, and reports how many it wrote.
func (r *Recorder) WriteDue(ctx context.Context) (int, error) {
	today := r.o.Now().UTC().Add(-2 * r.o.FlushInterval).Format(time.DateOnly)
	due, err := r.o.Store.TLSReportsDue(ctx, today)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range due {
		ok, err := r.o.Store.ClaimTLSReport(ctx, c.Day, c.Domain, r.o.Holder)
		if err != nil {
			return n, err
		}
		if !ok {
			continue
		}
		path, err := r.write(c)
		if err != nil {
			if rerr := r.o.Store.ReleaseTLSReport(ctx, c.Day, c.Domain); rerr != nil {
				r.o.Log.Error().Err(rerr).Str("domain", c.Domain).Str("day", c.Day).Msg("could not release the claim of a TLS report that was not written: it will not be written")
			}
			return n, err
		}
		n++
		r.o.Log.Info().Str("domain", c.Domain).Str("day", c.Day).Str("file", path).Int64("success", c.Success).Int64("failure", c.Failure).Msg("TLS report written")
	}
	return n, nil
}

// Report is an RFC 8460 §4.4 report.
type Report struct {
	OrganizationName string         `json:"organization-name"`
	DateRange        DateRange      `json:"date-range"`
	ContactInfo      string         `json:"contact-info"`
	ReportID         string         `json:"report-id"`
	Policies         []PolicyReport `json:"policies"`
}

// DateRange is the report's period.
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// PolicyReport is one policy's results.
type PolicyReport struct {
	Policy struct {
		Type   string   `json:"policy-type"`
		String []string `json:"policy-string"`
		Domain string   `json:"policy-domain"`
		MXHost []string `json:"mx-host,omitempty"`
	} `json:"policy"`
	Summary struct {
		Success int64 `json:"total-successful-session-count"`
		Failure int64 `json:"total-failure-session-count"`
	} `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details,omitempty"`
}

// FailureDetail is one kind of failure.
type FailureDetail struct {
	ResultType     string `json:"result-type"`
	ReceivingMX    string `json:"receiving-mx-hostname,omitempty"`
	ReceivingIP    string `json:"receiving-ip,omitempty"`
	FailedSessions int64  `json:"failed-session-count"`
	Info           string `json:"additional-information,omitempty"`
}

// BuildReport turns a day's counts into the report.
func BuildReport(c contracts.TLSReportCounts, org, contact string) (Report, error) {
	start, err := time.Parse(time.DateOnly, c.Day)
	if err != nil {
		return Report{}, fmt.Errorf("day %q: %w", c.Day, err)
	}
	rep := Report{
		OrganizationName: org,
		DateRange:        DateRange{Start: start, End: start.Add(24*time.Hour - time.Second)},
		ContactInfo:      contact,
		ReportID:         c.Day + "_" + c.Domain,
	}
	var p PolicyReport
	p.Policy.Type = c.PolicyType
	if p.Policy.Type == "" {
		p.Policy.Type = "sts"
	}
	p.Policy.Domain = c.Domain
	p.Policy.String = []string{}
	for _, l := range strings.Split(strings.ReplaceAll(c.Policy, "\r\n", "\n"), "\n") {
		if strings.TrimSpace(l) != "" {
			p.Policy.String = append(p.Policy.String, l)
		}
	}
	p.Policy.MXHost = c.MX
	p.Summary.Success, p.Summary.Failure = c.Success, c.Failure
	for _, d := range c.Details {
		p.FailureDetails = append(p.FailureDetails, FailureDetail{ResultType: d.ResultType, ReceivingMX: d.MXHost, ReceivingIP: d.ReceivingIP, FailedSessions: d.Count, Info: d.Info})
	}
	rep.Policies = []PolicyReport{p}
	return rep, nil
}

// FileName is RFC 8460 §5.3's name for a report:
// "<organization>!<policy domain>!<begin>!<end>.json" (Unix seconds).
func FileName(rep Report) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r == '/' || r == '\\' || r == '!' || r < ' ' {
				return '_'
			}
			return r
		}, s)
	}
	return fmt.Sprintf("%s!%s!%d!%d.json", clean(rep.OrganizationName), clean(rep.Policies[0].Policy.Domain), rep.DateRange.Start.Unix(), rep.DateRange.End.Unix())
}

// write writes the report of c into Dir, whole or not at all.
func (r *Recorder) write(c contracts.TLSReportCounts) (string, error) {
	rep, err := BuildReport(c, r.o.Organization, r.o.Contact)
	if err != nil {
		return "", err
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(r.o.Dir, FileName(rep))
	tmp, err := os.CreateTemp(r.o.Dir, ".tlsrpt-*")
	if err != nil {
		return "", fmt.Errorf("TLS report for %s: %w", c.Domain, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return "", fmt.Errorf("TLS report for %s: %w", c.Domain, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("TLS report for %s: %w", c.Domain, err)
	}
	_ = os.Chmod(tmp.Name(), 0o644)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("TLS report for %s: %w", c.Domain, err)
	}
	return path, nil
}
