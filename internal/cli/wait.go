package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/config"
)

// `jetrelay send --wait` follows the message it sent by its queue ID until
// every recipient has an outcome — delivered, deferred (the first attempt
// failed temporarily: the message waits for its next one) or
// dead-lettered — and says it in words. It reads what the operator
// commands read: the message's jobs and dead letters, and the outcome
// record of its delivered recipients (broker.MessageDelivered).

// Exit codes of send --wait.
const (
	exitDelivered = 0
	exitTempFail  = 75 // EX_TEMPFAIL: deferred, or no outcome within the wait
	exitFailed    = 1
)

// progressState is where one recipient stands, the further along the better
// known: an attempt's outcome outranks a job waiting for its attempt.
type progressState int

const (
	stateUnknown  progressState = iota
	statePending                // queued, no attempt finished yet (or being delivered)
	stateWaiting                // held back by a route's rate limit
	stateDeferred               // an attempt failed temporarily; a retry is scheduled
	stateDead                   // dead-lettered
	stateDone                   // delivered
)

// outcome is one recipient's state with what explains it.
type outcome struct {
	addr    string
	state   progressState
	reply   *contracts.Reply
	next    time.Time // deferred, waiting: when it is tried again
	attempt int       // deferred: the attempt that comes next
	why     string    // waiting: the limit; dead: the reason
	detail  string    // dead: the explanation
	norec   bool      // delivered, but no record of the reply is kept
}

// snapshot is everything the broker holds of a message at one moment.
type snapshot struct {
	jobs      []*broker.QueuedJob
	dls       []*broker.StoredDeadLetter
	delivered []broker.Delivered
	kept      bool // the broker keeps outcome records
}

func (s *snapshot) empty() bool {
	return len(s.jobs) == 0 && len(s.dls) == 0 && len(s.delivered) == 0
}

// observe reads the message's records.
func observe(ctx context.Context, bc *broker.Client, qid string) (*snapshot, error) {
	s := &snapshot{}
	if err := bc.MessageJobs(ctx, qid, func(q *broker.QueuedJob) bool {
		if q.Job != nil {
			s.jobs = append(s.jobs, q)
		}
		return true
	}); err != nil {
		return nil, err
	}
	if err := bc.MessageDeadLetters(ctx, qid, func(d *broker.StoredDeadLetter) bool {
		if d.DL != nil {
			s.dls = append(s.dls, d)
		}
		return true
	}); err != nil {
		return nil, err
	}
	var err error
	s.delivered, s.kept, err = bc.MessageDelivered(ctx, qid)
	return s, err
}

// judge says where each of rcpts stands in s, and whether every one has
// an outcome (delivered, deferred or dead-lettered). gone: nothing of the
// message is held any more (seen twice, a moment apart, by the caller),
// which means its remaining recipients were delivered.
func judge(rcpts []string, s *snapshot, gone bool) ([]outcome, bool) {
	byAddr := map[string]*outcome{}
	out := make([]outcome, len(rcpts))
	for i, r := range rcpts {
		out[i] = outcome{addr: r}
		byAddr[strings.ToLower(r)] = &out[i]
	}
	set := func(addr string, o outcome) {
		cur, ok := byAddr[strings.ToLower(addr)]
		if !ok || o.state < cur.state {
			return
		}
		o.addr = cur.addr
		*cur = o
	}
	for _, d := range s.delivered {
		for _, r := range d.Rcpts {
			set(r.Addr, outcome{state: stateDone, reply: r.LastReply})
		}
	}
	var done []contracts.Recipient
	for _, q := range s.jobs {
		done = append(done, q.Job.Done...)
		for _, r := range q.Job.Rcpts {
			reply := r.LastReply
			if reply == nil {
				reply = q.Job.LastError
			}
			switch {
			case q.Scheduled && q.Job.Waiting != "":
				set(r.Addr, outcome{state: stateWaiting, why: q.Job.Waiting, next: q.NextAt, reply: reply})
			case q.Scheduled:
				set(r.Addr, outcome{state: stateDeferred, reply: reply, next: q.NextAt, attempt: q.Job.Attempt})
			default:
				set(r.Addr, outcome{state: statePending, reply: reply, attempt: q.Job.Attempt})
			}
		}
	}
	for _, d := range s.dls {
		done = append(done, d.DL.Job.Done...)
		for _, r := range d.DL.Job.Rcpts {
			reply := r.LastReply
			if reply == nil {
				reply = d.DL.LastReply
			}
			set(r.Addr, outcome{state: stateDead, reply: reply, why: d.DL.Reason, detail: d.DL.Detail})
		}
	}
	for _, r := range done {
		set(r.Addr, outcome{state: stateDone, reply: r.LastReply})
	}
	final := true
	for i := range out {
		if out[i].state == stateUnknown && gone {
			out[i] = outcome{addr: out[i].addr, state: stateDone, norec: true}
		}
		if out[i].state < stateDeferred {
			final = false
		}
	}
	return out, final
}

// follow polls the message until every recipient has an outcome or the
// wait is over, prints the outcome, and returns the exit code.
func follow(ctx context.Context, bc *broker.Client, cfg *config.Config, qid, from string, rcpts []string, wait time.Duration, w io.Writer) int {
	fmt.Fprintf(w, "\nfollowing %s until it has an outcome (at most %s)...\n", qid, wait)
	deadline := time.Now().Add(wait)
	var outs []outcome
	var last *snapshot
	var emptySince time.Time
	interval := 100 * time.Millisecond
	for {
		s, err := observe(ctx, bc, qid)
		now := time.Now()
		if err == nil {
			last = s
			gone := false
			if s.empty() {
				// Nothing held: delivered in full, or the record of it
				// not stored yet. Seen again a moment later, it is gone.
				if emptySince.IsZero() {
					emptySince = now
				}
				gone = now.Sub(emptySince) >= time.Second
			} else {
				emptySince = time.Time{}
			}
			var final bool
			outs, final = judge(rcpts, s, gone)
			if final {
				return report(w, cfg, qid, from, outs, last, wait)
			}
		}
		if now.After(deadline) || ctx.Err() != nil {
			if outs == nil {
				fmt.Fprintf(w, "could not read the queue to follow %s: %v\n", qid, err)
				return exitTempFail
			}
			return report(w, cfg, qid, from, outs, last, wait)
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
		interval = min(interval*2, time.Second)
	}
}

// report prints each recipient's outcome and what to do next, and
// returns the exit code: 1 when any recipient was dead-lettered, else 75
// when any is still to be delivered, else 0.
func report(w io.Writer, cfg *config.Config, qid, from string, outs []outcome, s *snapshot, wait time.Duration) int {
	now := time.Now()
	code := exitDelivered
	var deferred, dead, pending bool
	var hints []string
	hint := func(h string) {
		for _, x := range hints {
			if x == h {
				return
			}
		}
		hints = append(hints, h)
	}
	for _, o := range outs {
		reply := o.reply.String()
		switch o.state {
		case stateDone:
			switch {
			case o.norec && s != nil && s.kept:
				fmt.Fprintf(w, "<%s>: delivered: the message left the queue without a dead letter (its record of the reply is gone: the broker restarted, or kept too many)\n", o.addr)
			case o.norec:
				fmt.Fprintf(w, "<%s>: delivered: the message left the queue without a dead letter (this relay keeps no record of the reply)\n", o.addr)
			case o.reply != nil && o.reply.Host != "":
				fmt.Fprintf(w, "<%s>: delivered to %s: %s\n", o.addr, o.reply.Host, withoutHost(o.reply))
			default:
				fmt.Fprintf(w, "<%s>: delivered: %s\n", o.addr, orDash(reply))
			}
		case stateDeferred:
			deferred = true
			code = max(code, exitTempFail)
			fmt.Fprintf(w, "<%s>: deferred: %s\n", o.addr, orDash(describeReply(o.reply)))
			fmt.Fprintf(w, "  attempt %d at %s (%s); the message stays in the queue and is retried on delivery.retry.schedule for up to delivery.retry.max_age (%s)\n",
				o.attempt, o.next.Local().Format("15:04:05"), ago(o.next, now), cfg.Delivery.Retry.MaxAge)
			routingHints(cfg, o, hint)
		case stateDead:
			dead = true
			code = exitFailed
			fmt.Fprintf(w, "<%s>: dead-lettered (%s): %s\n", o.addr, o.why, orDash(describeReply(o.reply)))
			if o.detail != "" && !strings.Contains(reply, o.detail) && !strings.HasSuffix(o.detail, "failed permanently") {
				fmt.Fprintf(w, "  %s\n", o.detail)
			}
			routingHints(cfg, o, hint)
		case stateWaiting:
			pending = true
			code = max(code, exitTempFail)
			fmt.Fprintf(w, "<%s>: not attempted yet: %s; next try at %s (%s)\n", o.addr, o.why, o.next.Local().Format("15:04:05"), ago(o.next, now))
		default:
			pending = true
			code = max(code, exitTempFail)
			switch {
			case o.attempt > 1:
				fmt.Fprintf(w, "<%s>: still queued after %s: attempt %d is due or under way (the last one said: %s)\n", o.addr, wait, o.attempt, orDash(describeReply(o.reply)))
			case o.state == statePending:
				fmt.Fprintf(w, "<%s>: still queued after %s: the first attempt has not finished (is a delivery process running? `jetrelay serve` runs one; trying every MX host can take delivery.connect_timeout, %s, per host)\n",
					o.addr, wait, cfg.Delivery.ConnectTimeout)
			default:
				fmt.Fprintf(w, "<%s>: no outcome after %s\n", o.addr, wait)
			}
		}
	}
	for _, h := range hints {
		fmt.Fprintf(w, "  %s\n", h)
	}
	switch {
	case dead:
		switch {
		case from != "" && reserved(contracts.AddrDomain(from)) && direct(cfg, contracts.AddrDomain(from)):
			fmt.Fprintf(w, "A bounce goes to the sender <%s>, whose domain takes no mail either: it ends in the dead letters too (give send --from an address of yours).\n", from)
		case from != "":
			fmt.Fprintf(w, "The sender <%s> gets a bounce (a delivery status notification).\n", from)
		}
		fmt.Fprintf(w, "See it with: jetrelay deadletter show %s\nOnce the cause is fixed, send it again with: jetrelay deadletter replay %s\n", qid, qid)
	case deferred || pending:
		fmt.Fprintf(w, "See it with: jetrelay queue show %s\nTry again now with: jetrelay queue retry %s\n", qid, qid)
	}
	return code
}

// withoutHost is a reply without the host, which the caller names.
func withoutHost(r *contracts.Reply) string {
	cp := *r
	cp.Host = ""
	return cp.String()
}

// describeReply is a reply with the host that gave it, if any.
func describeReply(r *contracts.Reply) string {
	if r == nil {
		return ""
	}
	if r.Host != "" && !strings.Contains(r.Text, r.Host) {
		return withoutHost(r) + " (from " + r.Host + ")"
	}
	return r.String()
}

// reservedDomains never receive mail (RFC 2606, RFC 6761).
var reservedDomains = []string{"example.com", "example.net", "example.org", "example", "test", "invalid", "localhost"}

func reserved(domain string) bool {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	for _, r := range reservedDomains {
		if d == r || strings.HasSuffix(d, "."+r) {
			return true
		}
	}
	return false
}

// direct reports whether mail for domain goes to its MX hosts (no smart
// host, no route), as this configuration says.
func direct(cfg *config.Config, domain string) bool {
	_, routed := cfg.Delivery.Routes[strings.ToLower(domain)]
	return len(cfg.Delivery.Smarthost) == 0 && !routed
}

// routingHints explain a failure to reach the recipient's domain
// directly: what direct MX delivery needs, and that reserved domains take
// no mail.
func routingHints(cfg *config.Config, o outcome, hint func(string)) {
	dom := contracts.AddrDomain(o.addr)
	if !direct(cfg, dom) || o.reply == nil {
		return
	}
	if reserved(dom) {
		hint(fmt.Sprintf("%s is reserved for examples and tests (RFC 2606): no MX host takes mail for it; send to an address of yours", dom))
	}
	switch enh := o.reply.Enhanced; {
	case strings.HasPrefix(enh, "4.4."), enh == "5.1.2", enh == "5.1.10", o.reply.Code == 0:
		hint("without a smart host (delivery.smarthost), jetrelay delivers to each recipient domain's MX hosts itself: that needs DNS and outbound connections to port 25, which most home, office and cloud networks block; to send through your provider instead, set delivery.smarthost (e.g. smtp.office365.com:587)")
	}
}
