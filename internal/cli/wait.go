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
	"github.com/jetrelay/jetrelay/internal/msgview"
)

// `jetrelay send --wait` follows the message it sent by its queue ID until
// every recipient has an outcome — delivered, deferred (the first attempt
// failed temporarily: the message waits for its next one) or
// dead-lettered — and says it in words. It reads what the operator
// commands read: the message's jobs and dead letters, and the outcome
// record of its delivered recipients (broker.MessageDelivered).

// The model of following a message is msgview's (shared with the console).
type (
	outcome  = msgview.Outcome
	snapshot = msgview.Snapshot
)

const (
	statePending  = msgview.StatePending
	stateWaiting  = msgview.StateWaiting
	stateDeferred = msgview.StateDeferred
	stateDead     = msgview.StateDead
	stateDone     = msgview.StateDone
)

// Exit codes of send --wait.
const (
	exitDelivered = 0
	exitTempFail  = 75 // EX_TEMPFAIL: deferred, or no outcome within the wait
	exitFailed    = 1
)

// follow polls the message until every recipient has an outcome or the
// wait is over, prints the outcome, and returns the exit code.
func follow(ctx context.Context, bc *broker.Client, cfg *config.Config, qid, from string, rcpts []string, wait time.Duration, w io.Writer) int {
	fmt.Fprintf(w, "\nfollowing %s until it has an outcome (at most %s)...\n", qid, wait)
	deadline := time.Now().Add(wait)
	var outs []outcome
	var last *snapshot
	fl := &msgview.Follower{QueueID: qid, Rcpts: rcpts}
	interval := 100 * time.Millisecond
	for {
		now := time.Now()
		o, s, final, err := fl.Look(ctx, bc, now)
		if err == nil {
			outs, last = o, s
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
		reply := o.Reply.String()
		switch o.State {
		case stateDone:
			switch {
			case o.NoRec && s != nil && s.Kept:
				fmt.Fprintf(w, "<%s>: delivered: the message left the queue without a dead letter (its record of the reply is gone: the broker restarted, or kept too many)\n", o.Addr)
			case o.NoRec:
				fmt.Fprintf(w, "<%s>: delivered: the message left the queue without a dead letter (this relay keeps no record of the reply)\n", o.Addr)
			case o.Reply != nil && o.Reply.Host != "":
				fmt.Fprintf(w, "<%s>: delivered to %s: %s\n", o.Addr, o.Reply.Host, withoutHost(o.Reply))
			default:
				fmt.Fprintf(w, "<%s>: delivered: %s\n", o.Addr, orDash(reply))
			}
		case stateDeferred:
			deferred = true
			code = max(code, exitTempFail)
			fmt.Fprintf(w, "<%s>: deferred: %s\n", o.Addr, orDash(describeReply(o.Reply)))
			fmt.Fprintf(w, "  attempt %d at %s (%s); the message stays in the queue and is retried on delivery.retry.schedule for up to delivery.retry.max_age (%s)\n",
				o.Attempt, o.Next.Local().Format("15:04:05"), ago(o.Next, now), cfg.Delivery.Retry.MaxAge)
			routingHints(cfg, o, hint)
		case stateDead:
			dead = true
			code = exitFailed
			fmt.Fprintf(w, "<%s>: dead-lettered (%s): %s\n", o.Addr, o.Why, orDash(describeReply(o.Reply)))
			if o.Detail != "" && !strings.Contains(reply, o.Detail) && !strings.HasSuffix(o.Detail, "failed permanently") {
				fmt.Fprintf(w, "  %s\n", o.Detail)
			}
			routingHints(cfg, o, hint)
		case stateWaiting:
			pending = true
			code = max(code, exitTempFail)
			fmt.Fprintf(w, "<%s>: not attempted yet: %s; next try at %s (%s)\n", o.Addr, o.Why, o.Next.Local().Format("15:04:05"), ago(o.Next, now))
		default:
			pending = true
			code = max(code, exitTempFail)
			switch {
			case o.Attempt > 1:
				fmt.Fprintf(w, "<%s>: still queued after %s: attempt %d is due or under way (the last one said: %s)\n", o.Addr, wait, o.Attempt, orDash(describeReply(o.Reply)))
			case o.State == statePending:
				fmt.Fprintf(w, "<%s>: still queued after %s: the first attempt has not finished (is a delivery process running? `jetrelay serve` runs one; trying every MX host can take delivery.connect_timeout, %s, per host)\n",
					o.Addr, wait, cfg.Delivery.ConnectTimeout)
			default:
				fmt.Fprintf(w, "<%s>: no outcome after %s\n", o.Addr, wait)
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
	dom := contracts.AddrDomain(o.Addr)
	if !direct(cfg, dom) || o.Reply == nil {
		return
	}
	if reserved(dom) {
		hint(fmt.Sprintf("%s is reserved for examples and tests (RFC 2606): no MX host takes mail for it; send to an address of yours", dom))
	}
	switch enh := o.Reply.Enhanced; {
	case strings.HasPrefix(enh, "4.4."), enh == "5.1.2", enh == "5.1.10", o.Reply.Code == 0:
		hint("without a smart host (delivery.smarthost), jetrelay delivers to each recipient domain's MX hosts itself: that needs DNS and outbound connections to port 25, which most home, office and cloud networks block; to send through your provider instead, set delivery.smarthost (e.g. smtp.office365.com:587)")
	}
}
