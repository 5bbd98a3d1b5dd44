package delivery

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
)

// TestPlan: what an attempt's verdicts lead to. Delivered recipients are
// done; deferred ones are retried per destination at the schedule's time
// or the time the next hop named, unless that is past the queue lifetime;
// failed and expired ones make one dead letter with the strongest reason;
// the sender gets the notifications it asked for.
func TestPlan(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	w := &Worker{opts: Options{Hostname: "relay.test", Schedule: []time.Duration{time.Minute, time.Hour}, MaxAge: 5 * time.Hour, DelayWarning: 2 * time.Hour}}
	open := func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader("Subject: x\r\n\r\nbody\r\n")), nil
	}
	ok := Verdict{Class: Delivered, Reply: &contracts.Reply{Code: 250, Text: "ok", Host: "a"}}
	later := Verdict{Class: Deferred, Reply: &contracts.Reply{Code: 451, Enhanced: "4.3.0", Text: "later", Host: "b"}}
	no := Verdict{Class: Failed, Reason: contracts.ReasonRejected, Reply: &contracts.Reply{Code: 550, Enhanced: "5.1.1", Text: "no", Host: "c"}}
	gone := Verdict{Class: Failed, Reason: contracts.ReasonBodyMissing, Reply: &contracts.Reply{Code: 554, Enhanced: "5.3.0", Text: "missing"}}
	rc := func(a string) contracts.Recipient { return contracts.Recipient{Addr: a} }
	grp := func(key string, rcpts []contracts.Recipient, vs ...Verdict) *group {
		return &group{dest: &Destination{Key: key}, rcpts: rcpts, verdicts: vs, report: &Report{Host: key, Tried: []string{key}}}
	}
	job := func(first time.Time, attempt int) *contracts.Job {
		return &contracts.Job{QueueID: "0KQ3H5XZ7M2P9RTA", From: "app@x", FirstSeen: first, ReceivedAt: first, Attempt: attempt}
	}

	t.Run("mixed", func(t *testing.T) {
		p := w.plan(job(now, 1), []*group{
			grp("a", []contracts.Recipient{rc("ok@a"), rc("no@a")}, ok, no),
			grp("b", []contracts.Recipient{rc("l1@b"), rc("l2@b")}, later, later),
		}, open, now)
		o := p.outcome
		if len(o.Delivered) != 1 || o.Delivered[0].LastReply.Code != 250 {
			t.Fatalf("delivered %+v", o.Delivered)
		}
		if len(o.Retries) != 1 || len(o.Retries[0].Rcpts) != 2 || !o.Retries[0].At.Equal(now.Add(time.Minute)) ||
			o.Retries[0].Record.Result != contracts.ResultDeferred || o.Retries[0].Rcpts[0].LastReply.Code != 451 {
			t.Fatalf("retries %+v", o.Retries)
		}
		if o.Dead == nil || o.Dead.Reason != contracts.ReasonRejected || len(o.Dead.Rcpts) != 1 || o.Dead.Rcpts[0].Addr != "no@a" ||
			o.Dead.LastReply.Code != 550 || len(o.Dead.Records) != 1 || o.Dead.Records[0].Result != contracts.ResultMixed || len(o.Dead.HostsTried) != 2 {
			t.Fatalf("dead %+v", o.Dead)
		}
		if len(o.Notices) != 1 || !bytes.Contains(o.Notices[0].Body, []byte("Action: failed")) || o.Notices[0].Job.Rcpts[0].Addr != "app@x" {
			t.Fatalf("notices %+v", o.Notices)
		}
	})
	t.Run("the next hop names the time", func(t *testing.T) {
		v := later
		v.RetryAt = now.Add(7 * time.Minute)
		p := w.plan(job(now, 1), []*group{grp("b", []contracts.Recipient{rc("l@b")}, v)}, open, now)
		if len(p.outcome.Retries) != 1 || !p.outcome.Retries[0].At.Equal(v.RetryAt) {
			t.Fatalf("retries %+v", p.outcome.Retries)
		}
	})
	t.Run("expired", func(t *testing.T) {
		p := w.plan(job(now.Add(-(5*time.Hour-30*time.Minute)), 4), []*group{grp("b", []contracts.Recipient{rc("l@b")}, later)}, open, now)
		o := p.outcome
		if len(o.Retries) != 0 || o.Dead == nil || o.Dead.Reason != contracts.ReasonExpired ||
			!strings.HasPrefix(o.Dead.Rcpts[0].LastReply.Text, "delivery time expired: ") || !strings.Contains(o.Dead.Detail, "max_age") {
			t.Fatalf("outcome %+v dead %+v", o, o.Dead)
		}
		if len(o.Notices) != 1 || !bytes.Contains(o.Notices[0].Body, []byte("Status: 5.3.0")) {
			t.Fatalf("an expired recipient's DSN: %s", o.Notices[0].Body)
		}
	})
	t.Run("delay warning once", func(t *testing.T) {
		j := job(now.Add(-3*time.Hour), 3)
		p := w.plan(j, []*group{grp("b", []contracts.Recipient{rc("l@b")}, later)}, open, now)
		if len(p.outcome.Notices) != 1 || !bytes.Contains(p.outcome.Notices[0].Body, []byte("Action: delayed")) || !p.outcome.Retries[0].DelayNotified {
			t.Fatalf("delay warning: %+v", p.outcome)
		}
		j.DelayNotified = true
		if p := w.plan(j, []*group{grp("b", []contracts.Recipient{rc("l@b")}, later)}, open, now); len(p.outcome.Notices) != 0 {
			t.Fatal("a second delay warning")
		}
	})
	t.Run("body missing takes the deferred along", func(t *testing.T) {
		p := w.plan(job(now, 1), []*group{
			grp("a", []contracts.Recipient{rc("x@a")}, gone),
			grp("b", []contracts.Recipient{rc("l@b")}, later),
			grp("c", []contracts.Recipient{rc("n@c")}, no),
		}, open, now)
		o := p.outcome
		if len(o.Retries) != 0 || o.Dead == nil || o.Dead.Reason != contracts.ReasonBodyMissing || len(o.Dead.Rcpts) != 3 {
			t.Fatalf("outcome %+v dead %+v", o, o.Dead)
		}
	})
	t.Run("no bounce to the null sender or of a bounce", func(t *testing.T) {
		for _, j := range []*contracts.Job{{From: "", FirstSeen: now, Attempt: 1}, {From: "a@b", Kind: contracts.KindDSN, FirstSeen: now, Attempt: 1}} {
			if p := w.plan(j, []*group{grp("c", []contracts.Recipient{rc("n@c")}, no)}, open, now); len(p.outcome.Notices) != 0 || p.outcome.Dead == nil {
				t.Fatalf("outcome %+v", p.outcome)
			}
		}
	})
}
