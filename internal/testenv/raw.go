package testenv

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Raw is a line-level SMTP client for tests that need exact control of
// the bytes on the wire (pipelining, BDAT, smuggling payloads, trickling).
type Raw struct {
	t    testing.TB
	Conn net.Conn
	br   *bufio.Reader
}

// Reply is one SMTP reply.
type Reply struct {
	Code  int
	Enh   string // enhanced status code, if any
	Lines []string
}

func (r Reply) String() string { return strconv.Itoa(r.Code) + " " + strings.Join(r.Lines, " / ") }

// DialRaw connects from local (may be "") and reads the greeting.
func DialRaw(t testing.TB, addr, local string) (*Raw, Reply) {
	t.Helper()
	c, err := (&netDialer{local: local}).dial(addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	r := &Raw{t: t, Conn: c, br: bufio.NewReader(c)}
	return r, r.Read()
}

// DialRawTLS connects with implicit TLS.
func DialRawTLS(t testing.TB, addr string, cfg *tls.Config) (*Raw, Reply) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	r := &Raw{t: t, Conn: c, br: bufio.NewReader(c)}
	return r, r.Read()
}

// Read reads one reply (fails the test on I/O errors).
func (r *Raw) Read() Reply {
	r.t.Helper()
	rep, err := r.TryRead()
	if err != nil {
		r.t.Fatalf("reading reply: %v", err)
	}
	return rep
}

// TryRead reads one reply.
func (r *Raw) TryRead() (Reply, error) {
	_ = r.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var rep Reply
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			return rep, err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return rep, fmt.Errorf("short reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return rep, fmt.Errorf("bad reply line %q", line)
		}
		rep.Code = code
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		if rep.Enh == "" {
			if f := strings.Fields(text); len(f) > 0 && strings.Count(f[0], ".") == 2 && f[0][0] >= '2' && f[0][0] <= '5' {
				rep.Enh = f[0]
			}
		}
		rep.Lines = append(rep.Lines, text)
		if len(line) == 3 || line[3] != '-' {
			return rep, nil
		}
	}
}

// Write sends bytes as they are.
func (r *Raw) Write(b []byte) {
	r.t.Helper()
	_ = r.Conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := r.Conn.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// Cmd sends one command line and reads the reply.
func (r *Raw) Cmd(format string, args ...any) Reply {
	r.t.Helper()
	r.Write([]byte(fmt.Sprintf(format, args...) + "\r\n"))
	return r.Read()
}

// Expect sends a command and fails unless the reply has the code.
func (r *Raw) Expect(code int, format string, args ...any) Reply {
	r.t.Helper()
	rep := r.Cmd(format, args...)
	if rep.Code != code {
		r.t.Fatalf("%s: got %s, want %d", fmt.Sprintf(format, args...), rep, code)
	}
	return rep
}

// StartTLS upgrades the connection (after a 220 to STARTTLS).
func (r *Raw) StartTLS(cfg *tls.Config) {
	r.t.Helper()
	r.Expect(220, "STARTTLS")
	tc := tls.Client(r.Conn, cfg)
	if err := tc.Handshake(); err != nil {
		r.t.Fatalf("TLS handshake: %v", err)
	}
	r.Conn, r.br = tc, bufio.NewReader(tc)
}

// Closed reports whether the server has closed the connection (reads EOF
// or a reset within the timeout).
func (r *Raw) Closed(timeout time.Duration) bool {
	_ = r.Conn.SetReadDeadline(time.Now().Add(timeout))
	_, err := r.br.ReadByte()
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return err != nil
}
