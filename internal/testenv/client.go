package testenv

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Mail is a message to submit to the relay.
type Mail struct {
	From  string
	To    []string
	Data  []byte
	Helo  string
	Local string // local address to bind, e.g. "127.0.0.2" (default: any)
	// StartTLS upgrades with this configuration before MAIL.
	StartTLS *tls.Config
	// ImplicitTLS connects with TLS from the first byte.
	ImplicitTLS *tls.Config
	// Auth logs in before MAIL.
	Auth     func(c *smtp.Client) error
	MailOpts *smtp.MailOptions
	RcptOpts *smtp.RcptOptions
}

// SendResult is the server's answer to one submission.
type SendResult struct {
	QueueID string // from "queued as <id>"
	Reply   string // the final reply text
}

var queuedRe = regexp.MustCompile(`queued as ([0-9A-Z]{16})`)

// Send submits a message with go-smtp's client (an independent SMTP
// implementation) and returns the queue ID from the 250 reply. Any SMTP
// error comes back as *smtp.SMTPError.
func Send(addr string, m Mail) (*SendResult, error) {
	c, err := dialClient(addr, m)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	helo := m.Helo
	if helo == "" {
		helo = "client.test"
	}
	if err := c.Hello(helo); err != nil {
		return nil, err
	}
	if m.Auth != nil {
		if err := m.Auth(c); err != nil {
			return nil, err
		}
	}
	if err := c.Mail(m.From, m.MailOpts); err != nil {
		return nil, err
	}
	for _, r := range m.To {
		if err := c.Rcpt(r, m.RcptOpts); err != nil {
			return nil, err
		}
	}
	w, err := c.Data()
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(m.Data); err != nil {
		return nil, err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return nil, err
	}
	res := &SendResult{Reply: resp.StatusText}
	if sm := queuedRe.FindStringSubmatch(resp.StatusText); sm != nil {
		res.QueueID = sm[1]
	}
	_ = c.Quit()
	if res.QueueID == "" {
		return res, fmt.Errorf("250 without a queue ID: %q", resp.StatusText)
	}
	return res, nil
}

func dialClient(addr string, m Mail) (*smtp.Client, error) {
	d := &netDialer{local: m.Local}
	conn, err := d.dial(addr)
	if err != nil {
		return nil, err
	}
	if m.ImplicitTLS != nil {
		tc := tls.Client(conn, m.ImplicitTLS)
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, err
		}
		return smtp.NewClient(tc), nil
	}
	if m.StartTLS != nil {
		return smtp.NewClientStartTLS(conn, m.StartTLS)
	}
	return smtp.NewClient(conn), nil
}

// SMTPCode returns the reply code of an error from Send (0 if it is not
// an SMTP reply).
func SMTPCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// RFC5322 builds an RFC 5322 message with the given subject and body and
// the headers the relay would otherwise add (Date, Message-ID), so that
// what arrives below the Received header is byte-identical to it.
func RFC5322(subject string, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: <sender@client.test>\r\nTo: <rcpt@example.test>\r\nSubject: %s\r\n", subject)
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <%d.%s@client.test>\r\n\r\n", time.Now().Format(time.RFC1123Z), time.Now().UnixNano(), strings.ReplaceAll(subject, " ", "-"))
	b.Write(body)
	return b.Bytes()
}

// Body returns n bytes (n >= 2) of printable text in CRLF-terminated
// lines of at most 78 characters.
func Body(n int) []byte {
	b := make([]byte, n)
	col := 0
	for i := range b {
		if col == 78 {
			b[i], col = '\r', -1
		} else if col == -1 {
			b[i], col = '\n', 0
			continue
		} else {
			b[i] = byte('a' + (i % 26))
			col++
		}
	}
	// End with CRLF, without a line of length 0 issue: overwrite the tail.
	b[n-2], b[n-1] = '\r', '\n'
	if n >= 3 && b[n-3] == '\r' {
		b[n-3] = 'z'
	}
	return b
}

// Transaction is a submission paused before the message is sent.
type Transaction struct {
	c *smtp.Client
	w io.WriteCloser
}

// Begin opens a session and sends MAIL, RCPT and DATA.
func Begin(addr, from string, to []string) (*Transaction, error) {
	c, err := dialClient(addr, Mail{})
	if err != nil {
		return nil, err
	}
	if err := c.Hello("client.test"); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.Mail(from, nil); err != nil {
		c.Close()
		return nil, err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			c.Close()
			return nil, err
		}
	}
	w, err := c.Data()
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Transaction{c: c, w: w}, nil
}

// Finish sends the message and the final dot and returns the reply.
func (tx *Transaction) Finish(data []byte) (*SendResult, error) {
	defer tx.c.Close()
	if _, err := tx.w.Write(data); err != nil {
		return nil, err
	}
	resp, err := tx.w.(*smtp.DataCommand).CloseWithResponse()
	if err != nil {
		return nil, err
	}
	res := &SendResult{Reply: resp.StatusText}
	if sm := queuedRe.FindStringSubmatch(resp.StatusText); sm != nil {
		res.QueueID = sm[1]
	}
	return res, nil
}
