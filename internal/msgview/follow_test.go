package msgview

import (
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
)

// Judge reads a message's records at one moment: the furthest-along state
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
		s     Snapshot
		gone  bool
		want  []State
		final bool
	}{
		{"just queued", Snapshot{Jobs: []*broker.QueuedJob{{Job: first}}},
			false, []State{StatePending, StatePending, StatePending}, false},
		{"settled, the first job not yet purged", Snapshot{
			Jobs:      []*broker.QueuedJob{{Job: first}, {Job: retry, Scheduled: true, NextAt: next}},
			DLs:       []*broker.StoredDeadLetter{{DL: dl}},
			Delivered: []broker.Delivered{{QueueID: first.QueueID, Rcpts: []contracts.Recipient{{Addr: "a@a.example", LastReply: ok}}}}, Kept: true},
			false, []State{StateDone, StateDeferred, StateDead}, true},
		{"no record kept, Done carries the delivered one", Snapshot{
			Jobs: []*broker.QueuedJob{{Job: retry, Scheduled: true, NextAt: next}}, DLs: []*broker.StoredDeadLetter{{DL: dl}}},
			false, []State{StateDone, StateDeferred, StateDead}, true},
		{"held back by a rate limit", Snapshot{Jobs: []*broker.QueuedJob{{Job: &contracts.Job{QueueID: first.QueueID, Part: "3f9a0c11d2w",
			Attempt: 1, Waiting: "waiting for rate limit", Rcpts: first.Rcpts}, Scheduled: true, NextAt: next}}},
			false, []State{StateWaiting, StateWaiting, StateWaiting}, false},
		{"nothing left, not yet seen twice", Snapshot{}, false, []State{StateUnknown, StateUnknown, StateUnknown}, false},
		{"nothing left: delivered", Snapshot{}, true, []State{StateDone, StateDone, StateDone}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outs, final := Judge(rcpts, &tc.s, tc.gone)
			for i, o := range outs {
				if o.State != tc.want[i] {
					t.Errorf("%s: state %d, want %d", o.Addr, o.State, tc.want[i])
				}
			}
			if final != tc.final {
				t.Errorf("final %v, want %v", final, tc.final)
			}
			if outs[1].Addr != "B@b.example" {
				t.Errorf("the address as given is not Kept: %q", outs[1].Addr)
			}
		})
	}
}
