package delivery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/config"
)

// groupResult is the outcome of delivering one destination's recipients.
type groupResult struct {
	dest    *destination
	rcpts   []contracts.Recipient
	replies []*contracts.Reply // per recipient, same order
	host    string             // the host that gave the final answer
	ip      string
	tls     string
	tried   []string // hosts tried, in order
	dsnExt  bool     // the next hop offers DSN (it reports success itself)
	start   time.Time
	dur     time.Duration
	// bodyMissing: the body object was gone when DATA needed it.
	bodyMissing bool
}

// deliverGroup runs one SMTP transaction for the recipients that share a
// destination, trying its hosts in order. It never returns an error: every
// failure becomes the recipients' replies.
func (w *Worker) deliverGroup(ctx context.Context, j *contracts.Job, body bodySource, dest *destination, rcpts []contracts.Recipient) *groupResult {
	res := &groupResult{dest: dest, rcpts: rcpts, replies: make([]*contracts.Reply, len(rcpts)), start: time.Now()}
	defer func() { res.dur = time.Since(res.start) }()
	setAll := func(r *contracts.Reply) {
		for i := range res.replies {
			res.replies[i] = r
		}
	}
	if why, dead := w.pool.isDead(dest.key); dead {
		setAll(&contracts.Reply{Code: 451, Enhanced: "4.4.1", Text: "destination backed off after a recent failure: " + why})
		return res
	}
	release, err := w.pool.acquire(ctx, dest.key)
	if err != nil {
		setAll(&contracts.Reply{Code: 451, Enhanced: "4.4.7", Text: "worker stopping before a connection slot was free"})
		return res
	}
	defer release()

	env := &envelope{from: j.From, params: j.Params, rcpts: rcpts, size: j.Body.Size, body: body.open}

	// A cached connection first.
	if c := w.pool.get(dest.key); c != nil {
		// A connection used a moment ago is alive; one that idled is
		// checked with RSET first (the server may have timed it out).
		fresh := time.Since(c.lastUse) < time.Second
		if fresh || c.reset(ctx) == nil {
			if w.transact(ctx, c, dest, env, res, true) {
				return res
			}
		} else {
			c.close()
		}
	}

	hops, err := w.router.hops(ctx, dest)
	if err != nil {
		var re *routeError
		if errors.As(err, &re) {
			setAll(&re.reply)
		} else {
			setAll(&contracts.Reply{Code: 451, Enhanced: "4.4.0", Text: err.Error()})
		}
		return res
	}
	var last *contracts.Reply
	for _, h := range hops {
		res.tried = append(res.tried, h.name+" ["+h.addr+"]")
		c, reply := w.connect(ctx, dest, h)
		if c == nil {
			last = reply
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if w.transact(ctx, c, dest, env, res, false) {
			return res
		}
		last = res.replies[0]
	}
	if last == nil {
		last = &contracts.Reply{Code: 451, Enhanced: "4.4.1", Text: "no host could be reached"}
	}
	// Every host failed before a transaction got anywhere: the whole
	// destination is unreachable for now.
	setAll(last)
	w.pool.markDead(dest.key, last.String())
	return res
}

// transact sends the envelope on c. It reports true when the outcome is
// final for this attempt (recipients decided, or the body was sent so
// that trying another host could duplicate the message), false when the
// connection failed early and the next host should be tried. On a reused
// connection a 421 to everything means the server had closed it: that is
// not a verdict either.
func (w *Worker) transact(ctx context.Context, c *smtpConn, dest *destination, env *envelope, res *groupResult, reused bool) bool {
	res.host, res.ip, res.tls = c.host, c.addr, c.tlsDesc
	res.dsnExt = c.has("DSN")
	tx, err := c.send(ctx, env)
	if err != nil {
		c.close()
		if errors.Is(err, errBodyRead) {
			res.bodyMissing = errors.Is(err, broker.ErrBodyNotFound)
			r := &contracts.Reply{Code: 451, Enhanced: "4.3.0", Text: "could not read the message body: " + err.Error()}
			for i := range res.replies {
				res.replies[i] = r
			}
			return true
		}
		r := connReply(c.host, err)
		if tx != nil && tx.final == nil && anyAccepted(tx) {
			// The message was (maybe) being sent: no second host, retry later.
			for i := range res.replies {
				res.replies[i] = r
			}
			return true
		}
		for i := range res.replies {
			res.replies[i] = r
		}
		return false
	}
	if reused && tx.final == nil && allCode(tx.rcpt, 421) {
		c.close()
		return false
	}
	for i, r := range tx.rcpt {
		if r == nil {
			r = &contracts.Reply{Code: 451, Enhanced: "4.4.2", Text: "no reply for this recipient", Host: c.host}
		}
		if r.Code == 552 && (tx.final == nil || r != tx.final) && !isSizeReply(r) {
			// RFC 5321 §4.5.3.1.10: 552 to RCPT means "too many
			// recipients" in practice; treat it as temporary.
			cp := *r
			cp.Code, cp.Enhanced = 452, "4"+strings.TrimPrefix(r.Enhanced, "5")
			cp.Text = "(552 to RCPT treated as temporary) " + r.Text
			r = &cp
		}
		res.replies[i] = r
		if r.Code == 421 {
			w.pool.markDead(dest.key, r.String())
		}
	}
	if !c.broken {
		w.pool.markAlive(dest.key)
	}
	w.pool.put(dest.key, c)
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

func isSizeReply(r *contracts.Reply) bool {
	return r.Enhanced == "5.3.4"
}

// connect dials one hop, reads the greeting, says EHLO, applies the TLS
// policy and authenticates. On failure it returns the reply to record.
func (w *Worker) connect(ctx context.Context, dest *destination, h hop) (*smtpConn, *contracts.Reply) {
	tlsCfg := w.tlsConfig(dest, h.name)
	implicit := dest.policy == config.TLSImplicit
	c, err := dialSMTP(ctx, w.dialer, h.name, h.addr, implicit, tlsCfg, w.opts.Timeouts)
	if err != nil {
		return nil, connReply(h.name, err)
	}
	if err := c.hello(ctx, w.opts.Hostname); err != nil {
		c.close()
		return nil, connReply(h.name, err)
	}
	switch dest.policy {
	case config.TLSRequired:
		if !c.has("STARTTLS") {
			c.quit()
			return nil, &contracts.Reply{Code: 451, Enhanced: "4.7.5", Text: "TLS is required but " + h.name + " does not offer STARTTLS", Host: h.name}
		}
		if err := w.upgrade(ctx, c, tlsCfg); err != nil {
			c.close()
			return nil, &contracts.Reply{Code: 451, Enhanced: "4.7.5", Text: "TLS is required but failed with " + h.name + ": " + err.Error(), Host: h.name}
		}
	case config.TLSOpportunistic:
		if c.has("STARTTLS") {
			if err := w.upgrade(ctx, c, tlsCfg); err != nil {
				// Opportunistic: TLS did not work, so talk in plaintext.
				c.close()
				w.log.Info().Str("host", h.name).Err(err).Msg("STARTTLS failed, reconnecting without TLS (opportunistic policy)")
				c, err = dialSMTP(ctx, w.dialer, h.name, h.addr, false, nil, w.opts.Timeouts)
				if err != nil {
					return nil, connReply(h.name, err)
				}
				if err := c.hello(ctx, w.opts.Hostname); err != nil {
					c.close()
					return nil, connReply(h.name, err)
				}
			}
		}
	}
	if c.tlsDesc != "" {
		w.metrics.tls.WithLabelValues("out", strings.Fields(c.tlsDesc)[0]).Inc()
	}
	if dest.user != "" {
		if c.tlsDesc == "" && !dest.plainOK {
			c.quit()
			return nil, &contracts.Reply{Code: 451, Enhanced: "4.7.0", Text: "refusing to send credentials to " + h.name + " without TLS (set allow_plain_auth to permit it)", Host: h.name}
		}
		if err := c.auth(ctx, dest.user, dest.pass); err != nil {
			c.close()
			r := connReply(h.name, err)
			return nil, r
		}
	}
	return c, nil
}

func (w *Worker) upgrade(ctx context.Context, c *smtpConn, cfg *tls.Config) error {
	if err := c.startTLS(ctx, cfg); err != nil {
		return err
	}
	return c.hello(ctx, w.opts.Hostname)
}

func (w *Worker) tlsConfig(dest *destination, serverName string) *tls.Config {
	cfg := &tls.Config{
		ServerName:         serverName,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: !dest.verify, //nolint:gosec // opportunistic MX TLS or an explicit tls_skip_verify
		RootCAs:            w.opts.RootCAs,
	}
	return cfg
}

// connReply turns a connection-level failure into the reply recorded for
// the recipients. SMTP replies keep their code; everything else is a
// temporary failure with an enhanced code that says what happened.
func connReply(host string, err error) *contracts.Reply {
	var se *smtpError
	if errors.As(err, &se) {
		r := se.Reply
		r.Host = host
		if se.Stage == "greeting" || se.Stage == "ehlo" || se.Stage == "helo" || se.Stage == "auth" || se.Stage == "starttls" {
			// A host that refuses to talk (even with 5xx, Postfix's
			// smtp_skip_5xx_greeting) is skipped; if all are, the message
			// is deferred, not bounced. A rejected AUTH is a configuration
			// problem that a retry after fixing it should survive.
			if r.Code/100 == 5 {
				r.Text = fmt.Sprintf("%s said %d %s %s", host, r.Code, r.Enhanced, r.Text)
				r.Code, r.Enhanced = 451, "4.4.0"
			}
		}
		return &r
	}
	text := err.Error()
	enh := "4.4.0"
	var ne net.Error
	switch {
	case errors.Is(err, errTLSFailed):
		enh = "4.7.5"
	case errors.Is(err, syscall.ECONNREFUSED):
		enh = "4.4.1"
		text = "connection refused by " + host
	case errors.As(err, &ne) && ne.Timeout():
		enh = "4.4.2"
		text = "timeout talking to " + host + ": " + text
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		enh = "4.4.2"
		text = "connection lost with " + host + ": " + text
	}
	return &contracts.Reply{Code: 451, Enhanced: enh, Text: text, Host: host}
}
