package ingress

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/mailhdr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Queue is what the ingress needs from the broker; *broker.Client has it.
type Queue interface {
	// Connected reports whether the broker connection is up; MAIL is
	// refused with 451 while it is not.
	Connected() bool
	// Storage says why the broker cannot store mail now (wrapping
	// broker.ErrNoStorage), nil when it can; MAIL is refused with
	// 452 4.3.1 while it cannot.
	Storage() error
	// InlineLimit is the largest body that may travel inside the job.
	InlineLimit() int
	// PutBody stores a body too large to travel inline; a failed put
	// leaves nothing behind.
	PutBody(ctx context.Context, name string, r io.Reader) (int64, error)
	// Enqueue stores a job (its body inline in parts, or the object put
	// before); a failed Enqueue leaves nothing that could be delivered,
	// as far as the broker can tell.
	Enqueue(ctx context.Context, j *contracts.Job, inline ...[]byte) error
}

// Options configure the ingress (see config.Ingress for their meaning).
type Options struct {
	Hostname          string
	Listen            []string
	TLSListen         []string
	TLSConfig         *tls.Config // nil: no STARTTLS and no implicit TLS
	RelayNetworks     []netip.Prefix
	Users             *Users // nil: no AUTH
	MaxMessageBytes   int64
	MaxRecipients     int
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	CommandDeadline   time.Duration
	MinDataRate       int
	AllowInsecureAuth bool
	// InsecureAuthNetworks are the clients that may AUTH without TLS
	// when AllowInsecureAuth is set (nil: none).
	InsecureAuthNetworks []netip.Prefix
	RequireTLS           bool
	MaxConnections       int
	MaxConnectionsPerIP  int
	MaxErrors            int
	MaxReceivedHeaders   int
	AddMissingHeaders    bool
	NormalizeBareLF      bool
	AuthFailureLimit     int
	AuthFailureWindow    time.Duration
	AuthLockout          time.Duration
	ShutdownGrace        time.Duration
	// Lockouts keeps the AUTH failures and lockouts that every ingress of
	// a deployment shares (nil: this process counts alone, in memory).
	Lockouts Lockouts
	// ConnectionAllow and ConnectionDeny decide who may connect at all,
	// before the banner (IIS's "Connection" dialog), separately from who
	// may relay: a client in ConnectionDeny, or outside a non-empty
	// ConnectionAllow, gets 554 5.7.1 and the connection is closed.
	ConnectionAllow, ConnectionDeny []netip.Prefix
	// Registerer receives the ingress metrics (nil: not exported).
	Registerer prometheus.Registerer
}

// Lockouts is where AUTH failures are counted and lockouts kept, shared by
// every ingress of a deployment; *broker.AuthLocks is one.
type Lockouts interface {
	// Locked reports whether key is locked out at now, and until when,
	// without a round trip.
	Locked(key string, now time.Time) (until time.Time, locked bool)
	// Fail records a failed AUTH of key at now: the failure that makes
	// limit within window locks key out for lockout, and only that call
	// reports locked.
	Fail(ctx context.Context, key string, limit int, window, lockout time.Duration, now time.Time) (until time.Time, locked bool, err error)
}

// Server is the SMTP ingress. Create it with New, bind with Listen, run
// with Serve.
type Server struct {
	opts    Options
	q       Queue
	log     zerolog.Logger
	metrics *metrics
	guard   *authGuard
	smtp    *smtp.Server

	listeners    []net.Listener
	tlsListeners []net.Listener

	draining  atomic.Bool
	connMu    sync.Mutex
	connCount int
	connPerIP map[netip.Addr]int
	conns     map[*conn]struct{}
}

// New builds the server.
func New(opts Options, q Queue, log zerolog.Logger) *Server {
	opts.fill()
	s := &Server{
		opts:      opts,
		q:         q,
		log:       log.With().Str("component", "ingress").Logger(),
		metrics:   newMetrics(opts.Registerer),
		guard:     newAuthGuard(opts),
		connPerIP: map[netip.Addr]int{},
		conns:     map[*conn]struct{}{},
	}
	srv := smtp.NewServer(s)
	srv.Domain = opts.Hostname
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = opts.MaxRecipients
	srv.MaxLineLength = 2000
	// go-smtp sets a deadline for each whole command line and, inside
	// DATA and BDAT, keeps the one of the minimum data rate (see
	// third_party/README.md); our conn adds read_timeout as a limit on
	// each read, and write_timeout on each write (see conn.Read).
	srv.ReadTimeout, srv.MinDataRate = opts.CommandDeadline, opts.MinDataRate
	srv.WriteTimeout = 0
	// Every error reply counts against max_errors (commandError).
	srv.CommandError = s.commandError
	srv.TLSConfig = opts.TLSConfig
	// AUTH over plaintext is refused by the session with 538 5.7.11, which
	// go-smtp's own check (523) would pre-empt.
	srv.AllowInsecureAuth = true
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.ErrorLog = zerologPrinter{s.log}
	s.smtp = srv
	return s
}

// Listen binds every configured address. After it returns, Addrs and
// TLSAddrs report the bound addresses (useful with port 0).
func (s *Server) Listen() error {
	for _, a := range s.opts.Listen {
		l, err := net.Listen("tcp", a)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("ingress.listen %s: %w", a, err)
		}
		s.listeners = append(s.listeners, l)
	}
	for _, a := range s.opts.TLSListen {
		if s.opts.TLSConfig == nil {
			s.closeListeners()
			return errors.New("ingress.tls_listen needs a certificate")
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("ingress.tls_listen %s: %w", a, err)
		}
		s.tlsListeners = append(s.tlsListeners, l)
	}
	return nil
}

func (s *Server) closeListeners() {
	for _, l := range append(s.listeners, s.tlsListeners...) {
		_ = l.Close()
	}
}

// Addrs are the bound plain/STARTTLS addresses.
func (s *Server) Addrs() []net.Addr {
	out := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.Addr()
	}
	return out
}

// TLSAddrs are the bound implicit-TLS addresses.
func (s *Server) TLSAddrs() []net.Addr {
	out := make([]net.Addr, len(s.tlsListeners))
	for i, l := range s.tlsListeners {
		out[i] = l.Addr()
	}
	return out
}

// Serve accepts sessions until ctx is cancelled, then shuts down
// gracefully: new connections get 421 4.3.2, sessions between transactions
// are closed with 421, transactions in flight may finish within
// ShutdownGrace. Listen must have been called.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, len(s.listeners)+len(s.tlsListeners))
	for _, l := range s.listeners {
		go func(l net.Listener) { errc <- s.smtp.Serve(&listener{Listener: l, srv: s}) }(l)
	}
	for _, l := range s.tlsListeners {
		go func(l net.Listener) {
			errc <- s.smtp.Serve(tls.NewListener(&listener{Listener: l, srv: s, tls: true}, s.opts.TLSConfig))
		}(l)
	}
	for _, a := range s.Addrs() {
		s.log.Info().Str("addr", a.String()).Msg("listening (SMTP, STARTTLS when a certificate is set)")
	}
	for _, a := range s.TLSAddrs() {
		s.log.Info().Str("addr", a.String()).Msg("listening (implicit TLS)")
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil {
			s.log.Error().Err(err).Msg("listener failed")
			s.shutdown()
			return err
		}
	}
	s.shutdown()
	return nil
}

func (s *Server) shutdown() {
	s.draining.Store(true)
	s.log.Info().Dur("grace", s.opts.ShutdownGrace).Msg("ingress draining: refusing new sessions, finishing transactions in flight")
	deadline := time.Now().Add(s.opts.ShutdownGrace)
	for {
		s.closeIdle()
		if s.activeConns() == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = s.smtp.Close()
	s.log.Info().Msg("ingress stopped")
}

// closeIdle ends every session that is not inside a transaction.
func (s *Server) closeIdle() {
	s.connMu.Lock()
	var idle []*conn
	for c := range s.conns {
		if !c.inTxn.Load() {
			idle = append(idle, c)
		}
	}
	s.connMu.Unlock()
	for _, c := range idle {
		c.shutdownIdle()
	}
}

func (s *Server) activeConns() int {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return s.connCount
}

func (s *Server) relayAllowed(ip netip.Addr) bool { return inNetworks(s.opts.RelayNetworks, ip) }

// connectionAllowed reports whether ip may connect at all: not in
// ingress.connection_deny and, when ingress.connection_allow lists
// networks, in one of them. The deny list wins.
func (s *Server) connectionAllowed(ip netip.Addr) bool {
	if inNetworks(s.opts.ConnectionDeny, ip) {
		return false
	}
	return len(s.opts.ConnectionAllow) == 0 || inNetworks(s.opts.ConnectionAllow, ip)
}

// insecureAuthAllowed reports whether ip may AUTH without TLS.
func (s *Server) insecureAuthAllowed(ip netip.Addr) bool {
	return s.opts.AllowInsecureAuth && inNetworks(s.opts.InsecureAuthNetworks, ip)
}

func inNetworks(nets []netip.Prefix, ip netip.Addr) bool {
	for _, p := range nets {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// commandError is go-smtp's Server.CommandError, called after every
// command answered with an error: go-smtp's own (unknown commands,
// syntax, commands out of sequence) and the session's refusals alike. It
// counts the reply in the metrics and against the session's error budget,
// ingress.max_errors (like Postfix's smtpd_hard_error_limit), except a 421
// (the session ends anyway), 452 4.5.3 for too many recipients (RFC 5321
// 4.5.3.1.10: the client sends the rest in another transaction) and the
// relay's own temporary failures, 4.3.x (the broker unavailable or out of
// storage: nothing the client did wrong). The
// error that uses up the budget is answered, then 421 4.7.0 ends the
// session.
func (s *Server) commandError(c *smtp.Conn, code int, enh smtp.EnhancedCode) *smtp.SMTPError {
	s.metrics.rejected(rejectReason(&smtp.SMTPError{Code: code, EnhancedCode: enh}))
	cn := connOf(c.Conn())
	if cn == nil || code == 421 || code == 452 && enh == (smtp.EnhancedCode{4, 5, 3}) || code/100 == 4 && enh[0] == 4 && enh[1] == 3 {
		return nil
	}
	n, over := cn.countError()
	if !over {
		return nil
	}
	r := reply(ErrTooManyErrors)
	cn.log.Warn().Int("errors", n).Int("smtp_code", r.Code).Msg("too many errors, disconnecting")
	s.metrics.rejected(rejectReason(r))
	return r
}

// accept reads a message from DATA/BDAT and publishes it. It returns the
// job and the stored size, or the error that decides the reply.
func (s *Server) accept(ss *session, r io.Reader) (*contracts.Job, int64, error) {
	now := time.Now()
	rcptAddrs := make([]string, len(ss.rcpts))
	for i, rc := range ss.rcpts {
		rcptAddrs[i] = rc.Addr
	}
	ip := ss.conn.ip.String()
	prefix := mailhdr.Received(ss.helo, ip, s.opts.Hostname, ss.proto(), ss.qid, ss.tlsDesc, rcptAddrs, now)

	// go-smtp (third_party/go-smtp) enforces max_message_bytes exactly:
	// the reader fails with smtp.ErrDataTooLarge past it (DATA), or the
	// chunk is refused before it is read (BDAT).
	body := newLineEndings(r, s.opts.NormalizeBareLF)
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 1<<20 {
			bufPool.Put(buf)
		}
	}()
	// Room for the headers we may add, so the inline decision is final.
	limit := int64(s.q.InlineLimit()) - int64(len(prefix)) - 256
	if _, err := buf.ReadFrom(io.LimitReader(body, limit+1)); err != nil {
		return nil, 0, err
	}
	facts := mailhdr.Scan(buf.Bytes())
	if facts.Received > s.opts.MaxReceivedHeaders {
		return nil, 0, fmt.Errorf("%w: %d Received headers", ErrMailLoop, facts.Received)
	}
	if s.opts.AddMissingHeaders {
		prefix = mailhdr.AppendMissing(prefix, facts, ss.qid, s.opts.Hostname, now)
	}

	job := &contracts.Job{
		QueueID:    ss.qid,
		ReceivedAt: now,
		FirstSeen:  now,
		Client: contracts.Client{
			Addr: ss.conn.RemoteAddr().String(), HELO: ss.helo, AuthUser: ss.authUser,
			TLS: ss.tlsDesc, Proto: ss.proto(),
		},
		From:    ss.from,
		Params:  ss.params,
		Rcpts:   append([]contracts.Recipient(nil), ss.rcpts...),
		Attempt: 1,
	}
	ctx := context.Background()
	if int64(buf.Len()) <= limit {
		// The whole message is in memory: it travels inside the job,
		// framed straight from the header prefix and the read buffer.
		job.Body.MaxLine = body.lines.Max()
		if err := s.q.Enqueue(ctx, job, prefix, buf.Bytes()); err != nil {
			return nil, 0, err
		}
		return job, int64(len(prefix) + buf.Len()), nil
	}

	// Too large to travel inline: stream into the body bucket while
	// reading the rest from the client.
	size, err := s.q.PutBody(ctx, ss.qid, io.MultiReader(bytes.NewReader(prefix), bytes.NewReader(buf.Bytes()), body))
	if body.err != nil && body.err != io.EOF {
		// The client side failed (size limit, bare LF, timeout): that is
		// the reason, not the aborted upload.
		return nil, 0, body.err
	}
	if err != nil {
		return nil, 0, err
	}
	job.Body = contracts.Body{Object: ss.qid, Size: size, MaxLine: body.lines.Max()}
	if err := s.q.Enqueue(ctx, job); err != nil {
		return nil, 0, err
	}
	return job, size, nil
}

// zerologPrinter adapts go-smtp's ErrorLog to zerolog.
type zerologPrinter struct{ l zerolog.Logger }

func (z zerologPrinter) Printf(format string, v ...any) { z.l.Warn().Msgf(format, v...) }
func (z zerologPrinter) Println(v ...any)               { z.l.Warn().Msg(fmt.Sprint(v...)) }
