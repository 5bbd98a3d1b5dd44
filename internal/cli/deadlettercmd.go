package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/deadletter"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/spf13/cobra"
	"golang.org/x/time/rate"
)

// DeadLetterJSON is the --json form of a dead letter (one object per line,
// "type": "deadletter"). Field names are stable.
type DeadLetterJSON struct {
	Type        string                    `json:"type"` // "deadletter"
	Seq         uint64                    `json:"seq"`  // stream sequence; the --after cursor
	ID          string                    `json:"id"`
	QueueID     string                    `json:"queue_id"`
	JobID       string                    `json:"job_id"`
	Reason      string                    `json:"reason"`
	Detail      string                    `json:"detail"`
	DeadAt      time.Time                 `json:"dead_at"`
	ReceivedAt  time.Time                 `json:"received_at"`
	From        string                    `json:"from"`
	Rcpts       []RcptJSON                `json:"rcpts"`
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

func deadLetterJSON(e *deadletter.Entry, withHistory bool) DeadLetterJSON {
	d := e.DL
	j := DeadLetterJSON{
		Type: "deadletter", Seq: e.Seq, ID: d.ID, QueueID: d.Job.QueueID, JobID: d.Job.JobID(), Reason: d.Reason,
		Detail: d.Detail, DeadAt: d.DeadAt, ReceivedAt: d.Job.ReceivedAt, From: d.Job.From,
		LastReply: d.LastReply.String(), HostsTried: d.HostsTried, Attempts: d.Job.Attempt, Size: d.Job.Body.Size,
		ReplayOf: d.Job.ReplayOf, ReplayCount: d.Job.ReplayCount,
	}
	for _, r := range d.Job.Rcpts {
		j.Rcpts = append(j.Rcpts, RcptJSON{Addr: r.Addr, Reply: r.LastReply.String()})
	}
	if withHistory {
		j.History = d.Job.History
	}
	return j
}

type dlFilterFlags struct {
	queueFilterFlags
	reason, since, until string
}

func (f *dlFilterFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.domain, "domain", "", "only dead letters with a recipient in this domain")
	cmd.Flags().StringVar(&f.from, "from", "", "only dead letters whose sender contains this")
	cmd.Flags().StringVar(&f.rcpt, "rcpt", "", "only dead letters with a recipient containing this")
	cmd.Flags().StringVar(&f.olderThan, "older-than", "", "only dead letters older than this (e.g. 7d)")
	cmd.Flags().StringVar(&f.reason, "reason-contains", "", "only dead letters whose reason, detail or last reply contains this")
	cmd.Flags().StringVar(&f.since, "since", "", "only dead letters since this time (RFC 3339, a date, or a duration ago such as 2h)")
	cmd.Flags().StringVar(&f.until, "until", "", "only dead letters before this time (same forms)")
}

func (f *dlFilterFlags) set() bool {
	return f.queueFilterFlags.set() || f.reason != "" || f.since != "" || f.until != ""
}

func (f *dlFilterFlags) filter(ids []string) (deadletter.Filter, error) {
	now := time.Now()
	df := deadletter.Filter{IDs: ids, Domain: f.domain, From: f.from, Rcpt: f.rcpt, ReasonContains: f.reason}
	var err error
	if f.olderThan != "" {
		d, err := config.ParseDuration(f.olderThan)
		if err != nil {
			return df, fmt.Errorf("--older-than: %w", err)
		}
		df.OlderThan = d.D()
	}
	if df.Since, err = parseSince(f.since, now); err != nil {
		return df, fmt.Errorf("--since: %w", err)
	}
	if df.Until, err = parseSince(f.until, now); err != nil {
		return df, fmt.Errorf("--until: %w", err)
	}
	return df, nil
}

func newDeadLetterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "deadletter",
		Aliases: []string{"dlq"},
		Short:   "Inspect, replay and purge the dead letters (the Queue folder)",
	}
	cmd.AddCommand(newDLListCmd(g), newDLShowCmd(g), newDLReplayCmd(g), newDLPurgeCmd(g))
	return cmd
}

func newDLListCmd(g *globals) *cobra.Command {
	var lf listFlags
	var ff dlFilterFlags
	cmd := &cobra.Command{
		Use:   "list [ID...]",
		Short: "List dead letters",
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
			out := newOutput(g.stdout, lf.json, "ID\tDEAD\tREASON\tFROM\tRECIPIENTS\tLAST REPLY")
			n := 0
			next, err := deadletter.NewStore(bc).List(ctx, f, lf.after, lf.limit, func(e *deadletter.Entry) bool {
				n++
				j := deadLetterJSON(e, false)
				out.row(j, j.ID, ago(j.DeadAt, now), j.Reason, orDash(j.From), rcptList(e.DL.Job.Rcpts), orDash(short(j.LastReply, 70)))
				return true
			})
			if err != nil {
				return err
			}
			out.flush()
			if !lf.json {
				fmt.Fprintf(g.stdout, "%d dead letter(s)\n", n)
			}
			out.more(next, "dead letters")
			return nil
		},
	}
	lf.add(cmd)
	ff.add(cmd)
	return cmd
}

func newDLShowCmd(g *globals) *cobra.Command {
	var raw, jsonOut bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a dead letter; --raw prints its message byte for byte",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			bc, _, err := g.adminConn(ctx)
			if err != nil {
				return err
			}
			defer bc.Close()
			st := deadletter.NewStore(bc)
			e, err := st.Get(ctx, args[0])
			if err != nil {
				return exitError{code: 1, msg: err.Error()}
			}
			if raw {
				rc, err := st.Body(ctx, e)
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.Copy(g.stdout, rc)
				return err
			}
			if jsonOut {
				return json.NewEncoder(g.stdout).Encode(deadLetterJSON(e, true))
			}
			d := e.DL
			w := g.stdout
			fmt.Fprintf(w, "Dead letter: %s\nQueue ID:    %s\nJob:         %s\n", d.ID, d.Job.QueueID, d.Job.JobID())
			fmt.Fprintf(w, "Reason:      %s: %s\nDead since:  %s (%s ago)\n", d.Reason, d.Detail, d.DeadAt.Local().Format(time.RFC3339), ago(d.DeadAt, time.Now()))
			if d.LastReply != nil {
				fmt.Fprintf(w, "Last reply:  %s\n", d.LastReply)
			}
			for _, h := range d.HostsTried {
				fmt.Fprintf(w, "Tried:       %s\n", h)
			}
			printEnvelope(w, &d.Job, time.Now())
			return nil
		},
	}
	cmd.Flags().BoolVar(&raw, "raw", false, "print the stored message (with our Received header) exactly")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "JSON")
	return cmd
}

func newDLReplayCmd(g *globals) *cobra.Command {
	var ff dlFilterFlags
	var all, dryRun bool
	var route string
	var perSecond float64
	cmd := &cobra.Command{
		Use:   "replay ID...|filters|--all",
		Short: "Queue dead letters again as new jobs (fresh attempts and lifetime); each is removed once the new job is stored",
		Long: `replay republishes dead letters as new jobs: the recipients that failed, a
fresh attempt count and queue lifetime, a link to the dead letter
(replay_of) and a replay count. A dead letter is removed only after the
broker has acknowledged its new job, so a replay that is interrupted loses
nothing and can simply be run again: what was already replayed is not
queued a second time.`,
		RunE: func(cmd *cobra.Command, ids []string) error {
			if len(ids) == 0 && !ff.set() && !all {
				return errNoSelection
			}
			if route != "" {
				if _, _, err := net.SplitHostPort(route); err != nil {
					return fmt.Errorf("--route %q: want host:port", route)
				}
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
			st := deadletter.NewStore(bc)
			var lim *rate.Limiter
			if perSecond > 0 {
				lim = rate.NewLimiter(rate.Limit(perSecond), 1)
			}
			n, failed := 0, 0
			var firstErr error
			_, err = st.List(ctx, f, 0, 0, func(e *deadletter.Entry) bool {
				if dryRun {
					fmt.Fprintf(g.stdout, "would replay %s (%s, %d recipient(s): %s)\n", e.DL.ID, e.DL.Reason, len(e.DL.Job.Rcpts), rcptList(e.DL.Job.Rcpts))
					n++
					return true
				}
				if lim != nil {
					if err := lim.Wait(ctx); err != nil {
						firstErr = err
						return false
					}
				}
				job, already, err := st.Replay(ctx, e, deadletter.ReplayOptions{Route: route})
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = fmt.Errorf("%s: %w", e.DL.ID, err)
					}
					fmt.Fprintf(g.stderr, "%s: %v\n", e.DL.ID, err)
					return true
				}
				n++
				note := ""
				if already {
					note = " (already queued by an earlier run; dead letter removed)"
				}
				fmt.Fprintf(g.stdout, "replayed %s as %s%s\n", e.DL.ID, job.JobID(), note)
				return true
			})
			if err != nil {
				return err
			}
			if dryRun {
				fmt.Fprintf(g.stderr, "%d dead letter(s) would be replayed\n", n)
				return nil
			}
			fmt.Fprintf(g.stderr, "%d replayed, %d failed\n", n, failed)
			if firstErr != nil {
				return exitError{code: 1, msg: firstErr.Error()}
			}
			if n == 0 && len(ids) > 0 {
				return exitError{code: 1, msg: "no matching dead letter"}
			}
			return nil
		},
	}
	ff.add(cmd)
	cmd.Flags().BoolVar(&all, "all", false, "every dead letter")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would be replayed")
	cmd.Flags().StringVar(&route, "route", "", "send the replayed jobs to this next hop (host:port) instead of their usual route")
	cmd.Flags().Float64Var(&perSecond, "rate", 0, "replay at most this many per second (0: no limit)")
	return cmd
}

func newDLPurgeCmd(g *globals) *cobra.Command {
	var ff dlFilterFlags
	var all bool
	cmd := &cobra.Command{
		Use:   "purge ID...|filters|--older-than D|--all",
		Short: "Delete dead letters for good, with their bodies",
		RunE: func(cmd *cobra.Command, ids []string) error {
			if len(ids) == 0 && !ff.set() && !all {
				return errNoSelection
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
			st := deadletter.NewStore(bc)
			n := 0
			var purgeErr error
			_, err = st.List(ctx, f, 0, 0, func(e *deadletter.Entry) bool {
				if purgeErr = st.Purge(ctx, e); purgeErr != nil {
					purgeErr = fmt.Errorf("%s: %w", e.DL.ID, purgeErr)
					return false
				}
				n++
				return true
			})
			if err == nil {
				err = purgeErr
			}
			fmt.Fprintf(g.stderr, "%d dead letter(s) purged\n", n)
			if err != nil {
				return err
			}
			if n == 0 && len(ids) > 0 {
				return exitError{code: 1, msg: "no matching dead letter"}
			}
			return nil
		},
	}
	ff.add(cmd)
	cmd.Flags().BoolVar(&all, "all", false, "every dead letter")
	return cmd
}
