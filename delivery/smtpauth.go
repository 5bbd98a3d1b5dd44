package delivery

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"strings"
)

// SASL with an OAuth 2.0 bearer token: XOAUTH2 (Microsoft 365, Google)
// and OAUTHBEARER (RFC 7628, Google and others). The token goes in the
// response to the server's 334, never in the AUTH command line, whose
// length some servers limit.

// errTokenRefused is the server's refusal of a bearer token (535, or a
// 334 challenge carrying the error JSON); the caller gets a fresh token
// and tries once more.
type errTokenRefused struct{ reply *ReplyError }

func (e errTokenRefused) Error() string { return "token refused: " + e.reply.Reply.String() }
func (e errTokenRefused) Unwrap() error { return e.reply }

// bearerMechanism picks the mechanism: XOAUTH2 where offered, else
// OAUTHBEARER, else "".
func (c *smtpConn) bearerMechanism() string {
	mechs := strings.Fields(strings.ToUpper(c.ext["AUTH"]))
	for _, want := range []string{"XOAUTH2", "OAUTHBEARER"} {
		for _, m := range mechs {
			if m == want {
				return want
			}
		}
	}
	return ""
}

// authBearer authenticates user with an access token.
func (c *smtpConn) authBearer(ctx context.Context, user, token string) error {
	mech := c.bearerMechanism()
	var resp string
	switch mech {
	case "XOAUTH2":
		resp = "user=" + user + "\x01auth=Bearer " + token + "\x01\x01"
	case "OAUTHBEARER":
		host, port, _ := net.SplitHostPort(c.addr)
		if c.host != "" {
			host = c.host
		}
		resp = "n,a=" + saslName(user) + ",\x01host=" + host + "\x01port=" + port + "\x01auth=Bearer " + token + "\x01\x01"
	default:
		return errNoAuthMechanism{host: c.host, offered: c.ext["AUTH"]}
	}
	if _, err := c.cmd(ctx, c.to.Command, 334, "auth", "AUTH %s", mech); err != nil {
		return err
	}
	_, err := c.cmd(ctx, c.to.Command, 235, "auth", "%s", base64.StdEncoding.EncodeToString([]byte(resp)))
	var re *ReplyError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &re) && re.Reply.Code == 334:
		// The token was refused with an error challenge (a JSON status);
		// the exchange ends with an empty response (XOAUTH2) or a ^A
		// (OAUTHBEARER), to which the server answers 535.
		final := ""
		if mech == "OAUTHBEARER" {
			final = base64.StdEncoding.EncodeToString([]byte{1})
		}
		if _, ferr := c.cmd(ctx, c.to.Command, 235, "auth", "%s", final); ferr != nil && !errors.As(ferr, &re) {
			return ferr
		}
		return errTokenRefused{reply: re}
	case errors.As(err, &re) && re.Reply.Code == 535:
		return errTokenRefused{reply: re}
	}
	return err
}

// saslName escapes a user name for a GS2 header (RFC 5801 §4).
func saslName(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}
