package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes r as one line of JSON.
func WriteJSON(w io.Writer, r *Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// WriteTable writes r for humans.
func WriteTable(w io.Writer, r *Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, f string, a ...any) { fmt.Fprintf(tw, "%s\t"+f+"\n", append([]any{k}, a...)...) }
	name := r.Mode
	if r.Label != "" || r.Case != "" {
		name = strings.TrimSpace(r.Label+" "+r.Case) + " (" + r.Mode + ")"
	}
	row("run", "%s  id %s", name, r.RunID)
	if r.Mode == "sink-only" {
		st := r.SinkStats
		row("sink", "%s", r.Sink)
		row("received", "%d messages, %d recipients, %.1f MiB over %d connections", st.Messages, st.Recipients, float64(st.Bytes)/(1<<20), st.Connections)
		row("rate", "%.1f msg/s (first to last arrival)", r.SinkRate)
	} else {
		row("target", "%s", r.Target)
		if r.Sink != "" {
			row("sink", "%s", r.Sink)
		}
		pc := "unlimited"
		if r.PerConn > 0 {
			pc = fmt.Sprint(r.PerConn)
		}
		row("load", "%d messages of %s, %d rcpt(s) over %d domain(s), %d sessions, %s msg/session, pipelining %v",
			r.Messages, FormatSize(int64(r.Size)), r.Rcpts, r.Domains, r.Concurrency, pc, r.Pipelining)
		row("accepted", "%d (failed %d) in %.2fs: %.1f msg/s, %.2f MiB/s", r.Accepted, r.Failed, r.AcceptSeconds, r.AcceptedPerSec, r.AcceptedMiBs)
		row("submit ms", "%s", latencyString(r.SubmitMs))
		if r.Mode == "full" {
			row("delivered", "%d msgs, %d rcpts in %.2fs: %.1f msg/s, %.1f rcpt/s", r.DeliveredMsgs, r.DeliveredRcpts, r.E2ESeconds, r.DeliveredPerSec, r.DeliveredRcptsPerS)
			row("250→sink ms", "%s", latencyString(r.LatencyMs))
			if r.EarlyArrivals > 0 {
				row("early", "%d messages arrived at the sink before their 250 was read", r.EarlyArrivals)
			}
			if r.MissingRcpts > 0 || r.DuplicateRcpts > 0 || r.SinkStats.Foreign > 0 {
				row("anomalies", "missing rcpts %d, duplicate rcpts %d, foreign messages %d", r.MissingRcpts, r.DuplicateRcpts, r.SinkStats.Foreign)
			}
		}
		if len(r.Errors) == 0 {
			row("errors", "none")
		}
		for _, k := range SortedErrors(r.Errors) {
			row("error", "%-10s %d  %s", k, r.Errors[k], r.ErrorSamples[k])
		}
	}
	if p := r.Process; p != nil {
		row("process", "%s: up to %d processes, %d samples", p.Selector, p.ProcsMax, p.Samples)
		row("cpu", "%.2fs (%.0f%% of one core over %.1fs)%s", p.CPUSeconds, p.CPUPercent, p.WallSeconds, perMsg(p.CPUSeconds, r.Accepted))
		pss := ""
		if p.PSSPeakMiB > 0 {
			pss = fmt.Sprintf(", peak PSS %.1f MiB", p.PSSPeakMiB)
		}
		row("memory", "RSS start %.1f MiB, peak %.1f MiB (+%.1f), end %.1f MiB%s", p.RSSStartMiB, p.RSSPeakMiB, p.RSSGrowthMiB, p.RSSEndMiB, pss)
		if p.Error != "" {
			row("sampling", "error: %s", p.Error)
		}
	}
	if f := r.Flushes; f != nil {
		var parts []string
		for _, k := range FlushCalls {
			if n := f.Calls[k]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", k, n))
			}
		}
		row("flushes", "%.2f per message (%d: %s; the relay was traced, its speed above is not its own)", f.PerMessage, f.Total, strings.Join(parts, ", "))
	}
	row("bench cpu", "%.2fs", r.BenchCPUSeconds)
	if r.OK {
		row("result", "ok")
	} else {
		row("result", "FAILED: %s", r.Error)
	}
	tw.Flush()
}

func perMsg(cpu float64, n int64) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(", %.2f ms/msg", 1000*cpu/float64(n))
}

func latencyString(l Latency) string {
	if l.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %.1f  p90 %.1f  p99 %.1f  max %.1f  mean %.1f  (n=%d)", l.P50, l.P90, l.P99, l.Max, l.Mean, l.Count)
}

// FormatSize writes a byte count with a binary unit (1KiB, 100KiB, 10MiB).
func FormatSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

// ReadResults reads JSON lines of Results (blank lines and lines that are
// not JSON objects are skipped).
func ReadResults(r io.Reader) ([]*Result, error) {
	var out []*Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var res Result
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			return out, err
		}
		out = append(out, &res)
	}
	return out, sc.Err()
}

// summary is the median of the runs of one label in one case.
type summary struct {
	label, cas                   string
	runs, failed                 int
	accepted, delivered, lat50   float64
	lat99, submit50, cpu, cpuMsg float64
	rss, rssGrowth, pss, wall    float64
	hasProc, hasDelivery         bool
}

// Report writes a Markdown table of the medians of results grouped by
// case and label, with the ratio of each label to baseline where the
// baseline ran the same case.
func Report(w io.Writer, results []*Result, baseline string) {
	type key struct{ cas, label string }
	groups := map[key][]*Result{}
	var cases, labels []string
	seenC, seenL := map[string]bool{}, map[string]bool{}
	flushes := map[key][]float64{}
	for _, r := range results {
		k := key{r.Case, r.Label}
		if r.Flushes != nil {
			// A traced run counts flushes; its speed is that of a
			// traced relay.
			flushes[k] = append(flushes[k], r.Flushes.PerMessage)
			if !seenC[r.Case] {
				seenC[r.Case] = true
				cases = append(cases, r.Case)
			}
			if !seenL[r.Label] {
				seenL[r.Label] = true
				labels = append(labels, r.Label)
			}
			continue
		}
		groups[k] = append(groups[k], r)
		if !seenC[r.Case] {
			seenC[r.Case] = true
			cases = append(cases, r.Case)
		}
		if !seenL[r.Label] {
			seenL[r.Label] = true
			labels = append(labels, r.Label)
		}
	}
	sort.SliceStable(labels, func(i, j int) bool { return labels[i] == baseline && labels[j] != baseline })
	sum := func(rs []*Result) summary {
		s := summary{label: rs[0].Label, cas: rs[0].Case, runs: len(rs)}
		var acc, del, l50, l99, sub, cpu, cpuMsg, rss, grow, pss, wall []float64
		for _, r := range rs {
			if !r.OK {
				s.failed++
			}
			acc = append(acc, r.AcceptedPerSec)
			if r.Mode == "full" {
				s.hasDelivery = true
				del = append(del, r.DeliveredPerSec)
				l50 = append(l50, r.LatencyMs.P50)
				l99 = append(l99, r.LatencyMs.P99)
			}
			sub = append(sub, r.SubmitMs.P50)
			wall = append(wall, r.WallSeconds)
			if p := r.Process; p != nil {
				s.hasProc = true
				cpu = append(cpu, p.CPUSeconds)
				if r.Accepted > 0 {
					cpuMsg = append(cpuMsg, 1000*p.CPUSeconds/float64(r.Accepted))
				}
				rss = append(rss, p.RSSPeakMiB)
				grow = append(grow, p.RSSGrowthMiB)
				pss = append(pss, p.PSSPeakMiB)
			}
		}
		s.accepted, s.delivered, s.lat50, s.lat99, s.submit50 = Median(acc), Median(del), Median(l50), Median(l99), Median(sub)
		s.cpu, s.cpuMsg, s.rss, s.rssGrowth, s.pss, s.wall = Median(cpu), Median(cpuMsg), Median(rss), Median(grow), Median(pss), Median(wall)
		return s
	}
	ratio := func(v, base float64, ok bool) string {
		if !ok || base == 0 {
			return ""
		}
		return fmt.Sprintf(" (%.2f×)", v/base)
	}
	fmt.Fprintln(w, "| case | relay | runs | accepted msg/s | delivered msg/s | 250→sink p50 / p99 ms | submit p50 ms | CPU s | CPU ms/msg | peak RSS MiB (growth) | peak PSS MiB |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, c := range cases {
		var base summary
		hasBase := false
		if rs := groups[key{c, baseline}]; len(rs) > 0 {
			base, hasBase = sum(rs), true
		}
		for _, l := range labels {
			rs := groups[key{c, l}]
			if len(rs) == 0 {
				continue
			}
			s := sum(rs)
			cmp := hasBase && l != baseline
			runs := fmt.Sprint(s.runs)
			if s.failed > 0 {
				runs += fmt.Sprintf(" (%d failed)", s.failed)
			}
			del, lat := "–", "–"
			if s.hasDelivery {
				del = fmt.Sprintf("%.0f%s", s.delivered, ratio(s.delivered, base.delivered, cmp))
				lat = fmt.Sprintf("%.1f / %.1f", s.lat50, s.lat99)
			}
			cpu, cpuMsg, rss, pss := "–", "–", "–", "–"
			if s.hasProc {
				cpu = fmt.Sprintf("%.1f", s.cpu)
				cpuMsg = fmt.Sprintf("%.2f%s", s.cpuMsg, ratio(s.cpuMsg, base.cpuMsg, cmp && base.hasProc))
				rss = fmt.Sprintf("%.0f (+%.0f)", s.rss, s.rssGrowth)
				if s.pss > 0 {
					pss = fmt.Sprintf("%.0f", s.pss)
				}
			}
			fmt.Fprintf(w, "| %s | %s | %s | %.0f%s | %s | %s | %.1f | %s | %s | %s | %s |\n",
				c, l, runs, s.accepted, ratio(s.accepted, base.accepted, cmp), del, lat, s.submit50, cpu, cpuMsg, rss, pss)
		}
	}
	if len(flushes) == 0 {
		return
	}
	// Flushes per message, from the traced runs, one column per label.
	fmt.Fprintln(w)
	fmt.Fprint(w, "| disk flushes per message (strace) |")
	for _, l := range labels {
		fmt.Fprintf(w, " %s |", l)
	}
	fmt.Fprint(w, "\n|---|")
	for range labels {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w)
	for _, c := range cases {
		fmt.Fprintf(w, "| %s |", c)
		for _, l := range labels {
			if v := flushes[key{c, l}]; len(v) > 0 {
				fmt.Fprintf(w, " %.2f |", Median(v))
			} else {
				fmt.Fprint(w, " – |")
			}
		}
		fmt.Fprintln(w)
	}
}
