package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/ingress"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// frontDoor is a relay set up like a server exposed on port 587: loopback
// 127.0.0.1 may relay, everyone else must authenticate over TLS.
type frontDoor struct {
	relay *testenv.Relay
	sink  *testenv.Sink
	pki   *testenv.PKI
	cfg   *config.Config
}

func (f *frontDoor) addr() string    { return f.relay.Addr() }
func (f *frontDoor) tlsAddr() string { return f.relay.App.IngressTLSAddrs()[0].String() }
func (f *frontDoor) client() *tls.Config {
	return f.pki.ClientConfig("localhost")
}

func newFrontDoor(t *testing.T, mod func(*config.Config), opts ...testenv.RelayOption) *frontDoor {
	t.Helper()
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	pki := testenv.NewPKI(t)
	users := filepath.Join(t.TempDir(), "users.yaml")
	if err := ingress.AddUser(users, "dbmail", "s3cret", []string{"*@corp.test"}); err != nil {
		t.Fatal(err)
	}
	if err := ingress.AddUser(users, "app", "pa55", nil); err != nil {
		t.Fatal(err)
	}
	cfg := smarthostConfig(t, sink)
	cfg.Ingress.RelayNetworks = config.StringList{"127.0.0.1/32"}
	cfg.Ingress.UsersFile = users
	cfg.Ingress.TLS = config.TLSFiles{Cert: pki.CertFile, Key: pki.KeyFile}
	cfg.Ingress.TLSListen = config.StringList{"127.0.0.1:0"}
	cfg.Ingress.MaxRecipients = 3
	cfg.Ingress.MaxMessageBytes = 64 << 10
	if mod != nil {
		mod(cfg)
	}
	return &frontDoor{relay: testenv.StartRelay(t, cfg, app.Options{}, opts...), sink: sink, pki: pki, cfg: cfg}
}

func plainAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestIngressRejections: every refusal has its exact code and enhanced
// code, and nothing of a refused transaction is published.
func TestIngressRejections(t *testing.T) {
	f := newFrontDoor(t, nil)
	msg := func() string { return string(testenv.RFC5322("x", testenv.Body(200))) }
	type step struct {
		send string
		code int
		enh  string
	}
	tests := []struct {
		name  string
		local string
		tls   bool
		steps []step
	}{
		{"relay denied", "127.0.0.2", false, []step{
			{"EHLO c", 250, ""}, {"MAIL FROM:<a@client.test>", 250, ""}, {"RCPT TO:<x@example.test>", 554, "5.7.1"}}},
		{"bad sender syntax", "", false, []step{{"EHLO c", 250, ""}, {"MAIL FROM:<a@b@client.test>", 501, "5.1.7"}}},
		{"bad recipient syntax", "", false, []step{
			{"EHLO c", 250, ""}, {"MAIL FROM:<a@client.test>", 250, ""}, {"RCPT TO:<x@example.test.>", 501, "5.1.3"}}},
		{"non-ASCII without SMTPUTF8", "", false, []step{{"EHLO c", 250, ""}, {"MAIL FROM:<jörg@client.test>", 553, "5.6.7"}}},
		{"too many recipients", "", false, []step{
			{"EHLO c", 250, ""}, {"MAIL FROM:<a@client.test>", 250, ""}, {"RCPT TO:<1@example.test>", 250, ""},
			{"RCPT TO:<2@example.test>", 250, ""}, {"RCPT TO:<3@example.test>", 250, ""}, {"RCPT TO:<4@example.test>", 452, "4.5.3"}}},
		{"declared size too large", "", false, []step{{"EHLO c", 250, ""}, {"MAIL FROM:<a@client.test> SIZE=70000", 552, "5.3.4"}}},
		{"message too large", "", false, []step{
			{"EHLO c", 250, ""}, {"MAIL FROM:<a@client.test>", 250, ""}, {"RCPT TO:<x@example.test>", 250, ""}, {"DATA", 354, ""},
			{string(testenv.RFC5322("big", testenv.Body(70000))) + ".", 552, "5.3.4"},
			// the connection stays usable
			{"MAIL FROM:<a@client.test>", 250, ""}, {"RSET", 250, ""}}},
		{"bare LF", "", false, []step{
			{"EHLO c", 250, ""}, {"MAIL FROM:<a@client.test>", 250, ""}, {"RCPT TO:<x@example.test>", 250, ""}, {"DATA", 354, ""},
			{"Subject: x\r\n\r\nline one\nline two\r\n.", 550, "5.5.2"}, {"NOOP", 250, ""}}},
		{"mail loop", "", false, []step{
			{"EHLO c", 250, ""}, {"MAIL FROM:<a@client.test>", 250, ""}, {"RCPT TO:<x@example.test>", 250, ""}, {"DATA", 354, ""},
			{strings.Repeat("Received: from x by y; Sun, 22 Nov 2026 10:00:00 +0000\r\n", 51) + msg() + ".", 554, "5.4.6"}}},
		{"AUTH over plaintext", "127.0.0.2", false, []step{{"EHLO c", 250, ""}, {"AUTH PLAIN " + plainAuth("app", "pa55"), 538, "5.7.11"}}},
		{"AUTH failed", "127.0.0.2", true, []step{{"AUTH PLAIN " + plainAuth("app", "wrong"), 535, "5.7.8"}}},
		{"AUTH LOGIN failed", "127.0.0.2", true, []step{{"AUTH LOGIN " + b64("app"), 334, ""}, {b64("wrong"), 535, "5.7.8"}}},
		{"sender not allowed for user", "127.0.0.2", true, []step{
			{"AUTH PLAIN " + plainAuth("dbmail", "s3cret"), 235, ""}, {"MAIL FROM:<x@evil.test>", 553, "5.7.1"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, greet := testenv.DialRaw(t, f.addr(), tc.local)
			if greet.Code != 220 {
				t.Fatalf("greeting %s", greet)
			}
			if tc.tls {
				c.Expect(250, "EHLO c")
				c.StartTLS(f.client())
				c.Expect(250, "EHLO c")
			}
			for _, s := range tc.steps {
				r := c.Cmd("%s", s.send)
				short := s.send
				if len(short) > 40 {
					short = short[:40] + "…"
				}
				if r.Code != s.code || (s.enh != "" && r.Enh != s.enh) {
					t.Fatalf("%q: got %s, want %d %s", short, r, s.code, s.enh)
				}
			}
		})
	}
	// STARTTLS required for clients outside relay_networks.
	f2 := newFrontDoor(t, func(c *config.Config) { c.Ingress.RequireTLS = true })
	c, _ := testenv.DialRaw(t, f2.addr(), "127.0.0.2")
	c.Expect(250, "EHLO c")
	if r := c.Cmd("MAIL FROM:<a@client.test>"); r.Code != 530 || r.Enh != "5.7.0" {
		t.Fatalf("require_tls: %s", r)
	}
	// Loopback (in relay_networks) is exempt.
	c, _ = testenv.DialRaw(t, f2.addr(), "127.0.0.1")
	c.Expect(250, "EHLO c")
	c.Expect(250, "MAIL FROM:<a@client.test>")

	for _, fd := range []*frontDoor{f, f2} {
		if st := fd.relay.State(); !st.Empty() || st.DeadLetters != 0 {
			t.Fatalf("a refused transaction was published: %+v", st)
		}
	}
	if n := len(f.sink.Messages()); n != 0 {
		t.Fatalf("destination received %d messages", n)
	}
}

// The classic open-relay tricks, from a client that may not relay, are all
// refused and the destination receives nothing.
func TestOpenRelayTricks(t *testing.T) {
	f := newFrontDoor(t, nil)
	tricks := []string{
		"<victim@example.test>",
		"<victim%example.test@relay.test>",
		"<@relay.test:victim@example.test>",
		"<@a.test,@b.test:victim@example.test>",
		"<example.test!victim@relay.test>",
		"<\"victim@example.test\"@relay.test>",
		"<victim@example.test.>",
		"<victim@[192.0.2.1]>",
		"<VICTIM@EXAMPLE.TEST>",
		"<victim@relay.test@example.test>",
		"victim@example.test",
		"<postmaster>",
	}
	// One session per trick: a session that collects refusals is ended
	// by the error limit (421), which is a refusal too.
	for _, tr := range tricks {
		c, _ := testenv.DialRaw(t, f.addr(), "127.0.0.2")
		c.Expect(250, "EHLO c")
		c.Expect(250, "MAIL FROM:<a@client.test>")
		if r := c.Cmd("RCPT TO:%s", tr); r.Code/100 != 5 {
			t.Errorf("RCPT TO:%s from 127.0.0.2: %s (want a 5xx refusal)", tr, r)
		}
		if r := c.Cmd("DATA"); r.Code/100 == 3 {
			t.Fatalf("DATA accepted without recipients: %s", r)
		}
	}
	// The error limit ends a session that keeps trying.
	c, _ := testenv.DialRaw(t, f.addr(), "127.0.0.2")
	c.Expect(250, "EHLO c")
	c.Expect(250, "MAIL FROM:<a@client.test>")
	var last testenv.Reply
	for i := 0; i < 20 && last.Code != 421; i++ {
		last = c.Cmd("RCPT TO:<v%d@example.test>", i)
	}
	if last.Code != 421 || !c.Closed(5*time.Second) {
		t.Fatalf("error limit: last reply %s", last)
	}
	// A sentinel from the permitted address proves the pipeline runs.
	res, err := testenv.Send(f.addr(), testenv.Mail{Local: "127.0.0.1", From: "a@client.test", To: []string{"ops@example.test"}, Data: testenv.RFC5322("ok", testenv.Body(100))})
	if err != nil {
		t.Fatal(err)
	}
	got := f.sink.WaitFor(t, 1, 30*time.Second)
	f.relay.WaitQueueEmpty(30 * time.Second)
	if len(f.sink.Messages()) != 1 || got[0].QueueID() != res.QueueID {
		t.Fatalf("destination got %d messages", len(f.sink.Messages()))
	}
}

// AUTH PLAIN and both forms of AUTH LOGIN work over STARTTLS and implicit
// TLS, and let a client outside relay_networks relay.
func TestAuthMechanisms(t *testing.T) {
	f := newFrontDoor(t, nil)
	type auth struct {
		name  string
		steps [][2]string // command, expected code
	}
	mechs := []auth{
		{"PLAIN initial response", [][2]string{{"AUTH PLAIN " + plainAuth("app", "pa55"), "235"}}},
		{"PLAIN challenge", [][2]string{{"AUTH PLAIN", "334"}, {plainAuth("app", "pa55"), "235"}}},
		{"LOGIN classic", [][2]string{{"AUTH LOGIN", "334"}, {b64("app"), "334"}, {b64("pa55"), "235"}}},
		{"LOGIN initial response (.NET, PowerShell)", [][2]string{{"AUTH LOGIN " + b64("app"), "334"}, {b64("pa55"), "235"}}},
	}
	n := 0
	for _, implicit := range []bool{false, true} {
		for _, m := range mechs {
			name := m.name + " over STARTTLS"
			if implicit {
				name = m.name + " over implicit TLS"
			}
			t.Run(name, func(t *testing.T) {
				var c *testenv.Raw
				if implicit {
					c, _ = testenv.DialRawTLS(t, f.tlsAddr(), f.client())
					ehlo := c.Expect(250, "EHLO c")
					if !strings.Contains(strings.Join(ehlo.Lines, "\n"), "AUTH PLAIN LOGIN") {
						t.Fatalf("AUTH not offered over TLS: %v", ehlo.Lines)
					}
				} else {
					c, _ = testenv.DialRaw(t, f.addr(), "127.0.0.2")
					ehlo := c.Expect(250, "EHLO c")
					if strings.Contains(strings.Join(ehlo.Lines, "\n"), "AUTH") {
						t.Fatalf("AUTH offered in plaintext: %v", ehlo.Lines)
					}
					c.StartTLS(f.client())
					c.Expect(250, "EHLO c")
				}
				for _, s := range m.steps {
					if r := c.Cmd("%s", s[0]); fmt.Sprint(r.Code) != s[1] {
						t.Fatalf("%s: %s, want %s", s[0], r, s[1])
					}
				}
				c.Expect(250, "MAIL FROM:<someone@client.test>")
				c.Expect(250, "RCPT TO:<ops@example.test>")
				c.Expect(354, "DATA")
				if r := c.Cmd("%s.", testenv.RFC5322(name, testenv.Body(100))); r.Code != 250 {
					t.Fatalf("DATA: %s", r)
				}
				n++
				m := f.sink.WaitFor(t, n, 30*time.Second)[n-1]
				if !strings.Contains(string(m.Data), "with ESMTPSA id") || !strings.Contains(string(m.Data), "(using TLS") {
					t.Fatalf("Received header does not record TLS and AUTH:\n%s", m.Data[:300])
				}
			})
		}
	}
}

// Failed AUTH from one IP locks that IP out with 421 and a disconnect;
// other clients are not affected. (Names that are no user count against
// the address only; see TestAuthLockoutPerUserSharedUnlock for users.)
func TestAuthLockout(t *testing.T) {
	f := newFrontDoor(t, func(c *config.Config) {
		c.Ingress.AuthFailureLimit = 3
		c.Ingress.AllowInsecureAuth = true
	})
	c, _ := testenv.DialRaw(t, f.addr(), "127.0.0.3")
	c.Expect(250, "EHLO c")
	c.Expect(535, "AUTH PLAIN %s", plainAuth("nobody", "x1"))
	c.Expect(535, "AUTH PLAIN %s", plainAuth("nobody", "x2"))
	if r := c.Cmd("AUTH PLAIN %s", plainAuth("nobody", "x3")); r.Code != 421 || r.Enh != "4.7.0" {
		t.Fatalf("third failure: %s", r)
	}
	if !c.Closed(5 * time.Second) {
		t.Fatal("connection not closed after lockout")
	}
	// Still locked, even with the right password.
	c, _ = testenv.DialRaw(t, f.addr(), "127.0.0.3")
	c.Expect(250, "EHLO c")
	if r := c.Cmd("AUTH PLAIN %s", plainAuth("app", "pa55")); r.Code != 421 {
		t.Fatalf("during lockout: %s", r)
	}
	// Another IP can log in.
	c, _ = testenv.DialRaw(t, f.addr(), "127.0.0.4")
	c.Expect(250, "EHLO c")
	c.Expect(235, "AUTH PLAIN %s", plainAuth("app", "pa55"))
}

// Each smuggling payload yields at most one message at the destination:
// rejected by default, rewritten to plain lines with bare_line_endings:
// normalize.
func TestSmuggling(t *testing.T) {
	payloads := map[string]string{
		"LF.CRLF": "\n.\r\n",
		"CR.CRLF": "\r.\r\n",
		"LF.LF":   "\n.\n",
	}
	for _, mode := range []string{"reject", "normalize"} {
		t.Run(mode, func(t *testing.T) {
			f := newFrontDoor(t, func(c *config.Config) { c.Ingress.BareLineEndings = mode })
			n := 0
			for name, sep := range payloads {
				c, _ := testenv.DialRaw(t, f.addr(), "")
				c.Expect(250, "EHLO c")
				c.Expect(250, "MAIL FROM:<a@client.test>")
				c.Expect(250, "RCPT TO:<ops@example.test>")
				c.Expect(354, "DATA")
				body := "Subject: " + name + "\r\n\r\nfirst" + sep +
					"MAIL FROM:<evil@client.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
				c.Write([]byte(body + ".\r\n"))
				r := c.Read()
				switch mode {
				case "reject":
					if r.Code != 550 || r.Enh != "5.5.2" {
						t.Fatalf("%s: %s, want 550 5.5.2", name, r)
					}
				case "normalize":
					if r.Code != 250 {
						t.Fatalf("%s: %s, want 250", name, r)
					}
					n++
				}
				// Whatever follows on the connection is a fresh command.
				c.Expect(250, "RSET")
			}
			if mode == "reject" {
				// sentinel
				if _, err := testenv.Send(f.addr(), testenv.Mail{From: "a@client.test", To: []string{"ops@example.test"}, Data: testenv.RFC5322("s", testenv.Body(10))}); err != nil {
					t.Fatal(err)
				}
				n = 1
			}
			f.sink.WaitFor(t, n, 30*time.Second)
			f.relay.WaitQueueEmpty(30 * time.Second)
			msgs := f.sink.Messages()
			if len(msgs) != n {
				t.Fatalf("%d messages at the destination, want %d", len(msgs), n)
			}
			for _, m := range msgs {
				if len(m.Rcpts) != 1 || m.Rcpts[0] != "ops@example.test" || m.From != "a@client.test" {
					t.Fatalf("smuggled envelope at the destination: %s -> %v", m.From, m.Rcpts)
				}
			}
		})
	}
}

// A 25 MiB message sent as a slow but steady trickle that lasts longer than
// the read timeout is accepted; a stalled client is cut off; an oversize
// message gets 552 and the connection stays usable.
func TestSlowUploadAndLimits(t *testing.T) {
	f := newFrontDoor(t, func(c *config.Config) {
		c.Ingress.ReadTimeout = config.Duration(1500 * time.Millisecond)
		c.Ingress.MaxMessageBytes = 26214400
	})
	body := testenv.RFC5322("trickle", testenv.Body(25<<20-4096))
	// built now: under -race that takes longer than the read timeout
	tooBig := testenv.RFC5322("too big", testenv.Body(26214400+1000))
	c, _ := testenv.DialRaw(t, f.addr(), "")
	c.Expect(250, "EHLO c")
	c.Expect(250, "MAIL FROM:<a@client.test>")
	c.Expect(250, "RCPT TO:<ops@example.test>")
	c.Expect(354, "DATA")
	start := time.Now()
	const chunks = 40
	step := len(body) / chunks
	for i := 0; i < len(body); i += step {
		end := min(i+step, len(body))
		c.Write(body[i:end])
		time.Sleep(100 * time.Millisecond) // the trickle itself: 10 writes per second
	}
	c.Write([]byte(".\r\n"))
	if r := c.Read(); r.Code != 250 {
		t.Fatalf("trickled 25 MiB: %s", r)
	}
	if el := time.Since(start); el < 3*time.Second {
		t.Fatalf("upload took %s, not longer than twice the read timeout", el)
	}
	// Oversize (right away: an idle client is cut off after the read
	// timeout): 552 once the client has sent everything, then the same
	// connection carries a normal message.
	c.Expect(250, "MAIL FROM:<a@client.test>")
	c.Expect(250, "RCPT TO:<ops@example.test>")
	c.Expect(354, "DATA")
	c.Write(tooBig)
	if r := c.Cmd("."); r.Code != 552 || r.Enh != "5.3.4" {
		t.Fatalf("oversize: %s", r)
	}
	c.Expect(250, "MAIL FROM:<a@client.test>")
	c.Expect(250, "RCPT TO:<ops@example.test>")
	c.Expect(354, "DATA")
	c.Expect(250, "%s.", testenv.RFC5322("after oversize", testenv.Body(100)))
	var trickled *testenv.Message
	for _, m := range f.sink.WaitFor(t, 2, 60*time.Second) {
		if len(m.Data) > 1<<20 {
			trickled = m
		}
	}
	if trickled == nil || !bytes.Equal(trickled.AfterReceived(), body) {
		t.Fatal("trickled message missing or different at the destination")
	}
	// A stalled client is disconnected after the read timeout.
	s, _ := testenv.DialRaw(t, f.addr(), "")
	s.Expect(250, "EHLO c")
	s.Expect(250, "MAIL FROM:<a@client.test>")
	s.Expect(250, "RCPT TO:<ops@example.test>")
	s.Expect(354, "DATA")
	s.Write([]byte("Subject: stalled\r\n\r\npart"))
	if r, err := s.TryRead(); err == nil && r.Code != 421 {
		t.Fatalf("stalled upload: %s, want 421 or a closed connection", r)
	}
	if !s.Closed(5 * time.Second) {
		t.Fatal("stalled connection still open")
	}
}

// Many idle connections from one address cannot lock others out: the
// per-IP limit holds and a normal client is served.
func TestIdleConnectionsDoNotStarveClients(t *testing.T) {
	f := newFrontDoor(t, func(c *config.Config) {
		c.Ingress.MaxConnectionsPerIP = 50
		c.Ingress.MaxConnections = 1000
	})
	var mu sync.Mutex
	accepted, refused := 0, 0
	var wg sync.WaitGroup
	for i := 0; i < 500; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, greet := testenv.DialRaw(t, f.addr(), "127.0.0.5")
			mu.Lock()
			defer mu.Unlock()
			switch greet.Code {
			case 220:
				accepted++
			case 421:
				refused++
				_ = c
			}
		}()
	}
	wg.Wait()
	if accepted != 50 || refused != 450 {
		t.Fatalf("500 idle connections from one IP: %d accepted, %d refused; want 50 and 450", accepted, refused)
	}
	if _, err := testenv.Send(f.addr(), testenv.Mail{Local: "127.0.0.1", From: "a@client.test", To: []string{"ops@example.test"}, Data: testenv.RFC5322("served", testenv.Body(100))}); err != nil {
		t.Fatalf("normal client not served: %v", err)
	}
	f.sink.WaitFor(t, 1, 30*time.Second)
}

// PIPELINING, BDAT/CHUNKING, 8BITMIME and SMTPUTF8 work; STARTTLS discards
// what the client pipelined before the handshake.
func TestExtensions(t *testing.T) {
	f := newFrontDoor(t, nil)
	c, _ := testenv.DialRaw(t, f.addr(), "")
	ehlo := strings.Join(c.Expect(250, "EHLO c").Lines, "\n")
	for _, ext := range []string{"PIPELINING", "8BITMIME", "CHUNKING", "SMTPUTF8", "SIZE 65536", "STARTTLS", "ENHANCEDSTATUSCODES"} {
		if !strings.Contains(ehlo, ext) {
			t.Errorf("EHLO lacks %s:\n%s", ext, ehlo)
		}
	}
	// Pipelined transaction.
	c.Write([]byte("MAIL FROM:<a@client.test> BODY=8BITMIME\r\nRCPT TO:<p1@example.test>\r\nRCPT TO:<p2@example.test>\r\nDATA\r\n"))
	for _, want := range []int{250, 250, 250, 354} {
		if r := c.Read(); r.Code != want {
			t.Fatalf("pipelined: %s, want %d", r, want)
		}
	}
	eight := testenv.RFC5322("8bit", []byte("Grüße aus Köln\r\n"))
	c.Expect(250, "%s.", eight)
	// BDAT in two chunks.
	chunked := testenv.RFC5322("chunked", testenv.Body(3000))
	c.Expect(250, "MAIL FROM:<a@client.test>")
	c.Expect(250, "RCPT TO:<b@example.test>")
	c.Write([]byte(fmt.Sprintf("BDAT %d\r\n", 1000)))
	c.Write(chunked[:1000])
	if r := c.Read(); r.Code != 250 {
		t.Fatalf("BDAT 1000: %s", r)
	}
	c.Write([]byte(fmt.Sprintf("BDAT %d LAST\r\n", len(chunked)-1000)))
	c.Write(chunked[1000:])
	if r := c.Read(); r.Code != 250 {
		t.Fatalf("BDAT LAST: %s", r)
	}
	// SMTPUTF8.
	c.Expect(250, "MAIL FROM:<jörg@client.test> SMTPUTF8")
	c.Expect(250, "RCPT TO:<søren@exämple.test>")
	c.Expect(354, "DATA")
	utf := testenv.RFC5322("utf8", []byte("hej\r\n"))
	c.Expect(250, "%s.", utf)

	msgs := f.sink.WaitFor(t, 3, 30*time.Second)
	byRcpt := map[string]*testenv.Message{}
	for _, m := range msgs {
		byRcpt[m.Rcpts[0]] = m
	}
	if m := byRcpt["p1@example.test"]; m == nil || len(m.Rcpts) != 2 || !bytes.Equal(m.AfterReceived(), eight) {
		t.Errorf("pipelined 8-bit message: %+v", m)
	}
	if m := byRcpt["b@example.test"]; m == nil || !bytes.Equal(m.AfterReceived(), chunked) {
		t.Errorf("BDAT message differs")
	}
	if m := byRcpt["søren@exämple.test"]; m == nil || m.From != "jörg@client.test" || !m.MailOpts.UTF8 {
		t.Errorf("SMTPUTF8 message: %+v", m)
	}

	// STARTTLS with a pipelined MAIL behind it: the MAIL is discarded.
	s, _ := testenv.DialRaw(t, f.addr(), "")
	s.Expect(250, "EHLO c")
	s.Write([]byte("STARTTLS\r\nMAIL FROM:<injected@client.test>\r\n"))
	if r := s.Read(); r.Code != 220 {
		t.Fatalf("STARTTLS: %s", r)
	}
	tc := tls.Client(s.Conn, f.client())
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	s2 := &rawOver{t: t, c: tc}
	s2.expect(250, "EHLO c")
	if r := s2.cmd("RCPT TO:<x@example.test>"); r/100 != 5 {
		t.Fatalf("RCPT after STARTTLS without MAIL: %d (the pipelined MAIL was executed)", r)
	}

	// The same when STARTTLS and the MAIL arrive in one write with the end
	// of a message, so they may be read together with the message's last
	// bytes.
	s, _ = testenv.DialRaw(t, f.addr(), "")
	s.Expect(250, "EHLO c")
	s.Expect(250, "MAIL FROM:<a@client.test>")
	s.Expect(250, "RCPT TO:<ops@example.test>")
	s.Expect(354, "DATA")
	s.Write(append(testenv.RFC5322("before starttls", testenv.Body(100)), ".\r\nSTARTTLS\r\nMAIL FROM:<injected@client.test>\r\n"...))
	if r := s.Read(); r.Code != 250 {
		t.Fatalf("message before STARTTLS: %s", r)
	}
	if r := s.Read(); r.Code != 220 {
		t.Fatalf("STARTTLS after a message: %s", r)
	}
	tc = tls.Client(s.Conn, f.client())
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	s2 = &rawOver{t: t, c: tc}
	s2.expect(250, "EHLO c")
	if r := s2.cmd("RCPT TO:<x@example.test>"); r/100 != 5 {
		t.Fatalf("RCPT after STARTTLS without MAIL: %d (the MAIL sent with the message was executed)", r)
	}
}

// Missing Message-ID and Date are added; present ones are left alone.
func TestMissingHeadersAdded(t *testing.T) {
	f := newFrontDoor(t, nil)
	bare := []byte("From: <a@client.test>\r\nSubject: no id\r\n\r\nbody\r\n")
	res, err := testenv.Send(f.addr(), testenv.Mail{From: "a@client.test", To: []string{"ops@example.test"}, Data: bare})
	if err != nil {
		t.Fatal(err)
	}
	m := f.sink.WaitFor(t, 1, 30*time.Second)[0]
	after := string(m.AfterReceived())
	if !strings.HasPrefix(after, "Message-ID: <"+res.QueueID+"@relay.test>\r\nDate: ") || !strings.HasSuffix(after, string(bare)) {
		t.Fatalf("headers not added as expected:\n%s", after)
	}
}

// A new certificate is picked up on reload without dropping sessions.
func TestCertificateReload(t *testing.T) {
	f := newFrontDoor(t, nil)
	serial := func() string {
		c, err := tls.Dial("tcp", f.tlsAddr(), f.client())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	// A session that stays open across the reload.
	live, _ := testenv.DialRawTLS(t, f.tlsAddr(), f.client())
	live.Expect(250, "EHLO c")
	newCert, newKey, _ := f.pki.Issue(t, "rotated")
	for _, p := range [][2]string{{newCert, f.pki.CertFile}, {newKey, f.pki.KeyFile}} {
		data, _ := os.ReadFile(p[0])
		if err := os.WriteFile(p[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f.relay.App.ReloadCertificates() // what SIGHUP does
	if after := serial(); after == before {
		t.Fatal("certificate not replaced after reload")
	}
	live.Expect(250, "NOOP")
}

// rawOver speaks to a connection already upgraded by the test.
type rawOver struct {
	t *testing.T
	c *tls.Conn
	b []byte
}

func (r *rawOver) cmd(line string) int {
	r.t.Helper()
	if _, err := r.c.Write([]byte(line + "\r\n")); err != nil {
		r.t.Fatal(err)
	}
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	var acc []byte
	for {
		n, err := r.c.Read(buf)
		acc = append(acc, buf[:n]...)
		if err != nil {
			r.t.Fatal(err)
		}
		lines := strings.Split(strings.TrimRight(string(acc), "\r\n"), "\r\n")
		last := lines[len(lines)-1]
		if bytes.HasSuffix(acc, []byte("\r\n")) && len(last) >= 4 && last[3] == ' ' {
			var code int
			fmt.Sscanf(last[:3], "%d", &code)
			return code
		}
	}
}

func (r *rawOver) expect(code int, line string) {
	r.t.Helper()
	if got := r.cmd(line); got != code {
		r.t.Fatalf("%s: %d, want %d", line, got, code)
	}
}

// SIZE as advertised is exactly the limit enforced, in MAIL FROM SIZE=,
// DATA and BDAT alike.
func TestSizeLimitBoundary(t *testing.T) {
	f := newFrontDoor(t, nil) // max_message_bytes 65536
	const max = 64 << 10
	msg := func(n int) []byte {
		b := testenv.RFC5322("size", nil)
		return append(b, testenv.Body(n-len(b))...)
	}
	c, _ := testenv.DialRaw(t, f.addr(), "")
	if ehlo := strings.Join(c.Expect(250, "EHLO c").Lines, "\n"); !strings.Contains(ehlo, fmt.Sprintf("SIZE %d", max)) {
		t.Fatalf("EHLO: %s", ehlo)
	}
	c.Expect(552, "MAIL FROM:<a@client.test> SIZE=%d", max+1)
	for _, n := range []int{max, max + 1} {
		want := 250
		if n > max {
			want = 552
		}
		// DATA
		c.Expect(250, "MAIL FROM:<a@client.test> SIZE=%d", min(n, max))
		c.Expect(250, "RCPT TO:<ops@example.test>")
		c.Expect(354, "DATA")
		c.Write(msg(n))
		if r := c.Cmd("."); r.Code != want {
			t.Fatalf("DATA of %d bytes: %s, want %d", n, r, want)
		}
		// BDAT
		c.Expect(250, "MAIL FROM:<a@client.test>")
		c.Expect(250, "RCPT TO:<ops@example.test>")
		c.Write([]byte(fmt.Sprintf("BDAT %d LAST\r\n", n)))
		c.Write(msg(n))
		if r := c.Read(); r.Code != want {
			t.Fatalf("BDAT of %d bytes: %s, want %d", n, r, want)
		}
		// BDAT in two chunks
		c.Expect(250, "MAIL FROM:<a@client.test>")
		c.Expect(250, "RCPT TO:<ops@example.test>")
		c.Write([]byte(fmt.Sprintf("BDAT %d\r\n", n/2)))
		c.Write(msg(n)[:n/2])
		c.Expect(250, "BDAT %d LAST", n-n/2)
		c.Write(msg(n)[n/2:])
		if r := c.Read(); r.Code != want {
			t.Fatalf("BDAT of %d bytes in two chunks: %s, want %d", n, r, want)
		}
	}
	// The size is that of the message, not of its dot-stuffed form.
	dotted := msg(max)
	for i := len(dotted) - 200; i > len(dotted)-2000; i-- {
		if dotted[i-1] == '\n' {
			dotted[i] = '.'
		}
	}
	c.Expect(250, "MAIL FROM:<a@client.test> SIZE=%d", max)
	c.Expect(250, "RCPT TO:<ops@example.test>")
	c.Expect(354, "DATA")
	c.Write(bytes.ReplaceAll(dotted, []byte("\n."), []byte("\n..")))
	if r := c.Cmd("."); r.Code != 250 {
		t.Fatalf("DATA of %d bytes, dot-stuffed: %s, want 250", max, r)
	}
	f.sink.WaitFor(t, 4, 30*time.Second)
	stuffed := 0
	for _, m := range f.sink.Messages() {
		got := m.AfterReceived()
		if len(got) != max {
			t.Fatalf("a message of %d bytes arrived with %d", max, len(got))
		}
		if bytes.Contains(got, []byte("\n.")) {
			stuffed++
			if !bytes.Equal(got, dotted) {
				t.Fatal("the message with dot-stuffed lines arrived changed")
			}
		}
	}
	if stuffed != 1 {
		t.Fatalf("%d messages with lines that start with a dot, want 1", stuffed)
	}
}

// A BDAT transfer that go-smtp ends itself (RSET between chunks, a chunk
// refused as too large) publishes nothing, and the session goes on.
func TestBDATAbortedSessionGoesOn(t *testing.T) {
	f := newFrontDoor(t, nil) // max_message_bytes 65536
	msg := testenv.RFC5322("after", testenv.Body(100))
	c, _ := testenv.DialRaw(t, f.addr(), "")
	c.Expect(250, "EHLO c")
	for range 3 {
		c.Expect(250, "MAIL FROM:<a@client.test>")
		c.Expect(250, "RCPT TO:<ops@example.test>")
		c.Write([]byte("BDAT 10\r\n0123456789"))
		c.Read()
		c.Expect(250, "RSET")
		c.Expect(250, "MAIL FROM:<a@client.test>")
		c.Expect(250, "RCPT TO:<ops@example.test>")
		c.Write([]byte("BDAT 10\r\n0123456789"))
		c.Read()
		c.Write([]byte(fmt.Sprintf("BDAT %d LAST\r\n%s", 64<<10, testenv.Body(64<<10))))
		if r := c.Read(); r.Code != 552 {
			t.Fatalf("BDAT over the size limit: %s, want 552", r)
		}
	}
	c.Expect(250, "NOOP")
	c.Expect(250, "MAIL FROM:<a@client.test>")
	c.Expect(250, "RCPT TO:<ops@example.test>")
	c.Write([]byte(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg)))
	if r := c.Read(); r.Code != 250 {
		t.Fatalf("BDAT after aborted transfers: %s", r)
	}
	f.sink.WaitFor(t, 1, 30*time.Second)
	f.relay.WaitQueueEmpty(30 * time.Second)
	if got := f.sink.Messages(); len(got) != 1 || !bytes.Equal(got[0].AfterReceived(), msg) {
		t.Fatalf("%d messages at the destination, want only the last one", len(got))
	}
}

// Lines of message content longer than go-smtp's command line limit
// (HTML on one line, as report generators write it) are accepted by DATA
// and BDAT and arrive byte-identical; the limit still applies to the
// commands that follow on the same connection.
func TestLongLines(t *testing.T) {
	f := newFrontDoor(t, nil) // max_message_bytes 65536
	line := func(n int) string { return strings.Repeat("<td>x</td>", n/10) }
	msg := testenv.RFC5322("long lines", []byte("<html>"+line(3000)+"\r\n"+line(40000)+"</html>\r\nend\r\n"))

	c, _ := testenv.DialRaw(t, f.addr(), "")
	c.Expect(250, "EHLO c")
	// DATA, twice on one connection: the limit is lifted for each.
	for range 2 {
		c.Expect(250, "MAIL FROM:<a@client.test>")
		c.Expect(250, "RCPT TO:<ops@example.test>")
		c.Expect(354, "DATA")
		c.Write(msg)
		if r := c.Cmd("."); r.Code != 250 {
			t.Fatalf("DATA with long lines: %s", r)
		}
		c.Expect(250, "NOOP")
	}
	// BDAT
	c.Expect(250, "MAIL FROM:<a@client.test>")
	c.Expect(250, "RCPT TO:<ops@example.test>")
	c.Write([]byte(fmt.Sprintf("BDAT %d LAST\r\n", len(msg))))
	c.Write(msg)
	if r := c.Read(); r.Code != 250 {
		t.Fatalf("BDAT with long lines: %s", r)
	}
	// A refused message with long lines is drained to its end and the
	// session goes on.
	c.Expect(250, "MAIL FROM:<a@client.test>")
	c.Expect(250, "RCPT TO:<ops@example.test>")
	c.Expect(354, "DATA")
	c.Write(testenv.RFC5322("too large", []byte(line(70000)+"\r\n")))
	if r := c.Cmd("."); r.Code != 552 {
		t.Fatalf("oversize DATA with a long line: %s, want 552", r)
	}
	c.Expect(250, "NOOP")
	// Command lines may have 2000 bytes, CRLF included, ...
	c.Expect(250, "NOOP %s", strings.Repeat("x", 2000-len("NOOP \r\n")))
	// ... and a longer one still ends the session.
	if r := c.Cmd("NOOP %s", line(3000)); r.Code != 500 {
		t.Fatalf("long command line: %s, want 500", r)
	}
	// Also one that arrives with the end of a message, read while the
	// message was.
	tooLong := fmt.Sprintf("NOOP %s\r\n", strings.Repeat("x", 2001-len("NOOP \r\n")))
	for _, bdat := range []bool{false, true} {
		c, _ := testenv.DialRaw(t, f.addr(), "")
		c.Expect(250, "EHLO c")
		c.Expect(250, "MAIL FROM:<a@client.test>")
		c.Expect(250, "RCPT TO:<ops@example.test>")
		if bdat {
			c.Write([]byte(fmt.Sprintf("BDAT %d LAST\r\n%s%s", len(msg), msg, tooLong)))
		} else {
			c.Expect(354, "DATA")
			c.Write([]byte(string(msg) + ".\r\n" + tooLong))
		}
		if r := c.Read(); r.Code != 250 {
			t.Fatalf("message (BDAT %v): %s", bdat, r)
		}
		if r := c.Read(); r.Code != 500 {
			t.Fatalf("command line of 2001 bytes after the message (BDAT %v): %s, want 500", bdat, r)
		}
	}

	// They arrive with their text intact: as delivery may send no line
	// over 998 octets, the text body comes re-encoded as quoted-printable
	// (TestLongLinesFolded covers the folding itself).
	f.sink.WaitFor(t, 5, 30*time.Second)
	wantHdr, wantBody, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	for _, m := range f.sink.Messages() {
		hdr, body, _ := bytes.Cut(m.AfterReceived(), []byte("\r\n\r\n"))
		got, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		if !bytes.HasPrefix(hdr, wantHdr) || !bytes.Contains(hdr, []byte("Content-Transfer-Encoding: quoted-printable")) ||
			err != nil || !bytes.Equal(got, wantBody) {
			t.Fatalf("message with long lines changed on the way (%v):\n%s", err, hdr)
		}
	}
}
