package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/filter"
	"github.com/jetrelay/jetrelay/internal/logging"
	"github.com/jetrelay/jetrelay/internal/msgview"
	"github.com/spf13/cobra"
)

// adminConn connects an operator command to the broker of this
// configuration (broker.url, or the embedded broker of data_dir) and
// attaches to the streams without changing them.
func (g *globals) adminConn(ctx context.Context) (*broker.Client, *config.Config, error) {
	cfg, _, err := g.load(nil)
	if err != nil {
		return nil, nil, err
	}
	lvl := cfg.Log.Level
	if g.logLevel == "" {
		lvl = "error" // keep operator output clean unless asked
	}
	log := logging.New(g.stderr, lvl, "console")
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	bc, err := app.ConnectBroker(cctx, cfg, "jetrelay-cli", log, false)
	if err != nil {
		return nil, nil, fmt.Errorf("%w\n(is the relay running? for `jetrelay serve` on this machine use the same data_dir; for a cluster set broker.url)", err)
	}
	if err := bc.Bind(cctx, app.BrokerSettings(cfg)); err != nil {
		bc.Close()
		return nil, nil, err
	}
	return bc, cfg, nil
}

// lister is what the body of a list command works with.
type lister struct {
	ctx context.Context
	bc  *broker.Client
	f   filter.Filter
	out *output
	now time.Time
}

// runList is what every list command does: connect, build the filter,
// stream the matching records into a table or JSON Lines, then the
// command's trailer (summary, count) and the cursor of the next page.
func runList(cmd *cobra.Command, g *globals, lf *listFlags, ff *filterFlags, noun string, ids []string, headers string,
	list func(lister) (next uint64, err error), trailer func(lister)) error {
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
	l := lister{ctx: ctx, bc: bc, f: f, out: newOutput(g.stdout, lf.json, headers), now: time.Now()}
	next, err := list(l)
	if err != nil {
		return err
	}
	l.out.flush()
	trailer(l)
	l.out.more(next, noun)
	return nil
}

// pager cuts a listing at its limit while it goes on counting, so that a
// limited page can say how much there is ("3 of 307").
type pager struct {
	limit       int    // 0: no limit
	shown, seen int    // rows printed, rows matched
	last, next  uint64 // cursor of the last row printed; of the page cut (0: none)
}

// take counts a matching row at cursor and reports whether to print it.
func (p *pager) take(cursor uint64) bool {
	p.seen++
	if p.limit > 0 && p.shown == p.limit {
		if p.next == 0 {
			p.next = p.last
		}
		return false
	}
	p.shown++
	p.last = cursor
	return true
}

// count is "3 of 307" when the page was cut, else "307".
func (p *pager) count() string {
	if p.seen > p.shown {
		return fmt.Sprintf("%d of %d", p.shown, p.seen)
	}
	return fmt.Sprint(p.shown)
}

// from says where the count starts when a page was asked for with --after.
func (p *pager) from(after uint64) string {
	if after == 0 {
		return ""
	}
	return fmt.Sprintf(" after --after %d", after)
}

// listFlags are the paging and output flags of every list command.
type listFlags struct {
	json  bool
	limit int
	after uint64
}

func (l *listFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&l.json, "json", false, "JSON Lines: one object per line (see README, \"Operator commands\")")
	cmd.Flags().IntVar(&l.limit, "limit", 0, "show at most this many entries (0: all)")
	cmd.Flags().Uint64Var(&l.after, "after", 0, "continue after this cursor (printed at the end of a limited page)")
}

// output writes rows as a table or JSON Lines, streaming: a table is
// flushed every page of rows, so a long list never sits in memory.
type output struct {
	w     io.Writer
	json  bool
	tw    *tabwriter.Writer
	rows  int
	heads string
	enc   *json.Encoder
}

func newOutput(w io.Writer, jsonOut bool, headers string) *output {
	o := &output{w: w, json: jsonOut, heads: headers}
	if jsonOut {
		o.enc = json.NewEncoder(w)
	}
	return o
}

func (o *output) row(obj any, cells ...string) {
	if o.json {
		_ = o.enc.Encode(obj)
		return
	}
	if o.tw == nil {
		o.tw = tabwriter.NewWriter(o.w, 2, 4, 2, ' ', 0)
		if o.rows == 0 {
			fmt.Fprintln(o.tw, o.heads)
		}
	}
	fmt.Fprintln(o.tw, strings.Join(cells, "\t"))
	o.rows++
	if o.rows%200 == 0 {
		o.flush()
	}
}

func (o *output) flush() {
	if o.tw != nil {
		_ = o.tw.Flush()
		o.tw = nil
	}
}

func (o *output) more(after uint64, noun string) {
	o.flush()
	if after == 0 {
		return
	}
	if o.json {
		_ = o.enc.Encode(map[string]any{"type": "more", "after": after})
		return
	}
	fmt.Fprintf(o.w, "more %s: --after %d\n", noun, after)
}

func ago(t time.Time, now time.Time) string { return msgview.Ago(t, now) }

func rcptList(rs []contracts.Recipient) string {
	addrs := make([]string, len(rs))
	for i, r := range rs {
		addrs[i] = r.Addr
	}
	s := strings.Join(addrs, ",")
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

func short(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

var errNoSelection = errors.New("name entries, give a filter, or use --all")

// parseSince accepts an RFC 3339 time, a date, or a duration ago ("2h").
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	d, err := config.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a time (2026-11-22T18:00:00Z, 2026-11-22) nor a duration ago (2h, 3d)", s)
	}
	return now.Add(-d.D()), nil
}
