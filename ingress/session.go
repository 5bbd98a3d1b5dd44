package ingress

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/rs/zerolog"
)

// session is one SMTP session from EHLO/HELO on (go-smtp starts a new one
// after STARTTLS, as RFC 3207 requires).
type session struct {
	srv      *Server
	c        *smtp.Conn
	conn     *conn
	log      zerolog.Logger
	helo     string
	tlsDesc  string // "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256"; "" without TLS
	tlsOn    bool
	relayNet bool // the client address is in relay_networks
	authUser string
	user     *User

	// the transaction in progress
	qid    string
	from   string
	params contracts.MailParams
	rcpts  []contracts.Recipient
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

// NewSession implements smtp.Backend.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	cn := connOf(c.Conn())
	if cn == nil {
		return nil, errors.New("ingress: connection not from an ingress listener")
	}
	ss := &session{srv: s, c: c, conn: cn, helo: c.Hostname(), relayNet: s.relayAllowed(cn.ip)}
	if st, ok := c.TLSConnectionState(); ok {
		ss.tlsOn = true
		ss.tlsDesc = tls.VersionName(st.Version) + " with cipher " + tls.CipherSuiteName(st.CipherSuite)
		s.metrics.tls.WithLabelValues("in", tls.VersionName(st.Version)).Inc()
	}
	ss.log = cn.log.With().Logger()
	ss.log.Info().Str("helo", ss.helo).Bool("tls", ss.tlsOn).Bool("relay_network", ss.relayNet).Msg("helo")
	if ss.tlsOn {
		ss.log.Info().Str("tls", ss.tlsDesc).Msg("tls")
	}
	return ss, nil
}

// fail logs a refused command and returns the reply for it; a 421 ends
// the session. (go-smtp hands every error reply to Server.commandError,
// which counts it in the metrics and against the session's error budget.)
func (s *session) fail(stage string, err error) error {
	r := reply(err)
	ev := s.log.Warn()
	if s.qid != "" {
		ev = ev.Str("msg_id", s.qid)
	}
	ev.Str("stage", stage).Int("smtp_code", r.Code).Str("reason", err.Error()).Msg("reject")
	if r.Code == 421 {
		s.conn.endAfterReply()
	}
	return asError(r)
}

func rejectReason(r *smtp.SMTPError) string {
	return fmt.Sprintf("%d_%d.%d.%d", r.Code, r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2])
}

// Mail implements smtp.Session.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.srv.draining.Load() {
		return s.fail("mail", ErrShuttingDown)
	}
	if s.srv.opts.RequireTLS && !s.tlsOn && !s.relayNet {
		return s.fail("mail", ErrTLSRequired)
	}
	if opts == nil {
		opts = &smtp.MailOptions{}
	}
	if from != "" {
		norm, err := checkAddress(from, opts.UTF8)
		if err != nil {
			if !errors.Is(err, ErrNeedSMTPUTF8) {
				err = fmt.Errorf("%w: %v", ErrBadSender, err)
			}
			return s.fail("mail", err)
		}
		from = norm
	}
	if s.user != nil && !s.user.MaySend(from) {
		return s.fail("mail", fmt.Errorf("%w: %s as %s", ErrSenderNotAllowed, from, s.authUser))
	}
	if !s.srv.q.Connected() {
		return s.fail("mail", fmt.Errorf("%w: not connected", broker.ErrUnavailable))
	}
	if err := s.srv.q.Storage(); err != nil {
		return s.fail("mail", err)
	}
	s.reset()
	s.qid = contracts.NewQueueID(time.Now())
	s.from = from
	s.params = contracts.MailParams{
		Body:       string(opts.Body),
		SMTPUTF8:   opts.UTF8,
		RequireTLS: opts.RequireTLS,
		Ret:        string(opts.Return),
		EnvID:      opts.EnvelopeID,
		Size:       opts.Size,
	}
	s.conn.setInTxn(true)
	s.log.Info().Str("msg_id", s.qid).Str("from", from).Int64("size", opts.Size).Msg("mail")
	return nil
}

// Rcpt implements smtp.Session.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if !s.relayNet && s.authUser == "" {
		if s.srv.opts.Users != nil && len(s.AuthMechanisms()) == 0 {
			// The client could relay after AUTH, but was not offered
			// it (no TLS): say so, as Database Mail with basic
			// authentication on port 25 only shows this reply.
			return s.fail("rcpt", fmt.Errorf("%w: <%s> from %s, AUTH not offered without TLS", ErrRelayDeniedAuthTLS, to, s.conn.ip))
		}
		return s.fail("rcpt", fmt.Errorf("%w: <%s> from %s", ErrRelayDenied, to, s.conn.ip))
	}
	norm, err := checkAddress(to, s.params.SMTPUTF8)
	if err != nil {
		if !errors.Is(err, ErrNeedSMTPUTF8) {
			err = fmt.Errorf("%w: %v", ErrBadRecipient, err)
		}
		return s.fail("rcpt", err)
	}
	r := contracts.Recipient{Addr: norm}
	if opts != nil {
		for _, n := range opts.Notify {
			r.Notify = append(r.Notify, string(n))
		}
		if opts.OriginalRecipient != "" {
			r.ORcpt = strings.ToLower(string(opts.OriginalRecipientType)) + ";" + opts.OriginalRecipient
		}
	}
	s.rcpts = append(s.rcpts, r)
	s.log.Info().Str("msg_id", s.qid).Str("rcpt", norm).Msg("rcpt")
	return nil
}

// Data implements smtp.Session: read the message, publish it, and answer
// 250 only once the broker has acknowledged it.
func (s *session) Data(r io.Reader) error {
	defer s.conn.setInTxn(false)
	if len(s.rcpts) == 0 {
		return s.fail("data", ErrNoValidRecipients)
	}
	qid := s.qid
	start := time.Now()
	job, size, err := s.srv.accept(s, r)
	if errors.Is(err, smtp.ErrDataReset) {
		// go-smtp ended the BDAT transfer itself: RSET, a chunk refused
		// as too large (it answered 552), or the connection closing. It
		// sends no reply for this Data, and the session goes on if the
		// connection does. go-smtp resets the session at the same time
		// (this runs on the BDAT goroutine), so only locals are used.
		s.log.Info().Str("msg_id", qid).Msg("message transfer aborted")
		return asError(replyClientGone)
	}
	if err != nil {
		return s.fail("data", err)
	}
	s.srv.metrics.queued(size, time.Since(start))
	s.conn.countMessage()
	s.log.Info().Str("msg_id", qid).Int("rcpts", len(job.Rcpts)).Int64("size", size).
		Bool("inline", job.Body.Inline()).Dur("duration", time.Since(start)).Msg("queued")
	return queuedReply(qid)
}

// Reset implements smtp.Session.
func (s *session) Reset() {
	s.reset()
	s.conn.setInTxn(false)
}

func (s *session) reset() {
	s.qid, s.from, s.params, s.rcpts = "", "", contracts.MailParams{}, nil
}

// Logout implements smtp.Session. go-smtp also calls it on STARTTLS,
// before starting a fresh session; the disconnect is logged by the conn.
func (s *session) Logout() error { return nil }

// AuthMechanisms implements smtp.AuthSession: offered only when a users
// file is configured, and only over TLS unless allow_insecure_auth and the
// client is in insecure_auth_networks (loopback by default).
func (s *session) AuthMechanisms() []string {
	if s.srv.opts.Users == nil || (!s.tlsOn && !s.srv.insecureAuthAllowed(s.conn.ip)) {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth implements smtp.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.srv.opts.Users == nil {
		return nil, smtp.ErrAuthUnsupported
	}
	if !s.tlsOn && !s.srv.insecureAuthAllowed(s.conn.ip) {
		if !s.srv.opts.AllowInsecureAuth {
			return nil, s.fail("auth", ErrAuthPlaintext)
		}
		return nil, s.fail("auth", fmt.Errorf("%w: %s", ErrAuthPlaintextNetwork, s.conn.ip))
	}
	if until, ok := s.srv.guard.locked(LockoutKeyAddr(s.conn.ip)); ok {
		return nil, s.fail("auth", fmt.Errorf("%w: %s until %s", ErrAuthLockedOut, s.conn.ip, until.Format(time.RFC3339)))
	}
	check := func(identity, user, pass string) error {
		return s.authenticate(strings.ToUpper(mech), identity, user, pass)
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error { return check(identity, user, pass) }), nil
	case sasl.Login:
		return NewLoginServer(func(user, pass string) error { return check("", user, pass) }), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) authenticate(mech, identity, user, pass string) error {
	if identity != "" && identity != user {
		s.srv.metrics.auth.WithLabelValues(mech, "failure").Inc()
		return s.fail("auth", fmt.Errorf("%w: user %q may not act as %q", ErrAuthFailed, user, identity))
	}
	if until, ok := s.srv.guard.locked(LockoutKeyUser(user)); ok {
		s.srv.metrics.auth.WithLabelValues(mech, "failure").Inc()
		return s.fail("auth", fmt.Errorf("%w: user %q until %s", ErrUserLockedOut, user, until.Format(time.RFC3339)))
	}
	u, ok := s.srv.opts.Users.Check(user, pass)
	if !ok {
		s.srv.metrics.auth.WithLabelValues(mech, "failure").Inc()
		addrLocked := s.lockoutFailure(LockoutKeyAddr(s.conn.ip), "address", user)
		userLocked := false
		if s.srv.opts.Users.Exists(user) {
			// Only users that exist: names an attacker makes up are
			// not worth a record.
			userLocked = s.lockoutFailure(LockoutKeyUser(user), "user", user)
		}
		switch {
		case addrLocked:
			return s.fail("auth", fmt.Errorf("%w: user %q, %s now locked out", ErrAuthLockedOut, user, s.conn.ip))
		case userLocked:
			return s.fail("auth", fmt.Errorf("%w: user %q now locked out", ErrUserLockedOut, user))
		}
		return s.fail("auth", fmt.Errorf("%w: user %q", ErrAuthFailed, user))
	}
	s.srv.metrics.auth.WithLabelValues(mech, "success").Inc()
	s.authUser, s.user = user, u
	s.conn.setAuthUser(user)
	s.log.Info().Str("user", user).Str("mechanism", mech).Msg("auth")
	return nil
}

// lockoutFailure counts a failed AUTH under key and reports whether it
// started a lockout, which it logs: once, by the ingress whose failure
// reached the limit.
func (s *session) lockoutFailure(key, kind, user string) bool {
	until, err := s.srv.guard.fail(context.Background(), key)
	if err != nil {
		s.log.Warn().Err(err).Str("key", key).Msg("auth failure counted by this ingress alone: the shared lockouts are unavailable")
	}
	if until.IsZero() {
		return false
	}
	s.log.Warn().Str("lockout", kind).Str("addr", s.conn.ip.String()).Str("user", user).
		Int("failures", s.srv.opts.AuthFailureLimit).Dur("window", s.srv.opts.AuthFailureWindow).
		Time("until", until).Msg("auth lockout")
	return true
}

// proto is the "with" keyword of the Received header (RFC 3848).
func (s *session) proto() string {
	p := "ESMTP"
	if s.tlsOn {
		p += "S"
	}
	if s.authUser != "" {
		p += "A"
	}
	return p
}

// bufPool recycles the buffers that hold the start of each message.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}
