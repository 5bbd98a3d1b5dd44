package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jetrelay/jetrelay/internal/bench"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/spf13/cobra"
)

func init() { extraCommands = append(extraCommands, newBenchCmd) }

type benchOpts struct {
	cfg      bench.Config
	size     string
	reuse    bool
	pids     []int
	pidMatch string
	pidUsers []string
	json     bool
	appendTo string
}

func newBenchCmd(g *globals) *cobra.Command {
	o := &benchOpts{}
	cmd := &cobra.Command{
		Use:   "bench [flags]",
		Short: "Measure a relay over SMTP: load generator and counting sink in one",
		Long: `bench sends --count messages of --size bytes, with --rcpts recipients spread
over --domains domains, over --concurrency SMTP sessions to --target, and
runs a fast SMTP sink on --sink to which the relay under test delivers. It
speaks only SMTP, so it measures any relay (jetrelay, Postfix, ...).

It reports the accepted rate (the 250s), the end-to-end delivered rate (from
the first send until the sink has seen every recipient), the latency from
each 250 to the arrival at the sink (every message carries a unique
X-Bench-Id header), and errors by reply code. With --pid, --pid-match,
--pid-user or --cgroup it samples the relay's processes and their
descendants from /proc: CPU seconds (utime+stime) over the run and peak
memory (sum of VmRSS, and of Pss, which shares common pages fairly between
the processes of a multi-process server). For Postfix use
--pid $(cat /var/spool/postfix/pid/master.pid): every Postfix daemon is a
child of master (or --pid-user postfix plus the master's PID).

The run fails (exit status 1) if not every message was accepted and
delivered within --timeout.

  jetrelay bench --target 127.0.0.1:2525 --sink 127.0.0.1:2626 -n 5000 --size 1KiB --concurrency 20 --pid $(pidof jetrelay)
  jetrelay bench --sink-only --sink 127.0.0.1:2626         # only count what arrives (until Ctrl-C)
  jetrelay bench --no-sink --target 127.0.0.1:2525 -n 1000  # only load; another sink receives
  jetrelay bench report results.jsonl --baseline postfix    # Markdown table of --json results`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBench(cmd, g, o) },
	}
	f := cmd.Flags()
	c := &o.cfg
	f.StringVar(&c.Target, "target", "127.0.0.1:2525", "SMTP server under test (host:port)")
	f.StringVar(&c.SinkAddr, "sink", "127.0.0.1:2626", "address of the bench sink the relay delivers to")
	f.BoolVar(&c.SinkOnly, "sink-only", false, "run only the sink (until --count messages arrived, --timeout or Ctrl-C)")
	f.BoolVar(&c.NoSink, "no-sink", false, "run only the load; another sink receives the mail")
	f.IntVarP(&c.N, "count", "n", 1000, "messages to send (sink-only: to wait for, default no limit)")
	f.StringVar(&o.size, "size", "1KiB", "message size (e.g. 1024, 100KiB, 10MiB)")
	f.IntVar(&c.Rcpts, "rcpts", 1, "recipients per message")
	f.IntVar(&c.Domains, "domains", 1, "domains the recipients are spread over")
	f.IntVar(&c.Concurrency, "concurrency", 10, "concurrent SMTP sessions")
	f.IntVar(&c.PerConn, "per-conn", 1, "messages per session, one transaction after the other (0: unlimited)")
	f.BoolVar(&o.reuse, "reuse", false, "keep every session for the whole run (--per-conn 0)")
	f.BoolVar(&c.NoPipelining, "no-pipelining", false, "send commands in lock step even if the server offers PIPELINING")
	f.StringVar(&c.From, "from", "bench@sender.bench.example", "envelope sender")
	f.StringVar(&c.Helo, "helo", "bench.example", "EHLO name")
	f.DurationVar(&c.Timeout, "timeout", 5*time.Minute, "limit for the whole run; not everything delivered by then is a failure")
	f.IntSliceVar(&o.pids, "pid", nil, "measure this process and its descendants (repeatable, or comma-separated)")
	f.StringVar(&o.pidMatch, "pid-match", "", "measure the processes whose name or command line matches this regexp, and their descendants")
	f.StringSliceVar(&o.pidUsers, "pid-user", nil, "measure the processes running as this user (name or UID), and their descendants")
	f.StringVar(&c.Procs.Cgroup, "cgroup", "", "measure the processes of this cgroup (path, absolute or under /sys/fs/cgroup)")
	f.DurationVar(&c.SampleInterval, "sample-interval", 100*time.Millisecond, "how often to sample the measured processes")
	f.BoolVar(&c.NoPSS, "no-pss", false, "do not read smaps_rollup for Pss")
	f.DurationVar(&c.PSSInterval, "pss-interval", time.Second, "read Pss at most this often (smaps_rollup is costly for large processes)")
	f.BoolVar(&c.CountFlushes, "count-flushes", false, "count the measured processes' disk flushes (fsync, fdatasync…) per message with strace; tracing slows them, so reports leave such a run out of the speed figures")
	f.StringVar(&c.Label, "label", "", "name of the system under test, for reports (e.g. postfix)")
	f.StringVar(&c.Case, "case", "", "name of the case, for reports (default: derived from size and recipients)")
	f.DurationVar(&c.Progress, "progress", 5*time.Second, "progress line on stderr this often (0: none)")
	f.BoolVar(&o.json, "json", false, "print one JSON object instead of a table")
	f.StringVar(&o.appendTo, "append", "", "also append the JSON result as one line to this file")
	cmd.AddCommand(newBenchReportCmd(g))
	return cmd
}

func runBench(cmd *cobra.Command, g *globals, o *benchOpts) error {
	c := &o.cfg
	size, err := config.ParseByteSize(o.size)
	if err != nil {
		return fmt.Errorf("--size: %w", err)
	}
	if size < 1 || size > 1<<30 {
		return fmt.Errorf("--size %s: want 1 byte to 1 GiB", o.size)
	}
	c.Size = int(size)
	if c.SinkOnly && !cmd.Flags().Changed("count") {
		c.N = 0 // until --timeout or Ctrl-C
	}
	if o.reuse {
		c.PerConn = 0
	}
	switch {
	case c.N < 0 || (c.N == 0 && !c.SinkOnly):
		return errors.New("--count must be at least 1")
	case c.Concurrency < 1 || c.Concurrency > 10000:
		return errors.New("--concurrency: want 1 to 10000")
	case c.Rcpts < 1 || c.Domains < 1:
		return errors.New("--rcpts and --domains must be at least 1")
	case c.PerConn < 0:
		return errors.New("--per-conn must be 0 (unlimited) or more")
	case c.Timeout <= 0:
		return errors.New("--timeout must be positive")
	}
	if c.Case == "" && !c.SinkOnly {
		c.Case = fmt.Sprintf("%s-%drcpt", bench.FormatSize(int64(size)), c.Rcpts)
		if c.Domains > 1 {
			c.Case += fmt.Sprintf("-%ddom", c.Domains)
		}
	}
	c.Procs.PIDs = o.pids
	var desc []string
	for _, p := range o.pids {
		desc = append(desc, "pid "+strconv.Itoa(p))
	}
	if o.pidMatch != "" {
		re, err := regexp.Compile(o.pidMatch)
		if err != nil {
			return fmt.Errorf("--pid-match: %w", err)
		}
		c.Procs.Match = re
		desc = append(desc, "matching /"+o.pidMatch+"/")
	}
	for _, u := range o.pidUsers {
		uid, err := strconv.Atoi(u)
		if err != nil {
			usr, lerr := user.Lookup(u)
			if lerr != nil {
				return fmt.Errorf("--pid-user %s: %w", u, lerr)
			}
			if uid, err = strconv.Atoi(usr.Uid); err != nil {
				return fmt.Errorf("--pid-user %s: uid %q", u, usr.Uid)
			}
		}
		c.Procs.UIDs = append(c.Procs.UIDs, uid)
		desc = append(desc, "user "+u)
	}
	if c.Procs.Cgroup != "" {
		desc = append(desc, "cgroup "+c.Procs.Cgroup)
	}
	if len(desc) > 0 {
		c.ProcsDesc = strings.Join(desc, ", ") + " and descendants"
	}
	c.Log = g.stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, runErr := bench.Run(ctx, *c)
	if o.json {
		if err := bench.WriteJSON(g.stdout, res); err != nil {
			return err
		}
	} else {
		bench.WriteTable(g.stdout, res)
	}
	if o.appendTo != "" {
		f, err := os.OpenFile(o.appendTo, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		werr := bench.WriteJSON(f, res)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return werr
		}
	}
	if runErr != nil {
		return exitError{code: 1, msg: "bench: " + runErr.Error()}
	}
	return nil
}

func newBenchReportCmd(g *globals) *cobra.Command {
	var baseline string
	cmd := &cobra.Command{
		Use:   "report FILE...",
		Short: "Summarize bench --json results (JSON lines) as a Markdown table of medians",
		Long: `report reads the JSON lines written by bench --json (or --append), groups them
by --case and --label, and prints the median of each group's runs as a
Markdown table, with each label's ratio to the --baseline label. "-" reads
standard input.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var all []*bench.Result
			for _, a := range args {
				var r io.Reader = g.stdin
				if a != "-" {
					f, err := os.Open(a)
					if err != nil {
						return err
					}
					defer f.Close()
					r = f
				}
				rs, err := bench.ReadResults(r)
				if err != nil {
					return fmt.Errorf("%s: %w", a, err)
				}
				all = append(all, rs...)
			}
			if len(all) == 0 {
				return errors.New("no results")
			}
			bench.Report(g.stdout, all, baseline)
			return nil
		},
	}
	cmd.Flags().StringVar(&baseline, "baseline", "postfix", "label the others are compared with")
	return cmd
}
