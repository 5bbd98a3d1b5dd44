package cli

import (
	"encoding/json"
	"fmt"
	"net"

	"github.com/jetrelay/jetrelay/deadletter"
	"github.com/jetrelay/jetrelay/internal/filter"
	"github.com/spf13/cobra"
)

func newDeadLetterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "deadletter",
		Aliases: []string{"dlq"},
		Short:   "Inspect, replay and purge the dead letters (the Queue folder)",
	}
	cmd.AddCommand(newDLListCmd(g),
		newShowCmd(g, "Show a message's dead letters, every recipient's state and its history; --raw prints it byte for byte"),
		newDLReplayCmd(g), newDLPurgeCmd(g))
	return cmd
}

func newDLListCmd(g *globals) *cobra.Command {
	var lf listFlags
	var ff filterFlags
	cmd := &cobra.Command{
		Use:   "list [ID...]",
		Short: "List dead letters",
		RunE: func(cmd *cobra.Command, ids []string) error {
			var pg pager
			return runList(cmd, g, &lf, &ff, "dead letters", ids, "QUEUE ID\tDEAD\tREASON\tFROM\tRECIPIENTS\tLAST REPLY",
				func(l lister) (uint64, error) {
					limit := lf.limit
					if !lf.json {
						// Read on past the page to count the rest ("3 of 307").
						limit, pg = 0, pager{limit: lf.limit, last: lf.after}
					}
					next, err := deadletter.NewStore(l.bc).List(l.ctx, l.f, lf.after, limit, func(e *deadletter.Entry) bool {
						if !pg.take(e.Seq) {
							return true
						}
						j := deadLetterJSON(e, false)
						l.out.row(j, j.QueueID, ago(j.DeadAt, l.now), j.Reason, orDash(j.From), rcptList(e.DL.Job.Rcpts), orDash(short(j.LastReply, 70)))
						return true
					})
					if !lf.json {
						next = pg.next
					}
					return next, err
				},
				func(lister) {
					if !lf.json {
						fmt.Fprintf(g.stdout, "%s dead letter(s)%s\n", pg.count(), pg.from(lf.after))
					}
				})
		},
	}
	lf.add(cmd)
	ff.add(cmd, true)
	return cmd
}

// selectDeadLetters turns the command line into a filter: filters as
// given, and IDs that name dead letters exactly, or, once those are gone,
// every dead letter of their messages.
// none reports that IDs were given and name nothing.
func selectDeadLetters(cmd *cobra.Command, st *deadletter.Store, ff *filterFlags, ids []string) (f filter.Filter, none bool, err error) {
	if f, err = ff.filter(nil); err != nil {
		return f, false, err
	}
	if len(ids) > 0 {
		found, err := st.Find(cmd.Context(), ids)
		if err != nil || len(found) == 0 {
			return f, err == nil, err
		}
		for _, e := range found {
			f.IDs = append(f.IDs, e.DL.ID)
		}
	}
	return f, false, nil
}

// replaySummary is `deadletter replay --json`'s one line.
type replaySummary struct {
	Type     string    `json:"type"` // "summary"
	Replayed int       `json:"replayed"`
	Already  int       `json:"already"` // of those replayed: queued by an earlier, interrupted run
	Failed   int       `json:"failed"`
	DryRun   bool      `json:"dry_run"`
	Errors   []idError `json:"errors,omitempty"`
}

// idError is a record a command could not act on, and why.
type idError struct {
	QueueID string `json:"queue_id"`
	ID      string `json:"id,omitempty"`
	Error   string `json:"error"`
}

func newDLReplayCmd(g *globals) *cobra.Command {
	var ff filterFlags
	var all, jsonOut bool
	var o deadletter.ReplayOptions
	cmd := &cobra.Command{
		Use:   "replay ID...|filters|--all",
		Short: "Queue dead letters again (fresh attempts and lifetime, the same queue ID); each is removed once its new job is stored",
		Long: `replay queues dead letters again: the recipients that failed, a fresh
attempt count and queue lifetime, the same queue ID with a replay
generation, a link to the dead letter (replay_of) and a replay count. A
dead letter is removed only after the broker has stored its new job, so a
replay that is interrupted loses nothing and can simply be run again:
what was already replayed is not queued a second time. ID is a queue ID
(every dead letter of the message) or one dead letter's ID.`,
		RunE: func(cmd *cobra.Command, ids []string) error {
			if len(ids) == 0 && !ff.set() && !all {
				return errNoSelection
			}
			if o.Route != "" {
				if _, _, err := net.SplitHostPort(o.Route); err != nil {
					return fmt.Errorf("--route %q: want host:port", o.Route)
				}
			}
			ctx := cmd.Context()
			bc, _, err := g.adminConn(ctx)
			if err != nil {
				return err
			}
			defer bc.Close()
			st := deadletter.NewStore(bc)
			f, none, err := selectDeadLetters(cmd, st, &ff, ids)
			if err != nil {
				return err
			}
			if none {
				return exitError{code: 1, msg: "no matching dead letter"}
			}
			// A bar on a terminal, for which the selection is counted first.
			bar := &progress{}
			if isTerminal(g.stderr) {
				total := 0
				if _, err := st.List(ctx, f, 0, 0, func(*deadletter.Entry) bool { total++; return true }); err != nil {
					return err
				}
				bar = newProgress(g.stderr, total, "replaying")
			}
			var firstErr error
			sum := replaySummary{Type: "summary", DryRun: o.DryRun}
			replayed, failed, err := st.Replay(ctx, f, o, func(r deadletter.ReplayResult) {
				bar.step()
				d := r.Entry.DL
				switch {
				case o.DryRun:
					if !jsonOut {
						bar.printf(g.stdout, "would replay %s to %s (%s)\n", d.Job.QueueID, rcptList(d.Job.Rcpts), d.Reason)
					}
				case r.Err != nil:
					if firstErr == nil {
						firstErr = fmt.Errorf("%s: %w", d.Job.QueueID, r.Err)
					}
					sum.Errors = append(sum.Errors, idError{QueueID: d.Job.QueueID, ID: d.ID, Error: r.Err.Error()})
					bar.printf(g.stderr, "%s: %v\n", d.Job.QueueID, r.Err)
				default:
					note := ""
					if r.Already {
						sum.Already++
						note = " (queued by an earlier run; dead letter removed)"
					}
					if !jsonOut {
						bar.printf(g.stdout, "replayed %s to %s (was %s): queued again, replay %d%s\n", d.Job.QueueID, rcptList(d.Job.Rcpts), d.Reason, r.Job.ReplayCount, note)
					}
				}
			})
			bar.done()
			if err != nil {
				return err
			}
			sum.Replayed, sum.Failed = replayed, failed
			switch {
			case jsonOut:
				_ = json.NewEncoder(g.stdout).Encode(sum)
			case o.DryRun:
				fmt.Fprintf(g.stderr, "%d dead letter(s) would be replayed\n", replayed)
			default:
				fmt.Fprintf(g.stderr, "%d replayed, %d failed\n", replayed, failed)
			}
			if firstErr != nil && !o.DryRun {
				return exitError{code: 1, msg: firstErr.Error()}
			}
			return nil
		},
	}
	ff.add(cmd, true)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print one JSON summary line instead of a line per dead letter (see README, \"Operator commands\")")
	cmd.Flags().BoolVar(&all, "all", false, "every dead letter")
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", false, "print what would be replayed")
	cmd.Flags().StringVar(&o.Route, "route", "", "send the replayed jobs to this next hop (host:port) instead of their usual route")
	cmd.Flags().Float64Var(&o.Rate, "rate", 0, "replay at most this many per second (0: no limit)")
	return cmd
}

func newDLPurgeCmd(g *globals) *cobra.Command {
	var ff filterFlags
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
			st := deadletter.NewStore(bc)
			f, none, err := selectDeadLetters(cmd, st, &ff, ids)
			if err != nil {
				return err
			}
			if none {
				return exitError{code: 1, msg: "no matching dead letter"}
			}
			n, err := st.Purge(ctx, f, func(*deadletter.Entry) {})
			fmt.Fprintf(g.stderr, "%d dead letter(s) purged\n", n)
			return err
		},
	}
	ff.add(cmd, true)
	cmd.Flags().BoolVar(&all, "all", false, "every dead letter")
	return cmd
}
