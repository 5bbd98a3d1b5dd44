package contracts

import "time"

// MTASTSPolicy is a recipient domain's MTA-STS policy as cached in
// [BucketMTASTS]: the policy file as fetched, under the id of the TXT
// record it was fetched for. It is valid until Expires (the fetch time
// plus the policy's max_age).
type MTASTSPolicy struct {
	Domain  string    `json:"domain"`
	ID      string    `json:"id"`
	Fetched time.Time `json:"fetched"`
	Expires time.Time `json:"expires"`
	Text    string    `json:"text"`
}

// TLSReportCounts are the TLS reporting counts (RFC 8460) of one policy
// domain on one UTC day, in [BucketTLSReports]. Workers add their counts
// to it (the broker merges with compare-and-set); the daily report is
// written from it.
type TLSReportCounts struct {
	// Day is the UTC day, "2006-01-02".
	Day    string `json:"day"`
	Domain string `json:"domain"`
	// PolicyType is "sts" or "no-policy-found"; Policy is the policy file
	// (its lines are the report's policy-string) and MX its patterns.
	PolicyType string   `json:"policy_type"`
	Policy     string   `json:"policy,omitempty"`
	MX         []string `json:"mx,omitempty"`
	Success    int64    `json:"success"`
	Failure    int64    `json:"failure"`
	// Details are the failures by result-type, MX host and address.
	Details []TLSFailureDetail `json:"details,omitempty"`
}

// TLSFailureDetail counts failed sessions of one kind (RFC 8460 §4.4).
type TLSFailureDetail struct {
	ResultType  string `json:"result_type"`
	MXHost      string `json:"mx_host,omitempty"`
	ReceivingIP string `json:"receiving_ip,omitempty"`
	Count       int64  `json:"count"`
	Info        string `json:"info,omitempty"`
}

// MaxTLSFailureDetails caps a day's failure details per policy domain;
// further kinds are counted in the totals only.
const MaxTLSFailureDetails = 100

// Merge adds o's counts to c (same day and domain). The policy seen last
// wins.
func (c *TLSReportCounts) Merge(o TLSReportCounts) {
	c.Day, c.Domain = o.Day, o.Domain
	if o.PolicyType != "" {
		c.PolicyType = o.PolicyType
	}
	if o.Policy != "" {
		c.Policy, c.MX = o.Policy, o.MX
	}
	c.Success += o.Success
	c.Failure += o.Failure
next:
	for _, d := range o.Details {
		for i := range c.Details {
			x := &c.Details[i]
			if x.ResultType == d.ResultType && x.MXHost == d.MXHost && x.ReceivingIP == d.ReceivingIP {
				x.Count += d.Count
				if d.Info != "" {
					x.Info = d.Info
				}
				continue next
			}
		}
		if len(c.Details) < MaxTLSFailureDetails {
			c.Details = append(c.Details, d)
		}
	}
}
