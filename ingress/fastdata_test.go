package ingress

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/emersion/go-smtp"
)

// refData is go-smtp v0.25's dataReader state machine, byte for byte: the
// reference fastData must match.
type refData struct {
	r     *bufio.Reader
	state int
}

func (r *refData) Read(b []byte) (n int, err error) {
	for n < len(b) && r.state != dsEOF {
		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		switch r.state {
		case dsBeginLine:
			if c == '.' {
				r.state = dsDot
				continue
			}
			if c == '\r' {
				r.state = dsCR
				break
			}
			r.state = dsData
		case dsDot:
			if c == '\r' {
				r.state = dsDotCR
				continue
			}
			r.state = dsData
		case dsDotCR:
			if c == '\n' {
				r.state = dsEOF
				continue
			}
			r.state = dsData
		case dsCR:
			if c == '\n' {
				r.state = dsBeginLine
				break
			}
			r.state = dsData
		case dsData:
			if c == '\r' {
				r.state = dsCR
			}
		}
		b[n] = c
		n++
	}
	if err == nil && r.state == dsEOF {
		err = io.EOF
	}
	return
}

// both runs the reference and fastData over the same input (read through
// readers of the given chunking) and returns output, error and how much
// of the input each left unread.
func compare(t *testing.T, in []byte, oneByte bool) {
	t.Helper()
	wrap := func(r io.Reader) io.Reader {
		if oneByte {
			return iotest.OneByteReader(r)
		}
		return r
	}
	rbr := bufio.NewReaderSize(wrap(bytes.NewReader(in)), 16)
	ref := &refData{r: rbr}
	want, werr := io.ReadAll(ref)
	wrest, _ := io.ReadAll(rbr)

	fbr := bufio.NewReaderSize(wrap(bytes.NewReader(in)), 16)
	state := -1
	fd := &fastData{br: fbr, sync: func(s int) { state = s }}
	got, gerr := io.ReadAll(fd)
	grest, _ := io.ReadAll(fbr)

	if !bytes.Equal(got, want) || !errors.Is(gerr, werr) && (gerr == nil) != (werr == nil) || !bytes.Equal(grest, wrest) {
		t.Fatalf("input %q:\nref  %q err %v rest %q\nfast %q err %v rest %q", in, want, werr, wrest, got, gerr, grest)
	}
	if state != ref.state {
		t.Fatalf("input %q: state %d handed back, reference ends in %d", in, state, ref.state)
	}
}

func TestFastData(t *testing.T) {
	inputs := []string{
		"hello\r\n.\r\nMAIL FROM:<x>\r\n",
		"..dot\r\n.\r\n",
		".\r\n",
		"a\r\n.b\r\n..\r\n.\r\nrest",
		"hello\n.\r\nsmuggled\r\n.\r\n",
		"hello\r.\r\nsmuggled\r\n.\r\n",
		"hello\n.\nsmuggled\r\n.\r\n",
		"x\r\n.\rX\r\n.\r\n",
		"no end",
		"line\r\n.",
		strings.Repeat("long line without end ", 10) + "\r\n.\r\n",
		"\r\r\n.\r\n",
		"",
	}
	for _, in := range inputs {
		compare(t, []byte(in), false)
		compare(t, []byte(in), true)
	}
}

func FuzzFastData(f *testing.F) {
	for _, s := range []string{"a\r\n.\r\n", "\n.\r\n", "\r.\r\n", "..\r\n.\r\n", ".\rx", "x\r"} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, in []byte, oneByte bool) {
		compare(t, in, oneByte)
	})
}

// TestFastDataTakesOver pins go-smtp's internals: with the reader taken
// over, a real session receives the message unstuffed and the next command
// of a pipelined session is read correctly after the end of the data.
func TestFastDataTakesOver(t *testing.T) {
	var got [][]byte
	be := smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &takeOverSession{got: &got}, nil })
	srv := smtp.NewServer(be)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := "Subject: x\r\n\r\n..leading dot\r\nline\n.\r\nstill body\r\n" + strings.Repeat("0123456789012345678901234567890123456789\r\n", 500)
	_, _ = io.WriteString(c, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
	br := bufio.NewReader(c)
	for i := 0; i < 4; i++ { // greeting, EHLO (multi-line), MAIL, RCPT, then 354
		line, _ := br.ReadString('\n')
		for len(line) > 3 && line[3] == '-' {
			line, _ = br.ReadString('\n')
		}
	}
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "354") {
		t.Fatalf("DATA: %q", line)
	}
	// The message, its end, and a pipelined NOOP in one write.
	_, _ = io.WriteString(c, body+".\r\nNOOP\r\n")
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "250") {
		t.Fatalf("end of DATA: %q", line)
	}
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "250") || !strings.Contains(line, "nothing") {
		t.Fatalf("NOOP after DATA: %q", line)
	}
	want := strings.Replace(body, "..leading", ".leading", 1)
	if len(got) != 1 || string(got[0]) != want {
		t.Fatalf("received %q", got)
	}
}

type takeOverSession struct{ got *[][]byte }

func (s *takeOverSession) Reset()                               {}
func (s *takeOverSession) Logout() error                        { return nil }
func (s *takeOverSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *takeOverSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *takeOverSession) Data(r io.Reader) error {
	fr := takeOverData(r)
	if fr == r {
		return errors.New("takeOverData did not recognise go-smtp's DATA reader")
	}
	b, err := io.ReadAll(fr)
	if err != nil {
		return err
	}
	*s.got = append(*s.got, b)
	return nil
}
