package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports (it is part of the
// user-space ABI, independent of the kernel's HZ).
const clockTicks = 100

// ProcSelector chooses the processes whose resources are measured. A
// process is selected if it is one of PIDs, matches Match, runs as one
// of UIDs or is in Cgroup; then all descendants of the selected
// processes are added. The bench process itself is never selected.
type ProcSelector struct {
	PIDs []int
	// Match is matched against the command name (comm) and the command
	// line (arguments joined by spaces).
	Match *regexp.Regexp
	// UIDs match the real or effective user ID.
	UIDs []int
	// Cgroup is a cgroup directory (absolute, or relative to
	// /sys/fs/cgroup); its cgroup.procs lists its processes.
	Cgroup string
}

// Empty reports whether nothing is selected.
func (s ProcSelector) Empty() bool {
	return len(s.PIDs) == 0 && s.Match == nil && len(s.UIDs) == 0 && s.Cgroup == ""
}

// procStat is what the sampler uses of /proc/<pid>/stat.
type procStat struct {
	pid, ppid      int
	comm           string
	utime, stime   uint64 // clock ticks
	cutime, cstime uint64 // of the children it has waited for
	starttime      uint64 // clock ticks after boot: with pid, identifies a process
}

// parseStat parses the contents of /proc/<pid>/stat. The command name is
// in parentheses and may itself contain spaces and parentheses, so the
// fields are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	var st procStat
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return st, errors.New("stat: no command name")
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return st, fmt.Errorf("stat: pid: %w", err)
	}
	st.pid = pid
	st.comm = string(b[open+1 : end])
	f := bytes.Fields(b[end+1:])
	// f[0] is field 3 (state): field k is f[k-3].
	if len(f) < 20 {
		return st, fmt.Errorf("stat: %d fields after the command name, want at least 20", len(f))
	}
	num := func(k int) uint64 {
		if err != nil {
			return 0
		}
		var v uint64
		v, err = strconv.ParseUint(string(f[k-3]), 10, 64)
		return v
	}
	st.ppid = int(num(4))
	st.utime = num(14)
	st.stime = num(15)
	st.cutime = num(16)
	st.cstime = num(17)
	st.starttime = num(22)
	if err != nil {
		return st, fmt.Errorf("stat: %w", err)
	}
	return st, nil
}

// procStatus is what the sampler uses of /proc/<pid>/status.
type procStatus struct {
	rssKiB     int64
	ruid, euid int
}

// parseStatus parses /proc/<pid>/status: VmRSS (absent for kernel
// threads and zombies: 0) and the real and effective user IDs.
func parseStatus(b []byte) (procStatus, error) {
	st := procStatus{ruid: -1, euid: -1}
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			f := bytes.Fields(line[len("VmRSS:"):])
			if len(f) < 1 {
				return st, errors.New("status: empty VmRSS")
			}
			v, err := strconv.ParseInt(string(f[0]), 10, 64)
			if err != nil {
				return st, fmt.Errorf("status: VmRSS: %w", err)
			}
			st.rssKiB = v
		case bytes.HasPrefix(line, []byte("Uid:")):
			f := bytes.Fields(line[len("Uid:"):])
			if len(f) < 2 {
				return st, errors.New("status: short Uid line")
			}
			r, err1 := strconv.Atoi(string(f[0]))
			e, err2 := strconv.Atoi(string(f[1]))
			if err1 != nil || err2 != nil {
				return st, errors.New("status: bad Uid line")
			}
			st.ruid, st.euid = r, e
		}
	}
	return st, nil
}

// parsePss returns the Pss of /proc/<pid>/smaps_rollup in KiB.
func parsePss(b []byte) (int64, error) {
	i := bytes.Index(b, []byte("\nPss:"))
	if i < 0 {
		return 0, errors.New("smaps_rollup: no Pss")
	}
	f := bytes.Fields(b[i+len("\nPss:"):])
	if len(f) < 1 {
		return 0, errors.New("smaps_rollup: empty Pss")
	}
	return strconv.ParseInt(string(f[0]), 10, 64)
}

// ProcSample is one measurement of the selected processes.
type ProcSample struct {
	At     time.Time
	Procs  int
	RSSKiB int64 // sum of VmRSS
	PSSKiB int64 // sum of Pss (shared pages divided among their users)
	// PSS tells whether PSSKiB was measured in this sample.
	PSS bool
	// CPUTicks is the CPU time (user+system) consumed by the selected
	// processes since the sampler's first sample.
	CPUTicks int64
	PIDs     []int
}

type procKey struct {
	pid   int
	start uint64
}

// Sampler measures a set of processes from /proc.
//
// CPU time: a process's own time is utime+stime; cutime+cstime is the
// time of the children it has waited for, so the sum of
// utime+stime+cutime+cstime over a process tree loses nothing when a
// child ends and its parent reaps it (Postfix's master reaps its
// daemons, which end after max_use sessions or max_idle). The time of
// processes that existed at the first sample counts from then; of a
// process that ended and whose parent is not measured, up to its last
// sample.
type Sampler struct {
	Proc     string // default /proc
	CgroupFS string // default /sys/fs/cgroup
	Sel      ProcSelector
	// NoPSS: never read smaps_rollup. Reading it walks the page tables
	// of the process (about 10 ms for a 1 GiB heap, holding its mmap
	// lock), so it is done at most every PSSInterval (default 1s).
	NoPSS       bool
	PSSInterval time.Duration
	lastPSS     time.Time
	forcePSS    bool // measure Pss in the next sample regardless
	self        int
	procs       map[procKey]*cpuTrack
	dead        int64 // CPU ticks of ended processes not found in a parent
	nsamples    int
}

type cpuTrack struct {
	base, last uint64 // utime+stime+cutime+cstime at the first and last sample
	parent     procKey
}

// Sample takes one measurement.
func (s *Sampler) Sample() (ProcSample, error) {
	proc := s.Proc
	if proc == "" {
		proc = "/proc"
	}
	if s.self == 0 {
		s.self = os.Getpid()
	}
	ents, err := os.ReadDir(proc)
	if err != nil {
		return ProcSample{}, err
	}
	stats := make(map[int]procStat, len(ents))
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(proc, e.Name(), "stat"))
		if err != nil {
			continue // gone
		}
		st, err := parseStat(b)
		if err != nil {
			continue
		}
		stats[pid] = st
		children[st.ppid] = append(children[st.ppid], pid)
	}

	// Roots.
	sel := map[int]bool{}
	for _, p := range s.Sel.PIDs {
		if _, ok := stats[p]; ok {
			sel[p] = true
		}
	}
	if s.Sel.Cgroup != "" {
		cg := s.Sel.Cgroup
		if !filepath.IsAbs(cg) {
			root := s.CgroupFS
			if root == "" {
				root = "/sys/fs/cgroup"
			}
			cg = filepath.Join(root, cg)
		}
		b, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		if err != nil {
			return ProcSample{}, fmt.Errorf("cgroup: %w", err)
		}
		for _, f := range bytes.Fields(b) {
			if p, err := strconv.Atoi(string(f)); err == nil {
				if _, ok := stats[p]; ok {
					sel[p] = true
				}
			}
		}
	}
	statuses := map[int]procStatus{}
	if s.Sel.Match != nil || len(s.Sel.UIDs) > 0 {
		for pid, st := range stats {
			if sel[pid] {
				continue
			}
			if s.Sel.Match != nil {
				if s.Sel.Match.MatchString(st.comm) {
					sel[pid] = true
					continue
				}
				if cl, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "cmdline")); err == nil && len(cl) > 0 {
					cl = bytes.TrimRight(cl, "\x00")
					cl = bytes.ReplaceAll(cl, []byte{0}, []byte{' '})
					if s.Sel.Match.Match(cl) {
						sel[pid] = true
						continue
					}
				}
			}
			if len(s.Sel.UIDs) > 0 {
				b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "status"))
				if err != nil {
					continue
				}
				ps, err := parseStatus(b)
				if err != nil {
					continue
				}
				statuses[pid] = ps
				for _, u := range s.Sel.UIDs {
					if ps.ruid == u || ps.euid == u {
						sel[pid] = true
						break
					}
				}
			}
		}
	}
	// The bench process and its descendants are never measured.
	delete(sel, s.self)
	// Descendants.
	queue := make([]int, 0, len(sel))
	for p := range sel {
		queue = append(queue, p)
	}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !sel[c] && c != s.self {
				sel[c] = true
				queue = append(queue, c)
			}
		}
	}

	now := time.Now()
	out := ProcSample{At: now}
	pssEvery := s.PSSInterval
	if pssEvery <= 0 {
		pssEvery = time.Second
	}
	if !s.NoPSS && (s.forcePSS || s.lastPSS.IsZero() || now.Sub(s.lastPSS) >= pssEvery) {
		out.PSS = true
		s.lastPSS, s.forcePSS = now, false
	}
	first := s.nsamples == 0
	if first {
		s.procs = map[procKey]*cpuTrack{}
	}
	s.nsamples++
	alive := make(map[procKey]bool, len(sel))
	for pid := range sel {
		st := stats[pid]
		ps, ok := statuses[pid]
		if !ok {
			b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "status"))
			if err != nil {
				continue // ended meanwhile
			}
			if ps, err = parseStatus(b); err != nil {
				continue
			}
		}
		out.Procs++
		out.PIDs = append(out.PIDs, pid)
		out.RSSKiB += ps.rssKiB
		if out.PSS && ps.rssKiB > 0 {
			if b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "smaps_rollup")); err == nil {
				if v, err := parsePss(b); err == nil {
					out.PSSKiB += v
				}
			}
		}
		k := procKey{pid, st.starttime}
		t := st.utime + st.stime + st.cutime + st.cstime
		tr := s.procs[k]
		if tr == nil {
			tr = &cpuTrack{}
			if first {
				tr.base = t
			}
			s.procs[k] = tr
		}
		if pst, ok := stats[st.ppid]; ok {
			tr.parent = procKey{st.ppid, pst.starttime}
		}
		if t > tr.last {
			tr.last = t
		}
		alive[k] = true
	}
	for k, tr := range s.procs {
		if alive[k] {
			continue
		}
		if alive[tr.parent] {
			// Reaped (or about to be) by a measured parent: its whole
			// time moves into the parent's cutime+cstime, which counts it
			// from zero, so take out what it had before the first sample.
			s.dead -= int64(tr.base)
		} else {
			s.dead += int64(tr.last) - int64(tr.base)
		}
		delete(s.procs, k)
	}
	out.CPUTicks = s.dead
	for _, tr := range s.procs {
		out.CPUTicks += int64(tr.last) - int64(tr.base)
	}
	return out, nil
}

// ProcResult summarizes the samples of a run.
type ProcResult struct {
	Selector     string  `json:"selector"`
	Samples      int     `json:"samples"`
	ProcsMax     int     `json:"procs_max"`
	RSSStartMiB  float64 `json:"rss_start_mib"`
	RSSPeakMiB   float64 `json:"rss_peak_mib"`
	RSSEndMiB    float64 `json:"rss_end_mib"`
	RSSGrowthMiB float64 `json:"rss_growth_mib"`
	PSSPeakMiB   float64 `json:"pss_peak_mib,omitempty"`
	CPUSeconds   float64 `json:"cpu_seconds"`
	// CPUPercent is CPUSeconds over the measured wall time (200 = two
	// cores busy).
	CPUPercent  float64 `json:"cpu_percent"`
	WallSeconds float64 `json:"wall_seconds"`
	Error       string  `json:"error,omitempty"`
}

// Monitor samples in the background until Stop.
type Monitor struct {
	s        *Sampler
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}

	mu    sync.Mutex
	res   ProcResult
	first ProcSample
	last  ProcSample
	err   error
}

// StartMonitor takes a first sample at once, then one every interval.
func StartMonitor(s *Sampler, interval time.Duration, desc string) (*Monitor, error) {
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	m := &Monitor{s: s, interval: interval, stop: make(chan struct{}), done: make(chan struct{})}
	m.res.Selector = desc
	first, err := s.Sample()
	if err != nil {
		return nil, err
	}
	if first.Procs == 0 {
		return nil, fmt.Errorf("no process matches %s", desc)
	}
	m.first = first
	m.add(first)
	go m.loop()
	return m, nil
}

func (m *Monitor) add(ps ProcSample) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.res.Samples++
	if ps.Procs > m.res.ProcsMax {
		m.res.ProcsMax = ps.Procs
	}
	if v := mib(ps.RSSKiB); v > m.res.RSSPeakMiB {
		m.res.RSSPeakMiB = v
	}
	if v := mib(ps.PSSKiB); ps.PSS && v > m.res.PSSPeakMiB {
		m.res.PSSPeakMiB = v
	}
	m.last = ps
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

func (m *Monitor) loop() {
	defer close(m.done)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			ps, err := m.s.Sample()
			if err != nil {
				m.mu.Lock()
				m.err = err
				m.mu.Unlock()
				continue
			}
			m.add(ps)
		}
	}
}

// Stop takes a last sample (with Pss) and returns the summary.
func (m *Monitor) Stop() ProcResult {
	close(m.stop)
	<-m.done
	m.s.forcePSS = true
	if ps, err := m.s.Sample(); err == nil {
		m.add(ps)
	} else {
		m.err = err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.res
	r.RSSStartMiB = mib(m.first.RSSKiB)
	r.RSSEndMiB = mib(m.last.RSSKiB)
	r.RSSGrowthMiB = r.RSSPeakMiB - r.RSSStartMiB
	r.CPUSeconds = float64(m.last.CPUTicks) / clockTicks
	r.WallSeconds = m.last.At.Sub(m.first.At).Seconds()
	if r.WallSeconds > 0 {
		r.CPUPercent = 100 * r.CPUSeconds / r.WallSeconds
	}
	if m.err != nil {
		r.Error = m.err.Error()
	}
	return r
}
