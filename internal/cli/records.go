package cli

import (
	"fmt"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/deadletter"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/filter"
	"github.com/jetrelay/jetrelay/internal/queuectl"
	"github.com/spf13/cobra"
)

// The --json forms of jobs and dead letters (JSON Lines, one object per
// line with a "type"). Field names are stable; README documents them.

// JobJSON is a job in the queue ("type": "job").
type JobJSON struct {
	Type        string                    `json:"type"` // "job"
	Seq         uint64                    `json:"seq"`  // the --after cursor
	QueueID     string                    `json:"queue_id"`
	Part        string                    `json:"part,omitempty"` // which job of the message ("" for the first; "…r1" after a replay)
	State       string                    `json:"state"`          // "ready" (or being delivered) or "scheduled"
	ReceivedAt  time.Time                 `json:"received_at"`
	AgeSeconds  int64                     `json:"age_seconds"`
	From        string                    `json:"from"`
	Rcpts       []RcptJSON                `json:"rcpts"`          // still to deliver, each with its last reply
	Done        []RcptJSON                `json:"done,omitempty"` // delivered by earlier attempts
	Size        int64                     `json:"size"`
	Attempt     int                       `json:"attempt"`
	NextAttempt *time.Time                `json:"next_attempt,omitempty"`
	LastError   string                    `json:"last_error,omitempty"`
	Waiting     string                    `json:"waiting,omitempty"` // why it waits without a failed attempt (a rate limit)
	ReplayOf    string                    `json:"replay_of,omitempty"`
	ReplayCount int                       `json:"replay_count,omitempty"`
	History     []contracts.AttemptRecord `json:"history,omitempty"` // queue show only
	Error       string                    `json:"error,omitempty"`   // the stored payload does not decode
}

// DeadLetterJSON is a dead letter ("type": "deadletter").
type DeadLetterJSON struct {
	Type        string                    `json:"type"` // "deadletter"
	Seq         uint64                    `json:"seq"`  // stream sequence; the --after cursor
	ID          string                    `json:"id"`   // this dead letter (starts with the queue ID)
	QueueID     string                    `json:"queue_id"`
	Part        string                    `json:"part,omitempty"`
	Reason      string                    `json:"reason"`
	Detail      string                    `json:"detail"`
	DeadAt      time.Time                 `json:"dead_at"`
	ReceivedAt  time.Time                 `json:"received_at"`
	From        string                    `json:"from"`
	Rcpts       []RcptJSON                `json:"rcpts"`
	Done        []RcptJSON                `json:"done,omitempty"`
	LastReply   string                    `json:"last_reply,omitempty"`
	HostsTried  []string                  `json:"hosts_tried,omitempty"`
	Attempts    int                       `json:"attempts"`
	Size        int64                     `json:"size"`
	ReplayOf    string                    `json:"replay_of,omitempty"`
	ReplayCount int                       `json:"replay_count,omitempty"`
	History     []contracts.AttemptRecord `json:"history,omitempty"` // deadletter show only
}

// RcptJSON is a recipient with its last reply.
type RcptJSON struct {
	Addr  string `json:"addr"`
	Reply string `json:"reply,omitempty"`
}

func rcptsJSON(rs []contracts.Recipient) []RcptJSON {
	if len(rs) == 0 {
		return nil
	}
	out := make([]RcptJSON, len(rs))
	for i, r := range rs {
		out[i] = RcptJSON{Addr: r.Addr, Reply: r.LastReply.String()}
	}
	return out
}

func jobJSON(e *queuectl.Entry, now time.Time, withHistory bool) JobJSON {
	j := JobJSON{Type: "job", Seq: e.Cursor, State: "ready"}
	if e.Scheduled {
		j.State = "scheduled"
		if !e.NextAt.IsZero() {
			t := e.NextAt
			j.NextAttempt = &t
		}
	}
	if e.Err != nil {
		j.Error = e.Err.Error()
		return j
	}
	job := e.Job
	j.QueueID, j.Part, j.ReceivedAt = job.QueueID, job.Part, job.ReceivedAt
	j.AgeSeconds = int64(now.Sub(job.ReceivedAt).Seconds())
	j.From, j.Size, j.Attempt, j.ReplayOf, j.ReplayCount = job.From, job.Body.Size, job.Attempt, job.ReplayOf, job.ReplayCount
	j.Rcpts = rcptsJSON(job.Rcpts)
	if j.Rcpts == nil {
		j.Rcpts = []RcptJSON{}
	}
	j.Done = rcptsJSON(job.Done)
	j.LastError = job.LastError.String()
	j.Waiting = job.Waiting
	if withHistory {
		j.History = job.History
	}
	return j
}

func deadLetterJSON(e *deadletter.Entry, withHistory bool) DeadLetterJSON {
	d := e.DL
	j := DeadLetterJSON{
		Type: "deadletter", Seq: e.Seq, ID: d.ID, QueueID: d.Job.QueueID, Part: d.Job.Part, Reason: d.Reason,
		Detail: d.Detail, DeadAt: d.DeadAt, ReceivedAt: d.Job.ReceivedAt, From: d.Job.From,
		Rcpts: rcptsJSON(d.Job.Rcpts), Done: rcptsJSON(d.Job.Done),
		LastReply: d.LastReply.String(), HostsTried: d.HostsTried, Attempts: d.Job.Attempt, Size: d.Job.Body.Size,
		ReplayOf: d.Job.ReplayOf, ReplayCount: d.Job.ReplayCount,
	}
	if j.Rcpts == nil {
		j.Rcpts = []RcptJSON{}
	}
	if withHistory {
		j.History = d.Job.History
	}
	return j
}

// filterFlags are the selection flags of every queue and dead-letter
// command: one filter type (internal/filter) for both.
type filterFlags struct {
	domain, from, rcpt, olderThan, reason, since, until string
}

// add registers the flags; dead says whether the records are dead
// letters (whose time is when they were given up on) or jobs (whose time
// is when the message was received).
func (f *filterFlags) add(cmd *cobra.Command, dead bool) {
	noun, when, reason := "jobs", "received", "whose last error contains this"
	if dead {
		noun, when, reason = "dead letters", "given up on", "whose reason, detail or last reply contains this"
	}
	fl := cmd.Flags()
	fl.StringVar(&f.domain, "domain", "", "only "+noun+" with a recipient in this domain")
	fl.StringVar(&f.from, "from", "", "only "+noun+" whose sender contains this")
	fl.StringVar(&f.rcpt, "rcpt", "", "only "+noun+" with a recipient containing this")
	fl.StringVar(&f.olderThan, "older-than", "", "only "+noun+" "+when+" longer ago than this (e.g. 2h, 7d)")
	fl.StringVar(&f.reason, "reason-contains", "", "only "+noun+" "+reason)
	fl.StringVar(&f.since, "since", "", "only "+noun+" "+when+" since this time (RFC 3339, a date, or a duration ago such as 2h)")
	fl.StringVar(&f.until, "until", "", "only "+noun+" "+when+" before this time (same forms)")
}

func (f *filterFlags) set() bool {
	return f.domain != "" || f.from != "" || f.rcpt != "" || f.olderThan != "" || f.reason != "" || f.since != "" || f.until != ""
}

func (f *filterFlags) filter(ids []string) (filter.Filter, error) {
	now := time.Now()
	ff := filter.Filter{IDs: ids, Domain: f.domain, From: f.from, Rcpt: f.rcpt, ReasonContains: f.reason}
	var err error
	if f.olderThan != "" {
		d, err := config.ParseDuration(f.olderThan)
		if err != nil {
			return ff, fmt.Errorf("--older-than: %w", err)
		}
		ff.OlderThan = d.D()
	}
	if ff.Since, err = parseSince(f.since, now); err != nil {
		return ff, fmt.Errorf("--since: %w", err)
	}
	if ff.Until, err = parseSince(f.until, now); err != nil {
		return ff, fmt.Errorf("--until: %w", err)
	}
	return ff, nil
}
