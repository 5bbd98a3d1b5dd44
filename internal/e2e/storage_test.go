//go:build linux

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/internal/testenv"
)

// A full disk under `serve` (its data directory on a 64 MiB tmpfs): new
// mail gets 452 4.3.1 at once, at MAIL, while it lasts; /readyz says why;
// nothing accepted is lost; when space comes back the relay accepts mail
// again and readiness recovers, without a restart.
func TestFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Run("below min_free", func(t *testing.T) {
		r := startOnTmpfs(t, "32MiB")
		r.sendOK(t, "before")
		// Leave about 16 MiB: JetStream can still write, but the reserve
		// is gone.
		r.fill(t, 16<<20)
		r.waitRefusedAtMail(t, "below broker.min_free")
		r.waitReady(t, false, "below broker.min_free")
		r.emptyFiller(t)
		r.waitReady(t, true, "")
		r.sendOK(t, "after")
		r.sink.WaitFor(t, 2, 30*time.Second)
	})
	t.Run("writes fail", func(t *testing.T) {
		// No reserve: the file system really fills up under a message
		// being stored, and the stream's store fails its write.
		r := startOnTmpfs(t, "1")
		r.sendOK(t, "before")
		c, _ := testenv.DialRaw(t, r.smtp, "")
		c.Expect(250, "EHLO client.test")
		c.Expect(250, "MAIL FROM:<app@client.test>")
		c.Expect(250, "RCPT TO:<rcpt@example.test>")
		c.Expect(354, "DATA")
		c.Write(testenv.RFC5322("refused", testenv.Body(128<<10)))
		r.fill(t, 0)
		rep := c.Expect(452, ".")
		if !strings.Contains(rep.String(), "4.3.1") {
			t.Errorf("end of DATA on a full disk: %s", rep)
		}
		r.waitRefusedAtMail(t, "no space left on device")
		r.waitReady(t, false, "no space left on device")

		r.emptyFiller(t)
		r.waitReady(t, true, "")
		// Every shard stores again (the stream that failed its write
		// was reloaded).
		for i := range 8 {
			r.sendOK(t, fmt.Sprintf("after-%d", i))
		}
		r.sink.WaitFor(t, 9, 30*time.Second)
		for _, m := range r.sink.Messages() {
			if bytes.Contains(m.Data, []byte("Subject: refused")) {
				t.Errorf("the message refused with 452 was delivered")
			}
		}
		if !strings.Contains(r.proc.Output(), "reloading JetStream") {
			t.Errorf("no JetStream reload in the log")
		}
	})
}

type tmpfsRelay struct {
	proc *testenv.Proc
	dir  string // the data directory, a tmpfs in the relay's namespace
	smtp string
	http string
	sink *testenv.Sink
}

func startOnTmpfs(t *testing.T, minFree string) *tmpfsRelay {
	t.Helper()
	r := &tmpfsRelay{
		dir:  t.TempDir(),
		smtp: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		http: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		sink: testenv.NewSink(t, testenv.SinkOptions{}),
	}
	cfg := testenv.WriteConfig(t, fmt.Sprintf(`
hostname: relay.test
data_dir: %s
broker:
  min_free: %s
  publish_timeout: 3s
ingress:
  listen: [%q]
delivery:
  smarthost: %q
  smarthost_tls: none
http:
  listen: %q
log:
  level: info
`, r.dir, minFree, r.smtp, r.sink.Addr, r.http))
	r.proc = testenv.StartWithTmpfs(t, "serve", r.dir, 64, "serve", "--config", cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("serve:\n%s", r.proc.Output())
		}
		r.proc.Kill()
	})
	testenv.WaitListening(t, r.smtp, 60*time.Second, r.proc)
	r.waitReady(t, true, "")
	return r
}

func (r *tmpfsRelay) sendOK(t *testing.T, subject string) {
	t.Helper()
	if _, err := testenv.Send(r.smtp, testenv.Mail{From: "app@client.test", To: []string{"rcpt@example.test"},
		Data: testenv.RFC5322(subject, testenv.Body(2000))}); err != nil {
		t.Fatalf("send %s: %v", subject, err)
	}
}

// fill writes a file into the data directory until only leave bytes are
// free (0: until the file system refuses to take any more).
func (r *tmpfsRelay) fill(t *testing.T, leave int64) {
	t.Helper()
	f, err := os.OpenFile(r.proc.InRoot(r.dir+"/filler"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Statfs_t
	for _, chunk := range []int{1 << 20, 4 << 10, 1} {
		buf := make([]byte, chunk)
		for {
			if err := syscall.Statfs(r.proc.InRoot(r.dir), &st); err != nil {
				t.Fatal(err)
			}
			if leave > 0 && int64(st.Bavail)*st.Bsize-int64(chunk) < leave {
				break
			}
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
}

func (r *tmpfsRelay) emptyFiller(t *testing.T) {
	t.Helper()
	if err := os.Remove(r.proc.InRoot(r.dir + "/filler")); err != nil {
		t.Fatal(err)
	}
}

// waitRefusedAtMail waits until a new transaction gets 452 4.3.1 at MAIL
// (the ingress learns of the disk within a second).
func (r *tmpfsRelay) waitRefusedAtMail(t *testing.T, why string) {
	t.Helper()
	last := &seen{}
	testenv.Eventually(t, 10*time.Second, func() bool {
		c, _ := testenv.DialRaw(t, r.smtp, "")
		defer c.Write([]byte("QUIT\r\n"))
		c.Expect(250, "EHLO client.test")
		rep := c.Cmd("MAIL FROM:<app@client.test>")
		last.s = rep.String()
		return rep.Code == 452 && strings.Contains(last.s, "4.3.1")
	}, "MAIL not refused with 452 4.3.1: %+v", last)
	if !strings.Contains(r.proc.Output(), why) {
		t.Errorf("the log does not say %q", why)
	}
}

func (r *tmpfsRelay) waitReady(t *testing.T, ready bool, why string) {
	t.Helper()
	last := &seen{}
	testenv.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get("http://" + r.http + "/readyz")
		if err != nil {
			last.s = err.Error()
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		last.s = fmt.Sprintf("%d %s", resp.StatusCode, b)
		if ready {
			return resp.StatusCode == http.StatusOK
		}
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), why)
	}, "/readyz: %+v", last)
}

// seen holds the last observation of a poll, for its failure message.
type seen struct{ s string }
