package queuectl

import (
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
)

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
