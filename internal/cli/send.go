package cli

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

type sendOpts struct {
	server, from, subject, body, helo string
	to                                []string
	starttls, implicitTLS, insecure   bool
	authUser, passwordFile            string
	timeout                           time.Duration
	wait                              time.Duration // --wait: follow the message this long (0: do not)
}

// defaultWait is --wait without a value.
const defaultWait = 2 * time.Minute

// sent is what the server accepted.
type sent struct {
	queueID string   // from "250 2.0.0 queued as <id>" ("" if the reply names none)
	rcpts   []string // recipients accepted at RCPT
}

func newSendCmd(g *globals) *cobra.Command {
	o := &sendOpts{}
	cmd := &cobra.Command{
		Use:   "send --to ADDR [flags]",
		Short: "Send a test message and show the SMTP dialogue",
		Long: `send talks SMTP to a server (by default this configuration's ingress) and
prints every command and reply, like a telnet session but without typing
mistakes. The body comes from --body, or from standard input with --body -.
With --auth USER the password is read from --password-file, the
JETRELAY_SEND_PASSWORD environment variable, or a prompt.

With --wait (or --wait=5m) send then follows the message by the queue ID
of the 250 reply, through this configuration's broker (data_dir, or
broker.url), until every recipient has an outcome, and says it in words:
delivered (to which host, with which reply), deferred (the reply, and when
the next attempt is), or dead-lettered (the reason, and how to replay it).
It exits 0 when every recipient was delivered, 75 (EX_TEMPFAIL) when one
was deferred or has no outcome within the wait (2m without a value), and
1 when one was dead-lettered or the message was refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(o.to) == 0 {
				return fmt.Errorf("--to is required")
			}
			if o.server == "" {
				cfg, _, err := g.load(nil)
				if err != nil {
					return err
				}
				o.server = defaultSendServer(cfg.Ingress.Listen)
			}
			var bc *broker.Client
			var cfg *config.Config
			if o.wait > 0 {
				// Reach the broker first: a message that cannot be
				// followed is better not sent.
				var err error
				if bc, cfg, err = g.adminConn(cmd.Context()); err != nil {
					return fmt.Errorf("--wait follows the message through the broker: %w", err)
				}
				defer bc.Close()
			}
			if o.helo == "" {
				o.helo, _ = os.Hostname()
				if o.helo == "" {
					o.helo = "localhost"
				}
			}
			body := o.body
			if body == "-" {
				b, err := io.ReadAll(g.stdin)
				if err != nil {
					return err
				}
				body = string(b)
			}
			pass := ""
			if o.authUser != "" {
				var err error
				if pass, err = sendPassword(o.passwordFile, g.stderr); err != nil {
					return err
				}
			}
			res, err := runSend(o, body, pass, g.stdout)
			if o.wait == 0 || (err != nil && res.queueID == "") {
				return err
			}
			if res.queueID == "" {
				return exitError{code: exitFailed, msg: "--wait follows a message by the queue ID of jetrelay's reply \"250 2.0.0 queued as <id>\", and this server's reply names none"}
			}
			// Queued for some recipients (err: others were refused at
			// RCPT): follow those, and fail for the refused ones.
			code := follow(cmd.Context(), bc, cfg, res.queueID, o.from, res.rcpts, o.wait, g.stdout)
			if err != nil {
				return exitError{code: exitFailed, msg: "some recipients were refused: " + err.Error()}
			}
			if code != 0 {
				return exitError{code: code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.server, "server", "", "host:port to send to (default: the first ingress.listen address)")
	f.StringVar(&o.from, "from", "jetrelay-test@localhost", "envelope sender and From:")
	f.StringArrayVar(&o.to, "to", nil, "recipient (repeatable)")
	f.StringVar(&o.subject, "subject", "jetrelay test message", "Subject:")
	f.StringVar(&o.body, "body", "This is a test message sent with jetrelay send.", "message text, or - for standard input")
	f.StringVar(&o.helo, "helo", "", "EHLO name (default: this host's name)")
	f.BoolVar(&o.starttls, "starttls", false, "upgrade with STARTTLS before MAIL")
	f.BoolVar(&o.implicitTLS, "tls", false, "TLS from the first byte (port 465 style)")
	f.BoolVar(&o.insecure, "insecure", false, "do not verify the server certificate")
	f.StringVar(&o.authUser, "auth", "", "authenticate as this user (AUTH PLAIN, or LOGIN when PLAIN is not offered)")
	f.StringVar(&o.passwordFile, "password-file", "", "file holding the AUTH password")
	f.DurationVar(&o.timeout, "timeout", 60*time.Second, "timeout for each step")
	f.DurationVar(&o.wait, "wait", 0, "follow the message until its outcome, at most this long (--wait alone: 2m; --wait=5m); exit 0 delivered, 75 deferred or no outcome yet, 1 dead-lettered")
	f.Lookup("wait").NoOptDefVal = defaultWait.String()
	return cmd
}

func defaultSendServer(listen []string) string {
	if len(listen) == 0 {
		return "127.0.0.1:2525"
	}
	return probeAddr(listen[0])
}

func sendPassword(file string, stderr io.Writer) (string, error) {
	if file != "" {
		return app.ReadSecret(file)
	}
	if p := os.Getenv("JETRELAY_SEND_PASSWORD"); p != "" {
		return p, nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return "", fmt.Errorf("--auth needs a password: --password-file, JETRELAY_SEND_PASSWORD or a terminal")
	}
	fmt.Fprint(stderr, "Password: ")
	b, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(stderr)
	return string(b), err
}

// transcript is a tiny SMTP client that shows both sides.
type transcript struct {
	conn net.Conn
	tp   *textproto.Conn
	out  io.Writer
	to   time.Duration
	ext  map[string]string
}

func (t *transcript) reply(want int) (int, string, error) {
	_ = t.conn.SetDeadline(time.Now().Add(t.to))
	code, msg, err := t.tp.ReadResponse(want)
	lines := strings.Split(msg, "\n")
	for i, l := range lines {
		sep := " "
		if i < len(lines)-1 {
			sep = "-"
		}
		if code != 0 {
			fmt.Fprintf(t.out, "S: %d%s%s\n", code, sep, l)
		}
	}
	if err != nil {
		if _, ok := err.(*textproto.Error); ok {
			return code, msg, fmt.Errorf("server said %d %s", code, msg)
		}
		return code, msg, err
	}
	return code, msg, nil
}

func (t *transcript) cmd(want int, shown, format string, args ...any) (int, string, error) {
	line := fmt.Sprintf(format, args...)
	if shown == "" {
		shown = line
	}
	fmt.Fprintf(t.out, "C: %s\n", shown)
	_ = t.conn.SetDeadline(time.Now().Add(t.to))
	if err := t.tp.PrintfLine("%s", line); err != nil {
		return 0, "", err
	}
	return t.reply(want)
}

func (t *transcript) ehlo(name string) error {
	_, msg, err := t.cmd(250, "", "EHLO %s", name)
	if err != nil {
		return err
	}
	t.ext = map[string]string{}
	for _, l := range strings.Split(msg, "\n")[1:] {
		k, v, _ := strings.Cut(l, " ")
		t.ext[strings.ToUpper(k)] = v
	}
	return nil
}

// queuedAs finds the queue ID in jetrelay's "250 2.0.0 queued as <id>".
var queuedAs = regexp.MustCompile(`queued as ([0-9A-Z]{16})\b`)

func runSend(o *sendOpts, body, pass string, out io.Writer) (sent, error) {
	var res sent
	err := converse(o, body, pass, out, &res)
	return res, err
}

func converse(o *sendOpts, body, pass string, out io.Writer, res *sent) error {
	host, _, _ := net.SplitHostPort(o.server)
	tlsCfg := &tls.Config{ServerName: host, InsecureSkipVerify: o.insecure, MinVersion: tls.VersionTLS12} //nolint:gosec // --insecure is the operator's explicit choice
	fmt.Fprintf(out, "connecting to %s\n", o.server)
	var conn net.Conn
	var err error
	d := &net.Dialer{Timeout: o.timeout}
	if o.implicitTLS {
		conn, err = tls.DialWithDialer(d, "tcp", o.server, tlsCfg)
	} else {
		conn, err = d.Dial("tcp", o.server)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	t := &transcript{conn: conn, tp: textproto.NewConn(conn), out: out, to: o.timeout}
	if _, _, err := t.reply(220); err != nil {
		return err
	}
	if err := t.ehlo(o.helo); err != nil {
		return err
	}
	if o.starttls {
		if _, _, err := t.cmd(220, "", "STARTTLS"); err != nil {
			return err
		}
		tc := tls.Client(conn, tlsCfg)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		st := tc.ConnectionState()
		fmt.Fprintf(out, "TLS: %s %s\n", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
		t.conn, t.tp = tc, textproto.NewConn(tc)
		if err := t.ehlo(o.helo); err != nil {
			return err
		}
	}
	if o.authUser != "" {
		mechs := strings.Fields(strings.ToUpper(t.ext["AUTH"]))
		has := func(m string) bool {
			for _, x := range mechs {
				if x == m {
					return true
				}
			}
			return false
		}
		switch {
		case has("PLAIN"):
			ir := base64.StdEncoding.EncodeToString([]byte("\x00" + o.authUser + "\x00" + pass))
			if _, _, err := t.cmd(235, "AUTH PLAIN <credentials hidden>", "AUTH PLAIN %s", ir); err != nil {
				return err
			}
		case has("LOGIN"):
			if _, _, err := t.cmd(334, "", "AUTH LOGIN %s", base64.StdEncoding.EncodeToString([]byte(o.authUser))); err != nil {
				return err
			}
			if _, _, err := t.cmd(235, "<password hidden>", "%s", base64.StdEncoding.EncodeToString([]byte(pass))); err != nil {
				return err
			}
		default:
			return fmt.Errorf("the server offers no AUTH PLAIN or LOGIN here (offered: %q); TLS first?", t.ext["AUTH"])
		}
	}
	if _, _, err := t.cmd(250, "", "MAIL FROM:<%s>", o.from); err != nil {
		return err
	}
	accepted := 0
	var rcptErr error
	for _, r := range o.to {
		if _, _, err := t.cmd(250, "", "RCPT TO:<%s>", r); err != nil {
			rcptErr = err
			continue
		}
		accepted++
		res.rcpts = append(res.rcpts, r)
	}
	if accepted == 0 {
		_, _, _ = t.cmd(221, "", "QUIT")
		return rcptErr
	}
	if _, _, err := t.cmd(354, "", "DATA"); err != nil {
		return err
	}
	msg := buildTestMessage(o, body)
	fmt.Fprintf(out, "C: <message, %d bytes>\n", len(msg))
	_ = t.conn.SetDeadline(time.Now().Add(o.timeout))
	dw := t.tp.DotWriter()
	if _, err := dw.Write(msg); err != nil {
		return err
	}
	if err := dw.Close(); err != nil {
		return err
	}
	fmt.Fprintln(out, "C: .")
	_, dataMsg, dataErr := t.reply(250)
	_, _, _ = t.cmd(221, "", "QUIT")
	if dataErr != nil {
		return dataErr
	}
	if m := queuedAs.FindStringSubmatch(dataMsg); m != nil {
		res.queueID = m[1]
	}
	return rcptErr
}

func buildTestMessage(o *sendOpts, body string) []byte {
	var b bytes.Buffer
	idb := make([]byte, 8)
	_, _ = rand.Read(idb)
	host := o.helo
	fmt.Fprintf(&b, "From: <%s>\r\n", o.from)
	fmt.Fprintf(&b, "To: %s\r\n", "<"+strings.Join(o.to, ">, <")+">")
	fmt.Fprintf(&b, "Subject: %s\r\n", o.subject)
	fmt.Fprintf(&b, "Date: %s\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", hex.EncodeToString(idb), host)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		b.WriteString(strings.TrimSuffix(sc.Text(), "\r"))
		b.WriteString("\r\n")
	}
	return b.Bytes()
}
