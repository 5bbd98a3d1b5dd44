package smtp_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Tests of MaxMessageBytes and MaxLineLength, and of DATA through the
// line-at-a-time reader, over a real connection.

var errRefused = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Refused"}

type limitsBackend struct {
	msgs        chan []byte // every message accepted
	refuseAfter int64       // >0: Data reads this many bytes, then refuses
}

func (be *limitsBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &limitsSession{be}, nil
}

type limitsSession struct{ be *limitsBackend }

func (s *limitsSession) Reset()                               {}
func (s *limitsSession) Logout() error                        { return nil }
func (s *limitsSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *limitsSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *limitsSession) AuthMechanisms() []string             { return []string{sasl.Plain} }
func (s *limitsSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(string, string, string) error { return nil }), nil
}
func (s *limitsSession) Data(r io.Reader) error {
	if s.be.refuseAfter > 0 {
		io.CopyN(ioutil.Discard, r, s.be.refuseAfter)
		return errRefused
	}
	b, err := ioutil.ReadAll(r)
	if err != nil {
		return err
	}
	s.be.msgs <- b
	return nil
}

type limitsConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
	be *limitsBackend
}

func dialLimits(t *testing.T, be *limitsBackend, configure func(*smtp.Server)) *limitsConn {
	t.Helper()
	if be.msgs == nil {
		be.msgs = make(chan []byte, 100)
	}
	s := smtp.NewServer(be)
	s.Domain = "localhost"
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
	lc := &limitsConn{t: t, c: c, br: bufio.NewReader(c), be: be}
	lc.expect(220)
	lc.cmd(250, "EHLO localhost")
	return lc
}

func (lc *limitsConn) write(s string) {
	lc.t.Helper()
	if _, err := io.WriteString(lc.c, s); err != nil {
		lc.t.Fatal(err)
	}
}

// read returns the next reply, all its lines joined by "\n".
func (lc *limitsConn) read() string {
	lc.t.Helper()
	var lines []string
	for {
		line, err := lc.br.ReadString('\n')
		if err != nil {
			lc.t.Fatalf("reading a reply after %q: %v", lines, err)
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

func (lc *limitsConn) expect(code int) string {
	lc.t.Helper()
	r := lc.read()
	if !strings.HasPrefix(r, fmt.Sprint(code)) {
		lc.t.Fatalf("got %.200q, want %d", r, code)
	}
	return r
}

func (lc *limitsConn) cmd(code int, line string) string {
	lc.t.Helper()
	lc.write(line + "\r\n")
	return lc.expect(code)
}

// content returns n bytes of content: lines of x, the last one ending
// with CRLF.
func content(n int) []byte {
	b := bytes.Repeat([]byte("x"), n)
	for i := 76; i < n-3; i += 78 {
		b[i], b[i+1] = '\r', '\n'
	}
	b[n-2], b[n-1] = '\r', '\n'
	return b
}

// stuff dot-stuffs content for DATA and adds the End-of-Data line.
func stuff(content []byte) string {
	var sb strings.Builder
	for _, line := range strings.SplitAfter(string(content), "\r\n") {
		if strings.HasPrefix(line, ".") {
			sb.WriteByte('.')
		}
		sb.WriteString(line)
	}
	return sb.String() + ".\r\n"
}

// received checks that the backend got content.
func (lc *limitsConn) received(content []byte) {
	lc.t.Helper()
	select {
	case got := <-lc.be.msgs:
		if !bytes.Equal(got, content) {
			lc.t.Fatalf("received %d bytes %.100q, want %d bytes %.100q", len(got), got, len(content), content)
		}
	default:
		lc.t.Fatal("no message received")
	}
}

func (lc *limitsConn) nothingReceived() {
	lc.t.Helper()
	select {
	case got := <-lc.be.msgs:
		lc.t.Fatalf("received %d bytes", len(got))
	default:
	}
}

// A message of exactly MaxMessageBytes is accepted, with DATA, BDAT and
// MAIL FROM SIZE=, and one byte more is refused with 552 5.3.4. The size
// is that of the content as the backend reads it, after dot-stuffing is
// undone.
func TestServer_messageOfMaxMessageBytes(t *testing.T) {
	const max = 1000
	lc := dialLimits(t, &limitsBackend{}, func(s *smtp.Server) { s.MaxMessageBytes = max })
	lc.write("EHLO localhost\r\n")
	if ehlo := lc.expect(250); !strings.Contains(ehlo, fmt.Sprintf("\n250-SIZE %d\n", max)) && !strings.HasSuffix(ehlo, fmt.Sprintf("SIZE %d", max)) {
		t.Fatalf("EHLO does not advertise SIZE %d: %q", max, ehlo)
	}
	lc.cmd(552, fmt.Sprintf("MAIL FROM:<a@example.org> SIZE=%d", max+1))

	dotted := content(max)
	for i := 0; i < 10; i++ {
		dotted[i*78] = '.' // lines that start with a dot, stuffed on the wire
	}
	for _, tc := range []struct {
		content []byte
		ok      bool
	}{
		{content(max - 1), true},
		{content(max), true},
		{dotted, true},
		{content(max + 1), false},
		{content(max + 2), false},
		{content(3 * max), false},
	} {
		n := len(tc.content)
		// DATA
		lc.cmd(250, fmt.Sprintf("MAIL FROM:<a@example.org> SIZE=%d", max))
		lc.cmd(250, "RCPT TO:<b@example.org>")
		lc.cmd(354, "DATA")
		lc.write(stuff(tc.content))
		if r := lc.read(); tc.ok && !strings.HasPrefix(r, "250 ") || !tc.ok && !strings.HasPrefix(r, "552 5.3.4 ") {
			t.Fatalf("DATA of %d bytes with MaxMessageBytes %d: %q", n, max, r)
		}
		if tc.ok {
			lc.received(tc.content)
		} else {
			lc.nothingReceived()
		}
		lc.cmd(250, "NOOP")

		// BDAT, in one chunk, and in two if the first fits
		firsts := []int{0}
		if n/2 <= max {
			firsts = append(firsts, n/2)
		}
		for _, split := range firsts {
			lc.cmd(250, "MAIL FROM:<a@example.org>")
			lc.cmd(250, "RCPT TO:<b@example.org>")
			if split > 0 {
				lc.write(fmt.Sprintf("BDAT %d\r\n", split))
				lc.write(string(tc.content[:split]))
				lc.expect(250)
			}
			lc.write(fmt.Sprintf("BDAT %d LAST\r\n", n-split))
			lc.write(string(tc.content[split:]))
			if r := lc.read(); tc.ok && !strings.HasPrefix(r, "250 ") || !tc.ok && !strings.HasPrefix(r, "552 5.3.4 ") {
				t.Fatalf("BDAT of %d bytes (first chunk %d) with MaxMessageBytes %d: %q", n, split, max, r)
			}
			if tc.ok {
				lc.received(tc.content)
			} else {
				lc.nothingReceived()
			}
			lc.cmd(250, "NOOP")
		}
	}
}

// Lines of message content may be longer than MaxLineLength, in DATA and
// in BDAT, also at the start of a chunk sent with its command, and in a
// message the backend refuses before reading it all (go-smtp reads the
// rest).
func TestServer_longLinesInMessage(t *testing.T) {
	long := func(n int) string { return strings.Repeat("<td>x</td>", n/10) }
	content := []byte(long(10000) + "\r\n" + long(3000) + "\r\n.short\r\n" + long(2500) + "\r\n")

	lc := dialLimits(t, &limitsBackend{}, nil)
	for i := 0; i < 2; i++ {
		lc.cmd(250, "MAIL FROM:<a@example.org>")
		lc.cmd(250, "RCPT TO:<b@example.org>")
		lc.cmd(354, "DATA")
		lc.write(stuff(content))
		lc.expect(250)
		lc.received(content)
	}
	lc.cmd(250, "MAIL FROM:<a@example.org>")
	lc.cmd(250, "RCPT TO:<b@example.org>")
	lc.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(content), content)) // one write
	lc.expect(250)
	lc.received(content)
	lc.cmd(250, "NOOP")

	refusing := dialLimits(t, &limitsBackend{refuseAfter: 100}, nil)
	refusing.cmd(250, "MAIL FROM:<a@example.org>")
	refusing.cmd(250, "RCPT TO:<b@example.org>")
	refusing.cmd(354, "DATA")
	refusing.write(stuff(content))
	refusing.expect(554)
	refusing.cmd(250, "NOOP")
	refusing.cmd(250, "MAIL FROM:<a@example.org>")
	refusing.cmd(250, "RCPT TO:<b@example.org>")
	refusing.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(content), content))
	refusing.expect(554)
	refusing.cmd(250, "NOOP")
}

// MaxLineLength still limits command lines: before and after a message,
// also when a command comes in the same write as the end of the message
// (buffered while the message was read), and inside AUTH. A line of
// MaxLineLength bytes, CRLF included, is accepted; one byte more is not,
// and ends the session.
func TestServer_commandLineLimit(t *testing.T) {
	const limit = 2000
	noop := func(n int) string { return "NOOP " + strings.Repeat("x", n-len("NOOP \r\n")) } // n bytes with CRLF
	content := []byte("Subject: x\r\n\r\n" + strings.Repeat("y", 5000) + "\r\n")

	for _, tc := range []struct {
		name string
		run  func(lc *limitsConn, line string) // sends line, expects its reply
	}{
		{"before a message", func(lc *limitsConn, line string) {
			lc.write(line + "\r\n")
		}},
		{"after DATA", func(lc *limitsConn, line string) {
			lc.cmd(250, "MAIL FROM:<a@example.org>")
			lc.cmd(250, "RCPT TO:<b@example.org>")
			lc.cmd(354, "DATA")
			lc.write(stuff(content))
			lc.expect(250)
			lc.write(line + "\r\n")
		}},
		{"with the end of DATA", func(lc *limitsConn, line string) {
			lc.cmd(250, "MAIL FROM:<a@example.org>")
			lc.cmd(250, "RCPT TO:<b@example.org>")
			lc.cmd(354, "DATA")
			lc.write(stuff(content) + line + "\r\n")
			lc.expect(250)
		}},
		{"with a BDAT chunk", func(lc *limitsConn, line string) {
			lc.cmd(250, "MAIL FROM:<a@example.org>")
			lc.cmd(250, "RCPT TO:<b@example.org>")
			lc.write(fmt.Sprintf("BDAT %d LAST\r\n%s%s\r\n", len(content), content, line))
			lc.expect(250)
		}},
		{"with a BDAT chunk before LAST", func(lc *limitsConn, line string) {
			lc.cmd(250, "MAIL FROM:<a@example.org>")
			lc.cmd(250, "RCPT TO:<b@example.org>")
			lc.write(fmt.Sprintf("BDAT %d\r\n%s%s\r\n", len(content), content, line))
			lc.expect(250)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lc := dialLimits(t, &limitsBackend{}, func(s *smtp.Server) { s.MaxLineLength = limit })
			lc.t = t
			tc.run(lc, noop(limit))
			lc.expect(250)
			lc.cmd(250, "RSET")
			tc.run(lc, noop(limit+1))
			if r := lc.read(); !strings.HasPrefix(r, "500 5.4.0 ") {
				t.Fatalf("command line of %d bytes: %q, want 500 5.4.0", limit+1, r)
			}
			if n, err := lc.br.Read(make([]byte, 1)); err == nil {
				t.Fatalf("the session goes on after a line too long (%d bytes read)", n)
			}
		})
	}

	// Too long before its end arrives.
	lc := dialLimits(t, &limitsBackend{}, func(s *smtp.Server) { s.MaxLineLength = limit })
	lc.write(strings.Repeat("x", limit))
	lc.expect(500)

	// A line too long in AUTH ends the session: its rest, which is still
	// unread, is not taken for a command. (With a limit above the size of
	// the read buffer, 4096 bytes, the start of the line is read before
	// it is found too long.)
	lc = dialLimits(t, &limitsBackend{}, func(s *smtp.Server) {
		s.MaxLineLength = 5000
		s.AllowInsecureAuth = true
	})
	lc.cmd(334, "AUTH PLAIN")
	lc.write(strings.Repeat("A", 4096) + "NOOP " + strings.Repeat("x", 900) + "\r\n")
	if r := lc.read(); !strings.HasPrefix(r, "500 5.4.0 ") {
		t.Fatalf("AUTH response too long: %q, want 500 5.4.0", r)
	}
}

// DATA through the line-at-a-time reader: dot-stuffing undone, lines of
// every length around the buffer size, bare CR and LF kept as they are,
// and a pipelined command after the end of the message read as a command.
func TestServer_dataContent(t *testing.T) {
	var content []byte
	for n := 0; n < 9000; n += 97 {
		if n%3 == 0 {
			content = append(content, '.')
		}
		content = append(content, strings.Repeat("z", n%4100)...)
		content = append(content, "\r\n"...)
	}
	content = append(content, "bare\nLF and bare\rCR\r\n..\r\n.\r\n"...) // stuffed below
	lc := dialLimits(t, &limitsBackend{}, nil)
	lc.cmd(250, "MAIL FROM:<a@example.org>")
	lc.cmd(250, "RCPT TO:<b@example.org>")
	lc.cmd(354, "DATA")
	lc.write(stuff(content) + "NOOP\r\n")
	lc.expect(250)
	lc.received(content)
	if r := lc.expect(250); !strings.Contains(r, "nothing") {
		t.Fatalf("NOOP after the message: %q", r)
	}
	// "\n.\r\n" does not end the message.
	lc.cmd(250, "MAIL FROM:<a@example.org>")
	lc.cmd(250, "RCPT TO:<b@example.org>")
	lc.cmd(354, "DATA")
	lc.write("a\n.\r\nb\r\n.\r\nNOOP\r\n")
	lc.expect(250)
	lc.received([]byte("a\n.\r\nb\r\n"))
	lc.expect(250)
}
