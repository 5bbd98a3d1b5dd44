package e2e

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
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
	cfg.Ingress.ConnectionAllow = config.StringList{"127.0.0.0/29"}        // 127.0.0.0 … 127.0.0.7
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

// Masquerade: the envelope sender's domain is replaced on the way out
// (MAIL FROM only; the From: header is left alone, as IIS does), globally
// and per route; the null sender stays null.
func TestMasqueradeDomain(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	cfg := smarthostConfig(t, sink)
	cfg.Delivery.MasqueradeDomain = "corp.example"
	cfg.Delivery.Routes = map[string]config.Route{
		"partner.test": {Host: sink.Addr, TLS: "none", MasqueradeDomain: "partner-facing.example"},
	}
	relay := testenv.StartRelay(t, cfg, app.Options{})
	send := func(from, to, subject string) {
		t.Helper()
		data := []byte("From: Web01 App <app@web01.corp.local>\r\nTo: <" + to + ">\r\nSubject: " + subject + "\r\n\r\nhello\r\n")
		if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: from, To: []string{to}, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	send("app@web01.corp.local", "ops@example.test", "global")
	send("app@web01.corp.local", "ops@partner.test", "route")
	send("", "ops@example.test", "null sender")
	msgs := sink.WaitFor(t, 3, 30*time.Second)
	want := map[string]string{"global": "app@corp.example", "route": "app@partner-facing.example", "null sender": ""}
	for _, m := range msgs {
		var subject string
		for s := range want {
			if strings.Contains(string(m.Data), "Subject: "+s+"\r\n") {
				subject = s
			}
		}
		if m.From != want[subject] {
			t.Errorf("%q: MAIL FROM <%s>, want <%s>", subject, m.From, want[subject])
		}
		if !strings.Contains(string(m.Data), "From: Web01 App <app@web01.corp.local>\r\n") {
			t.Errorf("%q: the From: header was changed:\n%s", subject, m.Data)
		}
		delete(want, subject)
	}
	if len(want) != 0 {
		t.Fatalf("not delivered: %v", want)
	}
}

// The NDR copy: a message that dead-letters produces the bounce to its
// sender AND a copy to delivery.ndr_copy_to; with the null sender <> only
// the copy (nobody else would ever hear of it); a route's own ndr_copy_to
// takes the copies of the recipients given up on there.
func TestNDRCopy(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	sink.OnRcpt(func(rcpt string) *smtp.SMTPError {
		if strings.HasPrefix(rcpt, "gone") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	})
	cfg := smarthostConfig(t, sink)
	cfg.Delivery.NDRCopyTo = "postmaster@corp.test"
	cfg.Delivery.Routes = map[string]config.Route{
		"partner.test": {Host: sink.Addr, TLS: "none", NDRCopyTo: "partners-admin@corp.test"},
	}
	relay := testenv.StartRelay(t, cfg, app.Options{})
	send := func(from, to string) string {
		t.Helper()
		res, err := testenv.Send(relay.Addr(), testenv.Mail{From: from, To: []string{to}, Data: testenv.RFC5322("alert for "+to, testenv.Body(100))})
		if err != nil {
			t.Fatal(err)
		}
		return res.QueueID
	}
	q1 := send("dbmail@corp.test", "gone@example.test")
	q2 := send("", "gone2@example.test")
	q3 := send("dbmail@corp.test", "gone3@partner.test")

	// q1: bounce to dbmail + copy to postmaster; q2: copy to postmaster;
	// q3: bounce to dbmail + copy to partners-admin.
	msgs := sink.WaitFor(t, 5, 60*time.Second)
	type key struct{ rcpt, about string }
	got := map[key]int{}
	for _, m := range msgs {
		if m.From != "" || len(m.Rcpts) != 1 {
			t.Fatalf("a notification from <%s> to %v:\n%s", m.From, m.Rcpts, m.Data)
		}
		about := ""
		for _, q := range []string{q1, q2, q3} {
			if strings.Contains(string(m.Data), "X-Jetrelay-Queue-ID: "+q) {
				about = q
			}
		}
		got[key{m.Rcpts[0], about}]++
		if m.Rcpts[0] != "dbmail@corp.test" && !strings.Contains(string(m.Data), "X-Jetrelay-NDR-Copy-Of: ") {
			t.Errorf("the copy to %s does not say it is one:\n%s", m.Rcpts[0], m.Data)
		}
		if !strings.Contains(string(m.Data), "Action: failed") || !strings.Contains(string(m.Data), "Status: 5.1.1") {
			t.Errorf("not a failure report:\n%s", m.Data)
		}
	}
	want := map[key]int{
		{"dbmail@corp.test", q1}: 1, {"postmaster@corp.test", q1}: 1,
		{"postmaster@corp.test", q2}: 1,
		{"dbmail@corp.test", q3}:     1, {"partners-admin@corp.test", q3}: 1,
	}
	relay.WaitQueueEmpty(30 * time.Second)
	if extra := sink.Messages(); len(extra) != 5 {
		t.Fatalf("%d messages at the sink, want 5", len(extra))
	}
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("notifications %v, want %v", got, want)
		}
	}
}
