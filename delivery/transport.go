package delivery

import (
	"context"
	"io"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
)

// Transport delivers one message to the recipients that share a
// destination and reports, per recipient, what happened. It never
// decides what follows (retry, dead letter, bounce): every result goes
// through the classification funnel (classify), whatever the transport.
// SMTP (smtpTransport) is the first transport.
type Transport interface {
	Deliver(ctx context.Context, req *Request) *Report
}

// Request is one delivery.
type Request struct {
	// Job is the message: envelope sender, parameters, size, queue ID.
	Job *contracts.Job
	// Rcpts are the recipients at this destination, all of them Job's.
	Rcpts []contracts.Recipient
	// Dest is where they go.
	Dest *Destination
	// Body opens the message; a transport opens it only when it is about
	// to send it, and may open it again for another host.
	Body func() (io.ReadCloser, error)
}

// Report is what a transport did with a Request.
type Report struct {
	// Results has one entry per recipient, in the order of Request.Rcpts.
	Results []Result
	// Host, IP and TLS describe the next hop that gave the final answer.
	Host, IP, TLS string
	// Tried lists the hosts tried, in order.
	Tried []string
	// Bytes is how many bytes of the message went on the wire (0 when
	// the message was not sent).
	Bytes int64
	// Folded says how lines longer than 998 octets were made to fit
	// ("headers", "broken", "quoted_printable"; "" none were).
	Folded string
	// DKIM says whether and with which key the message was signed.
	DKIM DKIMResult
	// ReportsSuccess: the next hop sends success notifications itself
	// (SMTP's DSN extension), so jetrelay does not.
	ReportsSuccess bool
	Start          time.Time
	Duration       time.Duration
}

// Result is one recipient's outcome: the next hop's reply (any code),
// or the error that stands in for one. Stage says where the dialogue
// ended for this recipient ("rcpt", "data", "dot", "mail", "greeting",
// "ehlo", "starttls", "auth", "connect", "route", "body"…), which the
// funnel needs to read some replies right.
type Result struct {
	Reply *contracts.Reply
	Err   error
	Stage string
}

// fill gives every recipient the same result.
func (r *Report) fill(res Result) {
	for i := range r.Results {
		r.Results[i] = res
	}
}
