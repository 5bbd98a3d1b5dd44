package delivery

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"net"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/rs/zerolog"
)

// TryResult is what Try saw for each recipient.
type TryResult struct {
	Report   *Report
	Verdicts []Verdict
}

// Try delivers one message to a configured route right away, outside the
// queue, with the same transport, TLS policy, credentials and funnel as
// a worker: what `jetrelay auth test --send-to` uses to show an
// administrator what the next hop says. key names the route ("smarthost",
// "route:corp.example") for the answers.
func Try(ctx context.Context, hostname, key string, rt Route, rootCAs *x509.CertPool, from string, rcpts []string, msg []byte, log zerolog.Logger) TryResult {
	if rt.TLS == "" {
		rt.TLS = TLSOpportunistic
	}
	dest := &Destination{Key: key, Kind: "route", Route: rt, Verify: !rt.TLSSkipVerify}
	job := &contracts.Job{QueueID: contracts.NewQueueID(time.Now()), From: from, Attempt: 1, Body: contracts.Body{Size: int64(len(msg))}}
	for _, r := range rcpts {
		job.Rcpts = append(job.Rcpts, contracts.Recipient{Addr: r})
	}
	if len(job.Rcpts) > 0 {
		dest.Domain = job.Rcpts[0].Domain()
	}
	tr := rt.Transport
	if tr == nil {
		to := DefaultTimeouts()
		p := newPool(1, 1, time.Second, 0)
		defer p.closeAll() // QUIT, and the 221, before Try returns
		tr = &smtpTransport{
			hostname: hostname, router: NewRouter(RouterOptions{}), pool: p,
			dialer: &net.Dialer{Timeout: to.Connect}, timeouts: to, rootCAs: rootCAs, log: log,
		}
	}
	rep := tr.Deliver(ctx, &Request{Job: job, Rcpts: job.Rcpts, Dest: dest,
		Body: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(msg)), nil }})
	res := TryResult{Report: rep}
	for _, r := range rep.Results {
		res.Verdicts = append(res.Verdicts, classify(r, rep.Host))
	}
	return res
}
