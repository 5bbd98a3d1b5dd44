package deadletter

import (
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
)

func TestFilterMatch(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	d := &contracts.DeadLetter{
		ID: "Q1-abc-d3", Reason: contracts.ReasonRejected, Detail: "1 recipient(s) failed permanently",
		DeadAt:    now.Add(-2 * time.Hour),
		LastReply: &contracts.Reply{Code: 550, Enhanced: "5.1.1", Text: "User Unknown"},
		Job: contracts.Job{QueueID: "Q1", Part: "abc", From: "Alerts@Corp.Example",
			Rcpts: []contracts.Recipient{{Addr: "ops@Example.COM"}, {Addr: "x@other.test"}}},
	}
	tests := []struct {
		name string
		f    Filter
		want bool
	}{
		{"empty matches", Filter{}, true},
		{"dead-letter id", Filter{IDs: []string{"Q1-abc-d3"}}, true},
		{"queue id", Filter{IDs: []string{"Q1"}}, true},
		{"job id", Filter{IDs: []string{"Q1-abc"}}, true},
		{"other id", Filter{IDs: []string{"Q2"}}, false},
		{"domain, any case", Filter{Domain: "example.com"}, true},
		{"domain is exact", Filter{Domain: "ample.com"}, false},
		{"from substring", Filter{From: "alerts@corp"}, true},
		{"from mismatch", Filter{From: "bob"}, false},
		{"rcpt substring", Filter{Rcpt: "OPS@"}, true},
		{"rcpt mismatch", Filter{Rcpt: "nobody"}, false},
		{"reason", Filter{ReasonContains: "rejected"}, true},
		{"last reply text", Filter{ReasonContains: "user unknown"}, true},
		{"enhanced code", Filter{ReasonContains: "5.1.1"}, true},
		{"reason mismatch", Filter{ReasonContains: "expired"}, false},
		{"since before", Filter{Since: now.Add(-3 * time.Hour)}, true},
		{"since after", Filter{Since: now.Add(-time.Hour)}, false},
		{"until after", Filter{Until: now.Add(-time.Hour)}, true},
		{"until before", Filter{Until: now.Add(-3 * time.Hour)}, false},
		{"older than less", Filter{OlderThan: time.Hour}, true},
		{"older than more", Filter{OlderThan: 3 * time.Hour}, false},
		{"all together", Filter{Domain: "other.test", From: "corp", ReasonContains: "550", OlderThan: time.Hour}, true},
	}
	for _, tc := range tests {
		if got := tc.f.Match(d, now); got != tc.want {
			t.Errorf("%s: Match = %v", tc.name, got)
		}
	}
}

func TestReplayJob(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	d := &contracts.DeadLetter{ID: "Q1-d5", Job: contracts.Job{
		QueueID: "Q1", Attempt: 5, FirstSeen: now.Add(-100 * time.Hour), DelayNotified: true, ReplayCount: 1,
		LastError: &contracts.Reply{Code: 451}, History: []contracts.AttemptRecord{{Attempt: 4}},
		Rcpts: []contracts.Recipient{{Addr: "a@b.test", LastReply: &contracts.Reply{Code: 550}}},
	}}
	j := replayJob(d, now, ReplayOptions{Route: "10.0.0.5:25"})
	if j.Attempt != 1 || !j.FirstSeen.Equal(now) || j.DelayNotified || j.LastError != nil || j.ReplayCount != 2 ||
		j.ReplayOf != "Q1-d5" || j.Route != "10.0.0.5:25" || j.Rcpts[0].LastReply != nil || len(j.History) != 1 || j.JobID() != "Q1-r2" {
		t.Fatalf("replay job %+v", j)
	}
	if d.Job.Rcpts[0].LastReply == nil || d.Job.Attempt != 5 {
		t.Fatal("replayJob modified the dead letter")
	}
}
