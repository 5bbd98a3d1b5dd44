package delivery

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
)

// Timeouts of the outbound SMTP dialogue, RFC 5321 §4.5.3.2 by default.
type Timeouts struct {
	Connect   time.Duration // TCP connect and TLS handshake
	Greeting  time.Duration // 220 banner
	Command   time.Duration // EHLO, STARTTLS, AUTH, RSET, QUIT
	Mail      time.Duration // MAIL FROM
	Rcpt      time.Duration // each RCPT TO
	DataInit  time.Duration // DATA until 354
	DataBlock time.Duration // each write of the body
	DataEnd   time.Duration // final dot until the reply
}

// DefaultTimeouts are RFC 5321's recommendations.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		Connect:   30 * time.Second,
		Greeting:  5 * time.Minute,
		Command:   5 * time.Minute,
		Mail:      5 * time.Minute,
		Rcpt:      5 * time.Minute,
		DataInit:  2 * time.Minute,
		DataBlock: 3 * time.Minute,
		DataEnd:   10 * time.Minute,
	}
}

// smtpConn is an outbound SMTP connection: jetrelay's own client, because
// go-smtp's has no opportunistic STARTTLS, always says EHLO localhost
// before STARTTLS, re-sends EHLO after every RSET and does not pipeline.
type smtpConn struct {
	nc      net.Conn
	br      *bufio.Reader
	bw      *bufio.Writer
	ext     map[string]string
	tlsDesc string // "TLSv1.3 TLS_AES_128_GCM_SHA256"; "" in plaintext
	host    string // next-hop name
	addr    string // ip:port connected to
	to      Timeouts
	sent    int   // transactions completed on this connection
	written int64 // bytes written to the connection (before TLS)
	broken  bool
	lastUse time.Time
	// stsMet: the MTA-STS policy the connection met (matching MX name,
	// TLS with a certificate valid for it), as stsPolicy.key; only a
	// delivery under that same policy may reuse it ("": none).
	stsMet string
}

// dialSMTP connects and reads the greeting. With implicitTLS the TLS
// handshake comes first (port 465 style).
func dialSMTP(ctx context.Context, dialer *net.Dialer, host, addr string, implicitTLS bool, tlsCfg *tls.Config, to Timeouts) (*smtpConn, error) {
	dctx, cancel := context.WithTimeout(ctx, to.Connect)
	defer cancel()
	nc, err := dialer.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &smtpConn{nc: nc, host: host, addr: addr, to: to}
	if implicitTLS {
		if err := c.handshake(ctx, tlsCfg); err != nil {
			nc.Close()
			return nil, err
		}
	} else {
		c.setIO(nc)
	}
	if _, err := c.readReply(ctx, to.Greeting, 220, "greeting"); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *smtpConn) setIO(nc net.Conn) {
	c.nc = nc
	c.br = bufio.NewReaderSize(nc, 4096)
	c.bw = bufio.NewWriterSize(countingWriter{nc, &c.written}, 32<<10)
}

// countingWriter counts what goes through it.
type countingWriter struct {
	w io.Writer
	n *int64
}

func (cw countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	*cw.n += int64(n)
	return n, err
}

func (c *smtpConn) handshake(ctx context.Context, cfg *tls.Config) error {
	tc := tls.Client(c.nc, cfg)
	hctx, cancel := context.WithTimeout(ctx, c.to.Connect)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return fmt.Errorf("%w: %w", errTLSFailed, err)
	}
	st := tc.ConnectionState()
	c.tlsDesc = tls.VersionName(st.Version) + " " + tls.CipherSuiteName(st.CipherSuite)
	c.setIO(tc)
	return nil
}

// deadline applies d (bounded by ctx) to the connection for one step and
// makes ctx cancellation interrupt it.
func (c *smtpConn) deadline(ctx context.Context, d time.Duration) func() {
	t := time.Now().Add(d)
	if dl, ok := ctx.Deadline(); ok && dl.Before(t) {
		t = dl
	}
	_ = c.nc.SetDeadline(t)
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	return func() { stop() }
}

// cmd sends one command and reads its reply; a reply whose code class
// differs from want's is returned as *ReplyError.
func (c *smtpConn) cmd(ctx context.Context, d time.Duration, want int, stage, format string, args ...any) (*contracts.Reply, error) {
	done := c.deadline(ctx, d)
	defer done()
	if err := c.writeLine(format, args...); err != nil {
		return nil, err
	}
	if err := c.bw.Flush(); err != nil {
		c.broken = true
		return nil, err
	}
	return c.readReplyLocked(want, stage)
}

func (c *smtpConn) writeLine(format string, args ...any) error {
	if _, err := fmt.Fprintf(c.bw, format, args...); err != nil {
		c.broken = true
		return err
	}
	if _, err := c.bw.WriteString("\r\n"); err != nil {
		c.broken = true
		return err
	}
	return nil
}

func (c *smtpConn) readReply(ctx context.Context, d time.Duration, want int, stage string) (*contracts.Reply, error) {
	done := c.deadline(ctx, d)
	defer done()
	return c.readReplyLocked(want, stage)
}

// readReplyLocked reads one (possibly multi-line) reply. A protocol or I/O
// failure marks the connection broken.
func (c *smtpConn) readReplyLocked(want int, stage string) (*contracts.Reply, error) {
	var text []string
	code := 0
	for i := 0; ; i++ {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			c.broken = true
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, fmt.Errorf("%s: reply line too long", stage)
			}
			return nil, fmt.Errorf("%s: %w", stage, err)
		}
		s := strings.TrimRight(string(line), "\r\n")
		if len(s) < 3 || i > 200 {
			c.broken = true
			return nil, fmt.Errorf("%s: malformed reply %q", stage, s)
		}
		n, err := strconv.Atoi(s[:3])
		if err != nil || n < 200 || n > 599 || (code != 0 && n != code) {
			c.broken = true
			return nil, fmt.Errorf("%s: malformed reply %q", stage, s)
		}
		code = n
		more := len(s) > 3 && s[3] == '-'
		if len(s) > 4 {
			text = append(text, s[4:])
		} else {
			text = append(text, "")
		}
		if !more {
			break
		}
	}
	r := &contracts.Reply{Code: code, Host: c.host}
	msg := strings.Join(text, "\n")
	if enh, rest, ok := splitEnhanced(msg, code); ok {
		r.Enhanced, msg = enh, rest
	}
	r.Text = msg
	if code/100 != want/100 {
		if code == 421 {
			c.broken = true // the server is closing the connection
		}
		return r, &ReplyError{Stage: stage, Reply: *r}
	}
	return r, nil
}

// splitEnhanced separates an RFC 3463 code ("4.2.1 ") from the start of a
// reply text when its class matches the reply code.
func splitEnhanced(msg string, code int) (string, string, bool) {
	sp := strings.IndexByte(msg, ' ')
	field := msg
	if sp >= 0 {
		field = msg[:sp]
	}
	parts := strings.Split(field, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || parts[0][0] != byte('0'+code/100) {
		return "", msg, false
	}
	for _, p := range parts[1:] {
		if p == "" || len(p) > 3 {
			return "", msg, false
		}
		for _, ch := range p {
			if ch < '0' || ch > '9' {
				return "", msg, false
			}
		}
	}
	if sp < 0 {
		return field, "", true
	}
	return field, msg[sp+1:], true
}

// hello sends EHLO (falling back to HELO for an old server) and records
// the extensions.
func (c *smtpConn) hello(ctx context.Context, name string) error {
	r, err := c.cmd(ctx, c.to.Command, 250, "ehlo", "EHLO %s", name)
	if err != nil {
		var se *ReplyError
		if errors.As(err, &se) && (se.Reply.Code == 500 || se.Reply.Code == 502) && !c.broken {
			if _, err := c.cmd(ctx, c.to.Command, 250, "helo", "HELO %s", name); err != nil {
				return err
			}
			c.ext = map[string]string{}
			return nil
		}
		return err
	}
	c.ext = map[string]string{}
	// The first line greets; each further line is an extension.
	lines := strings.Split(r.Text, "\n")
	for _, l := range lines[1:] {
		kw, params, _ := strings.Cut(strings.TrimSpace(l), " ")
		c.ext[strings.ToUpper(kw)] = params
	}
	return nil
}

func (c *smtpConn) has(ext string) bool { _, ok := c.ext[ext]; return ok }

// startTLS upgrades the connection; the caller sends EHLO again.
func (c *smtpConn) startTLS(ctx context.Context, cfg *tls.Config) error {
	if _, err := c.cmd(ctx, c.to.Command, 220, "starttls", "STARTTLS"); err != nil {
		return fmt.Errorf("%w: %v", errTLSFailed, err)
	}
	if err := c.handshake(ctx, cfg); err != nil {
		c.broken = true
		return err
	}
	return nil
}

// auth logs in with PLAIN when offered, else LOGIN.
func (c *smtpConn) auth(ctx context.Context, user, pass string) error {
	mechs := strings.Fields(strings.ToUpper(c.ext["AUTH"]))
	hasMech := func(m string) bool {
		for _, x := range mechs {
			if x == m {
				return true
			}
		}
		return false
	}
	switch {
	case hasMech("PLAIN"):
		ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
		_, err := c.cmd(ctx, c.to.Command, 235, "auth", "AUTH PLAIN %s", ir)
		return err
	case hasMech("LOGIN"):
		if _, err := c.cmd(ctx, c.to.Command, 334, "auth", "AUTH LOGIN %s", base64.StdEncoding.EncodeToString([]byte(user))); err != nil {
			return err
		}
		_, err := c.cmd(ctx, c.to.Command, 235, "auth", "%s", base64.StdEncoding.EncodeToString([]byte(pass)))
		return err
	}
	return errNoAuthMechanism{host: c.host, offered: c.ext["AUTH"]}
}

// reset sends RSET before reusing a connection; failure means the cached
// connection is dead.
func (c *smtpConn) reset(ctx context.Context) error {
	_, err := c.cmd(ctx, c.to.Command, 250, "rset", "RSET")
	if err != nil {
		c.broken = true
	}
	return err
}

func (c *smtpConn) quit() {
	if !c.broken {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = c.cmd(ctx, 2*time.Second, 221, "quit", "QUIT")
		cancel()
	}
	c.close()
}

func (c *smtpConn) close() {
	c.broken = true
	_ = c.nc.Close()
}

// envelope is one transaction to send.
type envelope struct {
	from   string
	params contracts.MailParams
	rcpts  []contracts.Recipient
	size   int64
	// maxLine is the longest body line the ingress measured (0: unknown);
	// it tells the lineFolder what the body needs.
	maxLine int
	body    func() (io.ReadCloser, error) // opened only once DATA is accepted
	// prefix goes before the body: the DKIM-Signature field, computed on
	// the folded message (dkimSignature).
	prefix []byte
}

// txResult is what a transaction did.
type txResult struct {
	rcpt   []*contracts.Reply // per recipient: its RCPT reply, replaced by the DATA outcome for accepted ones
	stage  []string           // per recipient: the step its reply answered (mail, rcpt, data, dot)
	final  *contracts.Reply   // reply to the final dot (nil when not reached)
	sentOK bool               // the server accepted the message for at least one recipient
	bytes  int64              // bytes of the message written (with dot-stuffing and the final dot)
	folded string             // what the lineFolder did ("" nothing)
}

// send runs MAIL, RCPT… and DATA, pipelined when the server offers
// PIPELINING. An error means the connection failed; per-recipient SMTP
// replies are in the result.
func (c *smtpConn) send(ctx context.Context, env *envelope) (*txResult, error) {
	res := &txResult{rcpt: make([]*contracts.Reply, len(env.rcpts)), stage: make([]string, len(env.rcpts))}
	for i := range res.stage {
		res.stage[i] = "rcpt"
	}
	if max, ok := c.ext["SIZE"]; ok && max != "" {
		if n, err := strconv.ParseInt(max, 10, 64); err == nil && n > 0 && env.size > n {
			c.fillAll(res, &contracts.Reply{Code: 552, Enhanced: "5.3.4", Text: fmt.Sprintf("message size %d exceeds the next hop's limit of %d", env.size, n), Host: c.host})
			return res, nil
		}
	}
	if env.params.SMTPUTF8 && !c.has("SMTPUTF8") {
		c.fillAll(res, &contracts.Reply{Code: 553, Enhanced: "5.6.7", Text: "next hop does not support SMTPUTF8, required by this message", Host: c.host})
		return res, nil
	}
	mail := c.mailCommand(env)
	rcpts := make([]string, len(env.rcpts))
	for i, r := range env.rcpts {
		rcpts[i] = c.rcptCommand(r)
	}

	accepted := 0
	var mailErr *ReplyError
	if c.has("PIPELINING") {
		done := c.deadline(ctx, c.to.Mail+c.to.Rcpt+c.to.DataInit)
		_ = c.writeLine("%s", mail)
		for _, r := range rcpts {
			_ = c.writeLine("%s", r)
		}
		_ = c.writeLine("DATA")
		if err := c.bw.Flush(); err != nil {
			done()
			c.broken = true
			return res, err
		}
		if _, err := c.readReplyLocked(250, "mail"); err != nil {
			if !errors.As(err, &mailErr) {
				done()
				return res, err
			}
		}
		for i := range rcpts {
			r, err := c.readReplyLocked(250, "rcpt")
			if err != nil {
				var se *ReplyError
				if !errors.As(err, &se) {
					done()
					return res, err
				}
			}
			res.rcpt[i] = r
			if mailErr == nil && r.Code/100 == 2 {
				accepted++
			}
		}
		dr, err := c.readReplyLocked(354, "data")
		done()
		var se *ReplyError
		if err != nil && !errors.As(err, &se) {
			return res, err
		}
		if mailErr != nil || accepted == 0 {
			if mailErr != nil {
				c.fillAll(res, &mailErr.Reply)
			}
			if dr != nil && dr.Code == 354 {
				return res, c.abortData(ctx)
			}
			c.resetQuietly(ctx)
			return res, nil
		}
		if se != nil {
			c.fillAccepted(res, &se.Reply, "data")
			c.resetQuietly(ctx)
			return res, nil
		}
	} else {
		if r, err := c.cmd(ctx, c.to.Mail, 250, "mail", "%s", mail); err != nil {
			if errors.As(err, &mailErr) {
				c.fillAll(res, r)
				return res, nil
			}
			return res, err
		}
		for i, cmdLine := range rcpts {
			r, err := c.cmd(ctx, c.to.Rcpt, 250, "rcpt", "%s", cmdLine)
			if err != nil {
				var se *ReplyError
				if !errors.As(err, &se) {
					return res, err
				}
			}
			res.rcpt[i] = r
			if r.Code/100 == 2 {
				accepted++
			}
		}
		if accepted == 0 {
			c.resetQuietly(ctx)
			return res, nil
		}
		if r, err := c.cmd(ctx, c.to.DataInit, 354, "data", "DATA"); err != nil {
			var se *ReplyError
			if errors.As(err, &se) {
				c.fillAccepted(res, r, "data")
				c.resetQuietly(ctx)
				return res, nil
			}
			return res, err
		}
	}

	// 354: send the body.
	before := c.written
	final, folded, err := c.writeBody(ctx, env)
	res.bytes = c.written - before
	res.folded = folded
	if err != nil {
		return res, err
	}
	res.final = final
	c.fillAccepted(res, final, "dot")
	res.sentOK = final.Code/100 == 2
	c.sent++
	return res, nil
}

// fillAll sets every recipient's outcome (MAIL failed, or the message
// cannot go to this next hop at all).
func (c *smtpConn) fillAll(res *txResult, r *contracts.Reply) {
	for i := range res.rcpt {
		res.rcpt[i], res.stage[i] = r, "mail"
	}
}

// fillAccepted sets the outcome of every recipient the server had
// accepted, from the reply to a later step.
func (c *smtpConn) fillAccepted(res *txResult, r *contracts.Reply, stage string) {
	for i, rr := range res.rcpt {
		if rr != nil && rr.Code/100 == 2 {
			res.rcpt[i], res.stage[i] = r, stage
		}
	}
}

// abortData ends a DATA the server accepted although no recipient was
// (RFC 2920 §3.1): an empty message, then RSET.
func (c *smtpConn) abortData(ctx context.Context) error {
	done := c.deadline(ctx, c.to.DataEnd)
	_ = c.writeLine(".")
	err := c.bw.Flush()
	if err == nil {
		_, err = c.readReplyLocked(250, "dot")
		var se *ReplyError
		if errors.As(err, &se) {
			err = nil
		}
	}
	done()
	if err != nil {
		c.broken = true
		return err
	}
	c.resetQuietly(ctx)
	return nil
}

// resetQuietly clears a failed transaction so the connection can be
// reused; if even RSET fails the connection is marked broken.
func (c *smtpConn) resetQuietly(ctx context.Context) {
	if !c.broken {
		_ = c.reset(ctx)
	}
}

// writeBody streams the message through the lineFolder (no line over
// 998 octets) and the dotWriter, and reports what the folder did. If
// reading the body fails the connection is closed without the final dot,
// so a truncated message can never be accepted.
func (c *smtpConn) writeBody(ctx context.Context, env *envelope) (*contracts.Reply, string, error) {
	body, err := env.body()
	if err != nil {
		c.close()
		return nil, "", fmt.Errorf("%w: %w", ErrBodyRead, err)
	}
	defer body.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	dw := &dotWriter{w: c.bw, bol: true}
	if len(env.prefix) > 0 {
		if _, err := dw.Write(env.prefix); err != nil {
			c.close()
			return nil, "", err
		}
	}
	fw := newLineFolder(dw, env.maxLine)
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.to.DataBlock))
			if _, err := fw.Write(buf[:n]); err != nil {
				c.close()
				return nil, "", err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			c.close()
			return nil, "", fmt.Errorf("%w: %w", ErrBodyRead, rerr)
		}
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.to.DataBlock))
	if err := fw.Close(); err != nil {
		c.close()
		return nil, "", err
	}
	if err := dw.finish(); err != nil {
		c.close()
		return nil, "", err
	}
	if err := c.bw.Flush(); err != nil {
		c.close()
		return nil, "", err
	}
	_ = c.nc.SetDeadline(time.Now().Add(c.to.DataEnd))
	r, err := c.readReplyLocked(250, "dot")
	var se *ReplyError
	if err != nil && !errors.As(err, &se) {
		return nil, "", err
	}
	_ = c.nc.SetDeadline(time.Time{})
	return r, fw.how(), nil
}

// copyBufs are writeBody's read buffers: one per transaction in progress,
// not a fresh one per message.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (c *smtpConn) mailCommand(env *envelope) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<")
	b.WriteString(env.from)
	b.WriteByte('>')
	// SIZE is an estimate (RFC 1870); a body whose lines must be
	// re-encoded may grow, so none is declared then.
	if c.has("SIZE") && env.size > 0 && env.maxLine <= contracts.MaxWireLine {
		fmt.Fprintf(&b, " SIZE=%d", env.size)
	}
	if c.has("8BITMIME") && strings.EqualFold(env.params.Body, "8BITMIME") {
		b.WriteString(" BODY=8BITMIME")
	}
	if env.params.SMTPUTF8 {
		b.WriteString(" SMTPUTF8")
	}
	if c.has("DSN") {
		if env.params.Ret != "" {
			b.WriteString(" RET=" + env.params.Ret)
		}
		if env.params.EnvID != "" {
			b.WriteString(" ENVID=" + xtext(env.params.EnvID))
		}
	}
	return b.String()
}

func (c *smtpConn) rcptCommand(r contracts.Recipient) string {
	var b strings.Builder
	b.WriteString("RCPT TO:<")
	b.WriteString(r.Addr)
	b.WriteByte('>')
	if c.has("DSN") {
		if len(r.Notify) > 0 {
			b.WriteString(" NOTIFY=" + strings.Join(r.Notify, ","))
		}
		if r.ORcpt != "" {
			if typ, addr, ok := strings.Cut(r.ORcpt, ";"); ok {
				b.WriteString(" ORCPT=" + typ + ";" + xtext(addr))
			}
		}
	}
	return b.String()
}

// xtext encodes per RFC 3461 §4.
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch < 33 || ch > 126 || ch == '+' || ch == '=' {
			fmt.Fprintf(&b, "+%02X", ch)
		} else {
			b.WriteByte(ch)
		}
	}
	return b.String()
}

// dotWriter dot-stuffs lines and ends the message with CRLF.CRLF. It also
// completes a bare CR or bare LF to CRLF, so even a body that did not pass
// our ingress cannot end the transaction early at the next hop
// (SMTP smuggling).
type dotWriter struct {
	w      *bufio.Writer
	bol    bool // at the beginning of a line
	lastCR bool // the last byte written was a CR
}

func (d *dotWriter) Write(p []byte) (int, error) {
	// Fast path: whole lines that are clean (CRLF only at their end, no
	// leading dot) are copied as they are; anything else goes through the
	// byte-by-byte state machine.
	i := 0
	for i < len(p) {
		if d.lastCR || (d.bol && p[i] == '.') {
			if err := d.writeSlow(p[i : i+1]); err != nil {
				return 0, err
			}
			i++
			continue
		}
		rest := p[i:]
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			cr := bytes.IndexByte(rest, '\r')
			if cr < 0 {
				if _, err := d.w.Write(rest); err != nil {
					return 0, err
				}
				d.bol = false
				break
			}
			if err := d.writeSlow(rest); err != nil {
				return 0, err
			}
			break
		}
		line := rest[:nl+1]
		if nl >= 1 && line[nl-1] == '\r' && bytes.IndexByte(line[:nl-1], '\r') < 0 {
			if _, err := d.w.Write(line); err != nil {
				return 0, err
			}
			d.bol, d.lastCR = true, false
		} else if err := d.writeSlow(line); err != nil {
			return 0, err
		}
		i += len(line)
	}
	return len(p), nil
}

// writeSlow runs the byte-by-byte state machine.
func (d *dotWriter) writeSlow(p []byte) error {
	start := 0
	var err error
	flush := func(i int) {
		if err == nil && i > start {
			_, err = d.w.Write(p[start:i])
		}
		start = i
	}
	for i := 0; i < len(p) && err == nil; i++ {
		ch := p[i]
		if d.lastCR && ch != '\n' {
			flush(i)
			if err == nil {
				err = d.w.WriteByte('\n')
			}
			d.bol, d.lastCR = true, false
		}
		switch ch {
		case '.':
			if d.bol {
				flush(i)
				if err == nil {
					err = d.w.WriteByte('.')
				}
			}
			d.bol = false
		case '\r':
			d.lastCR, d.bol = true, false
		case '\n':
			if !d.lastCR {
				flush(i)
				if err == nil {
					err = d.w.WriteByte('\r')
				}
			}
			d.lastCR, d.bol = false, true
		default:
			d.bol = false
		}
	}
	flush(len(p))
	return err
}

func (d *dotWriter) finish() error {
	if d.lastCR {
		if err := d.w.WriteByte('\n'); err != nil {
			return err
		}
		d.bol, d.lastCR = true, false
	}
	if !d.bol {
		if _, err := d.w.WriteString("\r\n"); err != nil {
			return err
		}
	}
	_, err := d.w.WriteString(".\r\n")
	return err
}
