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

	"github.com/emersion/go-smtp"
)

// Tests of MaxMessageBytes over a real connection.

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
