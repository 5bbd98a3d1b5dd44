package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestParseStraceSummary(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]int64
		err  bool
	}{
		{"two calls", `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 98.12    0.201223          31      6401           fsync
  1.88    0.003862          30       128        12 fdatasync
------ ----------- ----------- --------- --------- ----------------
100.00    0.205085          31      6529        12 total
`, map[string]int64{"fsync": 6401, "fdatasync": 128}, false},
		{"none traced", `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
100.00    0.000000           0         0           total
`, map[string]int64{}, false},
		{"not a summary", "strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStraceSummary([]byte(tc.in))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %d, want %d", k, got[k], v)
				}
			}
		})
	}
}

// The tracer counts the flushes of a real process: a child that fsyncs a
// file a known number of times once it is told to.
func TestFlushTracerCountsAProcess(t *testing.T) {
	if _, err := exec.LookPath("strace"); err != nil {
		t.Skip("strace is not installed")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	gate := filepath.Join(dir, "go")
	// A shell loop: wait for the gate file (bounded), then sync the file
	// 7 times with dd conv=fsync.
	script := `for i in $(seq 1 200); do [ -e "$2" ] && break; sleep 0.05; done
for i in 1 2 3 4 5 6 7; do dd if=/dev/zero of="$1" bs=1 count=1 conv=fsync status=none; done`
	cmd := exec.Command("sh", "-c", script, "sh", file, gate)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr, err := startFlushTracer(ctx, []int{cmd.Process.Pid}, dir)
	if err != nil {
		if os.Getuid() != 0 {
			t.Skipf("cannot trace here: %v", err)
		}
		t.Fatal(err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	calls, err := tr.stop()
	if err != nil {
		t.Fatal(err)
	}
	if calls["fsync"] != 7 {
		t.Fatalf("counted %v, want 7 fsync", calls)
	}
}
