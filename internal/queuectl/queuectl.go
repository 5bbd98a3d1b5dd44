// Package queuectl is the operator's view of the live queue: list, show,
// retry now and delete jobs, like Postfix's mailq, postcat, postqueue -f
// and postsuper -d. It reads the queue streams without a consumer, so it
// is safe while the relay is serving, and finds a message's jobs by its
// queue ID without reading the rest of the queue.
//
// It changes nothing itself: retry and delete are the broker's lifecycle
// operations (broker.Client.RetryNow, DeleteJob), which keep the
// invariant that a delete moves a job to the dead letters (reason
// "deleted") before it leaves the queue, so a delete interrupted half-way
// leaves the message in one place or both, never in none; --purge drops it
// without a dead letter.
package queuectl

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/internal/filter"
)

// Entry is one job in the queue.
type Entry = broker.QueuedJob

// Queue is the live queue.
type Queue struct {
	b   *broker.Client
	now func() time.Time
}

// New returns the queue on a broker connection.
func New(b *broker.Client) *Queue { return &Queue{b: b, now: time.Now} }

// List calls fn for the matching jobs after the cursor `after` (0: from
// the start), at most limit (0: all). It returns the cursor of the next
// page (0 when there is none). A filter of queue IDs only is answered by
// looking the messages up. Payloads that do not decode are passed with
// Err set when no filter is given, skipped otherwise.
func (q *Queue) List(ctx context.Context, f filter.Filter, after uint64, limit int, fn func(*Entry) bool) (next uint64, err error) {
	n := 0
	now := q.now()
	last := after
	visit := func(e *Entry) bool {
		if e.Err != nil {
			if !f.Empty() {
				return true
			}
		} else if !f.MatchJob(e.Job, now) {
			return true
		}
		if limit > 0 && n == limit {
			next = last
			return false
		}
		n++
		last = e.Cursor
		return fn(e)
	}
	if qids, ok := f.QueueIDs(); ok && after == 0 {
		for _, id := range qids {
			if err := q.b.MessageJobs(ctx, id, visit); err != nil || next != 0 {
				return next, err
			}
		}
		if n > 0 {
			return 0, nil
		}
		// Nothing under those queue IDs: jobs queued before subjects
		// carried the queue ID are found by reading the whole queue.
	}
	err = q.b.ScanQueue(ctx, after, visit)
	return next, err
}

// Find returns the jobs ids name: exactly the jobs named, or, for an ID
// that names no job in the queue (one from an earlier attempt, say),
// every job of its message.
func (q *Queue) Find(ctx context.Context, ids []string) ([]*Entry, error) {
	return q.Select(ctx, filter.Filter{IDs: ids})
}

// Select returns the decodable jobs f selects; when f names records by
// ID and none is found, the messages those IDs belong to.
func (q *Queue) Select(ctx context.Context, f filter.Filter) ([]*Entry, error) {
	var found []*Entry
	collect := func(e *Entry) bool {
		if e.Err == nil {
			found = append(found, e)
		}
		return true
	}
	if _, err := q.List(ctx, f, 0, 0, collect); err != nil {
		return nil, err
	}
	if wide, changed := f.Widen(); len(found) == 0 && changed {
		if _, err := q.List(ctx, wide, 0, 0, collect); err != nil {
			return nil, err
		}
	}
	return found, nil
}

// Retry makes a scheduled retry due now (like postqueue -i). A job that
// is ready or being delivered is left alone; it reports whether it acted.
func (q *Queue) Retry(ctx context.Context, e *Entry) (bool, error) { return q.b.RetryNow(ctx, e) }

// Delete removes a job: to the dead letters with reason "deleted" unless
// purge (see the package doc). by names who asked, for the record. A job
// that a worker is delivering at this moment may still be delivered by
// that attempt.
func (q *Queue) Delete(ctx context.Context, e *Entry, purge bool, by string) error {
	return q.b.DeleteJob(ctx, e, purge, "deleted by operator"+by)
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
