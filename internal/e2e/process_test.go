package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/internal/testenv"
)

// The three stages as separate processes, sharing one config file,
// deliver a message sent with `jetrelay send`.
func TestSeparateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	dataDir := t.TempDir()
	brokerAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := testenv.WriteConfig(t, fmt.Sprintf(`
hostname: relay.test
data_dir: %s
broker:
  listen: %s
ingress:
  listen: [%q]
delivery:
  smarthost: %q
  smarthost_tls: none
http:
  listen: "off"
log:
  level: info
`, dataDir, brokerAddr, smtpAddr, sink.Addr))

	brk := testenv.StartProc(t, "broker", "broker", "--config", cfg)
	testenv.WaitListening(t, brokerAddr, 30*time.Second, brk)
	ing := testenv.StartProc(t, "ingress", "ingress", "--config", cfg)
	dlv := testenv.StartProc(t, "delivery", "delivery", "--config", cfg)
	testenv.WaitListening(t, smtpAddr, 30*time.Second, ing, dlv)

	var out bytes.Buffer
	send := exec.Command(testenv.Binary(t), "send", "--config", cfg, "--from", "dbmail@corp.test",
		"--to", "oncall@example.test", "--subject", "BAM alert", "--body", "queue depth over threshold")
	send.Stdout, send.Stderr = &out, &out
	if err := send.Run(); err != nil {
		t.Fatalf("jetrelay send: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "250 2.0.0 queued as ") {
		t.Fatalf("send output lacks the queue ID (args %q, state %v, len %d):\n%s", send.Args, send.ProcessState, out.Len(), out.String())
	}
	m := sink.WaitFor(t, 1, 30*time.Second)[0]
	if m.From != "dbmail@corp.test" || m.Rcpts[0] != "oncall@example.test" || !bytes.Contains(m.Data, []byte("Subject: BAM alert")) {
		t.Fatalf("unexpected message: %s", m.Data)
	}
	if !strings.Contains(out.String(), m.QueueID()) {
		t.Fatalf("queue ID %s at the destination is not the one send reported:\n%s", m.QueueID(), out.String())
	}
	// The credentials file the broker wrote is private.
	st, err := osStat(filepath.Join(dataDir, "broker.json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("broker.json: %v mode %v", err, st.Mode())
	}
	for _, p := range []*testenv.Proc{ing, dlv, brk} {
		if err := p.Stop(30 * time.Second); err != nil {
			t.Errorf("%s exit: %v\n%s", p.Name, err, p.Output())
		}
	}
}

var osStat = os.Stat

// The stages work against the official nats-server (JetStream, user and
// password), not only against jetrelay's embedded one.
func TestOfficialNatsServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs nats-server and jetrelay")
	}
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	port := testenv.FreePort(t)
	ns := testenv.StartExternal(t, "nats-server", testenv.NatsServer(t), "-js", "-sd", t.TempDir(),
		"-a", "127.0.0.1", "-p", fmt.Sprint(port), "--user", "relay", "--pass", "s3cret-nats")
	testenv.WaitListening(t, fmt.Sprintf("127.0.0.1:%d", port), 30*time.Second, ns)
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := testenv.WriteConfig(t, fmt.Sprintf(`
hostname: relay.test
data_dir: %s
broker:
  url: nats://127.0.0.1:%d
  user: relay
  password: s3cret-nats
ingress:
  listen: [%q]
delivery:
  smarthost: %q
  smarthost_tls: none
http: {listen: "off"}
`, t.TempDir(), port, smtpAddr, sink.Addr))
	ing := testenv.StartProc(t, "ingress", "ingress", "--config", cfg)
	testenv.StartProc(t, "delivery", "delivery", "--config", cfg)
	testenv.WaitListening(t, smtpAddr, 60*time.Second, ing)
	res, err := testenv.Send(smtpAddr, testenv.Mail{From: "app@client.test", To: []string{"ops@example.test"}, Data: testenv.RFC5322("official", testenv.Body(300<<10))})
	if err != nil {
		t.Fatal(err)
	}
	if m := sink.WaitFor(t, 1, 60*time.Second)[0]; m.QueueID() != res.QueueID {
		t.Fatalf("got %s, want %s", m.QueueID(), res.QueueID)
	}
}
