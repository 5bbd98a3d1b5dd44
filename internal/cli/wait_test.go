package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/config"
)

// judge reads a message's records at one moment: the furthest-along state
// of each recipient wins (an attempt's outcome over the job that waited
// for it, which stays visible until its ack is purged), and only
// delivered, deferred and dead-lettered are outcomes.
func TestJudge(t *testing.T) {
	ok := &contracts.Reply{Code: 250, Enhanced: "2.0.0", Text: "OK", Host: "mx.a.example"}
	busy := &contracts.Reply{Code: 451, Enhanced: "4.3.2", Text: "busy", Host: "mx.b.example"}
	bad := &contracts.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user", Host: "mx.c.example"}
	next := time.Now().Add(time.Minute)
	first := &contracts.Job{QueueID: "2N14RHDRP8P0BKGG", Attempt: 1,
		Rcpts: []contracts.Recipient{{Addr: "a@a.example"}, {Addr: "b@b.example"}, {Addr: "c@c.example"}}}
	retry := &contracts.Job{QueueID: first.QueueID, Part: "3f9a0c11d2", Attempt: 2, LastError: busy,
		Rcpts: []contracts.Recipient{{Addr: "b@b.example", LastReply: busy}}, Done: []contracts.Recipient{{Addr: "a@a.example", LastReply: ok}}}
	dl := &contracts.DeadLetter{ID: "2N14RHDRP8P0BKGG-d1", Reason: contracts.ReasonRejected, LastReply: bad,
		Job: contracts.Job{QueueID: first.QueueID, Rcpts: []contracts.Recipient{{Addr: "c@c.example", LastReply: bad}}}}
	rcpts := []string{"a@a.example", "B@b.example", "c@c.example"}
	for _, tc := range []struct {
		name  string
		s     snapshot
		gone  bool
		want  []progressState
		final bool
	}{
		{"just queued", snapshot{jobs: []*broker.QueuedJob{{Job: first}}},
			false, []progressState{statePending, statePending, statePending}, false},
		{"settled, the first job not yet purged", snapshot{
			jobs:      []*broker.QueuedJob{{Job: first}, {Job: retry, Scheduled: true, NextAt: next}},
			dls:       []*broker.StoredDeadLetter{{DL: dl}},
			delivered: []broker.Delivered{{QueueID: first.QueueID, Rcpts: []contracts.Recipient{{Addr: "a@a.example", LastReply: ok}}}}, kept: true},
			false, []progressState{stateDone, stateDeferred, stateDead}, true},
		{"no record kept, Done carries the delivered one", snapshot{
			jobs: []*broker.QueuedJob{{Job: retry, Scheduled: true, NextAt: next}}, dls: []*broker.StoredDeadLetter{{DL: dl}}},
			false, []progressState{stateDone, stateDeferred, stateDead}, true},
		{"held back by a rate limit", snapshot{jobs: []*broker.QueuedJob{{Job: &contracts.Job{QueueID: first.QueueID, Part: "3f9a0c11d2w",
			Attempt: 1, Waiting: "waiting for rate limit", Rcpts: first.Rcpts}, Scheduled: true, NextAt: next}}},
			false, []progressState{stateWaiting, stateWaiting, stateWaiting}, false},
		{"nothing left, not yet seen twice", snapshot{}, false, []progressState{stateUnknown, stateUnknown, stateUnknown}, false},
		{"nothing left: delivered", snapshot{}, true, []progressState{stateDone, stateDone, stateDone}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outs, final := judge(rcpts, &tc.s, tc.gone)
			for i, o := range outs {
				if o.state != tc.want[i] {
					t.Errorf("%s: state %d, want %d", o.addr, o.state, tc.want[i])
				}
			}
			if final != tc.final {
				t.Errorf("final %v, want %v", final, tc.final)
			}
			if outs[1].addr != "B@b.example" {
				t.Errorf("the address as given is not kept: %q", outs[1].addr)
			}
		})
	}
}

// The report says in words what happened and what to do, and its exit
// code: 1 when any recipient was dead-lettered, 75 when any waits, 0 when
// all were delivered.
func TestReport(t *testing.T) {
	cfg := config.Default()
	next := time.Now().Add(5 * time.Minute)
	for _, tc := range []struct {
		name string
		from string
		outs []outcome
		code int
		want []string
	}{
		{"delivered", "app@corp.net", []outcome{{addr: "a@corp.example", state: stateDone, reply: &contracts.Reply{Code: 250, Enhanced: "2.0.0", Text: "OK", Host: "mx.corp.example"}}},
			0, []string{"<a@corp.example>: delivered to mx.corp.example: 250 2.0.0 OK"}},
		{"delivered without a record", "app@corp.net", []outcome{{addr: "a@corp.example", state: stateDone, norec: true}},
			0, []string{"<a@corp.example>: delivered: the message left the queue without a dead letter"}},
		{"deferred", "app@corp.net", []outcome{{addr: "a@corp.example", state: stateDeferred, attempt: 2, next: next,
			reply: &contracts.Reply{Code: 451, Enhanced: "4.4.1", Text: "connection refused by mx.corp.example", Host: "mx.corp.example"}}},
			75, []string{"<a@corp.example>: deferred: 451 4.4.1 connection refused by mx.corp.example\n", "attempt 2 at " + next.Local().Format("15:04:05"),
				"without a smart host (delivery.smarthost)", "jetrelay queue retry 2N14RHDRP8P0BKGG"}},
		{"dead and delivered", "app@corp.net", []outcome{
			{addr: "a@corp.example", state: stateDone, reply: &contracts.Reply{Code: 250, Text: "OK", Host: "mx.corp.example"}},
			{addr: "b@corp.example", state: stateDead, why: "expired", detail: "still failing temporarily after 120h0m0s (delivery.retry.max_age)",
				reply: &contracts.Reply{Code: 451, Enhanced: "4.3.2", Text: "delivery time expired: busy", Host: "mx.corp.example"}}},
			1, []string{"<b@corp.example>: dead-lettered (expired): 451 4.3.2 delivery time expired: busy (from mx.corp.example)",
				"still failing temporarily after", "The sender <app@corp.net> gets a bounce", "jetrelay deadletter replay 2N14RHDRP8P0BKGG"}},
		{"a bounce that cannot be delivered", "jetrelay-test@localhost", []outcome{{addr: "a@example.com", state: stateDead, why: "rejected",
			reply: &contracts.Reply{Code: 556, Enhanced: "5.1.10", Text: "example.com does not accept mail (null MX)"}}},
			1, []string{"<a@example.com>: dead-lettered (rejected): 556 5.1.10 example.com does not accept mail (null MX)",
				"example.com is reserved for examples and tests", "A bounce goes to the sender <jetrelay-test@localhost>, whose domain takes no mail either"}},
		{"no outcome in time", "app@corp.net", []outcome{{addr: "a@corp.example", state: statePending, attempt: 1}},
			75, []string{"<a@corp.example>: still queued after 2m0s: the first attempt has not finished (is a delivery process running?"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			code := report(&buf, cfg, "2N14RHDRP8P0BKGG", tc.from, tc.outs, &snapshot{kept: true}, 2*time.Minute)
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("missing %q in:\n%s", w, buf.String())
				}
			}
		})
	}
}
