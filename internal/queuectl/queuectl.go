// Package queuectl is the operator's view of the live queue: list, show,
// retry now and delete jobs, like Postfix's mailq, postcat, postqueue -f
// and postsuper -d. It reads the queue stream without a consumer, so it is
// safe while the relay is serving.
//
// Invariant: delete moves a job to the dead letters (reason "deleted")
// before removing it from the queue, so a delete interrupted half-way
// leaves the message in one place or both, never in none; --purge drops
// it without a dead letter.
package queuectl

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/deadletter"
)

// Filter selects jobs. Empty fields match everything.
type Filter struct {
	IDs       []string      // queue IDs or job IDs
	Domain    string        // a recipient's domain, exactly (case-insensitive)
	From      string        // substring of the sender (case-insensitive)
	Rcpt      string        // substring of a recipient (case-insensitive)
	OlderThan time.Duration // received longer ago than this
}

func (f Filter) empty() bool {
	return len(f.IDs) == 0 && f.Domain == "" && f.From == "" && f.Rcpt == "" && f.OlderThan == 0
}

// Match reports whether a job passes the filter at time now.
func (f Filter) Match(j *contracts.Job, now time.Time) bool {
	if len(f.IDs) > 0 {
		ok := false
		for _, id := range f.IDs {
			if id == j.QueueID || id == j.JobID() {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if f.Domain != "" {
		ok := false
		for _, r := range j.Rcpts {
			ok = ok || strings.EqualFold(r.Domain(), f.Domain)
		}
		if !ok {
			return false
		}
	}
	if f.From != "" && !strings.Contains(strings.ToLower(j.From), strings.ToLower(f.From)) {
		return false
	}
	if f.Rcpt != "" {
		ok := false
		for _, r := range j.Rcpts {
			ok = ok || strings.Contains(strings.ToLower(r.Addr), strings.ToLower(f.Rcpt))
		}
		if !ok {
			return false
		}
	}
	if f.OlderThan > 0 && now.Sub(j.ReceivedAt) < f.OlderThan {
		return false
	}
	return true
}

// Entry is one job in the queue.
type Entry = broker.QueuedJob

// Queue is the live queue.
type Queue struct {
	b   *broker.Client
	dl  *deadletter.Writer
	now func() time.Time
}

// New returns the queue on a broker connection.
func New(b *broker.Client) *Queue { return &Queue{b: b, dl: deadletter.NewWriter(b), now: time.Now} }

// List calls fn for the matching jobs after the cursor `after` (0: from
// the start), at most limit (0: all). It returns the cursor of the next
// page (0 when there is none). Payloads that do not decode are passed with
// Err set when no filter is given, skipped otherwise.
func (q *Queue) List(ctx context.Context, f Filter, after uint64, limit int, fn func(*Entry) bool) (next uint64, err error) {
	n := 0
	now := q.now()
	err = q.b.ScanQueue(ctx, after, func(e *Entry) bool {
		if e.Err != nil {
			if !f.empty() {
				return true
			}
		} else if !f.Match(e.Job, now) {
			return true
		}
		if limit > 0 && n == limit {
			next = after
			return false
		}
		n++
		after = e.Cursor
		return fn(e)
	})
	return next, err
}

// Retry makes a scheduled retry due now (like postqueue -i). A job that
// is ready or being delivered is left alone; it reports whether it acted.
func (q *Queue) Retry(ctx context.Context, e *Entry) (bool, error) {
	if !e.Scheduled || e.Job == nil {
		return false, nil
	}
	return true, q.b.RescheduleJob(ctx, e.Job, e.Inline, q.now())
}

// Delete removes a job. Without purge it first becomes a dead letter with
// reason "deleted" (keeping its body); with purge it is dropped, and its
// body with it when nothing else holds it. A job that a worker is
// delivering at this moment may still be delivered by that attempt.
func (q *Queue) Delete(ctx context.Context, e *Entry, purge bool, by string) error {
	if e.Job == nil {
		return q.b.DeleteQueueMsg(ctx, e.Shard, e.Seq)
	}
	j := e.Job
	if !purge {
		d := &contracts.DeadLetter{
			ID:        contracts.DeletedID(j.JobID(), j.Attempt),
			Reason:    contracts.ReasonDeleted,
			Detail:    "deleted by operator" + by,
			DeadAt:    q.now().UTC(),
			LastReply: j.LastError,
			Job:       *j,
		}
		d.Job.Version = 0
		if !j.Body.Inline() {
			if _, _, err := q.b.UpdateBodyRefs(ctx, j.Body.Object, nil, []string{deadletter.Holder(d.ID)}); err != nil {
				return err
			}
		}
		if err := q.dl.Write(ctx, d, e.Inline); err != nil {
			return err
		}
	}
	var err error
	if e.Scheduled {
		err = q.b.PurgeQueueSubject(ctx, e.Subject)
	} else {
		err = q.b.DeleteQueueMsg(ctx, e.Shard, e.Seq)
	}
	if err != nil {
		return err
	}
	if !j.Body.Inline() {
		left, _, err := q.b.UpdateBodyRefs(ctx, j.Body.Object, []string{j.JobID()}, nil)
		if err != nil {
			return err
		}
		if left == 0 {
			return q.b.ReleaseBody(ctx, j.Body.Object)
		}
	}
	return nil
}

// Summary counts jobs by recipient domain, like qshape at a glance.
type Summary struct {
	Jobs      int            `json:"jobs"`
	Ready     int            `json:"ready"`
	Scheduled int            `json:"scheduled"`
	Rcpts     int            `json:"rcpts"`
	ByDomain  map[string]int `json:"by_domain"` // recipients per domain
}

// Add counts one job.
func (s *Summary) Add(e *Entry) {
	if s.ByDomain == nil {
		s.ByDomain = map[string]int{}
	}
	s.Jobs++
	if e.Scheduled {
		s.Scheduled++
	} else {
		s.Ready++
	}
	if e.Job == nil {
		return
	}
	for _, r := range e.Job.Rcpts {
		s.Rcpts++
		s.ByDomain[strings.ToLower(r.Domain())]++
	}
}

// String renders the summary on one line.
func (s *Summary) String() string {
	if s.Jobs == 0 {
		return "queue is empty"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d job(s), %d ready/in flight, %d scheduled, %d recipient(s)", s.Jobs, s.Ready, s.Scheduled, s.Rcpts)
	doms := topDomains(s.ByDomain, 10)
	if len(doms) > 0 {
		b.WriteString(" — by domain:")
		for _, d := range doms {
			fmt.Fprintf(&b, " %s=%d", d, s.ByDomain[d])
		}
		if len(s.ByDomain) > len(doms) {
			fmt.Fprintf(&b, " (+%d more)", len(s.ByDomain)-len(doms))
		}
	}
	return b.String()
}

func topDomains(m map[string]int, n int) []string {
	out := make([]string, 0, len(m))
	for d := range m {
		out = append(out, d)
	}
	sort.Slice(out, func(i, k int) bool {
		if m[out[i]] != m[out[k]] {
			return m[out[i]] > m[out[k]]
		}
		return out[i] < out[k]
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}
