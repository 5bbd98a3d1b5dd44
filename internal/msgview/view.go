// Package msgview is the one model of a message as the operator sees it,
// shared by the command line (`queue show`, `deadletter show`,
// `send --wait`) and the browser console: everything jetrelay holds under
// one queue ID — its jobs in the queue, its dead letters, the outcome
// records of its delivered recipients — and where each recipient stands.
//
// It only reads: every change goes through internal/queuectl and
// deadletter, which go through the broker's lifecycle operations.
package msgview

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/deadletter"
	"github.com/jetrelay/jetrelay/internal/queuectl"
)

// Message is everything jetrelay holds under one queue ID: its jobs in the
// queue and its dead letters.
type Message struct {
	QueueID string
	Jobs    []*queuectl.Entry
	DLs     []*deadletter.Entry
}

// Find gathers the jobs and dead letters that ids name (exactly, or their
// messages when the named records are gone), grouped by message in the
// order given.
func Find(ctx context.Context, bc *broker.Client, ids []string) ([]*Message, error) {
	jobs, err := queuectl.New(bc).Find(ctx, ids)
	if err != nil {
		return nil, err
	}
	dls, err := deadletter.NewStore(bc).Find(ctx, ids)
	if err != nil {
		return nil, err
	}
	var out []*Message
	byID := map[string]*Message{}
	get := func(qid string) *Message {
		m, ok := byID[qid]
		if !ok {
			m = &Message{QueueID: qid}
			byID[qid] = m
			out = append(out, m)
		}
		return m
	}
	for _, e := range jobs {
		m := get(e.Job.QueueID)
		m.Jobs = append(m.Jobs, e)
	}
	for _, e := range dls {
		m := get(e.DL.Job.QueueID)
		m.DLs = append(m.DLs, e)
	}
	return out, nil
}

// Envelope is the message's envelope, from whichever record holds it.
func (m *Message) Envelope() *contracts.Job {
	if len(m.Jobs) > 0 {
		return m.Jobs[0].Job
	}
	return &m.DLs[0].DL.Job
}

// OpenBody opens the message, from a job or else a dead letter.
func (m *Message) OpenBody(ctx context.Context, bc *broker.Client) (io.ReadCloser, error) {
	if len(m.Jobs) > 0 {
		return bc.OpenJobBody(ctx, m.Jobs[0].Job, m.Jobs[0].Inline)
	}
	return bc.OpenJobBody(ctx, &m.DLs[0].DL.Job, m.DLs[0].Inline)
}

// Records are the jobs of every record of the message.
func (m *Message) Records() []*contracts.Job {
	var out []*contracts.Job
	for _, e := range m.Jobs {
		out = append(out, e.Job)
	}
	for _, e := range m.DLs {
		out = append(out, &e.DL.Job)
	}
	return out
}

// Replays is how often the message was replayed, and from which dead
// letter the last time.
func (m *Message) Replays() (int, string) {
	n, of := 0, ""
	for _, r := range m.Records() {
		if r.ReplayCount > n {
			n, of = r.ReplayCount, r.ReplayOf
		}
	}
	return n, of
}

// History merges the attempt records of the message's records, oldest
// first, each attempt once.
func (m *Message) History() []contracts.AttemptRecord {
	var out []contracts.AttemptRecord
	seen := map[string]bool{}
	for _, r := range m.Records() {
		for _, a := range r.History {
			k := fmt.Sprintf("%d/%d/%s", a.Attempt, a.At.UnixNano(), a.Host)
			if !seen[k] {
				seen[k] = true
				out = append(out, a)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b contracts.AttemptRecord) int { return a.At.Compare(b.At) })
	return out
}

// RcptState is one recipient's line in the view.
type RcptState struct {
	Addr, State, Attempt string
	Reply                *contracts.Reply
}

// Recipients says where each recipient stands at now: waiting in the
// queue (ready, scheduled, held back by a rate limit), dead-lettered, or
// delivered (in an earlier attempt of a job still held), each once.
func (m *Message) Recipients(now time.Time) []RcptState {
	var rows []RcptState
	seen := map[string]bool{}
	add := func(r contracts.Recipient, state, attempt string) {
		if k := strings.ToLower(r.Addr); !seen[k] {
			seen[k] = true
			rows = append(rows, RcptState{Addr: r.Addr, State: state, Attempt: attempt, Reply: r.LastReply})
		}
	}
	for _, e := range m.Jobs {
		state := "ready (or being delivered)"
		switch {
		case e.Scheduled && e.Job.Waiting != "":
			state = e.Job.Waiting + ", next try " + Ago(e.NextAt, now) + " (" + e.NextAt.Local().Format("15:04:05") + ")"
		case e.Scheduled:
			state = "scheduled, next attempt " + Ago(e.NextAt, now) + " (" + e.NextAt.Local().Format("15:04:05") + ")"
		}
		for _, r := range e.Job.Rcpts {
			add(r, state, strconv.Itoa(e.Job.Attempt))
		}
	}
	for _, e := range m.DLs {
		for _, r := range e.DL.Job.Rcpts {
			add(r, "dead-lettered "+Ago(e.DL.DeadAt, now)+" ago ("+e.DL.Reason+")", strconv.Itoa(e.DL.Job.Attempt))
		}
	}
	for _, r := range m.Records() {
		for _, d := range r.Done {
			add(d, "delivered", "-")
		}
	}
	return rows
}

// Ago is a short duration from t to now ("45s", "12m", "3h05m", "2d04h"),
// "in …" for a time still to come, "-" for none.
func Ago(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		s = fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		s = fmt.Sprintf("%dd%02dh", int(d.Hours()/24), int(d.Hours())%24)
	}
	if neg {
		return "in " + s
	}
	return s
}
