package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/delivery/dkim"
	"github.com/jetrelay/jetrelay/delivery/tlsrpt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// smtpTransport delivers over SMTP: a cached connection to the
// destination first, else its hosts in order (MX preference, or a route's
// failover list), with the destination's TLS policy and credentials, one
// transaction for all the recipients. It moves on to the next host only
// while the message cannot have been sent yet, so a message is never sent
// twice within an attempt.
type smtpTransport struct {
	hostname string // EHLO name
	router   *Router
	pool     *pool
	dialer   *net.Dialer
	timeouts Timeouts
	rootCAs  *x509.CertPool
	tlsOut   *prometheus.CounterVec
	log      zerolog.Logger
	dkim     *dkim.Signer // nil: no signing
	// sts applies MTA-STS to MX destinations (nil: off; sts.go).
	sts *sts
}

var _ Transport = (*smtpTransport)(nil)

func (t *smtpTransport) Deliver(ctx context.Context, req *Request) *Report {
	rep := &Report{Results: make([]Result, len(req.Rcpts)), Start: time.Now()}
	defer func() { rep.Duration = time.Since(rep.Start) }()
	dest := req.Dest
	log := t.log.With().Str("msg_id", req.Job.QueueID).Str("domain", dest.Domain).Logger()
	var pol *stsPolicy
	if dest.Kind == "mx" && t.sts != nil && !strings.HasPrefix(dest.Domain, "[") {
		pol = t.sts.lookup(ctx, dest.Domain, log)
		if pol.enforce() {
			dest = t.sts.tighten(dest)
		}
	}
	if why, dead := t.pool.isDead(dest.Key); dead {
		rep.fill(Result{Err: errBackedOff{why}, Stage: "connect"})
		return rep
	}
	// DKIM: the message is read once to be signed, before a connection
	// is taken, and the signature goes in front of what is sent.
	sigField, signed, err := dkimSignature(t.dkim, req.Body, req.Job.Body.MaxLine, dest.DKIMDomain)
	rep.DKIM = signed
	if err != nil {
		rep.fill(Result{Err: err, Stage: "body"})
		return rep
	}
	if signed.Err != nil {
		log.Error().Err(signed.Err).Msg("DKIM signing failed: the message goes out unsigned")
	}
	release, err := t.pool.acquire(ctx, dest.Key)
	if err != nil {
		rep.fill(Result{Err: err, Stage: "connect"})
		return rep
	}
	defer release()
	env := &envelope{from: req.Job.From, params: req.Job.Params, rcpts: req.Rcpts, size: req.Job.Body.Size + int64(len(sigField)),
		maxLine: req.Job.Body.MaxLine, body: req.Body, prefix: sigField}

	// A cached connection first.
	if c := t.pool.get(dest.Key); c != nil {
		// A connection used a moment ago is alive; one that idled is
		// checked with RSET first (the server may have timed it out).
		// Under an enforce policy only a connection that met that very
		// policy will do.
		fresh := time.Since(c.lastUse) < time.Second
		if pol.enforce() && c.stsMet != pol.key() {
			c.quit()
		} else if fresh || c.reset(ctx) == nil {
			if t.transact(ctx, c, dest, env, rep, true) {
				return rep
			}
		} else {
			c.close()
		}
	}

	// A connection to this destination still saying goodbye counts
	// against its limits until it is closed.
	if err := t.pool.waitClosed(ctx, dest.Key); err != nil {
		rep.fill(Result{Err: err, Stage: "connect"})
		return rep
	}
	hops, err := t.router.hops(ctx, dest)
	if err == nil && pol.enforce() {
		hops, err = t.sts.filterMX(pol, hops, log)
	}
	if err != nil {
		rep.fill(Result{Err: err, Stage: "route"})
		return rep
	}
	last := Result{Err: errors.New("no host could be reached"), Stage: "connect"}
	for _, h := range hops {
		rep.Tried = append(rep.Tried, h.name+" ["+h.addr+"]")
		c, err := t.connect(ctx, dest, h, pol, log)
		if c == nil {
			rep.Host, rep.IP = h.name, h.addr
			last = Result{Err: err, Stage: "connect"}
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if t.transact(ctx, c, dest, env, rep, false) {
			return rep
		}
		last = rep.Results[0]
	}
	// Every host failed before a transaction got anywhere: the whole
	// destination is unreachable for now.
	rep.fill(last)
	t.pool.markDead(dest.Key, classify(last, rep.Host).Reply.String())
	return rep
}

// transact sends the envelope on c. It reports true when the outcome is
// final for this attempt (recipients decided, or the body was sent so
// that trying another host could duplicate the message), false when the
// connection failed early and the next host should be tried. On a reused
// connection a 421 to everything means the server had closed it: that is
// not a verdict either.
func (t *smtpTransport) transact(ctx context.Context, c *smtpConn, dest *Destination, env *envelope, rep *Report, reused bool) bool {
	rep.Host, rep.IP, rep.TLS = c.host, c.addr, c.tlsDesc
	rep.ReportsSuccess = c.has("DSN")
	tx, err := c.send(ctx, env)
	if tx != nil {
		rep.Bytes, rep.Folded = tx.bytes, tx.folded
	}
	if err != nil {
		c.close()
		switch {
		case errors.Is(err, ErrBodyRead):
			rep.fill(Result{Err: err, Stage: "body"})
			return true
		case tx != nil && tx.final == nil && anyAccepted(tx):
			// The message was (maybe) being sent: no second host, retry later.
			rep.fill(Result{Err: err, Stage: "data"})
			return true
		}
		rep.fill(Result{Err: err, Stage: "connect"})
		return false
	}
	if reused && tx.final == nil && allCode(tx.rcpt, 421) {
		c.close()
		return false
	}
	for i, r := range tx.rcpt {
		rep.Results[i] = Result{Reply: r, Stage: tx.stage[i]}
		if r != nil && r.Code == 421 {
			t.pool.markDead(dest.Key, r.String())
		}
	}
	if !c.broken {
		t.pool.markAlive(dest.Key)
	}
	t.pool.put(dest.Key, c)
	return true
}

func allCode(rs []*contracts.Reply, code int) bool {
	for _, r := range rs {
		if r == nil || r.Code != code {
			return false
		}
	}
	return len(rs) > 0
}

func anyAccepted(tx *txResult) bool {
	for _, r := range tx.rcpt {
		if r != nil && r.Code/100 == 2 {
			return true
		}
	}
	return false
}

// connect dials one hop, reads the greeting, says EHLO, applies the TLS
// policy and authenticates.
func (t *smtpTransport) connect(ctx context.Context, dest *Destination, h hop, pol *stsPolicy, log zerolog.Logger) (*smtpConn, error) {
	tlsCfg := t.tlsConfig(dest, h.name)
	// Under a testing policy the certificate is checked as the policy
	// would, without changing what the TLS policy accepts.
	var certErr error
	if pol != nil && !pol.enforce() {
		roots := t.sts.roots
		tlsCfg.VerifyConnection = func(cs tls.ConnectionState) error {
			certErr = verifyCert(cs, h.name, roots)
			return nil
		}
	}
	c, err := dialSMTP(ctx, t.dialer, h.name, h.addr, dest.TLS == TLSImplicit, tlsCfg, t.timeouts)
	if err != nil {
		if pol != nil && errors.Is(err, errTLSFailed) {
			return nil, t.stsSession(pol, h, tlsResult(err), err, log)
		}
		return nil, err
	}
	if err := c.hello(ctx, t.hostname); err != nil {
		c.close()
		return nil, err
	}
	switch dest.TLS {
	case TLSRequired:
		if !c.has("STARTTLS") {
			c.quit()
			err := &tlsError{host: h.name}
			if pol != nil {
				return nil, t.stsSession(pol, h, tlsrpt.StartTLSNotSupported, err, log)
			}
			return nil, err
		}
		if err := t.upgrade(ctx, c, tlsCfg); err != nil {
			c.close()
			err := &tlsError{host: h.name, offered: true, err: err}
			if pol != nil {
				return nil, t.stsSession(pol, h, tlsResult(err), err, log)
			}
			return nil, err
		}
	case TLSOpportunistic:
		if !c.has("STARTTLS") && pol != nil {
			_ = t.stsSession(pol, h, tlsrpt.StartTLSNotSupported, errors.New(h.name+" does not offer STARTTLS"), log)
		}
		if c.has("STARTTLS") {
			if err := t.upgrade(ctx, c, tlsCfg); err != nil {
				// Opportunistic: TLS did not work, so talk in plaintext.
				c.close()
				if pol != nil {
					_ = t.stsSession(pol, h, tlsResult(err), err, log)
				}
				log.Info().Str("host", h.name).Err(err).Msg("STARTTLS failed, reconnecting without TLS (opportunistic policy)")
				c, err = dialSMTP(ctx, t.dialer, h.name, h.addr, false, nil, t.timeouts)
				if err != nil {
					return nil, err
				}
				if err := c.hello(ctx, t.hostname); err != nil {
					c.close()
					return nil, err
				}
			}
		}
	}
	if c.tlsDesc != "" && t.tlsOut != nil {
		t.tlsOut.WithLabelValues("out", strings.Fields(c.tlsDesc)[0]).Inc()
	}
	if pol != nil {
		t.stsConnected(pol, h, c, dest, certErr, log)
	}
	if dest.authenticates() {
		if c.tlsDesc == "" && !dest.AllowPlainAuth {
			c.quit()
			return nil, errPlainAuth{host: h.name}
		}
		if err := t.authenticate(ctx, c, dest); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

// authenticate logs in with the destination's password, or with an OAuth
// token. A token the server refuses is dropped from the cache and a fresh
// one tried once (a token revoked since it was fetched); refused again,
// it is an AuthError, for the queue to wait and the health to show.
func (t *smtpTransport) authenticate(ctx context.Context, c *smtpConn, dest *Destination) error {
	if dest.Tokens == nil {
		return c.auth(ctx, dest.Username, dest.Password)
	}
	tok, err := dest.Tokens.Token(ctx)
	if err != nil {
		return err
	}
	err = c.authBearer(ctx, dest.Username, tok.Value)
	var refused errTokenRefused
	if !errors.As(err, &refused) {
		return err
	}
	dest.Tokens.Invalidate(tok.Value)
	fresh, ferr := dest.Tokens.Token(ctx)
	switch {
	case ferr != nil:
		return ferr
	case fresh.Value == tok.Value || c.broken:
		return &AuthError{Host: c.host, Err: refused.reply}
	}
	if err := c.authBearer(ctx, dest.Username, fresh.Value); err != nil {
		if errors.As(err, &refused) {
			return &AuthError{Host: c.host, Err: refused.reply}
		}
		return err
	}
	return nil
}

func (t *smtpTransport) upgrade(ctx context.Context, c *smtpConn, cfg *tls.Config) error {
	if err := c.startTLS(ctx, cfg); err != nil {
		return err
	}
	return c.hello(ctx, t.hostname)
}

func (t *smtpTransport) tlsConfig(dest *Destination, serverName string) *tls.Config {
	cfg := &tls.Config{
		ServerName:         serverName,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: !dest.Verify, //nolint:gosec // opportunistic MX TLS or an explicit tls_skip_verify
		RootCAs:            t.rootCAs,
	}
	if dest.ServerName != "" {
		cfg.ServerName = dest.ServerName
	}
	if dest.RootCAs != nil {
		cfg.RootCAs = dest.RootCAs
	}
	if dest.ClientCert != nil {
		cfg.Certificates = []tls.Certificate{*dest.ClientCert}
	}
	return cfg
}
