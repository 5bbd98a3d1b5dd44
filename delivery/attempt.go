package delivery

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
)

// group is one destination's share of an attempt: its recipients, what
// the transport reported, and the funnel's verdict for each recipient.
type group struct {
	dest     *Destination
	rcpts    []contracts.Recipient
	report   *Report
	verdicts []Verdict
	// postponed: the route's rate limit held the group back until then
	// (no report, no verdicts), for waitReason.
	postponed  time.Time
	waitReason string
}

// attempt delivers a job to each of its destinations, concurrently when
// there are several, and classifies every recipient's result.
func (w *Worker) attempt(ctx context.Context, l *broker.Lease) []*group {
	job := l.Job
	var groups []*group
	byKey := map[string]*group{}
	for _, r := range job.Rcpts {
		d := w.router.destinationFor(job, r.Domain())
		g, ok := byKey[d.Key]
		if !ok {
			g = &group{dest: d}
			byKey[d.Key] = g
			groups = append(groups, g)
		}
		g.rcpts = append(g.rcpts, r)
	}
	open := func() (io.ReadCloser, error) { return l.OpenBody(ctx) }
	run := func(g *group) {
		if g.dest.Limit.active() {
			release, wait, reason := w.admit(ctx, g)
			if !wait.IsZero() {
				g.postponed, g.waitReason = wait, reason
				return
			}
			defer release()
		}
		req := &Request{Job: job, Rcpts: g.rcpts, Dest: g.dest, Body: open}
		if from := masquerade(job.From, g.dest.Masquerade); from != job.From {
			// The envelope sender on the wire only: the job, its
			// bounces and its records keep the sender as received.
			mj := *job
			mj.From = from
			req.Job = &mj
		}
		g.report = w.transportFor(g.dest).Deliver(ctx, req)
		g.verdicts = make([]Verdict, len(g.rcpts))
		for i, res := range g.report.Results {
			g.verdicts[i] = classify(res, g.report.Host)
		}
		w.health.observe(g)
	}
	if len(groups) == 1 {
		run(groups[0])
		return groups
	}
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(g)
		}()
	}
	wg.Wait()
	return groups
}
