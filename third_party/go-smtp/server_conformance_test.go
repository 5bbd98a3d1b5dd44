package smtp_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/ioutil"
	"math/big"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Tests of the replies to commands out of sequence, STARTTLS, unknown
// commands, Server.CommandError and Server.MinDataRate, over a real
// connection.

// confBackend records each transaction; MAIL FROM:<refuse@...> is
// refused, and Data can pause (the backend's own time).
type confBackend struct {
	mu        sync.Mutex
	txns      []string // "from>rcpt,rcpt:content"
	dataPause time.Duration
}

func (be *confBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &confSession{be: be}, nil
}

func (be *confBackend) transactions() []string {
	be.mu.Lock()
	defer be.mu.Unlock()
	return append([]string(nil), be.txns...)
}

type confSession struct {
	be    *confBackend
	from  string
	rcpts []string
}

func (s *confSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *confSession) Logout() error { return nil }
func (s *confSession) Mail(from string, _ *smtp.MailOptions) error {
	if strings.HasPrefix(from, "refuse@") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Refused"}
	}
	s.from = from
	return nil
}
func (s *confSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *confSession) Data(r io.Reader) error {
	var b []byte
	if s.be.dataPause > 0 {
		// Read some, take a long time (longer than the client has), then
		// read the rest.
		head := make([]byte, 100)
		n, err := io.ReadFull(r, head)
		if err != nil && err != io.ErrUnexpectedEOF {
			return err
		}
		b = head[:n]
		time.Sleep(s.be.dataPause)
	}
	rest, err := ioutil.ReadAll(r)
	if err != nil {
		return err
	}
	b = append(b, rest...)
	s.be.mu.Lock()
	s.be.txns = append(s.be.txns, s.from+">"+strings.Join(s.rcpts, ",")+":"+string(b))
	s.be.mu.Unlock()
	return nil
}

// dialConf connects to a new server with be, greeted but before EHLO.
func dialConf(t *testing.T, be *confBackend, configure func(*smtp.Server)) *limitsConn {
	t.Helper()
	s := smtp.NewServer(be)
	s.Domain = "localhost"
	s.AllowInsecureAuth = true
	if configure != nil {
		configure(s)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	lc := &limitsConn{t: t, c: c, br: bufio.NewReader(c)}
	lc.expect(220)
	return lc
}

// reply sends line and checks that the reply starts with want ("503 5.5.1").
func (lc *limitsConn) reply(line, want string) {
	lc.t.Helper()
	lc.write(line + "\r\n")
	if r := lc.read(); !strings.HasPrefix(r, want) {
		lc.t.Fatalf("%q: got %q, want %q", line, r, want)
	}
}

// closedQuietly checks that the server closes the connection without
// sending anything more.
func (lc *limitsConn) closedQuietly() {
	lc.t.Helper()
	lc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := lc.br.ReadString('\n')
	if err == nil || b != "" {
		lc.t.Fatalf("connection not closed: read %q, %v", b, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		lc.t.Fatal("connection still open")
	}
}

// A command out of sequence gets 503 5.5.1 (RFC 5321 4.1.4 and 4.3.2,
// RFC 3030 3, RFC 4954 4), a missing AUTH mechanism 501 5.5.4, and the
// session goes on.
func TestServer_badSequence(t *testing.T) {
	type step struct{ send, want string }
	plain := base64.StdEncoding.EncodeToString([]byte("\x00user\x00pass"))
	for _, tc := range []struct {
		name  string
		ehlo  bool
		steps []step
	}{
		{"MAIL before EHLO", false, []step{{"MAIL FROM:<a@example.org>", "503 5.5.1"}}},
		{"AUTH before EHLO", false, []step{{"AUTH PLAIN " + plain, "503 5.5.1"}}},
		{"RCPT before MAIL", true, []step{{"RCPT TO:<b@example.org>", "503 5.5.1"}}},
		{"DATA before MAIL", true, []step{{"DATA", "503 5.5.1"}}},
		{"DATA before RCPT", true, []step{{"MAIL FROM:<a@example.org>", "250 "}, {"DATA", "503 5.5.1"}}},
		// (reply adds CRLF, the last two bytes of a chunk.) The chunk
		// is discarded, not taken for a command.
		{"BDAT before RCPT", true, []step{{"MAIL FROM:<a@example.org>", "250 "}, {"BDAT 6 LAST\r\nQUIT", "503 5.5.1"}}},
		{"BDAT before MAIL", true, []step{{"BDAT 6 LAST\r\nQUIT", "503 5.5.1"}}},
		{"DATA during BDAT", true, []step{
			{"MAIL FROM:<a@example.org>", "250 "}, {"RCPT TO:<b@example.org>", "250 "},
			{"BDAT 3\r\na", "250 "}, {"DATA", "503 5.5.1"}, {"RSET", "250 "}}},
		{"MAIL during BDAT", true, []step{
			{"MAIL FROM:<a@example.org>", "250 "}, {"RCPT TO:<b@example.org>", "250 "},
			{"BDAT 3\r\na", "250 "}, {"MAIL FROM:<c@example.org>", "503 5.5.1"}, {"RSET", "250 "}}},
		{"AUTH during a transaction", true, []step{{"MAIL FROM:<a@example.org>", "250 "}, {"AUTH PLAIN " + plain, "503 5.5.1"}}},
		{"AUTH without a mechanism", true, []step{{"AUTH", "501 5.5.4"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lc := dialConf(t, &confBackend{}, nil)
			if tc.ehlo {
				lc.cmd(250, "EHLO localhost")
			}
			for _, s := range tc.steps {
				lc.reply(s.send, s.want)
			}
			lc.reply("NOOP", "250 ")
		})
	}
}

// A second MAIL inside a transaction gets 503 5.5.1 and the transaction
// in progress stays as it was.
func TestServer_nestedMail(t *testing.T) {
	be := &confBackend{}
	lc := dialConf(t, be, nil)
	lc.cmd(250, "EHLO localhost")
	lc.cmd(250, "MAIL FROM:<first@example.org>")
	lc.cmd(250, "RCPT TO:<one@example.org>")
	lc.reply("MAIL FROM:<second@example.org>", "503 5.5.1")
	lc.cmd(250, "RCPT TO:<two@example.org>")
	lc.cmd(354, "DATA")
	lc.write("hello\r\n.\r\n")
	lc.expect(250)
	if got := be.transactions(); len(got) != 1 || got[0] != "first@example.org>one@example.org,two@example.org:hello\r\n" {
		t.Fatalf("transactions: %q", got)
	}
	// After the transaction, MAIL starts the next one.
	lc.cmd(250, "MAIL FROM:<second@example.org>")
}

// Unknown commands, of any length, get 500 5.5.2.
func TestServer_unknownCommands(t *testing.T) {
	lc := dialConf(t, &confBackend{}, func(s *smtp.Server) {
		s.CommandError = func(*smtp.Conn, int, smtp.EnhancedCode) *smtp.SMTPError { return nil } // no limit
	})
	lc.cmd(250, "EHLO localhost")
	for _, line := range []string{"XXXX", "XYZZY", "FOOBAR baz", "HI", "MAILFROM:<a@example.org>", "STARTTLSX", "EHLOlocalhost"} {
		lc.reply(line, "500 5.5.2")
	}
	lc.reply("NOOP", "250 ")
}

// tlsServerConfig has a self-signed certificate for localhost.
func tlsServerConfig(t *testing.T) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// STARTTLS with parameters gets 501 5.5.4 and the session goes on in
// plaintext; STARTTLS under TLS gets 503 5.5.1.
func TestServer_startTLSParameters(t *testing.T) {
	lc := dialConf(t, &confBackend{}, func(s *smtp.Server) { s.TLSConfig = tlsServerConfig(t) })
	lc.cmd(250, "EHLO localhost")
	lc.reply("STARTTLS foo", "501 5.5.4")
	lc.reply("STARTTLS  ", "220 ") // trailing spaces are no parameters
	tc := tls.Client(lc.c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	lc.c, lc.br = tc, bufio.NewReader(tc)
	lc.cmd(250, "EHLO localhost")
	lc.reply("STARTTLS", "503 5.5.1")
	lc.reply("NOOP", "250 ")
}

var plaintextReply = regexp.MustCompile(`[2-5][0-9][0-9][ -][2-5]\.[0-9]{1,3}\.[0-9]{1,3} `)

// A failed TLS handshake after STARTTLS closes the connection: no reply
// in plaintext, no session in plaintext.
func TestServer_startTLSHandshakeFails(t *testing.T) {
	for _, client := range []string{"plaintext", "TLS client giving up"} {
		t.Run(client, func(t *testing.T) {
			lc := dialConf(t, &confBackend{}, func(s *smtp.Server) { s.TLSConfig = tlsServerConfig(t) })
			lc.cmd(250, "EHLO localhost")
			lc.cmd(220, "STARTTLS")
			if client == "plaintext" {
				lc.write("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n")
				lc.closedQuietly()
				return
			}
			// The client refuses the server's certificate; the rest of
			// the server's handshake may still be on the way, but
			// nothing in plaintext, and then the end.
			tc := tls.Client(lc.c, &tls.Config{ServerName: "other.example"})
			if err := tc.Handshake(); err == nil {
				t.Fatal("handshake succeeded")
			}
			lc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			rest, err := ioutil.ReadAll(lc.br)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open after %q", rest)
			}
			if plaintextReply.Match(rest) {
				t.Fatalf("a reply in plaintext: %q", rest)
			}
		})
	}
}

// CommandError sees the first error reply of every command that has one,
// before EHLO too and the backend's refusals included, once per command;
// the reply it returns is sent and the connection closed.
func TestServer_commandError(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	lc := dialConf(t, &confBackend{}, func(s *smtp.Server) {
		s.MaxRecipients = 1
		s.CommandError = func(c *smtp.Conn, code int, enh smtp.EnhancedCode) *smtp.SMTPError {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, fmt.Sprintf("%d %d.%d.%d", code, enh[0], enh[1], enh[2]))
			if len(seen) == 6 {
				return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many errors"}
			}
			return nil
		}
	})
	lc.reply("XXXX", "500 5.5.2")
	lc.reply("HI", "500 5.5.2")
	lc.cmd(250, "EHLO localhost")
	lc.reply("MAIL FROM:<refuse@example.org>", "550 5.7.1")
	lc.reply("RCPT TO:<b@example.org>", "503 5.5.1")
	lc.cmd(250, "MAIL FROM:<a@example.org>")
	lc.cmd(250, "RCPT TO:<b@example.org>")
	lc.reply("RCPT TO:<c@example.org>", "452 4.5.3")
	lc.cmd(250, "NOOP")
	lc.reply("STARTTLS", "502 5.5.1") // no TLSConfig
	if r := lc.expect(421); r != "421 4.7.0 Too many errors" {
		t.Fatalf("after the last error: %q", r)
	}
	lc.closedQuietly()
	want := []string{"500 5.5.2", "500 5.5.2", "550 5.7.1", "503 5.5.1", "452 4.5.3", "502 5.5.1"}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("CommandError saw %q, want %q", seen, want)
	}
}

// drip writes b a byte every interval until it is written or a write
// fails; the channel gets how many bytes were written.
func drip(c net.Conn, b []byte, every time.Duration) <-chan int {
	done := make(chan int, 1)
	go func() {
		n := 0
		for ; n < len(b); n++ {
			if _, err := c.Write(b[n : n+1]); err != nil {
				break
			}
			time.Sleep(every) // the client's pace
		}
		done <- n
	}()
	return done
}

// With MinDataRate, message content sent slower than the rate ends the
// session with 421 4.4.2, however steadily it trickles; content sent
// faster is accepted however long it takes, and the time the backend
// takes does not count. ReadTimeout bounds each command line.
func TestServer_minDataRate(t *testing.T) {
	const limit = 300 * time.Millisecond
	configure := func(s *smtp.Server) {
		s.ReadTimeout = limit
		s.MinDataRate = 200
	}
	line := "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnop\r\n"
	if len(line) != 100 {
		t.Fatal(len(line))
	}
	msg := []byte(strings.Repeat(line, 30)) // sent 100 bytes at a time
	slow := []byte(strings.Repeat("x", 500))

	t.Run("fast enough, for longer than ReadTimeout", func(t *testing.T) {
		be := &confBackend{}
		lc := dialConf(t, be, configure)
		lc.cmd(250, "EHLO localhost")
		lc.cmd(250, "MAIL FROM:<a@example.org>")
		lc.cmd(250, "RCPT TO:<b@example.org>")
		lc.cmd(354, "DATA")
		// 3000 bytes at 2500 bytes/s: 1.2 s, four times ReadTimeout.
		start := time.Now()
		for i := 0; i < len(msg); i += 100 {
			lc.write(string(msg[i : i+100]))
			time.Sleep(40 * time.Millisecond) // the client's pace
		}
		lc.write(".\r\n")
		lc.expect(250)
		if time.Since(start) < 3*limit {
			t.Fatalf("sent in %s", time.Since(start))
		}
		// BDAT alike.
		lc.cmd(250, "MAIL FROM:<a@example.org>")
		lc.cmd(250, "RCPT TO:<b@example.org>")
		lc.write(fmt.Sprintf("BDAT %d LAST\r\n", len(msg)))
		for i := 0; i < len(msg); i += 100 {
			lc.write(string(msg[i : i+100]))
			time.Sleep(40 * time.Millisecond)
		}
		lc.expect(250)
		if n := len(be.transactions()); n != 2 {
			t.Fatalf("%d messages", n)
		}
	})
	t.Run("the backend's time is not the client's", func(t *testing.T) {
		be := &confBackend{dataPause: 3 * limit}
		lc := dialConf(t, be, configure)
		lc.cmd(250, "EHLO localhost")
		lc.cmd(250, "MAIL FROM:<a@example.org>")
		lc.cmd(250, "RCPT TO:<b@example.org>")
		lc.cmd(354, "DATA")
		// More than the server buffers: most of it is read after the
		// pause.
		big := strings.Repeat(string(msg), 10)
		lc.write(big + ".\r\n")
		lc.expect(250)
		if got := be.transactions(); len(got) != 1 || !strings.HasSuffix(got[0], ":"+big) {
			t.Fatalf("transactions: %q", got)
		}
	})
	for _, bdat := range []bool{false, true} {
		t.Run(fmt.Sprintf("too slow (BDAT %v)", bdat), func(t *testing.T) {
			be := &confBackend{}
			lc := dialConf(t, be, configure)
			lc.cmd(250, "EHLO localhost")
			lc.cmd(250, "MAIL FROM:<a@example.org>")
			lc.cmd(250, "RCPT TO:<b@example.org>")
			if bdat {
				lc.write(fmt.Sprintf("BDAT %d LAST\r\n", len(slow)))
			} else {
				lc.cmd(354, "DATA")
			}
			// 20 bytes/s, a tenth of MinDataRate; 25 s for all of it.
			sent := drip(lc.c, slow, 50*time.Millisecond)
			lc.c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if r := lc.read(); !strings.HasPrefix(r, "421 4.4.2 ") {
				t.Fatalf("got %q, want 421 4.4.2", r)
			}
			lc.closedQuietly()
			if n := <-sent; n == len(slow) {
				t.Fatal("the whole trickle was read")
			}
			if n := len(be.transactions()); n != 0 {
				t.Fatalf("%d messages", n)
			}
		})
	}
	t.Run("a command line", func(t *testing.T) {
		lc := dialConf(t, &confBackend{}, configure)
		lc.cmd(250, "EHLO localhost")
		cmd := []byte("NOOP " + strings.Repeat("x", 200) + "\r\n")
		sent := drip(lc.c, cmd, 20*time.Millisecond)
		lc.c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if r := lc.read(); r != "421 4.4.2 Timeout exceeded, closing connection" {
			t.Fatalf("got %q, want 421 4.4.2", r)
		}
		if n := <-sent; n == len(cmd) {
			t.Fatal("the whole line was read")
		}
	})
}
