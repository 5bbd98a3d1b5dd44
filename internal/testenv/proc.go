package testenv

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
	buildDir  string
)

// Binary builds cmd/jetrelay once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "jetrelay-bin-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "jetrelay")
		if runtime.GOOS == "windows" {
			buildPath += ".exe"
		}
		root := moduleRoot()
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/jetrelay")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// CleanupBinary removes the built binary; call it from TestMain.
func CleanupBinary() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

func moduleRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return dir
}

// FreePort returns a loopback TCP port that was free a moment ago on
// 127.0.0.1, or on each of hosts when given (e.g. "127.0.0.2", "::1"),
// and that no other call in this test process has returned.
//
// The port lies outside the kernel's ephemeral range, because tests stop
// processes and start them again on the same addresses: a port taken from
// that range (as "127.0.0.1:0" does) can meanwhile become the source port
// of an outgoing connection - a NATS route redialling the stopped node -
// and the restarted process then fails with "address already in use".
func FreePort(t testing.TB, hosts ...string) int {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1"}
	}
	lo, hi := portRange()
	portsMu.Lock()
	defer portsMu.Unlock()
next:
	for range 1000 {
		p := lo + rand.IntN(hi-lo+1)
		if portsGiven[p] {
			continue
		}
		for _, h := range hosts {
			l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(p)))
			if err != nil {
				continue next
			}
			l.Close()
		}
		portsGiven[p] = true
		return p
	}
	t.Fatalf("no free port on %v in %d-%d", hosts, lo, hi)
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// portRange is where FreePort looks: below the ephemeral range when that
// leaves room (Linux: 32768-60999, so 10000-32767), else above it.
func portRange() (lo, hi int) {
	elo, ehi := 32768, 60999 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var a, z int
		if n, _ := fmt.Sscan(string(b), &a, &z); n == 2 && a > 0 && z >= a {
			elo, ehi = a, z
		}
	}
	switch {
	case elo > 11000:
		return 10000, elo - 1
	case ehi < 64000:
		return ehi + 1, 65535
	default: // the whole range is ephemeral: nothing better to do
		return 1024, 65535
	}
}

// Proc is a jetrelay process started by a test.
type Proc struct {
	t    testing.TB
	Name string
	Cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   *sync.Mutex
	done chan struct{}
	err  error
}

type lockedBuf struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (l lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// StartProc runs the binary with args. Its output is kept and shown if
// the test fails; it is killed when the test ends.
func StartProc(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	return StartExternal(t, name, Binary(t), args...)
}

// Output is what the process wrote so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the exit.
func (p *Proc) Kill() {
	if p.Running() {
		_ = p.Cmd.Process.Kill()
	}
	<-p.done
}

// Stop sends SIGTERM and waits up to timeout for a graceful exit (then
// SIGKILL). It returns the exit error.
func (p *Proc) Stop(timeout time.Duration) error {
	if p.Running() {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Errorf("%s did not stop within %s after SIGTERM", p.Name, timeout)
		p.Kill()
	}
	return p.err
}

// WaitListening waits until addr accepts TCP connections.
func WaitListening(t testing.TB, addr string, timeout time.Duration, procs ...*Proc) {
	t.Helper()
	Eventually(t, timeout, func() bool {
		for _, p := range procs {
			if !p.Running() {
				t.Fatalf("%s exited: %v\n%s", p.Name, p.err, p.Output())
			}
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, "nothing listens on %s", addr)
}

// WriteConfig writes a YAML configuration file and returns its path.
func WriteConfig(t testing.TB, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "jetrelay.yaml")
	if err := os.WriteFile(p, []byte(strings.TrimLeft(yaml, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	natsOnce sync.Once
	natsPath string
	natsErr  error
)

// NatsServer builds the official nats-server binary (the module jetrelay
// embeds) once per test process and returns its path.
func NatsServer(t testing.TB) string {
	t.Helper()
	Binary(t) // shares the temporary directory
	natsOnce.Do(func() {
		natsPath = filepath.Join(buildDir, "nats-server")
		cmd := exec.Command("go", "build", "-o", natsPath, "github.com/nats-io/nats-server/v2")
		cmd.Dir = moduleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			natsErr = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		}
	})
	if natsErr != nil {
		t.Fatal(natsErr)
	}
	return natsPath
}

// StartExternal runs another binary (not jetrelay) like StartProc.
func StartExternal(t testing.TB, name, path string, args ...string) *Proc {
	t.Helper()
	p := &Proc{t: t, Name: name, log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan struct{})}
	p.Cmd = exec.Command(path, args...)
	w := lockedBuf{mu: p.mu, buf: p.log}
	p.Cmd.Stdout, p.Cmd.Stderr = w, w
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("---- output of %s (pid %d) ----\n%s", name, p.Cmd.Process.Pid, p.Output())
		}
	})
	return p
}

// StartWithTmpfs runs the binary with args in a mount namespace of its
// own where a tmpfs of sizeMiB is mounted on dir, so that a test can fill
// the relay's file system without touching the machine's (the tmpfs goes
// away with the process). The test reaches the files through
// [Proc.InRoot]. It skips the test where mount namespaces are not
// available (Linux only, unshare from util-linux).
func StartWithTmpfs(t testing.TB, name, dir string, sizeMiB int, args ...string) *Proc {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("needs Linux mount namespaces")
	}
	bin := Binary(t)
	var ns []string
	for _, try := range [][]string{{"--user", "--map-root-user", "--mount"}, {"--mount"}} {
		if exec.Command("unshare", append(try, "true")...).Run() == nil {
			ns = try
			break
		}
	}
	if ns == nil {
		t.Skip("cannot create a mount namespace (unshare --mount failed): user namespaces disabled and not root")
	}
	script := fmt.Sprintf(`mount -t tmpfs -o size=%dm jetrelay-test "$0" && exec "$@"`, sizeMiB)
	argv := append(append(ns, "sh", "-c", script, dir, bin), args...)
	return StartExternal(t, name, "unshare", argv...)
}

// InRoot is path as the process sees it, in its mount namespace.
func (p *Proc) InRoot(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", p.Cmd.Process.Pid, path)
}
