package testenv

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/ingress"
)

// Message is one message a Sink accepted.
type Message struct {
	From     string
	Rcpts    []string
	Data     []byte
	Helo     string
	TLS      bool
	User     string // AUTH user, if the client authenticated
	Conn     int64  // connection number at the sink
	MailOpts smtp.MailOptions
	RcptOpts []smtp.RcptOptions
	At       time.Time
}

var queueIDRe = regexp.MustCompile(`\(jetrelay\) with [A-Z]+ id ([0-9A-Z]{16})`)

// QueueID is the jetrelay queue ID from the topmost Received header
// jetrelay added ("" if none).
func (m *Message) QueueID() string {
	if sm := queueIDRe.FindSubmatch(m.Data); sm != nil {
		return string(sm[1])
	}
	return ""
}

// AfterReceived returns the message without its first header field (the
// Received header the relay prepended).
func (m *Message) AfterReceived() []byte {
	d := m.Data
	i := 0
	for {
		j := bytes.Index(d[i:], []byte("\r\n"))
		if j < 0 {
			return nil
		}
		i += j + 2
		if i >= len(d) || (d[i] != ' ' && d[i] != '\t') {
			return d[i:]
		}
	}
}

// SinkOptions script a Sink.
type SinkOptions struct {
	// TLS enables STARTTLS with this configuration.
	TLS *tls.Config
	// ImplicitTLS serves TLS from the first byte (needs TLS).
	ImplicitTLS bool
	// Users enables AUTH (PLAIN and/or LOGIN, see AuthMechs) with these
	// user → password pairs.
	Users     map[string]string
	AuthMechs []string // default PLAIN and LOGIN (XOAUTH2 with Bearer)
	// Bearer enables AUTH XOAUTH2 (and OAUTHBEARER when AuthMechs lists
	// it): it says whether the token is valid for the user. The SASL
	// string must be exactly what the mechanism prescribes; a refused
	// token gets a 334 error challenge, then 535 5.7.3, as Microsoft 365
	// answers.
	Bearer func(user, token string) bool
	// AllowInsecureAuth offers AUTH without TLS.
	AllowInsecureAuth bool
	// Addr to listen on (default 127.0.0.1:0).
	Addr string
	// MaxMessageBytes advertised as SIZE (0: unlimited).
	MaxMessageBytes int64
	// IdleTimeout closes connections idle this long (0: never).
	IdleTimeout time.Duration
	// MaxLineLength refuses, with 500 5.5.0 at the final dot, a message
	// with a line longer than this many octets on the wire (dot-stuffing
	// counted), as strict real next hops answer "500 Line too long"
	// (0: any length).
	MaxLineLength int
}

// Sink is a capturing destination SMTP server whose replies a test can
// script per command. It is safe for concurrent use.
type Sink struct {
	t    testing.TB
	opts SinkOptions
	Addr string

	mu       sync.Mutex
	srv      *smtp.Server
	l        net.Listener
	msgs     []*Message
	changed  chan struct{}
	greeting *smtp.SMTPError
	mail     func(from string) *smtp.SMTPError
	rcpt     func(rcpt string) *smtp.SMTPError
	data     func(m *Message) *smtp.SMTPError

	conns atomic.Int64
	live  atomic.Int64
	peak  atomic.Int64
}

// NewSink starts a sink; it stops when the test ends.
func NewSink(t testing.TB, o SinkOptions) *Sink {
	t.Helper()
	s := &Sink{t: t, opts: o, changed: make(chan struct{})}
	addr := o.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if err := s.listen(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func (s *Sink) listen(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = "sink.test"
	// Like Postfix's smtpd, the sink takes lines of message content of
	// any length (go-smtp's limit would apply to DATA too).
	srv.MaxLineLength = 0
	srv.AllowInsecureAuth = s.opts.AllowInsecureAuth
	srv.MaxMessageBytes = s.opts.MaxMessageBytes
	srv.ReadTimeout = s.opts.IdleTimeout
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.ErrorLog = nopLogger{}
	if s.opts.TLS != nil && !s.opts.ImplicitTLS {
		srv.TLSConfig = s.opts.TLS
	}
	var ln net.Listener = &sinkListener{Listener: l, s: s}
	if s.opts.ImplicitTLS {
		ln = tls.NewListener(ln, s.opts.TLS)
	}
	s.mu.Lock()
	s.srv, s.l, s.Addr = srv, l, l.Addr().String()
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// Close stops the sink (connections are cut).
func (s *Sink) Close() {
	s.mu.Lock()
	srv, l := s.srv, s.l
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		// Close the listener ourselves too: go-smtp only knows it once its
		// Serve goroutine has started.
		_ = l.Close()
		_ = srv.Close()
	}
}

// Restart listens again on the same address after Close.
func (s *Sink) Restart() {
	s.t.Helper()
	var err error
	for i := 0; i < 100; i++ {
		if err = s.listen(s.Addr); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("sink restart on %s: %v", s.Addr, err)
}

// Port is the listening port.
func (s *Sink) Port() int { return s.l.Addr().(*net.TCPAddr).Port }

// Greet makes new connections get this reply instead of 220 (nil: 220).
func (s *Sink) Greet(r *smtp.SMTPError) { s.mu.Lock(); s.greeting = r; s.mu.Unlock() }

// OnMail scripts the reply to MAIL FROM (nil reply: accept).
func (s *Sink) OnMail(f func(from string) *smtp.SMTPError) { s.mu.Lock(); s.mail = f; s.mu.Unlock() }

// OnRcpt scripts the reply to each RCPT TO (nil reply: accept).
func (s *Sink) OnRcpt(f func(rcpt string) *smtp.SMTPError) { s.mu.Lock(); s.rcpt = f; s.mu.Unlock() }

// OnData scripts the reply after the final dot (nil reply: accept).
func (s *Sink) OnData(f func(m *Message) *smtp.SMTPError) { s.mu.Lock(); s.data = f; s.mu.Unlock() }

// Messages returns a copy of what was accepted so far.
func (s *Sink) Messages() []*Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Message(nil), s.msgs...)
}

// Connections is the number of connections accepted so far.
func (s *Sink) Connections() int64 { return s.conns.Load() }

// LiveConnections is the number of connections open now.
func (s *Sink) LiveConnections() int64 { return s.live.Load() }

// PeakConnections is the largest number of simultaneous connections.
func (s *Sink) PeakConnections() int64 { return s.peak.Load() }

// Recipients counts accepted recipients (over all messages).
func (s *Sink) Recipients() int {
	n := 0
	for _, m := range s.Messages() {
		n += len(m.Rcpts)
	}
	return n
}

// WaitFor waits until at least n messages were accepted and returns them.
func (s *Sink) WaitFor(t testing.TB, n int, timeout time.Duration) []*Message {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		got, ch := len(s.msgs), s.changed
		s.mu.Unlock()
		if got >= n {
			return s.Messages()
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("sink %s: %d message(s) after %s, want %d", s.Addr, got, timeout, n)
		}
	}
}

// WaitRecipients waits until n recipients in total were accepted.
func (s *Sink) WaitRecipients(t testing.TB, n int, timeout time.Duration) []*Message {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if s.Recipients() >= n {
			return s.Messages()
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("sink %s: %d recipient(s) after %s, want %d", s.Addr, s.Recipients(), timeout, n)
		}
	}
}

// ByQueueID groups accepted messages by the jetrelay queue ID.
func (s *Sink) ByQueueID() map[string][]*Message {
	out := map[string][]*Message{}
	for _, m := range s.Messages() {
		out[m.QueueID()] = append(out[m.QueueID()], m)
	}
	return out
}

func (s *Sink) store(m *Message) {
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

type sinkListener struct {
	net.Listener
	s *Sink
}

func (l *sinkListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		n := l.s.conns.Add(1)
		live := l.s.live.Add(1)
		for {
			p := l.s.peak.Load()
			if live <= p || l.s.peak.CompareAndSwap(p, live) {
				break
			}
		}
		l.s.mu.Lock()
		g := l.s.greeting
		l.s.mu.Unlock()
		if g != nil {
			_, _ = io.WriteString(c, smtpLine(g)+"\r\n")
			c.Close()
			l.s.live.Add(-1)
			continue
		}
		return &sinkConn{Conn: c, s: l.s, n: n}, nil
	}
}

type sinkConn struct {
	net.Conn
	s      *Sink
	n      int64
	closed atomic.Bool
}

func (c *sinkConn) Close() error {
	c.ended()
	return c.Conn.Close()
}

// Write ends the connection's count when the sink says goodbye to QUIT:
// the client reads the 221 after this, so its next connection is never
// counted together with this one (go-smtp closes a moment later).
func (c *sinkConn) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("221 ")) {
		c.ended()
	}
	return c.Conn.Write(p)
}

func (c *sinkConn) ended() {
	if c.closed.CompareAndSwap(false, true) {
		c.s.live.Add(-1)
	}
}

func smtpLine(e *smtp.SMTPError) string {
	return fmt.Sprintf("%d %d.%d.%d %s", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}

type sinkSession struct {
	s    *Sink
	c    *smtp.Conn
	conn int64
	user string
	m    *Message
}

func (s *Sink) newSession(c *smtp.Conn) (smtp.Session, error) {
	var n int64
	nc := c.Conn()
	for nc != nil {
		if sc, ok := nc.(*sinkConn); ok {
			n = sc.n
			break
		}
		if u, ok := nc.(interface{ NetConn() net.Conn }); ok {
			nc = u.NetConn()
			continue
		}
		break
	}
	return &sinkSession{s: s, c: c, conn: n}, nil
}

func (ss *sinkSession) AuthMechanisms() []string {
	if ss.s.opts.Users == nil && ss.s.opts.Bearer == nil {
		return nil
	}
	if len(ss.s.opts.AuthMechs) > 0 {
		return ss.s.opts.AuthMechs
	}
	if ss.s.opts.Bearer != nil {
		return []string{"XOAUTH2"}
	}
	return []string{sasl.Plain, sasl.Login}
}

func (ss *sinkSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if want, ok := ss.s.opts.Users[user]; ok && want == pass {
			ss.user = user
			return nil
		}
		return smtp.ErrAuthFailed
	}
	switch m := strings.ToUpper(mech); m {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return ingress.NewLoginServer(check), nil
	case "XOAUTH2", "OAUTHBEARER":
		if ss.s.opts.Bearer != nil {
			return &bearerServer{mech: m, check: ss.s.opts.Bearer, ok: func(user string) { ss.user = user }}, nil
		}
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// bearerServer is the server side of XOAUTH2 and OAUTHBEARER, strict
// about the exact SASL string.
type bearerServer struct {
	mech  string
	check func(user, token string) bool
	ok    func(user string)
	state int
}

var xoauth2RE = regexp.MustCompile("^user=([^\x01]+)\x01auth=Bearer ([^\x01 ]+)\x01\x01$")
var oauthBearerRE = regexp.MustCompile("^n,a=([^,]*),\x01host=[^\x01]+\x01port=[0-9]+\x01auth=Bearer ([^\x01 ]+)\x01\x01$")

func (b *bearerServer) Next(resp []byte) ([]byte, bool, error) {
	switch {
	case b.state == 0 && resp == nil:
		b.state = 1
		return []byte{}, false, nil // 334: the client sends the token next
	case b.state <= 1:
		re := xoauth2RE
		if b.mech == "OAUTHBEARER" {
			re = oauthBearerRE
		}
		m := re.FindSubmatch(resp)
		if m == nil {
			return nil, false, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "malformed " + b.mech + " response"}
		}
		user := strings.NewReplacer("=2C", ",", "=3D", "=").Replace(string(m[1]))
		if b.check(user, string(m[2])) {
			b.ok(user)
			return nil, true, nil
		}
		b.state = 2
		return []byte(`{"status":"401","schemes":"bearer","scope":"https://outlook.office.com/SMTP.Send"}`), false, nil
	}
	// The client acknowledged the error challenge.
	return nil, false, &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 3}, Message: "Authentication unsuccessful"}
}

func (ss *sinkSession) Mail(from string, opts *smtp.MailOptions) error {
	ss.s.mu.Lock()
	f := ss.s.mail
	ss.s.mu.Unlock()
	if f != nil {
		if r := f(from); r != nil {
			return r
		}
	}
	_, isTLS := ss.c.TLSConnectionState()
	ss.m = &Message{From: from, Helo: ss.c.Hostname(), TLS: isTLS, User: ss.user, Conn: ss.conn}
	if opts != nil {
		ss.m.MailOpts = *opts
	}
	return nil
}

func (ss *sinkSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	ss.s.mu.Lock()
	f := ss.s.rcpt
	ss.s.mu.Unlock()
	if f != nil {
		if r := f(to); r != nil {
			return r
		}
	}
	ss.m.Rcpts = append(ss.m.Rcpts, to)
	if opts != nil {
		ss.m.RcptOpts = append(ss.m.RcptOpts, *opts)
	} else {
		ss.m.RcptOpts = append(ss.m.RcptOpts, smtp.RcptOptions{})
	}
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: err.Error()}
	}
	if n := ss.s.opts.MaxLineLength; n > 0 {
		if l := longestWireLine(data); l > n {
			return &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 0}, Message: fmt.Sprintf("Line too long (%d octets)", l)}
		}
	}
	m := ss.m
	m.Data = data
	m.At = time.Now()
	ss.s.mu.Lock()
	f := ss.s.data
	ss.s.mu.Unlock()
	if f != nil {
		if r := f(m); r != nil {
			return r
		}
	}
	ss.s.store(m)
	return nil
}

func (ss *sinkSession) Reset()        { ss.m = nil }
func (ss *sinkSession) Logout() error { return nil }

// longestWireLine is the length of data's longest line as it was on the
// wire: without its CRLF, with the dot that stuffing added to a line
// starting with '.'.
func longestWireLine(data []byte) int {
	longest := 0
	for len(data) > 0 {
		line := data
		if i := bytes.Index(data, []byte("\r\n")); i >= 0 {
			line, data = data[:i], data[i+2:]
		} else {
			data = nil
		}
		n := len(line)
		if n > 0 && line[0] == '.' {
			n++
		}
		longest = max(longest, n)
	}
	return longest
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}
