package cli

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/queuectl"
	"github.com/spf13/cobra"
)

func newQueueCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "Inspect and control the live queue (mailq, postcat, postqueue -f, postsuper -d)",
	}
	cmd.AddCommand(newQueueListCmd(g),
		newShowCmd(g, "Show a message: envelope, every recipient's state, attempt history; --raw prints it byte for byte"),
		newQueueRetryCmd(g), newQueueDeleteCmd(g), newQueueReshardCmd(g))
	return cmd
}

func newQueueListCmd(g *globals) *cobra.Command {
	var lf listFlags
	var ff filterFlags
	cmd := &cobra.Command{
		Use:   "list [ID...]",
		Short: "List pending and scheduled jobs, with a summary by domain",
		RunE: func(cmd *cobra.Command, ids []string) error {
			var sum queuectl.Summary
			var pg pager
			return runList(cmd, g, &lf, &ff, "jobs", ids, "QUEUE ID\tSTATE\tAGE\tATTEMPT\tNEXT\tFROM\tRECIPIENTS\tLAST ERROR",
				func(l lister) (uint64, error) {
					limit := lf.limit
					if !lf.json {
						// Read on past the page: the summary is of every
						// matching job, and says how many were shown.
						limit, pg = 0, pager{limit: lf.limit, last: lf.after}
					}
					next, err := queuectl.New(l.bc).List(l.ctx, l.f, lf.after, limit, func(e *queuectl.Entry) bool {
						sum.Add(e)
						if !pg.take(e.Cursor) {
							return true
						}
						j := jobJSON(e, l.now, false)
						if e.Err != nil {
							l.out.row(j, "?", j.State, "-", "-", "-", "-", "-", "undecodable: "+short(j.Error, 60))
							return true
						}
						next := "-"
						if j.NextAttempt != nil {
							next = ago(*j.NextAttempt, l.now)
						}
						last := j.LastError
						if j.Waiting != "" {
							last = j.Waiting
						}
						l.out.row(j, j.QueueID, j.State, ago(j.ReceivedAt, l.now), strconv.Itoa(j.Attempt), next, orDash(j.From),
							rcptList(e.Job.Rcpts), orDash(short(last, 70)))
						return true
					})
					if !lf.json {
						next = pg.next
					}
					return next, err
				},
				func(l lister) {
					if lf.json {
						if sum.ByDomain == nil {
							sum.ByDomain = map[string]int{}
						}
						_ = l.out.enc.Encode(struct {
							Type string `json:"type"`
							queuectl.Summary
						}{"summary", sum})
						return
					}
					if pg.seen > pg.shown {
						fmt.Fprintf(g.stdout, "%s job(s) shown%s; ", pg.count(), pg.from(lf.after))
					}
					fmt.Fprintln(g.stdout, sum.String())
				})
		},
	}
	lf.add(cmd)
	ff.add(cmd, false)
	return cmd
}

// selectJobs finds the jobs the command line names: IDs (exactly, or
// their messages once the named jobs are gone) and filters.
func selectJobs(cmd *cobra.Command, q *queuectl.Queue, ff *filterFlags, ids []string) ([]*queuectl.Entry, error) {
	f, err := ff.filter(ids)
	if err != nil {
		return nil, err
	}
	return q.Select(cmd.Context(), f)
}

// retrySummary is `queue retry --json`'s one line.
type retrySummary struct {
	Type   string `json:"type"`    // "summary"
	DueNow int    `json:"due_now"` // scheduled jobs made due now
	Ready  int    `json:"ready"`   // jobs that were ready or being delivered already
}

func newQueueRetryCmd(g *globals) *cobra.Command {
	var ff filterFlags
	var all, jsonOut bool
	cmd := &cobra.Command{
		Use:   "retry ID...|filters|--all",
		Short: "Attempt scheduled jobs now (postqueue -f / -i)",
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
			q := queuectl.New(bc)
			jobs, err := selectJobs(cmd, q, &ff, ids)
			if err != nil {
				return err
			}
			n := 0
			bar := newProgress(g.stderr, len(jobs), "retrying")
			for _, e := range jobs {
				acted, err := q.Retry(ctx, e)
				bar.step()
				if err != nil {
					bar.done()
					return fmt.Errorf("%s: %w", e.Job.QueueID, err)
				}
				if acted {
					n++
				}
			}
			bar.done()
			if jsonOut {
				_ = json.NewEncoder(g.stdout).Encode(retrySummary{Type: "summary", DueNow: n, Ready: len(jobs) - n})
			} else {
				fmt.Fprintf(g.stderr, "%d scheduled job(s) due now; %d already ready or in flight\n", n, len(jobs)-n)
			}
			if len(ids) > 0 && len(jobs) == 0 {
				return exitError{code: 1, msg: "no such job in the queue"}
			}
			return nil
		},
	}
	ff.add(cmd, false)
	cmd.Flags().BoolVar(&all, "all", false, "every scheduled job")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print one JSON summary line (see README, \"Operator commands\")")
	return cmd
}

func newQueueDeleteCmd(g *globals) *cobra.Command {
	var ff filterFlags
	var all, purge bool
	cmd := &cobra.Command{
		Use:   "delete ID...|filters|--all",
		Short: "Move jobs to the dead letters (reason \"deleted\"), or drop them with --purge (postsuper -d)",
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
			q := queuectl.New(bc)
			jobs, err := selectJobs(cmd, q, &ff, ids)
			if err != nil {
				return err
			}
			verb := "moved to the dead letters"
			if purge {
				verb = "purged"
			}
			for _, e := range jobs {
				if err := q.Delete(ctx, e, purge, ""); err != nil {
					return fmt.Errorf("%s: %w", e.Job.QueueID, err)
				}
				fmt.Fprintf(g.stdout, "%s %s: %s\n", e.Job.QueueID, rcptList(e.Job.Rcpts), verb)
			}
			if len(jobs) == 0 {
				return exitError{code: 1, msg: "no matching job in the queue"}
			}
			return nil
		},
	}
	ff.add(cmd, false)
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
			if cfg.Broker.QueueShards != 0 && cfg.Broker.QueueShards != n {
				fmt.Fprintf(g.stderr, "set broker.queue_shards: %d in every process's configuration before starting them\n", n)
			}
			return nil
		},
	}
}
