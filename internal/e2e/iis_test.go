package e2e

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// IIS parity (issue 18 B): connection control, masquerade domain, the NDR
// copy. The pickup directory has its own file (pickup_test.go).

// Connection control is separate from relay control and comes before the
// banner: a client in ingress.connection_deny, or outside
// ingress.connection_allow, gets 554 5.7.1 instead of a greeting and is
// disconnected; the refusal is logged with the remote address and
// counted. A client that may connect but not relay still gets its banner
// (and the relay refusal at RCPT).
func TestConnectionControl(t *testing.T) {
	var logs syncBuffer
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	cfg := smarthostConfig(t, sink)
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Ingress.RelayNetworks = config.StringList{"127.0.0.1/32"}
	cfg.Ingress.ConnectionAllow = config.StringList{"127.0.0.0/29"}      // 127.0.0.0 … 127.0.0.7
	cfg.Ingress.ConnectionDeny = config.StringList{"127.0.0.3", "::1/128"} // deny wins inside allow
	relay := testenv.StartRelay(t, cfg, app.Options{}, testenv.WithLogs(&logs))
	addr := relay.Addr()

	tests := []struct {
		local string
		code  int
		enh   string
	}{
		{"127.0.0.1", 220, ""},      // allowed, may relay
		{"127.0.0.2", 220, ""},      // allowed, may not relay
		{"127.0.0.3", 554, "5.7.1"}, // denied
		{"127.0.0.9", 554, "5.7.1"}, // not in the allow list
	}
	for _, tc := range tests {
		c, greet := testenv.DialRaw(t, addr, tc.local)
		if greet.Code != tc.code || greet.Enh != tc.enh {
			t.Fatalf("%s: greeting %s, want %d %s", tc.local, greet, tc.code, tc.enh)
		}
		if tc.code == 554 {
			// The relay closes the connection after the refusal.
			_ = c.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := c.Conn.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("%s: after 554 the connection is still open (read %d, %v)", tc.local, n, err)
			}
			continue
		}
		c.Expect(250, "EHLO client.test")
		c.Expect(250, "MAIL FROM:<app@corp.test>")
		if tc.local == "127.0.0.1" {
			c.Expect(250, "RCPT TO:<ops@example.test>")
		} else {
			expectReply(t, c, 554, "5.7.1", "RCPT TO:<ops@example.test>")
		}
		c.Expect(221, "QUIT")
	}

	// Sending through the allowed address still works end to end.
	if _, err := testenv.Send(addr, testenv.Mail{From: "app@corp.test", To: []string{"ops@example.test"}, Data: testenv.RFC5322("allowed", testenv.Body(100))}); err != nil {
		t.Fatal(err)
	}
	sink.WaitFor(t, 1, 30*time.Second)

	testenv.Eventually(t, 10*time.Second, func() bool {
		return countLines(logs.String(), `"connection refused"`, `"reason":"connection control"`, `"remote":"127.0.0.3:`) == 1 &&
			countLines(logs.String(), `"connection refused"`, `"reason":"connection control"`, `"remote":"127.0.0.9:`) == 1
	}, "the refusals are not logged with the remote address:\n%s", &logs)
	if m := relay.Metric("jetrelay_smtp_connections_denied_total"); !strings.HasSuffix(m, " 2") {
		t.Fatalf("metric: %q, want 2", m)
	}
	if m := relay.Metric(`jetrelay_smtp_rejects_total{reason="connection_denied"}`); !strings.HasSuffix(m, " 2") {
		t.Fatalf("rejects metric: %q, want 2", m)
	}
}
