package ingress

import (
	"crypto/rand"
	"encoding/base32"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// listener wraps a TCP listener with what go-smtp does not do: connection
// control (ingress.connection_allow and _deny, refused with 554 5.7.1
// before the banner, like IIS's Connection dialog), connection
// limits (total and per client IP, refused with 421 4.7.0 before any
// session starts), per-read and per-write deadlines (a stalled client
// times out; go-smtp bounds each command line and the data rate), the
// error budget of a session, and the session ID used in every log line.
type listener struct {
	net.Listener
	srv *Server
	tls bool // implicit TLS: everything on these connections is encrypted
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := l.srv.track(c, l.tls)
		if tc == nil {
			continue // refused and closed
		}
		return tc, nil
	}
}

// conn is one client connection. Its Read and Write each set a fresh
// deadline: read_timeout for each read, or earlier the deadline go-smtp
// set (a whole command line, the minimum data rate), and write_timeout for
// each write.
type conn struct {
	net.Conn
	srv    *Server
	id     string
	ip     netip.Addr
	start  time.Time
	log    zerolog.Logger
	closed atomic.Bool
	eof    atomic.Bool
	tls    atomic.Bool // the bytes on this conn are TLS records
	inTxn  atomic.Bool // between MAIL and the end of DATA
	// readBy is the read deadline go-smtp set (Unix ns, 0: none).
	readBy atomic.Int64

	// wbuf holds replies until the session next reads (see Write).
	wmu  sync.Mutex
	wbuf []byte

	mu sync.Mutex
	// errors counts commands answered with an error (Server.commandError);
	// at ingress.max_errors the session ends with 421.
	errors int
	// counters for the disconnect log line
	messages int
	authUser string
}

func (s *Server) track(c net.Conn, implicitTLS bool) *conn {
	ip := addrOf(c.RemoteAddr())
	tc := &conn{Conn: c, srv: s, id: newSessionID(), ip: ip, start: time.Now()}
	tc.tls.Store(implicitTLS)
	tc.log = s.log.With().Str("session", tc.id).Str("remote", c.RemoteAddr().String()).Logger()

	if !s.connectionAllowed(ip) {
		// Checked before anything else, the shutdown included: this
		// client is not to be talked to. Under implicit TLS a plaintext
		// reply would garble the handshake: just close.
		s.metrics.connectionDenied()
		if implicitTLS {
			tc.log.Warn().Str("reason", "connection control").Msg("connection refused")
			_ = c.Close()
			return nil
		}
		tc.refuse("554 5.7.1 Access denied: connections from this address are not accepted\r\n", "connection control")
		return nil
	}
	if s.draining.Load() {
		if implicitTLS {
			tc.log.Info().Msg("connection refused: shutting down")
			_ = c.Close()
			return nil
		}
		tc.refuse("421 4.3.2 Service shutting down, try again later\r\n", "shutting down")
		return nil
	}
	s.connMu.Lock()
	total, perIP := s.connCount, s.connPerIP[ip]
	if total >= s.opts.MaxConnections || perIP >= s.opts.MaxConnectionsPerIP {
		s.connMu.Unlock()
		if implicitTLS {
			// A plaintext 421 would garble the TLS handshake: just close.
			s.metrics.rejected("connection_limit")
			tc.log.Warn().Str("reason", "too many connections").Msg("connection refused")
			_ = c.Close()
			return nil
		}
		reason := "too many connections"
		if perIP >= s.opts.MaxConnectionsPerIP {
			reason = "too many connections from this IP"
		}
		s.metrics.rejected("connection_limit")
		tc.refuse("421 4.7.0 Too many connections, try again later\r\n", reason)
		return nil
	}
	s.connCount++
	s.connPerIP[ip]++
	s.conns[tc] = struct{}{}
	s.connMu.Unlock()
	s.metrics.sessionOpened()
	tc.log.Info().Msg("connect")
	return tc
}

func (c *conn) refuse(line, reason string) {
	c.log.Warn().Str("reason", reason).Msg("connection refused")
	_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Conn.Write([]byte(line))
	_ = c.Conn.Close()
}

func (c *conn) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	if c.eof.Load() {
		return 0, io.EOF
	}
	var by time.Time
	if d := c.srv.opts.ReadTimeout; d > 0 {
		by = time.Now().Add(d)
	}
	if ns := c.readBy.Load(); ns != 0 && (by.IsZero() || ns < by.UnixNano()) {
		by = time.Unix(0, ns)
	}
	_ = c.Conn.SetReadDeadline(by)
	return c.Conn.Read(p)
}

// SetReadDeadline records go-smtp's deadline (for a command line, for the
// data rate) for Read to combine with read_timeout. A TLS connection on
// top passes its deadlines down to here.
func (c *conn) SetReadDeadline(t time.Time) error {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	c.readBy.Store(ns)
	return nil
}

// SetDeadline sets the read deadline as SetReadDeadline does, and the write
// deadline (replaced by write_timeout at the next flush).
func (c *conn) SetDeadline(t time.Time) error {
	_ = c.SetReadDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

// Write collects replies and sends them when the session next reads from
// the client (or closes): go-smtp writes every reply line with its own
// write, ten for an EHLO, and a pipelining client waits for all of them
// anyway. SMTP is request and response, so nothing waits on a reply that
// is still buffered: the next thing the session does is read.
func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	c.wbuf = append(c.wbuf, p...)
	big := len(c.wbuf) >= 32<<10
	c.wmu.Unlock()
	if big {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// flush sends the buffered replies.
func (c *conn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.wbuf) == 0 {
		return nil
	}
	if d := c.srv.opts.WriteTimeout; d > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(d))
	}
	_, err := c.Conn.Write(c.wbuf)
	if cap(c.wbuf) > 64<<10 {
		c.wbuf = nil
	} else {
		c.wbuf = c.wbuf[:0]
	}
	return err
}

// endAfterReply ends the session after the reply being prepared: the next
// read from the client reports EOF, so go-smtp writes its reply, finds the
// client gone and closes. (The conn sits under TLS, so it cannot look at
// replies itself.)
func (c *conn) endAfterReply() { c.eof.Store(true) }

// countError records a command answered with an error; it returns the
// count and whether the session has used up its error budget.
func (c *conn) countError() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errors++
	return c.errors, c.errors >= c.srv.opts.MaxErrors
}

func (c *conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	_ = c.flush()
	err := c.Conn.Close()
	s := c.srv
	s.connMu.Lock()
	s.connCount--
	if s.connPerIP[c.ip]--; s.connPerIP[c.ip] <= 0 {
		delete(s.connPerIP, c.ip)
	}
	delete(s.conns, c)
	s.connMu.Unlock()
	s.metrics.sessionClosed()
	c.mu.Lock()
	c.log.Info().Int("messages", c.messages).Int("rejects", c.errors).
		Str("user", c.authUser).Dur("duration", time.Since(c.start)).Msg("disconnect")
	c.mu.Unlock()
	return err
}

func (c *conn) setInTxn(v bool) { c.inTxn.Store(v) }

// shutdownIdle ends a session that is between transactions because the
// ingress is stopping. On a plaintext connection the client first gets
// 421 4.3.2; under TLS the conn cannot write a reply of its own.
func (c *conn) shutdownIdle() {
	if !c.tls.Load() {
		_ = c.flush()
		c.wmu.Lock()
		_ = c.Conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Conn.Write([]byte("421 4.3.2 Service shutting down, try again later\r\n"))
		c.wmu.Unlock()
	}
	c.log.Info().Msg("closing idle session: shutting down")
	_ = c.Close()
}

func (c *conn) countMessage() {
	c.mu.Lock()
	c.messages++
	c.mu.Unlock()
}

func (c *conn) setAuthUser(u string) {
	c.mu.Lock()
	c.authUser = u
	c.mu.Unlock()
}

// connOf finds our conn under whatever go-smtp holds (a *tls.Conn after
// STARTTLS or on an implicit-TLS port).
func connOf(nc net.Conn) *conn {
	for nc != nil {
		switch v := nc.(type) {
		case *conn:
			return v
		case interface{ NetConn() net.Conn }:
			nc = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

var sessionEnc = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

func newSessionID() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return sessionEnc.EncodeToString(b[:])
}
