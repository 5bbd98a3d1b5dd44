package ingress

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/emersion/go-smtp"
)

// reads is a reader that returns the given pieces, one per Read.
type reads struct {
	parts []string
	err   error // after the last piece
}

func (r *reads) Read(p []byte) (int, error) {
	if len(r.parts) == 0 {
		return 0, r.err
	}
	n := copy(p, r.parts[0])
	r.parts[0] = r.parts[0][n:]
	if r.parts[0] == "" {
		r.parts = r.parts[1:]
		if len(r.parts) == 0 && r.err != nil {
			return n, r.err
		}
	}
	return n, nil
}

func TestCommandLines(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name  string
		parts []string
		err   error
		limit int // 0: data mode
		buf   int
		want  []string // what each Read returns
		last  error
	}{
		{"one line per read", []string{"EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<b@c>\r\n"}, io.EOF, 2000, 64,
			[]string{"EHLO a\r\n", "MAIL FROM:<>\r\n", "RCPT TO:<b@c>\r\n"}, io.EOF},
		{"chunk after BDAT is not read with it", []string{"BDAT 5 LAST\r\nabcde"}, io.EOF, 2000, 64,
			[]string{"BDAT 5 LAST\r\n", "abcde"}, io.EOF},
		{"a line longer than the buffer comes in pieces", []string{"NOOP xxxxxxxxxxxx\r\n"}, io.EOF, 2000, 8,
			[]string{"NOOP xxx", "xxxxxxxx", "x\r\n"}, io.EOF},
		{"partial line then the rest", []string{"NOO", "P\r\nQUIT\r\n"}, io.EOF, 2000, 64,
			[]string{"NOO", "P\r\n", "QUIT\r\n"}, io.EOF},
		{"data mode passes through", []string{"line 1\r\nline 2\r\n.\r\n"}, io.EOF, 0, 64,
			[]string{"line 1\r\nline 2\r\n.\r\n"}, io.EOF},
		{"an error waits for the kept bytes", []string{"A\r\nB\r\n"}, boom, 2000, 64,
			[]string{"A\r\n", "B\r\n"}, boom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			limit := tc.limit
			l := &commandLines{r: &reads{parts: append([]string(nil), tc.parts...), err: tc.err}, limit: &limit}
			buf := make([]byte, tc.buf)
			for i, want := range tc.want {
				n, err := l.Read(buf)
				if err != nil || string(buf[:n]) != want {
					t.Fatalf("read %d: %q, %v; want %q", i, buf[:n], err, want)
				}
			}
			if n, err := l.Read(buf); n != 0 || err != tc.last {
				t.Fatalf("after the data: %d, %v; want 0, %v", n, err, tc.last)
			}
		})
	}
}

// Switching to data mode mid-stream hands over what was kept, then reads
// through; the bytes come out unchanged whatever the read sizes.
func TestCommandLinesModeSwitch(t *testing.T) {
	limit := 2000
	l := &commandLines{r: strings.NewReader("BDAT 10\r\n0123456789NOOP\r\n"), limit: &limit}
	buf := make([]byte, 64)
	if n, _ := l.Read(buf); string(buf[:n]) != "BDAT 10\r\n" {
		t.Fatalf("command: %q", buf[:n])
	}
	limit = 0
	chunk := make([]byte, 10)
	if _, err := io.ReadFull(l, chunk); err != nil || string(chunk) != "0123456789" {
		t.Fatalf("chunk: %q, %v", chunk, err)
	}
	limit = 2000
	if n, _ := l.Read(buf); string(buf[:n]) != "NOOP\r\n" {
		t.Fatalf("command after the chunk: %q", buf[:n])
	}
	limit = 0
	if err := iotest.TestReader(&commandLines{r: strings.NewReader("a\r\nb\r\nc"), limit: &limit}, []byte("a\r\nb\r\nc")); err != nil {
		t.Fatal(err)
	}
}

// errSeq returns its errors one per Read, with nothing read.
type errSeq []error

func (e *errSeq) Read([]byte) (int, error) {
	err := (*e)[0]
	*e = (*e)[1:]
	return 0, err
}

// An error with nothing read is passed on, not kept: after a read timeout
// the session closes, and what go-smtp reads next must be the EOF, not the
// timeout again (which go-smtp would answer with a second 421).
func TestCommandLinesErrorsAreNotKept(t *testing.T) {
	timeout := errors.New("i/o timeout")
	for _, limit := range []int{0, 2000} {
		r := &errSeq{timeout, io.EOF}
		l := &commandLines{r: r, limit: &limit}
		buf := make([]byte, 4096)
		if _, err := l.Read(buf); err != timeout {
			t.Fatalf("limit %d: first read: %v", limit, err)
		}
		if _, err := l.Read(buf); err != io.EOF {
			t.Fatalf("limit %d: second read: %v, want EOF", limit, err)
		}
	}
}

// The fields of go-smtp's Conn that lineLimitOf relies on are there.
func TestLineLimitOfFindsGoSMTPFields(t *testing.T) {
	if lineLimitOf(nil) != nil {
		t.Fatal("nil conn")
	}
	found := make(chan int, 1)
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		if p := lineLimitOf(c); p != nil {
			found <- *p
		} else {
			found <- -1
		}
		return nil, errors.New("no session")
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	c, err := smtp.Dial(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Hello("a") // refused by the backend; NewSession ran
	if got := <-found; got != srv.MaxLineLength {
		t.Fatalf("go-smtp's lineLimitReader not found (limit %d): update ingress/limit.go", got)
	}
}
