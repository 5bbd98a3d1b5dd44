package delivery

import (
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
)

// plan is everything an attempt leads to: the outcome the broker records
// when the lease is settled.
type plan struct {
	outcome broker.Outcome
}

// plan turns the verdicts of an attempt into its outcome: delivered
// recipients are done; deferred ones are retried per destination at the
// time the schedule (or the next hop) says, unless that is past the
// queue lifetime; failed and expired ones become one dead letter; and the
// sender gets the notifications it asked for.
func (w *Worker) plan(job *contracts.Job, groups []*group, open func() (io.ReadCloser, error), now time.Time) *plan {
	p := &plan{}
	var dead []contracts.Recipient
	var records []contracts.AttemptRecord
	var tried []string
	var last *contracts.Reply
	reason := ""
	bodyMissing := false
	for _, g := range groups {
		if g.report == nil {
			continue
		}
		tried = append(tried, g.report.Tried...)
		for _, v := range g.verdicts {
			bodyMissing = bodyMissing || v.Reason == contracts.ReasonBodyMissing
		}
	}
	expiry := job.FirstSeen.Add(w.opts.MaxAge)
	for _, g := range groups {
		if !g.postponed.IsZero() {
			if g.postponed.After(expiry) {
				for _, r := range g.rcpts {
					r.LastReply = &contracts.Reply{Code: 451, Enhanced: "4.4.7", Text: "delivery time expired: " + g.waitReason}
					last = r.LastReply
					dead = append(dead, r)
				}
				reason = worse(reason, contracts.ReasonExpired)
				continue
			}
			p.outcome.Postponed = append(p.outcome.Postponed, broker.Postpone{Rcpts: g.rcpts, At: g.postponed, Reason: g.waitReason})
			continue
		}
		var deferred []contracts.Recipient
		var hint time.Time
		died := false
		for i, v := range g.verdicts {
			r := g.rcpts[i]
			r.LastReply = v.Reply
			switch {
			case v.Class == Delivered:
				p.outcome.Delivered = append(p.outcome.Delivered, r)
			case v.Class == Failed, bodyMissing:
				// Without its body the message cannot be delivered to
				// anyone: the deferred recipients go with the failed ones.
				dead = append(dead, r)
				last, died = v.Reply, true
				reason = worse(reason, v.Reason)
				if bodyMissing {
					reason = contracts.ReasonBodyMissing
				}
			default:
				deferred = append(deferred, r)
				if v.RetryAt.After(hint) {
					hint = v.RetryAt
				}
			}
		}
		record := attemptRecord(job.Attempt, g)
		if len(deferred) > 0 {
			next := w.nextAttempt(job.Attempt, now)
			if !hint.IsZero() {
				next = hint // the next hop said when
				if next.Before(now) {
					next = now
				}
			}
			if next.After(expiry) {
				for _, r := range deferred {
					last = r.LastReply
					exp := *r.LastReply
					exp.Text = "delivery time expired: " + exp.Text
					r.LastReply = &exp
					dead = append(dead, r)
				}
				died = true
				reason = worse(reason, contracts.ReasonExpired)
			} else {
				p.outcome.Retries = append(p.outcome.Retries, broker.Retry{Rcpts: deferred, At: next, Record: record})
			}
		}
		if died {
			records = append(records, record)
		}
	}
	if len(dead) > 0 {
		detail := fmt.Sprintf("%d recipient(s) failed permanently", len(dead))
		switch reason {
		case contracts.ReasonExpired:
			detail = fmt.Sprintf("still failing temporarily after %s (delivery.retry.max_age)", w.opts.MaxAge)
		case contracts.ReasonBodyMissing:
			detail = "the message body is missing from the body store"
		}
		p.outcome.Dead = &broker.Dead{Reason: reason, Detail: detail, Rcpts: dead, LastReply: last, HostsTried: tried, Records: records}
	}
	w.planDSNs(job, groups, p, open, now)
	return p
}

// worse ranks dead-letter reasons: a missing body explains everything,
// a permanent rejection more than an expiry.
func worse(a, b string) string {
	rank := func(r string) int {
		switch r {
		case contracts.ReasonBodyMissing:
			return 3
		case contracts.ReasonRejected:
			return 2
		case contracts.ReasonExpired:
			return 1
		}
		return 0
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// poisonPlan dead-letters a job that keeps coming back without finishing.
func poisonPlan(job *contracts.Job, deliveries uint64) *plan {
	return &plan{outcome: broker.Outcome{Dead: &broker.Dead{
		Reason: contracts.ReasonPoison,
		Detail: fmt.Sprintf("handed out %d times without finishing (worker crashes?)", deliveries),
		Rcpts:  job.Rcpts,
	}}}
}

// attemptRecord is the history record of one destination's share of an
// attempt.
func attemptRecord(attempt int, g *group) contracts.AttemptRecord {
	var reply *contracts.Reply
	if len(g.verdicts) > 0 {
		reply = g.verdicts[0].Reply
	}
	return contracts.AttemptRecord{
		Attempt: attempt, At: g.report.Start, Duration: g.report.Duration, Host: g.report.Host, IP: g.report.IP,
		TLS: g.report.TLS, Result: g.result(), Reply: reply, Rcpts: len(g.rcpts),
	}
}

// result names the group's outcome: delivered, deferred, failed or mixed.
func (g *group) result() string {
	var n [3]int
	for _, v := range g.verdicts {
		n[v.Class]++
	}
	switch len(g.verdicts) {
	case n[Delivered]:
		return contracts.ResultDelivered
	case n[Deferred]:
		return contracts.ResultDeferred
	case n[Failed]:
		return contracts.ResultFailed
	}
	return contracts.ResultMixed
}

// nextAttempt applies delivery.retry.schedule: the wait before attempt n+1
// is schedule[n-1], the last entry repeating, spread by ±jitter.
func (w *Worker) nextAttempt(attempt int, now time.Time) time.Time {
	i := attempt - 1
	if i >= len(w.opts.Schedule) {
		i = len(w.opts.Schedule) - 1
	}
	if i < 0 {
		i = 0
	}
	d := w.opts.Schedule[i]
	if j := w.opts.Jitter; j > 0 {
		d += time.Duration((rand.Float64()*2 - 1) * j * float64(d))
	}
	return now.Add(d)
}
