package e2e

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// Protocol conformance at the edges (issue 16): commands out of sequence,
// STARTTLS, unknown commands, one error budget, slow clients, plaintext
// AUTH, AUTH lockouts.

// text is a reply's text, its lines joined.
func text(r testenv.Reply) string { return strings.Join(r.Lines, " ") }

// expectReply sends a command and checks code and enhanced code ("": any).
func expectReply(t *testing.T, c *testenv.Raw, code int, enh, format string, args ...any) testenv.Reply {
	t.Helper()
	r := c.Cmd(format, args...)
	if r.Code != code || enh != "" && r.Enh != enh {
		cmd := fmt.Sprintf(format, args...)
		if len(cmd) > 40 {
			cmd = cmd[:40] + "…"
		}
		t.Fatalf("%q: got %s, want %d %s", cmd, r, code, enh)
	}
	return r
}

// closedWithoutReply checks that the server closes the connection and
// that nothing it sent before is an SMTP reply in plaintext.
func closedWithoutReply(t *testing.T, c *testenv.Raw) {
	t.Helper()
	_ = c.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(c.Conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %q", rest)
	}
	if plaintextReply(rest) {
		t.Fatalf("a reply in plaintext: %q", rest)
	}
}

func plaintextReply(b []byte) bool {
	for _, code := range []string{"250 ", "354 ", "421 ", "451 ", "500 ", "501 ", "503 ", "550 ", "554 "} {
		if strings.Contains(string(b), "\r\n"+code) || strings.HasPrefix(string(b), code) {
			return true
		}
	}
	return false
}

// A second MAIL inside a transaction gets 503 5.5.1 and the transaction
// in progress is delivered as it was.
func TestIngressNestedMail(t *testing.T) {
	f := newFrontDoor(t, nil)
	c, _ := testenv.DialRaw(t, f.addr(), "")
	c.Expect(250, "EHLO c")
	c.Expect(250, "MAIL FROM:<first@client.test>")
	c.Expect(250, "RCPT TO:<one@example.test>")
	expectReply(t, c, 503, "5.5.1", "MAIL FROM:<second@client.test>")
	c.Expect(250, "RCPT TO:<two@example.test>")
	c.Expect(354, "DATA")
	msg := testenv.RFC5322("nested", testenv.Body(100))
	c.Expect(250, "%s.", msg)
	m := f.sink.WaitFor(t, 1, 30*time.Second)[0]
	if m.From != "first@client.test" || strings.Join(m.Rcpts, ",") != "one@example.test,two@example.test" || string(m.AfterReceived()) != string(msg) {
		t.Fatalf("delivered %s -> %v", m.From, m.Rcpts)
	}
	f.relay.WaitQueueEmpty(30 * time.Second)
	if n := len(f.sink.Messages()); n != 1 {
		t.Fatalf("%d messages", n)
	}
}

// Commands out of sequence (RFC 5321 4.1.4, 4.3.2; RFC 3030; RFC 4954)
// get 503 5.5.1, and the session goes on.
func TestIngressSequence(t *testing.T) {
	f := newFrontDoor(t, nil)
	type step struct {
		send string
		code int
		enh  string
	}
	ok := func(send string) step { return step{send, 250, ""} }
	for _, tc := range []struct {
		name  string
		local string
		tls   bool
		steps []step
	}{
		{"MAIL before EHLO", "", false, []step{{"MAIL FROM:<a@client.test>", 503, "5.5.1"}}},
		{"RCPT before MAIL", "", false, []step{ok("EHLO c"), {"RCPT TO:<x@example.test>", 503, "5.5.1"}}},
		{"DATA before MAIL", "", false, []step{ok("EHLO c"), {"DATA", 503, "5.5.1"}}},
		{"DATA before RCPT", "", false, []step{ok("EHLO c"), ok("MAIL FROM:<a@client.test>"), {"DATA", 503, "5.5.1"}}},
		{"DATA after every RCPT was refused", "127.0.0.2", false, []step{
			ok("EHLO c"), ok("MAIL FROM:<a@client.test>"), {"RCPT TO:<x@example.test>", 554, "5.7.1"}, {"DATA", 503, "5.5.1"}}},
		// The chunk ("NOOP" and CRLF) is read and discarded, not run.
		{"BDAT before RCPT", "", false, []step{ok("EHLO c"), ok("MAIL FROM:<a@client.test>"), {"BDAT 6 LAST\r\nNOOP", 503, "5.5.1"}}},
		{"DATA during BDAT", "", false, []step{
			ok("EHLO c"), ok("MAIL FROM:<a@client.test>"), ok("RCPT TO:<x@example.test>"),
			ok("BDAT 3\r\na"), {"DATA", 503, "5.5.1"}, ok("RSET")}},
		{"AUTH during a transaction", "127.0.0.2", true, []step{
			ok("MAIL FROM:<a@client.test>"), {"AUTH PLAIN " + plainAuth("app", "pa55"), 503, "5.5.1"}}},
		{"STARTTLS under TLS", "127.0.0.2", true, []step{{"STARTTLS", 503, "5.5.1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := testenv.DialRaw(t, f.addr(), tc.local)
			if tc.tls {
				c.Expect(250, "EHLO c")
				c.StartTLS(f.client())
				c.Expect(250, "EHLO c")
			}
			for _, s := range tc.steps {
				expectReply(t, c, s.code, s.enh, "%s", s.send)
			}
			c.Expect(250, "NOOP")
		})
	}
	if st := f.relay.State(); !st.Empty() {
		t.Fatalf("published: %+v", st)
	}
	// And in order, a transaction goes through.
	c, _ := testenv.DialRaw(t, f.addr(), "")
	c.Expect(250, "EHLO c")
	c.Expect(250, "MAIL FROM:<a@client.test>")
	c.Expect(250, "RCPT TO:<x@example.test>")
	c.Expect(354, "DATA")
	c.Expect(250, "%s.", testenv.RFC5322("in order", testenv.Body(100)))
	f.sink.WaitFor(t, 1, 30*time.Second)
}

// Unknown commands, whatever their length, get 500 5.5.2.
func TestIngressUnknownCommand(t *testing.T) {
	f := newFrontDoor(t, nil)
	c, _ := testenv.DialRaw(t, f.addr(), "")
	c.Expect(250, "EHLO c")
	for _, cmd := range []string{"XXXX", "XYZZY", "FOO", "FOOBAR baz", "MAILFROM:<a@client.test>", "STARTTLSX"} {
		expectReply(t, c, 500, "5.5.2", "%s", cmd)
	}
	c.Expect(250, "NOOP")
}

// STARTTLS with parameters is 501 5.5.4 and the session goes on in
// plaintext; a failed handshake closes the connection, and nothing the
// client sent after STARTTLS is run.
func TestIngressStartTLS(t *testing.T) {
	f := newFrontDoor(t, nil)
	c, _ := testenv.DialRaw(t, f.addr(), "127.0.0.2")
	c.Expect(250, "EHLO c")
	expectReply(t, c, 501, "5.5.4", "STARTTLS foo")
	c.Expect(250, "NOOP")
	c.StartTLS(f.client())

	// A client that speaks plaintext after 220.
	c, _ = testenv.DialRaw(t, f.addr(), "")
	c.Expect(250, "EHLO c")
	c.Expect(220, "STARTTLS")
	c.Write([]byte("MAIL FROM:<a@client.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n"))
	closedWithoutReply(t, c)

	// A client that refuses the certificate.
	c, _ = testenv.DialRaw(t, f.addr(), "")
	c.Expect(250, "EHLO c")
	c.Expect(220, "STARTTLS")
	if err := tls.Client(c.Conn, &tls.Config{ServerName: "other.test", RootCAs: f.client().RootCAs}).Handshake(); err == nil {
		t.Fatal("handshake succeeded")
	}
	closedWithoutReply(t, c)

	if st := f.relay.State(); !st.Empty() {
		t.Fatalf("published: %+v", st)
	}
}

// Syntax errors, unknown commands, commands out of sequence and the
// ingress's refusals share one budget, ingress.max_errors: the error that
// uses it up is answered, then 421 4.7.0 closes the session. Too many
// recipients (452) does not count.
func TestIngressErrorBudget(t *testing.T) {
	f := newFrontDoor(t, nil) // max_errors 10 (default), max_recipients 3
	if f.cfg.Ingress.MaxErrors != 10 {
		t.Fatalf("max_errors %d", f.cfg.Ingress.MaxErrors)
	}
	c, _ := testenv.DialRaw(t, f.addr(), "127.0.0.2")
	steps := []struct {
		cmd  string
		code int
		enh  string
	}{
		{"XYZZY", 500, "5.5.2"},                                   // 1 unknown command
		{"MAIL FROM:<a@client.test>", 503, "5.5.1"},               // 2 before EHLO
		{"HELO", 501, "5.5.2"},                                    // 3 syntax
		{"EHLO c", 250, ""},                                       //
		{"STARTTLS foo", 501, "5.5.4"},                            // 4 syntax
		{"RCPT TO:<x@example.test>", 503, "5.5.1"},                // 5 out of sequence
		{"MAIL FROM:<a@b@client.test>", 501, "5.1.7"},             // 6 the ingress: sender syntax
		{"AUTH PLAIN " + plainAuth("app", "pa55"), 538, "5.7.11"}, // 7 the ingress: plaintext AUTH
		{"MAIL FROM:<jörg@client.test>", 553, "5.6.7"},            // 8 the ingress: no SMTPUTF8
		{"VRFY x", 252, ""},                                       //
		{"HELP", 502, "5.5.1"},                                    // 9 not implemented
		{"MAIL FROM:<a@client.test>", 250, ""},                    //
		{"RCPT TO:<x@example.test>", 554, "5.7.1"},                // 10 the ingress: relay denied
	}
	for _, s := range steps {
		expectReply(t, c, s.code, s.enh, "%s", s.cmd)
	}
	// The tenth error was answered; then 421 4.7.0 and the end.
	if r := c.Read(); r.Code != 421 || r.Enh != "4.7.0" {
		t.Fatalf("after the tenth error: %s, want 421 4.7.0", r)
	}
	if !c.Closed(5 * time.Second) {
		t.Fatal("connection open after 421")
	}

	// 452 does not count: a client may send more recipients than allowed.
	c, _ = testenv.DialRaw(t, f.addr(), "")
	c.Expect(250, "EHLO c")
	c.Expect(250, "MAIL FROM:<a@client.test>")
	for i := 0; i < 15; i++ {
		if r := c.Cmd("RCPT TO:<r%d@example.test>", i); i < 3 && r.Code != 250 || i >= 3 && (r.Code != 452 || r.Enh != "4.5.3") {
			t.Fatalf("RCPT %d: %s", i, r)
		}
	}
	c.Expect(354, "DATA")
	c.Expect(250, "%s.", testenv.RFC5322("many rcpts", testenv.Body(100)))
	f.sink.WaitFor(t, 1, 30*time.Second)

	// Only unknown commands: exactly max_errors of them (not go-smtp's
	// four).
	f2 := newFrontDoor(t, func(c *config.Config) { c.Ingress.MaxErrors = 6 })
	c, _ = testenv.DialRaw(t, f2.addr(), "")
	for i := 0; i < 5; i++ {
		expectReply(t, c, 500, "5.5.2", "XXXX")
	}
	c.Expect(250, "NOOP")
	expectReply(t, c, 500, "5.5.2", "XXXX")
	if r := c.Read(); r.Code != 421 || r.Enh != "4.7.0" {
		t.Fatalf("after the sixth error: %s, want 421 4.7.0", r)
	}
	if !c.Closed(5 * time.Second) {
		t.Fatal("connection open after 421")
	}
}

// drip writes b a byte every interval on c until it is written or a write
// fails; the channel gets how many bytes it wrote.
func drip(c net.Conn, b []byte, every time.Duration) <-chan int {
	done := make(chan int, 1)
	go func() {
		n := 0
		for ; n < len(b); n++ {
			_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(b[n : n+1]); err != nil {
				break
			}
			time.Sleep(every) // the client's pace
		}
		done <- n
	}()
	return done
}

// slowDoor is a front door with small deadlines: 2 s for a command line,
// 1000 bytes/s inside DATA and BDAT, and a read timeout longer than both
// (it is not what ends a dripping client).
func slowDoor(t *testing.T) *frontDoor {
	return newFrontDoor(t, func(c *config.Config) {
		c.Ingress.CommandDeadline = config.Duration(2 * time.Second)
		c.Ingress.MinDataRate = 1000
		c.Ingress.ReadTimeout = config.Duration(20 * time.Second)
	})
}

// A command line that trickles in a byte at a time ends with 421 4.4.2
// after command_deadline, however steady the trickle.
func TestSlowCommandLine(t *testing.T) {
	f := slowDoor(t)
	c, _ := testenv.DialRaw(t, f.addr(), "")
	c.Expect(250, "EHLO c")
	line := []byte("NOOP " + strings.Repeat("x", 300) + "\r\n") // 30 s at 10 bytes/s
	start := time.Now()
	sent := drip(c.Conn, line, 100*time.Millisecond)
	r, err := c.TryRead()
	if err != nil || r.Code != 421 || r.Enh != "4.4.2" {
		t.Fatalf("dripping command line: %s, %v; want 421 4.4.2", r, err)
	}
	if !c.Closed(5 * time.Second) {
		t.Fatal("connection open after 421")
	}
	if n := <-sent; n == len(line) {
		t.Fatal("the whole line went in")
	}
	if el := time.Since(start); el < 2*time.Second || el > 15*time.Second {
		t.Fatalf("cut after %s, command_deadline is 2s", el)
	}
}

// A message sent slower than min_data_rate ends with 421 4.4.2, with DATA
// and BDAT; one sent faster passes, however much longer than
// command_deadline it takes.
func TestSlowData(t *testing.T) {
	f := slowDoor(t)
	for _, bdat := range []bool{false, true} {
		t.Run(fmt.Sprintf("drip BDAT=%v", bdat), func(t *testing.T) {
			c, _ := testenv.DialRaw(t, f.addr(), "")
			c.Expect(250, "EHLO c")
			c.Expect(250, "MAIL FROM:<a@client.test>")
			c.Expect(250, "RCPT TO:<ops@example.test>")
			msg := testenv.RFC5322("drip", testenv.Body(300)) // 30 s at 10 bytes/s
			if bdat {
				c.Write([]byte(fmt.Sprintf("BDAT %d LAST\r\n", len(msg))))
			} else {
				c.Expect(354, "DATA")
			}
			start := time.Now()
			sent := drip(c.Conn, msg, 100*time.Millisecond)
			r, err := c.TryRead()
			if err != nil || r.Code != 421 || r.Enh != "4.4.2" {
				t.Fatalf("dripping message: %s, %v; want 421 4.4.2", r, err)
			}
			if !c.Closed(5 * time.Second) {
				t.Fatal("connection open after 421")
			}
			if n := <-sent; n == len(msg) {
				t.Fatal("the whole message went in")
			}
			if el := time.Since(start); el < 2*time.Second || el > 15*time.Second {
				t.Fatalf("cut after %s", el)
			}
		})
	}
	if st := f.relay.State(); !st.Empty() {
		t.Fatalf("published: %+v", st)
	}
	// 60 KB at about 15 KB/s: 4 s, twice command_deadline.
	c, _ := testenv.DialRaw(t, f.addr(), "")
	c.Expect(250, "EHLO c")
	c.Expect(250, "MAIL FROM:<a@client.test>")
	c.Expect(250, "RCPT TO:<ops@example.test>")
	c.Expect(354, "DATA")
	msg := testenv.RFC5322("steady", testenv.Body(60000))
	start := time.Now()
	for i := 0; i < len(msg); i += 3000 {
		c.Write(msg[i:min(i+3000, len(msg))])
		time.Sleep(200 * time.Millisecond) // the client's pace
	}
	c.Expect(250, ".")
	if el := time.Since(start); el < 4*time.Second {
		t.Fatalf("sent in %s", el)
	}
	if m := f.sink.WaitFor(t, 1, 30*time.Second)[0]; string(m.AfterReceived()) != string(msg) {
		t.Fatal("the steady message arrived changed")
	}
}

// Plaintext AUTH: refused, with the key to change named in the reply,
// unless allow_insecure_auth and the client is in insecure_auth_networks
// (loopback by default, TestAuthLockout; here a list).
func TestAuthInsecureNetworks(t *testing.T) {
	// Without allow_insecure_auth: no AUTH without TLS, and the refusals
	// say why.
	f := newFrontDoor(t, nil)
	c, _ := testenv.DialRaw(t, f.addr(), "127.0.0.2")
	if ehlo := text(c.Expect(250, "EHLO c")); strings.Contains(ehlo, "AUTH") {
		t.Fatalf("AUTH offered without TLS: %s", ehlo)
	}
	r := expectReply(t, c, 538, "5.7.11", "AUTH PLAIN %s", plainAuth("app", "pa55"))
	if !strings.Contains(text(r), "STARTTLS") || !strings.Contains(text(r), "ingress.allow_insecure_auth") {
		t.Fatalf("plaintext AUTH refused without saying what to change: %s", r)
	}
	// Database Mail with basic authentication does not AUTH when it is not
	// offered: its RCPT is refused, and that reply says why.
	c.Expect(250, "MAIL FROM:<dba@corp.test>")
	r = expectReply(t, c, 554, "5.7.1", "RCPT TO:<ops@example.test>")
	if !strings.Contains(text(r), "STARTTLS") || !strings.Contains(text(r), "ingress.allow_insecure_auth") {
		t.Fatalf("relay refused without saying what to change: %s", r)
	}

	// allow_insecure_auth with an explicit list: only the listed client.
	f = newFrontDoor(t, func(c *config.Config) {
		c.Ingress.AllowInsecureAuth = true
		c.Ingress.InsecureAuthNetworks = config.StringList{"127.0.0.2/32"}
	})
	c, _ = testenv.DialRaw(t, f.addr(), "127.0.0.3")
	if ehlo := text(c.Expect(250, "EHLO c")); strings.Contains(ehlo, "AUTH") {
		t.Fatalf("AUTH offered to a client not listed: %s", ehlo)
	}
	r = expectReply(t, c, 538, "5.7.11", "AUTH PLAIN %s", plainAuth("app", "pa55"))
	if !strings.Contains(text(r), "ingress.insecure_auth_networks") {
		t.Fatalf("refusal does not name ingress.insecure_auth_networks: %s", r)
	}
	c, _ = testenv.DialRaw(t, f.addr(), "127.0.0.2")
	if ehlo := text(c.Expect(250, "EHLO c")); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Fatalf("AUTH not offered to a listed client: %s", ehlo)
	}
	c.Expect(235, "AUTH PLAIN %s", plainAuth("app", "pa55"))
	c.Expect(250, "MAIL FROM:<dba@corp.test>")
	c.Expect(250, "RCPT TO:<ops@example.test>")
	c.Expect(354, "DATA")
	c.Expect(250, "%s.", testenv.RFC5322("database mail", testenv.Body(100)))
	if m := f.sink.WaitFor(t, 1, 30*time.Second)[0]; !strings.Contains(string(m.Data), "with ESMTPA") {
		t.Fatalf("Received header:\n%s", m.Data[:200])
	}
}

// authResult is the reply to AUTH PLAIN from local on addr, in a session
// of its own.
func authResult(t *testing.T, addr, local, user, pass string) testenv.Reply {
	t.Helper()
	c, _ := testenv.DialRaw(t, addr, local)
	c.Expect(250, "EHLO c")
	r := c.Cmd("AUTH PLAIN %s", plainAuth(user, pass))
	_ = c.Conn.Close()
	return r
}

// countLines counts the log lines that contain every one of parts.
func countLines(log string, parts ...string) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			n++
		}
	}
	return n
}

// Lockouts are per client address and per user (a user attacked from
// several addresses), shared by every ingress of a deployment through
// the broker, logged once, listed and lifted by `jetrelay user lockouts`
// and `jetrelay user unlock`.
func TestAuthLockoutPerUserSharedUnlock(t *testing.T) {
	var logsA, logsB syncBuffer
	door := newFrontDoor(t, func(c *config.Config) {
		c.Ingress.AuthFailureLimit = 3
		c.Ingress.AllowInsecureAuth = true // loopback
	}, testenv.WithLogs(&logsA))
	// A second ingress on the same broker.
	cfgB := *door.cfg
	cfgB.Broker.Listen = ""
	cfgB.Ingress.Listen = config.StringList{"127.0.0.1:0"}
	cfgB.Ingress.TLSListen = nil
	b := testenv.StartStages(t, &cfgB, app.Stages{Ingress: true}, app.Options{}, testenv.WithLogs(&logsB))
	addrA, addrB := door.addr(), b.Addr()

	// dbmail fails once each from three addresses, on both ingresses: the
	// third failure locks the user out (454), no address.
	for i, at := range []struct{ addr, local string }{{addrA, "127.0.0.5"}, {addrB, "127.0.0.6"}, {addrA, "127.0.0.7"}} {
		want, enh := 535, "5.7.8"
		if i == 2 {
			want, enh = 454, "4.7.0"
		}
		if r := authResult(t, at.addr, at.local, "dbmail", "wrong"); r.Code != want || r.Enh != enh {
			t.Fatalf("failure %d: %s, want %d %s", i+1, r, want, enh)
		}
	}
	for _, addr := range []string{addrA, addrB} {
		testenv.Eventually(t, 10*time.Second, func() bool {
			return authResult(t, addr, "127.0.0.8", "dbmail", "s3cret").Code == 454
		}, "user dbmail not locked out at %s", addr)
	}
	if r := authResult(t, addrB, "127.0.0.8", "app", "pa55"); r.Code != 235 {
		t.Fatalf("another user from the same address: %s", r)
	}

	// Three failures from one address (a name that is no user) on
	// ingress B lock the address out on both.
	c, _ := testenv.DialRaw(t, addrB, "127.0.0.9")
	c.Expect(250, "EHLO c")
	c.Expect(535, "AUTH PLAIN %s", plainAuth("nobody", "x1"))
	c.Expect(535, "AUTH PLAIN %s", plainAuth("nobody", "x2"))
	expectReply(t, c, 421, "4.7.0", "AUTH PLAIN %s", plainAuth("nobody", "x3"))
	testenv.Eventually(t, 10*time.Second, func() bool {
		return authResult(t, addrA, "127.0.0.9", "app", "pa55").Code == 421
	}, "address 127.0.0.9 not locked out at the other ingress")

	// Each lockout is logged once, by the ingress that saw the failure
	// that locked it, with the address.
	all := logsA.String() + logsB.String()
	if n := countLines(all, `"auth lockout"`, `"lockout":"user"`, `"user":"dbmail"`, `"addr":"127.0.0.7"`); n != 1 || countLines(all, `"auth lockout"`, `"lockout":"user"`) != 1 {
		t.Fatalf("user lockout logged %d times:\n%s", n, all)
	}
	if n := countLines(logsB.String(), `"auth lockout"`, `"lockout":"address"`, `"addr":"127.0.0.9"`); n != 1 || countLines(all, `"auth lockout"`, `"lockout":"address"`) != 1 {
		t.Fatalf("address lockout logged %d times", n)
	}

	// Listed, then lifted.
	out := mustJR(t, door.relay, "user", "lockouts")
	if countLines(out, "user", "dbmail") != 1 || countLines(out, "address", "127.0.0.9") != 1 {
		t.Fatalf("user lockouts:\n%s", out)
	}
	if out := mustJR(t, door.relay, "user", "unlock", "dbmail"); !strings.Contains(out, "user dbmail unlocked") {
		t.Fatalf("unlock dbmail: %s", out)
	}
	if out := mustJR(t, door.relay, "user", "unlock", "127.0.0.9"); !strings.Contains(out, "address 127.0.0.9 unlocked") {
		t.Fatalf("unlock 127.0.0.9: %s", out)
	}
	for _, addr := range []string{addrA, addrB} {
		testenv.Eventually(t, 10*time.Second, func() bool {
			return authResult(t, addr, "127.0.0.8", "dbmail", "s3cret").Code == 235
		}, "user dbmail still locked out at %s", addr)
		testenv.Eventually(t, 10*time.Second, func() bool {
			return authResult(t, addr, "127.0.0.9", "app", "pa55").Code == 235
		}, "address 127.0.0.9 still locked out at %s", addr)
	}
	if out := mustJR(t, door.relay, "user", "unlock", "dbmail"); !strings.Contains(out, "was not locked out") {
		t.Fatalf("second unlock: %s", out)
	}
	if out := mustJR(t, door.relay, "user", "lockouts"); !strings.Contains(out, "no lockouts") {
		t.Fatalf("user lockouts after unlock:\n%s", out)
	}
}

// A lockout ends on its own after auth_lockout.
func TestAuthLockoutExpires(t *testing.T) {
	f := newFrontDoor(t, func(c *config.Config) {
		c.Ingress.AuthFailureLimit = 2
		c.Ingress.AuthLockout = config.Duration(2 * time.Second)
		c.Ingress.AllowInsecureAuth = true
	})
	c, _ := testenv.DialRaw(t, f.addr(), "127.0.0.3")
	c.Expect(250, "EHLO c")
	c.Expect(535, "AUTH PLAIN %s", plainAuth("nobody", "x1"))
	expectReply(t, c, 421, "4.7.0", "AUTH PLAIN %s", plainAuth("nobody", "x2"))
	locked := time.Now()
	if r := authResult(t, f.addr(), "127.0.0.3", "app", "pa55"); r.Code != 421 {
		t.Fatalf("right after the lockout: %s", r)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		return authResult(t, f.addr(), "127.0.0.3", "app", "pa55").Code == 235
	}, "lockout did not end")
	if el := time.Since(locked); el < 1500*time.Millisecond {
		t.Fatalf("lockout ended after %s, auth_lockout is 2s", el)
	}
}
