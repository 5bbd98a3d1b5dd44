package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/queuectl"
	"github.com/spf13/cobra"
)

// JobJSON is the --json form of a queued job (one object per line, "type":
// "job"). Field names are stable.
type JobJSON struct {
	Type        string                    `json:"type"` // "job"
	Seq         uint64                    `json:"seq"`  // the --after cursor
	QueueID     string                    `json:"queue_id"`
	JobID       string                    `json:"job_id"`
	State       string                    `json:"state"` // "ready" (or being delivered) or "scheduled"
	ReceivedAt  time.Time                 `json:"received_at"`
	AgeSeconds  int64                     `json:"age_seconds"`
	From        string                    `json:"from"`
	Rcpts       []string                  `json:"rcpts"`
	Size        int64                     `json:"size"`
	Attempt     int                       `json:"attempt"`
	NextAttempt *time.Time                `json:"next_attempt,omitempty"`
	LastError   string                    `json:"last_error,omitempty"`
	ReplayOf    string                    `json:"replay_of,omitempty"`
	History     []contracts.AttemptRecord `json:"history,omitempty"` // queue show only
	Error       string                    `json:"error,omitempty"`   // the stored payload does not decode
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
	j.QueueID, j.JobID, j.ReceivedAt = job.QueueID, job.JobID(), job.ReceivedAt
	j.AgeSeconds = int64(now.Sub(job.ReceivedAt).Seconds())
	j.From, j.Size, j.Attempt, j.ReplayOf = job.From, job.Body.Size, job.Attempt, job.ReplayOf
	for _, r := range job.Rcpts {
		j.Rcpts = append(j.Rcpts, r.Addr)
	}
	j.LastError = job.LastError.String()
	if withHistory {
		j.History = job.History
	}
	return j
}

type queueFilterFlags struct {
	domain, from, rcpt, olderThan string
}

func (f *queueFilterFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.domain, "domain", "", "only jobs with a recipient in this domain")
	cmd.Flags().StringVar(&f.from, "from", "", "only jobs whose sender contains this")
	cmd.Flags().StringVar(&f.rcpt, "rcpt", "", "only jobs with a recipient containing this")
	cmd.Flags().StringVar(&f.olderThan, "older-than", "", "only jobs received longer ago than this (e.g. 2h, 3d)")
}

func (f *queueFilterFlags) filter(ids []string) (queuectl.Filter, error) {
	qf := queuectl.Filter{IDs: ids, Domain: f.domain, From: f.from, Rcpt: f.rcpt}
	if f.olderThan != "" {
		d, err := config.ParseDuration(f.olderThan)
		if err != nil {
			return qf, fmt.Errorf("--older-than: %w", err)
		}
		qf.OlderThan = d.D()
	}
	return qf, nil
}

func (f *queueFilterFlags) set() bool {
	return f.domain != "" || f.from != "" || f.rcpt != "" || f.olderThan != ""
}

func newQueueCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "Inspect and control the live queue (mailq, postcat, postqueue -f, postsuper -d)",
	}
	cmd.AddCommand(newQueueListCmd(g), newQueueShowCmd(g), newQueueRetryCmd(g), newQueueDeleteCmd(g), newQueueReshardCmd(g))
	return cmd
}

func newQueueListCmd(g *globals) *cobra.Command {
	var lf listFlags
	var ff queueFilterFlags
	cmd := &cobra.Command{
		Use:   "list [ID...]",
		Short: "List pending and scheduled jobs, with a summary by domain",
		RunE: func(cmd *cobra.Command, ids []string) error {
			ctx := cmd.Context()
			bc, _, err := g.adminConn(ctx)
			if err != nil {
				return err
			}
			defer bc.Close()
			f, err := ff.filter(ids)
			if err != nil {
				return err
			}
			now := time.Now()
			out := newOutput(g.stdout, lf.json, "QUEUE ID\tJOB\tSTATE\tAGE\tATTEMPT\tNEXT\tFROM\tRECIPIENTS\tLAST ERROR")
			var sum queuectl.Summary
			next, err := queuectl.New(bc).List(ctx, f, lf.after, lf.limit, func(e *queuectl.Entry) bool {
				sum.Add(e)
				j := jobJSON(e, now, false)
				if e.Err != nil {
					out.row(j, "?", "-", j.State, "-", "-", "-", "-", "-", "undecodable: "+short(j.Error, 60))
					return true
				}
				next := "-"
				if j.NextAttempt != nil {
					next = ago(*j.NextAttempt, now)
				}
				out.row(j, j.QueueID, strings.TrimPrefix(strings.TrimPrefix(j.JobID, j.QueueID), "-"), j.State,
					ago(j.ReceivedAt, now), strconv.Itoa(j.Attempt), next, orDash(j.From), rcptList(e.Job.Rcpts),
					orDash(short(j.LastError, 70)))
				return true
			})
			if err != nil {
				return err
			}
			out.flush()
			if lf.json {
				if sum.ByDomain == nil {
					sum.ByDomain = map[string]int{}
				}
				_ = out.enc.Encode(struct {
					Type string `json:"type"`
					queuectl.Summary
				}{"summary", sum})
			} else {
				fmt.Fprintln(g.stdout, sum.String())
			}
			out.more(next, "jobs")
			return nil
		},
	}
	lf.add(cmd)
	ff.add(cmd)
	return cmd
}

// findJobs lists the jobs an ID (queue ID or job ID) names.
func findJobs(ctx context.Context, q *queuectl.Queue, f queuectl.Filter) ([]*queuectl.Entry, error) {
	var out []*queuectl.Entry
	_, err := q.List(ctx, f, 0, 0, func(e *queuectl.Entry) bool {
		if e.Err == nil {
			out = append(out, e)
		}
		return true
	})
	return out, err
}

func newQueueShowCmd(g *globals) *cobra.Command {
	var raw, jsonOut bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a job's envelope and attempt history; --raw prints the message byte for byte",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			bc, _, err := g.adminConn(ctx)
			if err != nil {
				return err
			}
			defer bc.Close()
			jobs, err := findJobs(ctx, queuectl.New(bc), queuectl.Filter{IDs: args})
			if err != nil {
				return err
			}
			if len(jobs) == 0 {
				return exitError{code: 1, msg: fmt.Sprintf("no job %s in the queue (delivered, or dead-lettered: try `jetrelay deadletter show %s`)", args[0], args[0])}
			}
			if raw {
				e := jobs[0]
				return copyBody(ctx, g.stdout, bc, e.Job, e.Inline)
			}
			now := time.Now()
			for _, e := range jobs {
				j := jobJSON(e, now, true)
				if jsonOut {
					_ = json.NewEncoder(g.stdout).Encode(j)
					continue
				}
				printJob(g.stdout, e, now)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&raw, "raw", false, "print the stored message (with our Received header) exactly as it will be sent")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "JSON, one object per job")
	return cmd
}

func printJob(w io.Writer, e *queuectl.Entry, now time.Time) {
	j := e.Job
	state := "ready (or being delivered)"
	if e.Scheduled {
		state = "scheduled, next attempt " + e.NextAt.Local().Format(time.RFC3339) + " (" + ago(e.NextAt, now) + ")"
	}
	fmt.Fprintf(w, "Queue ID:    %s\nJob:         %s\nState:       %s\n", j.QueueID, j.JobID(), state)
	printEnvelope(w, j, now)
}

// printEnvelope shows a job's envelope, body location and history.
func printEnvelope(w io.Writer, j *contracts.Job, now time.Time) {
	fmt.Fprintf(w, "Received:    %s (%s ago) from %s [%s]", j.ReceivedAt.Local().Format(time.RFC3339), ago(j.ReceivedAt, now), orDash(j.Client.HELO), j.Client.Addr)
	if j.Client.AuthUser != "" {
		fmt.Fprintf(w, " user %s", j.Client.AuthUser)
	}
	fmt.Fprintf(w, "\nSender:      <%s>\n", j.From)
	for _, r := range j.Rcpts {
		fmt.Fprintf(w, "Recipient:   <%s>", r.Addr)
		if r.LastReply != nil {
			fmt.Fprintf(w, "  last: %s", r.LastReply)
		}
		fmt.Fprintln(w)
	}
	where := "inline"
	if !j.Body.Inline() {
		where = "object " + j.Body.Object
	}
	fmt.Fprintf(w, "Size:        %d bytes (%s)\nAttempt:     %d\n", j.Body.Size, where, j.Attempt)
	if j.ReplayOf != "" {
		fmt.Fprintf(w, "Replay of:   %s (replay %d)\n", j.ReplayOf, j.ReplayCount)
	}
	if j.LastError != nil {
		fmt.Fprintf(w, "Last error:  %s\n", j.LastError)
	}
	for _, h := range j.History {
		fmt.Fprintf(w, "  attempt %d at %s: %s via %s [%s] %s", h.Attempt, h.At.Local().Format(time.RFC3339), h.Result, orDash(h.Host), orDash(h.IP), h.Reply)
		if h.TLS != "" {
			fmt.Fprintf(w, " (%s)", h.TLS)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

// copyBody writes a stored message to w, byte for byte.
func copyBody(ctx context.Context, w io.Writer, bc *broker.Client, j *contracts.Job, inline []byte) error {
	if j.Body.Inline() {
		_, err := w.Write(inline)
		return err
	}
	rc, err := bc.OpenBody(ctx, j.Body.Object)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(w, rc)
	return err
}

func newQueueRetryCmd(g *globals) *cobra.Command {
	var all bool
	var domain string
	cmd := &cobra.Command{
		Use:   "retry ID...|--all|--domain D",
		Short: "Attempt scheduled jobs now (postqueue -f / -s)",
		RunE: func(cmd *cobra.Command, ids []string) error {
			if len(ids) == 0 && !all && domain == "" {
				return fmt.Errorf("name jobs, or use --all or --domain")
			}
			ctx := cmd.Context()
			bc, _, err := g.adminConn(ctx)
			if err != nil {
				return err
			}
			defer bc.Close()
			q := queuectl.New(bc)
			jobs, err := findJobs(ctx, q, queuectl.Filter{IDs: ids, Domain: domain})
			if err != nil {
				return err
			}
			n := 0
			for _, e := range jobs {
				acted, err := q.Retry(ctx, e)
				if err != nil {
					return err
				}
				if acted {
					n++
				}
			}
			fmt.Fprintf(g.stderr, "%d scheduled job(s) due now; %d already ready or in flight\n", n, len(jobs)-n)
			if len(ids) > 0 && len(jobs) == 0 {
				return exitError{code: 1, msg: "no such job in the queue"}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "every scheduled job")
	cmd.Flags().StringVar(&domain, "domain", "", "the scheduled jobs with a recipient in this domain")
	return cmd
}

func newQueueDeleteCmd(g *globals) *cobra.Command {
	var ff queueFilterFlags
	var all, purge bool
	cmd := &cobra.Command{
		Use:   "delete ID...|filters|--all",
		Short: "Move jobs to the dead letters (reason \"deleted\"), or drop them with --purge (postsuper -d)",
		RunE: func(cmd *cobra.Command, ids []string) error {
			if len(ids) == 0 && !ff.set() && !all {
				return fmt.Errorf("name jobs, give a filter, or use --all")
			}
			ctx := cmd.Context()
			bc, _, err := g.adminConn(ctx)
			if err != nil {
				return err
			}
			defer bc.Close()
			f, err := ff.filter(ids)
			if err != nil {
				return err
			}
			q := queuectl.New(bc)
			jobs, err := findJobs(ctx, q, f)
			if err != nil {
				return err
			}
			for _, e := range jobs {
				if err := q.Delete(ctx, e, purge, ""); err != nil {
					return fmt.Errorf("%s: %w", e.Job.JobID(), err)
				}
				verb := "moved to dead letters"
				if purge {
					verb = "purged"
				}
				fmt.Fprintf(g.stdout, "%s %s\n", e.Job.JobID(), verb)
			}
			if len(jobs) == 0 {
				return exitError{code: 1, msg: "no matching job in the queue"}
			}
			return nil
		},
	}
	ff.add(cmd)
	cmd.Flags().BoolVar(&all, "all", false, "every job in the queue")
	cmd.Flags().BoolVar(&purge, "purge", false, "drop the jobs outright, without a dead letter")
	return cmd
}

func newQueueReshardCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "reshard N",
		Short: "Change the number of queue streams (broker.queue_shards) of an empty, stopped relay",
		Long: `reshard changes how many streams the live queue is spread over. Every
ingress and delivery process must be stopped and the queue empty (the
broker's own process, or jetrelay broker nodes, keep running); reshard
refuses while jobs are queued or a delivery worker is attached. Then set
broker.queue_shards: N in every process's configuration and start them:
a process with another value refuses to start.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 || n > 32 {
				return fmt.Errorf("N must be a number from 1 to 32")
			}
			ctx := cmd.Context()
			bc, cfg, err := g.adminConn(ctx)
			if err != nil {
				return err
			}
			defer bc.Close()
			from := bc.Shards()
			set := app.BrokerSettings(cfg)
			set.QueueShards = n
			if err := bc.Reshard(ctx, set); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "the queue now has %d shards (was %d)\n", n, from)
			if cfg.Broker.QueueShards != n {
				fmt.Fprintf(g.stderr, "set broker.queue_shards: %d in every process's configuration before starting them\n", n)
			}
			return nil
		},
	}
}

var errNoSelection = errors.New("name entries, give a filter, or use --all")
