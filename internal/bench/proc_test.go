package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"
)

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseStat(t *testing.T) {
	st, err := parseStat(readFixture(t, "stat-master"))
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{pid: 4321, ppid: 1, comm: "master", utime: 12, stime: 34, cutime: 567, cstime: 890, starttime: 1234567}
	if st != want {
		t.Errorf("got %+v, want %+v", st, want)
	}
	// A command name with spaces and parentheses.
	st, err = parseStat(readFixture(t, "stat-weird-comm"))
	if err != nil {
		t.Fatal(err)
	}
	want = procStat{pid: 777, ppid: 4321, comm: "tmux: (srv) x", utime: 5, stime: 7, starttime: 99}
	if st != want {
		t.Errorf("got %+v, want %+v", st, want)
	}
	for _, bad := range []string{"", "12 cat R 1", "12 (cat) R 1 2 3", "x (cat) R 1 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 5 1 1"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q): no error", bad)
		}
	}
}

func TestParseStatus(t *testing.T) {
	st, err := parseStatus(readFixture(t, "status-smtpd"))
	if err != nil {
		t.Fatal(err)
	}
	if st.rssKiB != 6932 || st.ruid != 107 || st.euid != 107 {
		t.Errorf("got %+v", st)
	}
	st, err = parseStatus(readFixture(t, "status-kthread"))
	if err != nil {
		t.Fatal(err)
	}
	if st.rssKiB != 0 || st.ruid != 0 {
		t.Errorf("kernel thread: got %+v", st)
	}
	if _, err := parseStatus([]byte("VmRSS:\tlots kB\n")); err == nil {
		t.Error("bad VmRSS: no error")
	}
}

func TestParsePss(t *testing.T) {
	v, err := parsePss(readFixture(t, "smaps_rollup"))
	if err != nil || v != 2343 {
		t.Errorf("got %d, %v; want 2343", v, err)
	}
	if _, err := parsePss([]byte("Rss: 1 kB\n")); err == nil {
		t.Error("no Pss: no error")
	}
}

// fakeProc is a /proc tree in a temporary directory.
type fakeProc struct {
	t    *testing.T
	root string
}

type fakeProcess struct {
	pid, ppid, uid int
	comm, cmdline  string
	utime, stime   int
	cutime         int // CPU time of the children it reaped
	start          int
	rssKiB         int
}

func (f *fakeProc) put(p fakeProcess) {
	f.t.Helper()
	dir := filepath.Join(f.root, fmt.Sprint(p.pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	stat := fmt.Sprintf("%d (%s) S %d %d %d 0 -1 4194560 100 0 0 0 %d %d %d 0 20 0 1 0 %d 1000000 %d 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
		p.pid, p.comm, p.ppid, p.pid, p.pid, p.utime, p.stime, p.cutime, p.start, p.rssKiB/4)
	status := fmt.Sprintf("Name:\t%s\nPid:\t%d\nPPid:\t%d\nUid:\t%d\t%d\t%d\t%d\nVmRSS:\t%8d kB\nThreads:\t1\n", p.comm, p.pid, p.ppid, p.uid, p.uid, p.uid, p.uid, p.rssKiB)
	smaps := fmt.Sprintf("0-0 ---p 00000000 00:00 0 [rollup]\nRss: %d kB\nPss: %d kB\n", p.rssKiB, p.rssKiB/2)
	for name, s := range map[string]string{"stat": stat, "status": status, "smaps_rollup": smaps, "cmdline": p.cmdline} {
		// Atomically, as /proc reads are: the sampler may read concurrently.
		tmp := filepath.Join(f.root, "tmp-"+name)
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			f.t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fakeProc) remove(pid int) {
	if err := os.RemoveAll(filepath.Join(f.root, fmt.Sprint(pid))); err != nil {
		f.t.Fatal(err)
	}
}

func newFakeProc(t *testing.T) *fakeProc {
	f := &fakeProc{t: t, root: t.TempDir()}
	// A Postfix-like tree: master (root) with daemons running as postfix
	// (uid 107), one of which has a child; plus unrelated processes.
	f.put(fakeProcess{pid: 1, ppid: 0, comm: "init", cmdline: "/sbin/init\x00", utime: 1000, start: 1, rssKiB: 4000})
	f.put(fakeProcess{pid: 100, ppid: 1, comm: "master", cmdline: "/usr/lib/postfix/sbin/master\x00-w\x00", utime: 10, stime: 5, cutime: 1000, start: 50, rssKiB: 4000})
	f.put(fakeProcess{pid: 101, ppid: 100, uid: 107, comm: "qmgr", cmdline: "qmgr\x00-l\x00-t\x00unix\x00-u\x00", utime: 3, start: 60, rssKiB: 3000})
	f.put(fakeProcess{pid: 102, ppid: 100, uid: 107, comm: "smtpd", cmdline: "smtpd\x00-n\x00smtp\x00", utime: 7, stime: 1, start: 70, rssKiB: 5000})
	f.put(fakeProcess{pid: 103, ppid: 102, uid: 107, comm: "helper", start: 71, rssKiB: 1000})
	f.put(fakeProcess{pid: 200, ppid: 1, uid: 107, comm: "postdrop", cmdline: "postdrop\x00", utime: 1, start: 80, rssKiB: 2000})
	f.put(fakeProcess{pid: 300, ppid: 1, uid: 1000, comm: "jetrelay", cmdline: "/usr/bin/jetrelay\x00serve\x00", utime: 50, stime: 20, start: 90, rssKiB: 30000})
	f.put(fakeProcess{pid: 301, ppid: 1, uid: 1000, comm: "bash", cmdline: "bash\x00", start: 91, rssKiB: 3000})
	// Not processes.
	if err := os.MkdirAll(filepath.Join(f.root, "sys"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.root, "uptime"), []byte("1 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSamplerSelection(t *testing.T) {
	f := newFakeProc(t)
	for _, tc := range []struct {
		name string
		sel  ProcSelector
		pids []int
		rss  int64
	}{
		{"pid tree", ProcSelector{PIDs: []int{100}}, []int{100, 101, 102, 103}, 13000},
		{"two pids", ProcSelector{PIDs: []int{102, 300}}, []int{102, 103, 300}, 36000},
		{"missing pid", ProcSelector{PIDs: []int{999}}, nil, 0},
		{"user", ProcSelector{UIDs: []int{107}}, []int{101, 102, 103, 200}, 11000},
		{"user and master", ProcSelector{UIDs: []int{107}, PIDs: []int{100}}, []int{100, 101, 102, 103, 200}, 15000},
		{"match comm", ProcSelector{Match: regexp.MustCompile(`^jetrelay$`)}, []int{300}, 30000},
		{"match cmdline", ProcSelector{Match: regexp.MustCompile(`postfix/sbin/master -w`)}, []int{100, 101, 102, 103}, 13000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Sampler{Proc: f.root, Sel: tc.sel}
			ps, err := s.Sample()
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(ps.PIDs)
			if !slices.Equal(ps.PIDs, tc.pids) || ps.Procs != len(tc.pids) {
				t.Errorf("pids %v, want %v", ps.PIDs, tc.pids)
			}
			if ps.RSSKiB != tc.rss || ps.PSSKiB != tc.rss/2 {
				t.Errorf("rss %d pss %d, want %d and %d", ps.RSSKiB, ps.PSSKiB, tc.rss, tc.rss/2)
			}
			if ps.CPUTicks != 0 {
				t.Errorf("first sample: cpu %d, want 0", ps.CPUTicks)
			}
		})
	}
}

func TestSamplerCgroup(t *testing.T) {
	f := newFakeProc(t)
	cg := t.TempDir()
	if err := os.MkdirAll(filepath.Join(cg, "relay.slice"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cg, "relay.slice", "cgroup.procs"), []byte("300\n301\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Sampler{Proc: f.root, CgroupFS: cg, Sel: ProcSelector{Cgroup: "relay.slice"}}
	ps, err := s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if ps.Procs != 2 || ps.RSSKiB != 33000 {
		t.Errorf("got %d procs, rss %d", ps.Procs, ps.RSSKiB)
	}
}

func TestSamplerCPUOverTime(t *testing.T) {
	f := newFakeProc(t)
	s := &Sampler{Proc: f.root, Sel: ProcSelector{PIDs: []int{100}}, NoPSS: true}
	if _, err := s.Sample(); err != nil {
		t.Fatal(err)
	}
	// smtpd works and a new cleanup process appears and works.
	f.put(fakeProcess{pid: 102, ppid: 100, uid: 107, comm: "smtpd", utime: 27, stime: 1, start: 70, rssKiB: 9000})
	f.put(fakeProcess{pid: 104, ppid: 100, uid: 107, comm: "cleanup", utime: 4, stime: 2, start: 200, rssKiB: 2000})
	ps, err := s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if ps.CPUTicks != 20+6 {
		t.Errorf("cpu %d, want 26", ps.CPUTicks)
	}
	if ps.RSSKiB != 4000+3000+9000+1000+2000 || ps.PSSKiB != 0 {
		t.Errorf("rss %d pss %d", ps.RSSKiB, ps.PSSKiB)
	}
	// smtpd and its child exit, smtpd works a little more before, and
	// master reaps it: its whole time (30 ticks, 8 before the first
	// sample) moves into master's cutime. Its pid is reused by a new
	// process, whose time counts from zero.
	f.remove(102)
	f.remove(103)
	f.put(fakeProcess{pid: 100, ppid: 1, comm: "master", utime: 10, stime: 5, cutime: 1000 + 30, start: 50, rssKiB: 4000})
	f.put(fakeProcess{pid: 102, ppid: 100, uid: 107, comm: "smtpd", utime: 3, start: 300, rssKiB: 1000})
	ps, err = s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if ps.CPUTicks != 22+6+3 {
		t.Errorf("cpu %d, want 31", ps.CPUTicks)
	}
	if ps.Procs != 4 {
		t.Errorf("procs %d, want 4", ps.Procs)
	}
	// cleanup ends, master reaps it and works itself.
	f.remove(104)
	f.put(fakeProcess{pid: 100, ppid: 1, comm: "master", utime: 12, stime: 5, cutime: 1000 + 30 + 6, start: 50, rssKiB: 4000})
	ps, err = s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if ps.CPUTicks != 22+6+3+2 {
		t.Errorf("cpu %d, want 33", ps.CPUTicks)
	}
}

func TestMonitor(t *testing.T) {
	f := newFakeProc(t)
	s := &Sampler{Proc: f.root, Sel: ProcSelector{PIDs: []int{300}}, PSSInterval: time.Nanosecond}
	m, err := StartMonitor(s, time.Millisecond, "pid 300")
	if err != nil {
		t.Fatal(err)
	}
	f.put(fakeProcess{pid: 300, ppid: 1, uid: 1000, comm: "jetrelay", utime: 150, stime: 20, start: 90, rssKiB: 80000})
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		peak := m.res.RSSPeakMiB
		m.mu.Unlock()
		if peak > 70 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	f.put(fakeProcess{pid: 300, ppid: 1, uid: 1000, comm: "jetrelay", utime: 200, stime: 20, start: 90, rssKiB: 40000})
	r := m.Stop()
	if r.CPUSeconds != 1.5 {
		t.Errorf("cpu %v s, want 1.5", r.CPUSeconds)
	}
	if r.RSSStartMiB != 30000.0/1024 || r.RSSPeakMiB != 80000.0/1024 || r.RSSEndMiB != 40000.0/1024 {
		t.Errorf("rss start %v peak %v end %v", r.RSSStartMiB, r.RSSPeakMiB, r.RSSEndMiB)
	}
	if r.RSSGrowthMiB != 50000.0/1024 || r.PSSPeakMiB != 40000.0/1024 || r.ProcsMax != 1 || r.Samples < 3 {
		t.Errorf("got %+v", r)
	}

	// A measured process without a measured parent ends: its time is
	// kept at its last sample.
	s = &Sampler{Proc: f.root, Sel: ProcSelector{PIDs: []int{300, 301}}, NoPSS: true}
	if _, err := s.Sample(); err != nil {
		t.Fatal(err)
	}
	f.put(fakeProcess{pid: 301, ppid: 1, uid: 1000, comm: "bash", utime: 40, start: 91, rssKiB: 3000})
	if _, err := s.Sample(); err != nil {
		t.Fatal(err)
	}
	f.remove(301)
	ps, err := s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if ps.CPUTicks != 40 || ps.Procs != 1 {
		t.Errorf("cpu %d procs %d, want 40 and 1", ps.CPUTicks, ps.Procs)
	}

	if _, err := StartMonitor(&Sampler{Proc: f.root, Sel: ProcSelector{PIDs: []int{12345}}}, time.Millisecond, "pid 12345"); err == nil {
		t.Error("monitor of no process: no error")
	}
}

func TestSamplerPSSInterval(t *testing.T) {
	f := newFakeProc(t)
	s := &Sampler{Proc: f.root, Sel: ProcSelector{PIDs: []int{300}}, PSSInterval: time.Hour}
	ps, err := s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if !ps.PSS || ps.PSSKiB != 15000 {
		t.Errorf("first sample: pss %v %d", ps.PSS, ps.PSSKiB)
	}
	ps, err = s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if ps.PSS || ps.PSSKiB != 0 || ps.RSSKiB != 30000 {
		t.Errorf("second sample within the interval: pss %v %d rss %d", ps.PSS, ps.PSSKiB, ps.RSSKiB)
	}
	s.forcePSS = true // as Monitor.Stop does for the last sample
	if ps, err = s.Sample(); err != nil || !ps.PSS || ps.PSSKiB != 15000 {
		t.Errorf("forced: pss %v %d, %v", ps.PSS, ps.PSSKiB, err)
	}
}
