package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/deadletter"
	"github.com/jetrelay/jetrelay/internal/queuectl"
	"github.com/spf13/cobra"
)

// A message as the operator sees it: everything jetrelay holds under one
// queue ID, its jobs in the queue and its dead letters, with the state of
// every recipient. `queue show` and `deadletter show` both print it.
type message struct {
	qid  string
	jobs []*queuectl.Entry
	dls  []*deadletter.Entry
}

// findMessages gathers the jobs and dead letters that ids name (exactly,
// or their messages when the named records are gone), grouped by message
// in the order given.
func findMessages(ctx context.Context, bc *broker.Client, ids []string) ([]*message, error) {
	jobs, err := queuectl.New(bc).Find(ctx, ids)
	if err != nil {
		return nil, err
	}
	dls, err := deadletter.NewStore(bc).Find(ctx, ids)
	if err != nil {
		return nil, err
	}
	var out []*message
	byID := map[string]*message{}
	get := func(qid string) *message {
		m, ok := byID[qid]
		if !ok {
			m = &message{qid: qid}
			byID[qid] = m
			out = append(out, m)
		}
		return m
	}
	for _, e := range jobs {
		m := get(e.Job.QueueID)
		m.jobs = append(m.jobs, e)
	}
	for _, e := range dls {
		m := get(e.DL.Job.QueueID)
		m.dls = append(m.dls, e)
	}
	return out, nil
}

// envelope is the message's envelope, from whichever record holds it.
func (m *message) envelope() *contracts.Job {
	if len(m.jobs) > 0 {
		return m.jobs[0].Job
	}
	return &m.dls[0].DL.Job
}

// openBody opens the message, from a job or else a dead letter.
func (m *message) openBody(ctx context.Context, bc *broker.Client) (io.ReadCloser, error) {
	if len(m.jobs) > 0 {
		return bc.OpenJobBody(ctx, m.jobs[0].Job, m.jobs[0].Inline)
	}
	return bc.OpenJobBody(ctx, &m.dls[0].DL.Job, m.dls[0].Inline)
}

// newShowCmd is `queue show` and `deadletter show`: the same view of a
// message, whichever way the operator came to it.
func newShowCmd(g *globals, short string) *cobra.Command {
	var raw, jsonOut bool
	cmd := &cobra.Command{
		Use:   "show ID...",
		Short: short,
		Long: `show prints everything jetrelay holds of a message: its envelope, the state of
every recipient (delivered, waiting for the next attempt, or dead-lettered,
with the last reply), its attempt history, its jobs in the queue and its
dead letters. ID is the queue ID from the "250 ... queued as" reply or any
log line; an ID of one job or dead letter (the queue ID with a suffix)
shows that record, or its message once the record is gone.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			ctx := cmd.Context()
			bc, _, err := g.adminConn(ctx)
			if err != nil {
				return err
			}
			defer bc.Close()
			msgs, err := findMessages(ctx, bc, ids)
			if err != nil {
				return err
			}
			if len(msgs) == 0 {
				return exitError{code: 1, msg: fmt.Sprintf("nothing of %s is queued or dead-lettered (delivered, purged, or never accepted)", strings.Join(ids, ", "))}
			}
			if raw {
				rc, err := msgs[0].openBody(ctx, bc)
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.Copy(g.stdout, rc)
				return err
			}
			now := time.Now()
			enc := json.NewEncoder(g.stdout)
			for i, m := range msgs {
				if jsonOut {
					for _, e := range m.jobs {
						_ = enc.Encode(jobJSON(e, now, true))
					}
					for _, e := range m.dls {
						_ = enc.Encode(deadLetterJSON(e, true))
					}
					continue
				}
				if i > 0 {
					fmt.Fprintln(g.stdout)
				}
				printMessage(g.stdout, m, now)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&raw, "raw", false, "print the stored message (with our Received header) byte for byte, like postcat")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "JSON Lines: the message's jobs and dead letters, with their histories")
	return cmd
}

// rcptState is one recipient's line in the view.
type rcptState struct {
	addr, state, attempt string
	reply                *contracts.Reply
}

func printMessage(w io.Writer, m *message, now time.Time) {
	j := m.envelope()
	fmt.Fprintf(w, "Queue ID:    %s\n", m.qid)
	fmt.Fprintf(w, "Received:    %s (%s ago) from %s [%s]", j.ReceivedAt.Local().Format(time.RFC3339), ago(j.ReceivedAt, now), orDash(j.Client.HELO), j.Client.Addr)
	if j.Client.AuthUser != "" {
		fmt.Fprintf(w, " user %s", j.Client.AuthUser)
	}
	fmt.Fprintf(w, "\nSender:      <%s>\n", j.From)
	where := "inline"
	if !j.Body.Inline() {
		where = "in the body store"
	}
	fmt.Fprintf(w, "Size:        %d bytes (%s)\n", j.Body.Size, where)
	replays, replayOf := 0, ""
	for _, r := range m.records() {
		if r.ReplayCount > replays {
			replays, replayOf = r.ReplayCount, r.ReplayOf
		}
	}
	if replays > 0 {
		fmt.Fprintf(w, "Replayed:    %d time(s), last from dead letter %s\n", replays, replayOf)
	}

	var rows []rcptState
	seen := map[string]bool{}
	add := func(r contracts.Recipient, state, attempt string) {
		if k := strings.ToLower(r.Addr); !seen[k] {
			seen[k] = true
			rows = append(rows, rcptState{addr: r.Addr, state: state, attempt: attempt, reply: r.LastReply})
		}
	}
	for _, e := range m.jobs {
		state := "ready (or being delivered)"
		switch {
		case e.Scheduled && e.Job.Waiting != "":
			state = e.Job.Waiting + ", next try " + ago(e.NextAt, now) + " (" + e.NextAt.Local().Format("15:04:05") + ")"
		case e.Scheduled:
			state = "scheduled, next attempt " + ago(e.NextAt, now) + " (" + e.NextAt.Local().Format("15:04:05") + ")"
		}
		for _, r := range e.Job.Rcpts {
			add(r, state, strconv.Itoa(e.Job.Attempt))
		}
	}
	for _, e := range m.dls {
		for _, r := range e.DL.Job.Rcpts {
			add(r, "dead-lettered "+ago(e.DL.DeadAt, now)+" ago ("+e.DL.Reason+")", strconv.Itoa(e.DL.Job.Attempt))
		}
	}
	for _, r := range m.records() {
		for _, d := range r.Done {
			add(d, "delivered", "-")
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RECIPIENT\tSTATE\tATTEMPT\tLAST REPLY")
	for _, r := range rows {
		reply := orDash(r.reply.String())
		if r.reply != nil && r.reply.Host != "" {
			reply += " (" + r.reply.Host + ")"
		}
		fmt.Fprintf(tw, "<%s>\t%s\t%s\t%s\n", r.addr, r.state, r.attempt, short(reply, 100))
	}
	_ = tw.Flush()

	if h := m.history(); len(h) > 0 {
		fmt.Fprintln(w, "\nHistory:")
		for _, a := range h {
			fmt.Fprintf(w, "  attempt %d at %s: %s via %s [%s] %s", a.Attempt, a.At.Local().Format(time.RFC3339), a.Result, orDash(a.Host), orDash(a.IP), a.Reply)
			if a.TLS != "" {
				fmt.Fprintf(w, " (%s)", a.TLS)
			}
			fmt.Fprintln(w)
		}
	}
	for _, e := range m.dls {
		fmt.Fprintf(w, "\nDead letter %s: %s: %s\n", e.DL.ID, e.DL.Reason, e.DL.Detail)
		for _, h := range e.DL.HostsTried {
			fmt.Fprintf(w, "  tried %s\n", h)
		}
	}
	if len(m.dls) > 0 {
		fmt.Fprintf(w, "\nTo send it again: jetrelay deadletter replay %s\n", m.qid)
	}
}

// records are the jobs of every record of the message.
func (m *message) records() []*contracts.Job {
	var out []*contracts.Job
	for _, e := range m.jobs {
		out = append(out, e.Job)
	}
	for _, e := range m.dls {
		out = append(out, &e.DL.Job)
	}
	return out
}

// history merges the attempt records of the message's records, oldest
// first, each attempt once.
func (m *message) history() []contracts.AttemptRecord {
	var out []contracts.AttemptRecord
	seen := map[string]bool{}
	for _, r := range m.records() {
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
