package filter

import (
	"slices"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
)

const qid = "0KQ3H5XZ7M2P9RTA"

// One filter, one meaning, for jobs and dead letters alike.
func TestMatch(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	job := contracts.Job{QueueID: qid, Part: "abc", From: "Alerts@Corp.Example", ReceivedAt: now.Add(-2 * time.Hour),
		LastError: &contracts.Reply{Code: 451, Enhanced: "4.3.2", Text: "System busy"},
		Rcpts:     []contracts.Recipient{{Addr: "ops@Example.COM"}, {Addr: "x@other.test"}}}
	dl := &contracts.DeadLetter{
		ID: qid + "-abc-d3", Reason: contracts.ReasonRejected, Detail: "1 recipient(s) failed permanently",
		DeadAt:    now.Add(-2 * time.Hour),
		LastReply: &contracts.Reply{Code: 550, Enhanced: "5.1.1", Text: "User Unknown"},
		Job:       job,
	}
	tests := []struct {
		name    string
		f       Filter
		job, dl bool
	}{
		{"empty matches", Filter{}, true, true},
		{"queue id", Filter{IDs: []string{qid}}, true, true},
		{"job id", Filter{IDs: []string{qid + "-abc"}}, true, true},
		{"dead-letter id", Filter{IDs: []string{qid + "-abc-d3"}}, false, true},
		{"other id", Filter{IDs: []string{"0KQ3H5XZ7M2P9RTB"}}, false, false},
		{"domain, any case", Filter{Domain: "example.com"}, true, true},
		{"domain is exact", Filter{Domain: "ample.com"}, false, false},
		{"from substring", Filter{From: "alerts@corp"}, true, true},
		{"from mismatch", Filter{From: "bob"}, false, false},
		{"rcpt substring", Filter{Rcpt: "OPS@"}, true, true},
		{"rcpt mismatch", Filter{Rcpt: "nobody"}, false, false},
		{"reason", Filter{ReasonContains: "rejected"}, false, true},
		{"last reply text", Filter{ReasonContains: "user unknown"}, false, true},
		{"enhanced code", Filter{ReasonContains: "5.1.1"}, false, true},
		{"a job's last error", Filter{ReasonContains: "system busy"}, true, false},
		{"since before", Filter{Since: now.Add(-3 * time.Hour)}, true, true},
		{"since after", Filter{Since: now.Add(-time.Hour)}, false, false},
		{"until after", Filter{Until: now.Add(-time.Hour)}, true, true},
		{"until before", Filter{Until: now.Add(-3 * time.Hour)}, false, false},
		{"older than less", Filter{OlderThan: time.Hour}, true, true},
		{"older than more", Filter{OlderThan: 3 * time.Hour}, false, false},
		{"all together", Filter{Domain: "other.test", From: "corp", ReasonContains: "550", OlderThan: time.Hour}, false, true},
	}
	for _, tc := range tests {
		if got := tc.f.MatchJob(&job, now); got != tc.job {
			t.Errorf("%s: MatchJob = %v", tc.name, got)
		}
		if got := tc.f.MatchDeadLetter(dl, now); got != tc.dl {
			t.Errorf("%s: MatchDeadLetter = %v", tc.name, got)
		}
		if tc.f.Empty() != (tc.name == "empty matches") {
			t.Errorf("%s: Empty = %v", tc.name, tc.f.Empty())
		}
	}
}

func TestQueueIDsAndWiden(t *testing.T) {
	const other = "0KQ3H5XZ7M2P9RTB"
	f := Filter{IDs: []string{qid + "-abc", qid, other + "-r1-d1"}}
	if q, ok := f.QueueIDs(); !ok || !slices.Equal(q, []string{qid, other}) {
		t.Fatalf("QueueIDs = %v %v", q, ok)
	}
	for _, f := range []Filter{{}, {IDs: []string{qid}, Domain: "x"}, {IDs: []string{"SEQ5-s5-d0"}}} {
		if _, ok := f.QueueIDs(); ok {
			t.Errorf("QueueIDs of %+v: a lookup by queue ID would miss records", f)
		}
	}
	w, changed := f.Widen()
	if !changed || !slices.Equal(w.IDs, []string{qid, qid, other}) || f.IDs[0] != qid+"-abc" {
		t.Fatalf("Widen = %v %v (original %v)", w.IDs, changed, f.IDs)
	}
	if _, changed := (Filter{IDs: []string{qid}}).Widen(); changed {
		t.Fatal("a queue ID widened")
	}
}
