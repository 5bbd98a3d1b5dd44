package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sort"
	"sync/atomic"
	"time"
)

// Config is one bench run.
type Config struct {
	// Label and Case name the run in reports (e.g. "postfix", "1KiB-1rcpt").
	Label string
	Case  string

	Target   string // SMTP server under test
	SinkAddr string // where the bench sink listens
	// SinkOnly runs only the sink; NoSink only the load (another sink
	// receives the mail, end-to-end figures are not measured).
	SinkOnly, NoSink bool

	N           int // messages
	Size        int // bytes per message
	Rcpts       int // recipients per message
	Domains     int // recipient domains
	Concurrency int // SMTP sessions at once
	// PerConn messages per session (0: unlimited, sessions last the run).
	PerConn      int
	NoPipelining bool
	From, Helo   string

	// Timeout bounds the whole run (default 5m).
	Timeout time.Duration

	// Procs selects the processes of the server under test whose CPU
	// time and memory are measured (none: not measured).
	Procs          ProcSelector
	ProcsDesc      string
	SampleInterval time.Duration
	NoPSS          bool
	PSSInterval    time.Duration

	// CountFlushes traces the measured processes with strace during the
	// run and reports their disk flushes per message (Result.Flushes).
	// Tracing slows them down: such a run is for counting, and reports
	// leave it out of the speed figures.
	CountFlushes bool

	// Progress, when > 0, writes a progress line to Log this often.
	Progress time.Duration
	Log      io.Writer

	// sinkListener, for tests, replaces listening on SinkAddr.
	sinkListener net.Listener
}

// Result is everything a run measured; it is also the JSON output.
type Result struct {
	Label string `json:"label,omitempty"`
	Case  string `json:"case,omitempty"`
	Mode  string `json:"mode"` // full, sink-only, load-only
	RunID string `json:"run_id"`
	Start string `json:"start"`

	Target      string  `json:"target,omitempty"`
	Sink        string  `json:"sink,omitempty"`
	Messages    int     `json:"messages"`
	Size        int     `json:"size"`
	Rcpts       int     `json:"rcpts"`
	Domains     int     `json:"domains"`
	Concurrency int     `json:"concurrency"`
	PerConn     int     `json:"per_conn"`
	Pipelining  bool    `json:"pipelining"`
	TimeoutSecs float64 `json:"timeout_seconds"`

	Accepted       int64             `json:"accepted"`
	Failed         int64             `json:"failed"`
	Sessions       int64             `json:"sessions"`
	Errors         map[string]int64  `json:"errors"`
	ErrorSamples   map[string]string `json:"error_samples,omitempty"`
	AcceptSeconds  float64           `json:"accept_seconds"`
	AcceptedPerSec float64           `json:"accepted_per_sec"`
	AcceptedMiBs   float64           `json:"accepted_mib_per_sec"`
	// SubmitMs is the time from MAIL to the 250 after the final dot.
	SubmitMs Latency `json:"submit_ms"`

	DeliveredMsgs      int64   `json:"delivered_msgs"`
	DeliveredRcpts     int64   `json:"delivered_rcpts"`
	MissingRcpts       int64   `json:"missing_rcpts"`
	DuplicateRcpts     int64   `json:"duplicate_rcpts"`
	E2ESeconds         float64 `json:"e2e_seconds"`
	DeliveredPerSec    float64 `json:"delivered_per_sec"`
	DeliveredRcptsPerS float64 `json:"delivered_rcpts_per_sec"`
	// LatencyMs is from the client's 250 to the arrival of the last
	// recipient at the sink; EarlyArrivals counts messages that reached
	// the sink before the client had read its 250 (latency 0).
	LatencyMs     Latency `json:"latency_ms"`
	EarlyArrivals int64   `json:"early_arrivals"`

	SinkStats SinkStats   `json:"sink_stats"`
	SinkRate  float64     `json:"sink_msgs_per_sec,omitempty"`
	Process   *ProcResult `json:"process,omitempty"`
	// Flushes, in a run with CountFlushes, are the measured processes'
	// disk flushes; its speed figures are those of a traced relay.
	Flushes *Flushes `json:"flushes,omitempty"`
	// BenchCPUSeconds is the CPU time of the bench process itself (load
	// client and sink).
	BenchCPUSeconds float64 `json:"bench_cpu_seconds"`
	WallSeconds     float64 `json:"wall_seconds"`

	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// tracker correlates what the client sent with what the sink received.
type tracker struct {
	run     []byte
	start   time.Time
	n       int
	rcpts   int32
	seen    []int32
	arrived []int64 // ns since start of the last arrival, +1
	matched atomic.Int64
	dup     atomic.Int64
	notify  chan struct{}
	any     bool // sink-only: every message counts
}

func (t *tracker) observe(id []byte, rcpts int, at time.Time) bool {
	if t.any {
		select {
		case t.notify <- struct{}{}:
		default:
		}
		return true
	}
	if id == nil {
		return false
	}
	run, seq, err := ParseID(id)
	if err != nil || !bytes.Equal(run, t.run) || seq >= t.n {
		return false
	}
	ns := int64(at.Sub(t.start)) + 1
	if ns < 1 {
		ns = 1
	}
	r := int32(rcpts)
	now := atomic.AddInt32(&t.seen[seq], r)
	old := now - r
	m := min(now, t.rcpts) - min(old, t.rcpts)
	if m > 0 {
		t.matched.Add(int64(m))
	}
	if d := r - m; d > 0 {
		t.dup.Add(int64(d))
	}
	for {
		o := atomic.LoadInt64(&t.arrived[seq])
		if ns <= o || atomic.CompareAndSwapInt64(&t.arrived[seq], o, ns) {
			break
		}
	}
	select {
	case t.notify <- struct{}{}:
	default:
	}
	return true
}

// NewRunID returns a random run ID (8 hex digits).
func NewRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (c *Config) defaults() {
	if c.N < 0 || (c.N == 0 && !c.SinkOnly) {
		c.N = 1
	}
	if c.Size < 1 {
		c.Size = 1024
	}
	if c.Rcpts < 1 {
		c.Rcpts = 1
	}
	if c.Domains < 1 {
		c.Domains = 1
	}
	if c.Concurrency < 1 {
		c.Concurrency = 1
	}
	if c.From == "" {
		c.From = "bench@sender.bench.example"
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Minute
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Run runs the benchmark. The result is filled as far as the run got
// even when it returns an error (a timeout, mail that did not arrive).
// Cancelling ctx ends the run early; for the sink-only mode without a
// count that is the normal end.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	res := &Result{
		Label: cfg.Label, Case: cfg.Case, Mode: "full", RunID: NewRunID(),
		Target: cfg.Target, Sink: cfg.SinkAddr, Messages: cfg.N, Size: cfg.Size,
		Rcpts: cfg.Rcpts, Domains: min(cfg.Domains, cfg.Rcpts), Concurrency: cfg.Concurrency,
		PerConn: cfg.PerConn, Pipelining: !cfg.NoPipelining, TimeoutSecs: cfg.Timeout.Seconds(),
		Errors: map[string]int64{},
	}
	switch {
	case cfg.SinkOnly && cfg.NoSink:
		return res, errors.New("sink-only and no-sink exclude each other")
	case cfg.SinkOnly:
		res.Mode, res.Target = "sink-only", ""
	case cfg.NoSink:
		res.Mode, res.Sink = "load-only", ""
	}
	tctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	tr := &tracker{
		run: []byte(res.RunID), n: cfg.N, rcpts: int32(cfg.Rcpts),
		seen: make([]int32, cfg.N), arrived: make([]int64, cfg.N),
		notify: make(chan struct{}, 1), any: cfg.SinkOnly,
	}
	var sink *Sink
	if !cfg.NoSink {
		if cfg.sinkListener != nil {
			sink = NewSink(cfg.sinkListener, SinkOptions{Observe: tr.observe})
		} else {
			var err error
			sink, err = ListenSink(cfg.SinkAddr, SinkOptions{Observe: tr.observe})
			if err != nil {
				return res, fmt.Errorf("sink: %w", err)
			}
		}
		res.Sink = sink.Addr()
		defer sink.Close()
	}
	var mon *Monitor
	if !cfg.Procs.Empty() {
		var err error
		s := &Sampler{Sel: cfg.Procs, NoPSS: cfg.NoPSS, PSSInterval: cfg.PSSInterval}
		mon, err = StartMonitor(s, cfg.SampleInterval, cfg.ProcsDesc)
		if err != nil {
			return res, fmt.Errorf("process measurement: %w", err)
		}
	}
	var tracer *flushTracer
	if cfg.CountFlushes {
		if cfg.Procs.Empty() {
			return res, errors.New("counting flushes needs the processes to trace (--pid, --pid-match, --pid-user or --cgroup)")
		}
		ps, err := (&Sampler{Sel: cfg.Procs, NoPSS: true}).Sample()
		if err != nil {
			return res, fmt.Errorf("process measurement: %w", err)
		}
		actx, cancel := context.WithTimeout(tctx, 30*time.Second)
		tracer, err = startFlushTracer(actx, ps.PIDs, os.TempDir())
		cancel()
		if err != nil {
			if mon != nil {
				mon.Stop()
			}
			return res, err
		}
	}
	cpu0 := SelfCPU()
	start := time.Now()
	tr.start = start
	res.Start = start.UTC().Format(time.RFC3339Nano)
	ls := newLoadStats(cfg.N, start)

	var runErr error
	if cfg.SinkOnly {
		runErr = runSinkOnly(ctx, tctx, cfg, sink, tr)
	} else {
		runErr = runFull(ctx, tctx, cfg, res, sink, tr, ls)
	}
	res.WallSeconds = time.Since(start).Seconds()
	if tracer != nil {
		calls, err := tracer.stop()
		if err != nil && runErr == nil {
			runErr = fmt.Errorf("counting flushes: %w", err)
		}
		if calls != nil {
			f := &Flushes{Calls: calls}
			for _, n := range calls {
				f.Total += n
			}
			n := ls.accepted.Load()
			if cfg.SinkOnly {
				n = int64(cfg.N) // the load came from elsewhere
			}
			if n > 0 {
				f.PerMessage = round(float64(f.Total) / float64(n))
			}
			res.Flushes = f
		}
	}
	if mon != nil {
		pr := mon.Stop()
		res.Process = &pr
	}
	if sink != nil {
		sink.Close()
		res.SinkStats = sink.Stats()
		if st := res.SinkStats; st.Messages > 1 {
			if d := st.Last.Sub(st.First).Seconds(); d > 0 {
				res.SinkRate = round(float64(st.Messages-1) / d)
			}
		}
	}
	res.BenchCPUSeconds = round(SelfCPU() - cpu0)
	if !cfg.SinkOnly {
		fillResult(res, cfg, tr, ls, sink != nil)
	}
	if runErr == nil {
		switch {
		case res.Mode != "sink-only" && res.Accepted < int64(cfg.N):
			runErr = fmt.Errorf("%d of %d messages were not accepted", int64(cfg.N)-res.Accepted, cfg.N)
		case res.MissingRcpts > 0:
			runErr = fmt.Errorf("%d recipients did not arrive at the sink", res.MissingRcpts)
		}
	}
	res.OK = runErr == nil
	if runErr != nil {
		res.Error = runErr.Error()
	}
	return res, runErr
}

func runSinkOnly(ctx, tctx context.Context, cfg Config, sink *Sink, tr *tracker) error {
	want := int64(cfg.N) * int64(cfg.Rcpts) // 0: no count, run until the end

	prog := progressTicker(cfg.Progress)
	defer prog.Stop()
	for {
		if want > 0 && sink.Stats().Recipients >= want {
			return nil
		}
		select {
		case <-tr.notify:
		case <-prog.C:
			st := sink.Stats()
			fmt.Fprintf(cfg.Log, "bench sink: %d messages, %d recipients, %d connections\n", st.Messages, st.Recipients, st.Connections)
		case <-tctx.Done():
			if ctx.Err() != nil || want == 0 {
				return nil // interrupted, or no count to reach: the normal end
			}
			return fmt.Errorf("timeout after %s: %d of %d recipients arrived", cfg.Timeout, sink.Stats().Recipients, want)
		}
	}
}

func progressTicker(d time.Duration) *time.Ticker {
	if d <= 0 {
		t := time.NewTicker(time.Hour)
		t.Stop()
		return t
	}
	return time.NewTicker(d)
}

func runFull(ctx, tctx context.Context, cfg Config, res *Result, sink *Sink, tr *tracker, ls *loadStats) error {
	rcpts := Recipients(cfg.Rcpts, cfg.Domains)
	msg := NewMessage(res.RunID, cfg.From, rcpts, cfg.Size)
	res.Size = msg.Size
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		runLoad(tctx, LoadOptions{
			Target: cfg.Target, Helo: cfg.Helo, From: cfg.From, Rcpts: rcpts, Message: msg,
			N: cfg.N, Concurrency: cfg.Concurrency, PerConn: cfg.PerConn, NoPipelining: cfg.NoPipelining,
		}, ls)
	}()
	prog := progressTicker(cfg.Progress)
	defer prog.Stop()
	progress := func() {
		fmt.Fprintf(cfg.Log, "bench %s: %5.1fs accepted %d/%d failed %d, recipients at the sink %d\n",
			cfg.Label, time.Since(tr.start).Seconds(), ls.accepted.Load(), cfg.N, ls.failed.Load(), tr.matched.Load())
	}
	loading := true
	var expected int64
	for {
		if !loading && sink != nil && tr.matched.Load() >= expected && complete(tr, ls) {
			return nil
		}
		select {
		case <-loadDone:
			loading = false
			loadDone = nil
			if sink == nil {
				return nil
			}
			for i := range ls.acceptedAt {
				if ls.acceptedAt[i] != 0 {
					expected += int64(ls.expect[i])
				}
			}
		case <-tr.notify:
		case <-prog.C:
			progress()
		case <-tctx.Done():
			if loading {
				<-loadDone
			}
			if ctx.Err() != nil {
				return errors.New("interrupted")
			}
			return fmt.Errorf("timeout after %s", cfg.Timeout)
		}
	}
}

// complete reports whether every accepted message reached the sink with
// all its accepted recipients.
func complete(tr *tracker, ls *loadStats) bool {
	for i, a := range ls.acceptedAt {
		if a != 0 && atomic.LoadInt32(&tr.seen[i]) < ls.expect[i] {
			return false
		}
	}
	return true
}

func fillResult(res *Result, cfg Config, tr *tracker, ls *loadStats, withSink bool) {
	res.Accepted = ls.accepted.Load()
	res.Failed = ls.failed.Load()
	res.Sessions = ls.sessions.Load()
	ls.mu.Lock()
	for k, v := range ls.errs {
		res.Errors[k] = v
	}
	if len(ls.samples) > 0 {
		res.ErrorSamples = map[string]string{}
		for k, v := range ls.samples {
			res.ErrorSamples[k] = v
		}
	}
	ls.mu.Unlock()
	res.AcceptSeconds = round(float64(ls.lastAccepted.Load()) / 1e9)
	if res.AcceptSeconds > 0 {
		res.AcceptedPerSec = round(float64(res.Accepted) / res.AcceptSeconds)
		res.AcceptedMiBs = round(float64(res.Accepted) * float64(res.Size) / (1 << 20) / res.AcceptSeconds)
	}
	submit := make([]time.Duration, 0, res.Accepted)
	var lat []time.Duration
	if withSink {
		lat = make([]time.Duration, 0, res.Accepted)
	}
	var last int64
	for i := range ls.acceptedAt {
		a := atomic.LoadInt64(&ls.acceptedAt[i])
		if a == 0 {
			continue
		}
		submit = append(submit, time.Duration(ls.submitNs[i]))
		if !withSink {
			continue
		}
		seen := atomic.LoadInt32(&tr.seen[i])
		want := ls.expect[i]
		if seen < want {
			res.MissingRcpts += int64(want - seen)
			res.DeliveredRcpts += int64(seen)
			continue
		}
		res.DeliveredMsgs++
		res.DeliveredRcpts += int64(want)
		arr := atomic.LoadInt64(&tr.arrived[i])
		if arr > last {
			last = arr
		}
		d := time.Duration(arr - a)
		if d < 0 {
			d = 0
			res.EarlyArrivals++
		}
		lat = append(lat, d)
	}
	res.SubmitMs = Summarize(submit)
	if !withSink {
		return
	}
	res.DuplicateRcpts = tr.dup.Load()
	res.LatencyMs = Summarize(lat)
	if last > 0 {
		res.E2ESeconds = round(float64(last-1) / 1e9)
	}
	if res.E2ESeconds > 0 {
		res.DeliveredPerSec = round(float64(res.DeliveredMsgs) / res.E2ESeconds)
		res.DeliveredRcptsPerS = round(float64(res.DeliveredRcpts) / res.E2ESeconds)
	}
}

func round(v float64) float64 { return math.Round(v*1000) / 1000 }

// SortedErrors returns the error keys by count, descending.
func SortedErrors(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}
