package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// FlushCalls are the system calls that make the kernel write data to the
// disk before they return: the cost of a durability promise.
var FlushCalls = []string{"fsync", "fdatasync", "sync_file_range", "msync", "syncfs", "sync"}

// Flushes is what the flush tracer counted over one run: the calls per
// system call, and their sum per accepted message.
type Flushes struct {
	Calls      map[string]int64 `json:"calls"`
	Total      int64            `json:"total"`
	PerMessage float64          `json:"per_message"`
}

// flushTracer counts the flushes of a set of processes with strace -c,
// attached to every selected process (and, with -f, to the threads and
// children they have or start). Tracing slows every system call of the
// traced processes, so a traced run measures flushes, not speed.
type flushTracer struct {
	cmd  *exec.Cmd
	out  string
	done chan error
}

// startFlushTracer attaches strace to pids and returns once every thread
// of every process is traced (bounded by ctx).
func startFlushTracer(ctx context.Context, pids []int, dir string) (*flushTracer, error) {
	if len(pids) == 0 {
		return nil, errors.New("no process to trace")
	}
	path, err := exec.LookPath("strace")
	if err != nil {
		return nil, fmt.Errorf("counting flushes needs strace: %w", err)
	}
	out := filepath.Join(dir, fmt.Sprintf("jetrelay-bench-strace-%d.txt", os.Getpid()))
	args := []string{"-f", "-qq", "-c", "-o", out, "-e", "trace=" + strings.Join(FlushCalls, ",")}
	for _, p := range pids {
		args = append(args, "-p", strconv.Itoa(p))
	}
	cmd := exec.Command(path, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("strace: %w", err)
	}
	t := &flushTracer{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { t.done <- cmd.Wait() }()
	// Attached when every thread of every process names a tracer.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if tracedAll(pids) {
			return t, nil
		}
		select {
		case err := <-t.done:
			return nil, fmt.Errorf("strace ended before it attached: %v: %s", err, strings.TrimSpace(stderr.String()))
		case <-ctx.Done():
			t.stop()
			return nil, fmt.Errorf("strace did not attach: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// tracedAll reports whether every thread of pids has a tracer.
func tracedAll(pids []int) bool {
	for _, p := range pids {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		if err != nil {
			continue // gone
		}
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", p, task.Name()))
			if err != nil {
				continue
			}
			if tracerPid(b) == 0 {
				return false
			}
		}
	}
	return true
}

func tracerPid(status []byte) int {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "TracerPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// stop detaches strace and returns its counts (bounded: 30 s).
func (t *flushTracer) stop() (map[string]int64, error) {
	_ = t.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-t.done:
	case <-time.After(30 * time.Second):
		_ = t.cmd.Process.Kill()
		<-t.done
		return nil, errors.New("strace did not stop within 30 s")
	}
	defer os.Remove(t.out)
	b, err := os.ReadFile(t.out)
	if err != nil {
		return nil, fmt.Errorf("strace summary: %w", err)
	}
	return parseStraceSummary(b)
}

// parseStraceSummary reads the table strace -c writes:
//
//	% time     seconds  usecs/call     calls    errors syscall
//	------ ----------- ----------- --------- --------- ----------------
//	 98.12    0.201223          31      6401           fsync
//	  1.88    0.003862          30       128        12 fdatasync
//	------ ----------- ----------- --------- --------- ----------------
//	100.00    0.205085          31      6529        12 total
func parseStraceSummary(b []byte) (map[string]int64, error) {
	calls := map[string]int64{}
	header := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) > 0 && f[0] == "%":
			header = true
			continue
		case !header || len(f) < 5 || strings.HasPrefix(f[0], "---"):
			continue
		}
		name := f[len(f)-1]
		if name == "total" {
			continue
		}
		n, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("strace summary line %q: %w", sc.Text(), err)
		}
		calls[name] = n
	}
	if !header {
		return nil, fmt.Errorf("not a strace -c summary: %.200q", b)
	}
	return calls, nil
}
