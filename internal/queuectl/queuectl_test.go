package queuectl

import (
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
)

func TestFilterMatch(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	j := &contracts.Job{QueueID: "Q1", Part: "p", From: "App@Corp.Example", ReceivedAt: now.Add(-90 * time.Minute),
		Rcpts: []contracts.Recipient{{Addr: "ops@example.com"}}}
	tests := []struct {
		f    Filter
		want bool
	}{
		{Filter{}, true},
		{Filter{IDs: []string{"Q1"}}, true},
		{Filter{IDs: []string{"Q1-p"}}, true},
		{Filter{IDs: []string{"Q2"}}, false},
		{Filter{Domain: "EXAMPLE.com"}, true},
		{Filter{Domain: "example.org"}, false},
		{Filter{From: "app@corp"}, true},
		{Filter{Rcpt: "ops"}, true},
		{Filter{Rcpt: "dev"}, false},
		{Filter{OlderThan: time.Hour}, true},
		{Filter{OlderThan: 2 * time.Hour}, false},
	}
	for i, tc := range tests {
		if got := tc.f.Match(j, now); got != tc.want {
			t.Errorf("case %d %+v: %v", i, tc.f, got)
		}
	}
}

func TestSummary(t *testing.T) {
	var s Summary
	if s.String() != "queue is empty" {
		t.Fatal(s.String())
	}
	add := func(sched bool, rcpts ...string) {
		j := &contracts.Job{}
		for _, r := range rcpts {
			j.Rcpts = append(j.Rcpts, contracts.Recipient{Addr: r})
		}
		s.Add(&broker.QueuedJob{Scheduled: sched, Job: j})
	}
	add(false, "a@one.test")
	add(true, "b@two.test", "c@two.test")
	add(true, "d@Two.Test")
	out := s.String()
	if s.Jobs != 3 || s.Ready != 1 || s.Scheduled != 2 || s.Rcpts != 4 || !strings.Contains(out, "by domain: two.test=3 one.test=1") {
		t.Fatalf("%+v %q", s, out)
	}
}
