package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go/jetstream"
)

// Outbound TLS policy state that every worker shares: the MTA-STS
// policies of recipient domains (MAILSTS, one key per domain, kept across
// restarts until the policy's max_age runs out) and the TLS reporting
// counts (MAILTLSRPT: per UTC day and policy domain, which workers add to
// with compare-and-set, and a marker per daily report written, so that
// exactly one process writes each report).

// mtastsKeyValueConfig keeps a policy at most as long as the longest
// max_age RFC 8461 allows (a year) and a day; each refresh rewrites it.
func mtastsKeyValueConfig(s Settings) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      contracts.BucketMTASTS,
		Description: "jetrelay: MTA-STS policies of recipient domains (RFC 8461), shared by the delivery workers",
		History:     1,
		TTL:         366 * 24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
	}
}

// TLSReportRetention is how long the TLS reporting counts of a day are
// kept: long enough to write the day's report after an outage.
const TLSReportRetention = 7 * 24 * time.Hour

func tlsReportKeyValueConfig(s Settings) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      contracts.BucketTLSReports,
		Description: "jetrelay: TLS reporting counts (RFC 8460) per day and policy domain, and the reports written",
		History:     1,
		TTL:         TLSReportRetention,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
	}
}

// errNoBucket: the client was not provisioned with the bucket (the CLI).
var errNoBucket = errors.New("bucket not provisioned in this process")

// LoadMTASTSPolicy reads domain's cached policy (false: none).
func (c *Client) LoadMTASTSPolicy(ctx context.Context, domain string) (contracts.MTASTSPolicy, bool, error) {
	var p contracts.MTASTSPolicy
	if c.sts == nil {
		return p, false, fmt.Errorf("%w: %s", errNoBucket, contracts.BucketMTASTS)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	e, err := c.sts.Get(ctx, kvToken(domain))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return p, false, nil
	case err != nil:
		return p, false, fmt.Errorf("%w: MTA-STS policy of %s: %v", ErrUnavailable, domain, err)
	}
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return p, false, nil // unreadable: as if none, fetched again
	}
	return p, true, nil
}

// SaveMTASTSPolicy stores a domain's policy, replacing what was there.
func (c *Client) SaveMTASTSPolicy(ctx context.Context, p contracts.MTASTSPolicy) error {
	if c.sts == nil {
		return fmt.Errorf("%w: %s", errNoBucket, contracts.BucketMTASTS)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	val, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := c.sts.Put(ctx, kvToken(p.Domain), val); err != nil {
		return fmt.Errorf("%w: MTA-STS policy of %s: %v", ErrUnavailable, p.Domain, err)
	}
	return nil
}

func tlsReportKey(day, domain string) string  { return "r." + day + "." + kvToken(domain) }
func tlsWrittenKey(day, domain string) string { return "w." + day + "." + kvToken(domain) }

// AddTLSReport adds counts to what the bucket holds for their day and
// policy domain.
func (c *Client) AddTLSReport(ctx context.Context, counts contracts.TLSReportCounts) error {
	if c.tlsrpt == nil {
		return fmt.Errorf("%w: %s", errNoBucket, contracts.BucketTLSReports)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	k := tlsReportKey(counts.Day, counts.Domain)
	for try := 0; try < 50; try++ {
		var cur contracts.TLSReportCounts
		var rev uint64
		e, err := c.tlsrpt.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("%w: TLS report counts: %v", ErrUnavailable, err)
		default:
			rev = e.Revision()
			_ = json.Unmarshal(e.Value(), &cur) // unreadable: start again
		}
		cur.Merge(counts)
		val, _ := json.Marshal(cur)
		if rev == 0 {
			_, err = c.tlsrpt.Create(ctx, k, val)
		} else {
			_, err = c.tlsrpt.Update(ctx, k, val, rev)
		}
		switch {
		case err == nil:
			return nil
		case errors.Is(err, jetstream.ErrKeyExists), isWrongLastSequence(err):
			continue // another worker added in between
		default:
			return fmt.Errorf("%w: TLS report counts: %v", ErrUnavailable, err)
		}
	}
	return fmt.Errorf("%w: TLS report counts of %s: too much contention", ErrUnavailable, counts.Domain)
}

// TLSReportsDue lists the counts of the days before day (UTC,
// "2006-01-02") whose report has not been written yet, oldest first.
func (c *Client) TLSReportsDue(ctx context.Context, day string) ([]contracts.TLSReportCounts, error) {
	if c.tlsrpt == nil {
		return nil, fmt.Errorf("%w: %s", errNoBucket, contracts.BucketTLSReports)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	lister, err := c.tlsrpt.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: TLS report counts: %v", ErrUnavailable, err)
	}
	written := map[string]bool{}
	var due []string
	for k := range lister.Keys() {
		switch {
		case strings.HasPrefix(k, "w."):
			written["r."+strings.TrimPrefix(k, "w.")] = true
		case strings.HasPrefix(k, "r.") && len(k) > 12 && k[2:12] < day:
			due = append(due, k)
		}
	}
	sort.Strings(due)
	var out []contracts.TLSReportCounts
	for _, k := range due {
		if written[k] {
			continue
		}
		e, err := c.tlsrpt.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("%w: TLS report counts: %v", ErrUnavailable, err)
		}
		var rc contracts.TLSReportCounts
		if json.Unmarshal(e.Value(), &rc) == nil {
			out = append(out, rc)
		}
	}
	return out, nil
}

// ClaimTLSReport marks the report of day and domain as written by holder;
// only the first claim succeeds (true). A writer that then fails lets go
// with ReleaseTLSReport.
func (c *Client) ClaimTLSReport(ctx context.Context, day, domain, holder string) (bool, error) {
	if c.tlsrpt == nil {
		return false, fmt.Errorf("%w: %s", errNoBucket, contracts.BucketTLSReports)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	_, err := c.tlsrpt.Create(ctx, tlsWrittenKey(day, domain), []byte(holder))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyExists):
		return false, nil
	}
	return false, fmt.Errorf("%w: TLS report claim: %v", ErrUnavailable, err)
}

// ReleaseTLSReport undoes a claim, so the report is written again.
func (c *Client) ReleaseTLSReport(ctx context.Context, day, domain string) error {
	if c.tlsrpt == nil {
		return fmt.Errorf("%w: %s", errNoBucket, contracts.BucketTLSReports)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	if err := c.tlsrpt.Purge(ctx, tlsWrittenKey(day, domain)); err != nil {
		return fmt.Errorf("%w: TLS report claim: %v", ErrUnavailable, err)
	}
	return nil
}
