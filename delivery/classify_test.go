package delivery

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/delivery/oauth"
)

// TestClassifyFunnel covers every class of result a transport can report:
// replies of every kind at every stage that matters, and every error the
// transports and the router produce. Each must come out with the right
// class, reply code, enhanced code and dead-letter reason.
func TestClassifyFunnel(t *testing.T) {
	reply := func(code int, enh, text string) *contracts.Reply {
		return &contracts.Reply{Code: code, Enhanced: enh, Text: text, Host: "mx.example"}
	}
	replyErr := func(stage string, code int, enh, text string) error {
		return &ReplyError{Stage: stage, Reply: *reply(code, enh, text)}
	}
	at := time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC)
	opErr := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	tests := []struct {
		name      string
		res       Result
		class     Class
		code      int
		enh       string
		reason    string
		text      string // the recorded reply contains this
		throttled bool
		retryAt   time.Time
		auth      bool // the destination's authentication is failing
	}{
		// replies about the recipient
		{"250 to the final dot", Result{Reply: reply(250, "2.0.0", "queued"), Stage: "dot"}, Delivered, 250, "2.0.0", "", "queued", false, time.Time{}, false},
		{"450 to RCPT", Result{Reply: reply(450, "4.2.1", "busy"), Stage: "rcpt"}, Deferred, 450, "4.2.1", "", "busy", false, time.Time{}, false},
		{"550 to RCPT", Result{Reply: reply(550, "5.1.1", "unknown"), Stage: "rcpt"}, Failed, 550, "5.1.1", contracts.ReasonRejected, "unknown", false, time.Time{}, false},
		{"554 to the final dot", Result{Reply: reply(554, "5.6.0", "content rejected"), Stage: "dot"}, Failed, 554, "5.6.0", contracts.ReasonRejected, "content", false, time.Time{}, false},
		{"552 to RCPT means too many recipients", Result{Reply: reply(552, "5.5.3", "too many"), Stage: "rcpt"}, Deferred, 452, "4.5.3", "", "treated as temporary", false, time.Time{}, false},
		{"552 5.3.4 to RCPT is the size", Result{Reply: reply(552, "5.3.4", "too big"), Stage: "rcpt"}, Failed, 552, "5.3.4", contracts.ReasonRejected, "too big", false, time.Time{}, false},
		{"552 to MAIL", Result{Reply: reply(552, "5.3.4", "message size exceeds"), Stage: "mail"}, Failed, 552, "5.3.4", contracts.ReasonRejected, "size", false, time.Time{}, false},
		{"550 to MAIL", Result{Reply: reply(550, "5.7.1", "sender rejected"), Stage: "mail"}, Failed, 550, "5.7.1", contracts.ReasonRejected, "sender", false, time.Time{}, false},
		{"530 authentication required to MAIL", Result{Reply: reply(530, "5.7.57", "Client not authenticated to send mail"), Stage: "mail"}, Deferred, 530, "5.7.57", "", "not authenticated", false, time.Time{}, false},
		{"Exchange submission quota", Result{Reply: reply(554, "5.2.0", "STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message"), Stage: "dot"}, Deferred, 554, "5.2.0", "", "SubmissionQuota", true, time.Time{}, false},
		{"Gmail daily quota", Result{Reply: reply(550, "5.4.5", "Daily user sending quota exceeded."), Stage: "rcpt"}, Deferred, 550, "5.4.5", "", "quota", true, time.Time{}, false},
		{"432 4.3.2 throttling", Result{Reply: reply(432, "4.3.2", "STOREDRV.ClientSubmit; sender thread limit exceeded"), Stage: "rcpt"}, Deferred, 432, "4.3.2", "", "thread limit", true, time.Time{}, false},
		{"no reply for a recipient", Result{Stage: "rcpt"}, Deferred, 451, "4.4.2", "", "no reply", false, time.Time{}, false},
		// a refused step before any recipient
		{"554 greeting", Result{Err: replyErr("greeting", 554, "5.7.1", "go away"), Stage: "connect"}, Deferred, 451, "4.4.0", "", "mx.example said 554 5.7.1 go away", false, time.Time{}, false},
		{"421 greeting", Result{Err: replyErr("greeting", 421, "4.3.2", "shutting down"), Stage: "connect"}, Deferred, 421, "4.3.2", "", "shutting down", false, time.Time{}, false},
		{"535 AUTH", Result{Err: replyErr("auth", 535, "5.7.8", "bad credentials"), Stage: "connect"}, Deferred, 451, "4.4.0", "", "535 5.7.8 bad credentials at auth", false, time.Time{}, true},
		{"454 AUTH", Result{Err: replyErr("auth", 454, "4.7.0", "temporary authentication failure"), Stage: "connect"}, Deferred, 454, "4.7.0", "", "temporary authentication failure", false, time.Time{}, false},
		{"token refused again", Result{Err: &AuthError{Host: "smtp.office365.com", Err: errors.New("535 5.7.3 Authentication unsuccessful")}, Stage: "connect"}, Deferred, 451, "4.7.0", "", "authentication to smtp.office365.com failed: 535 5.7.3", false, time.Time{}, true},
		{"token endpoint down", Result{Err: &oauth.Error{Provider: "entra", Status: 503, Temporary: true}, Stage: "connect"}, Deferred, 451, "4.7.0", "", "HTTP 503", false, time.Time{}, false},
		{"bad client secret", Result{Err: fmt.Errorf("route x: %w", &oauth.Error{Provider: "entra", Status: 401, Code: "invalid_client", Description: "AADSTS7000215: Invalid client secret provided."}), Stage: "connect"}, Deferred, 451, "4.7.0", "", "AADSTS7000215", false, time.Time{}, true},
		{"500 EHLO", Result{Err: replyErr("ehlo", 500, "5.5.1", "what"), Stage: "connect"}, Deferred, 451, "4.4.0", "", "at ehlo", false, time.Time{}, false},
		{"454 STARTTLS", Result{Err: replyErr("starttls", 454, "4.7.0", "TLS not available"), Stage: "connect"}, Deferred, 454, "4.7.0", "", "TLS not available", false, time.Time{}, false},
		// routing
		{"domain not found", Result{Err: &RouteError{Kind: RouteNotFound, Domain: "nowhere.example"}, Stage: "route"}, Failed, 550, "5.1.2", contracts.ReasonRejected, "nowhere.example not found", false, time.Time{}, false},
		{"null MX", Result{Err: &RouteError{Kind: RouteNullMX, Domain: "nomail.example"}, Stage: "route"}, Failed, 556, "5.1.10", contracts.ReasonRejected, "null MX", false, time.Time{}, false},
		{"bad address literal", Result{Err: &RouteError{Kind: RouteBadLiteral, Domain: "[x]"}, Stage: "route"}, Failed, 550, "5.1.2", contracts.ReasonRejected, "bad address literal", false, time.Time{}, false},
		{"MX without addresses", Result{Err: &RouteError{Kind: RouteNoAddress, Domain: "a.example"}, Stage: "route"}, Deferred, 451, "4.4.4", "", "no address found", false, time.Time{}, false},
		{"DNS failure", Result{Err: dnsError("a.example", "MX", "resolver 10.0.0.53:53", &net.DNSError{Err: "server misbehaving", Name: "a.example", Server: "127.0.0.1:53"}), Stage: "route"}, Deferred, 451, "4.4.3", "", "MX lookup for a.example failed at resolver 10.0.0.53:53: server misbehaving", false, time.Time{}, false},
		{"DNS timeout", Result{Err: dnsError("a.example", "MX", "system resolver 127.0.0.53:53", &net.DNSError{Err: "i/o timeout", Name: "a.example", Server: "127.0.0.53:53", IsTimeout: true}), Stage: "route"}, Deferred, 451, "4.4.3", "", "MX lookup for a.example failed at system resolver 127.0.0.53:53: no answer in time (i/o timeout)", false, time.Time{}, false},
		{"NXDOMAIN", Result{Err: dnsError("a.example", "MX", "resolver 10.0.0.53:53", &net.DNSError{Err: "no such host", Name: "a.example", IsNotFound: true}), Stage: "route"}, Failed, 550, "5.1.2", contracts.ReasonRejected, "domain a.example not found: resolver 10.0.0.53:53 answered that it does not exist", false, time.Time{}, false},
		// the body
		{"body missing", Result{Err: fmt.Errorf("%w: %w", ErrBodyRead, broker.ErrBodyNotFound), Stage: "body"}, Failed, 554, "5.3.0", contracts.ReasonBodyMissing, "missing", false, time.Time{}, false},
		{"body store unavailable", Result{Err: fmt.Errorf("%w: %w", ErrBodyRead, broker.ErrUnavailable), Stage: "body"}, Deferred, 451, "4.3.0", "", "could not read the message body", false, time.Time{}, false},
		// TLS and authentication policy
		{"TLS required, not offered", Result{Err: &tlsError{host: "mx.example"}, Stage: "connect"}, Deferred, 451, "4.7.5", "", "does not offer STARTTLS", false, time.Time{}, false},
		{"TLS required, handshake failed", Result{Err: &tlsError{host: "mx.example", offered: true, err: fmt.Errorf("%w: x509: unknown authority", errTLSFailed)}, Stage: "connect"}, Deferred, 451, "4.7.5", "", "unknown authority", false, time.Time{}, false},
		{"implicit TLS handshake failed", Result{Err: fmt.Errorf("%w: remote error", errTLSFailed), Stage: "connect"}, Deferred, 451, "4.7.5", "", "remote error", false, time.Time{}, false},
		{"MTA-STS: no MX host matches", Result{Err: &stsError{domain: "a.example", result: "validation-failure", err: errors.New("no MX host (mx.evil.example) matches the policy's mx patterns (*.a.example)")}, Stage: "route"}, Deferred, 451, "4.7.5", "", "MTA-STS policy of a.example (enforce) not met: no MX host (mx.evil.example) matches", false, time.Time{}, false},
		{"MTA-STS: no STARTTLS", Result{Err: &stsError{domain: "a.example", host: "mx.a.example", result: "starttls-not-supported", err: &tlsError{host: "mx.a.example"}}, Stage: "connect"}, Deferred, 451, "4.7.5", "", "MTA-STS policy of a.example (enforce) not met by mx.a.example: TLS is required but mx.a.example does not offer STARTTLS (starttls-not-supported)", false, time.Time{}, false},
		{"MTA-STS: certificate for another name", Result{Err: &stsError{domain: "a.example", host: "mx.a.example", result: "certificate-host-mismatch", err: &tlsError{host: "mx.a.example", offered: true, err: fmt.Errorf("%w: %w", errTLSFailed, x509.HostnameError{Host: "mx.a.example", Certificate: &x509.Certificate{}})}}, Stage: "connect"}, Deferred, 451, "4.7.5", "", "(certificate-host-mismatch)", false, time.Time{}, false},
		{"credentials over plaintext", Result{Err: errPlainAuth{host: "mx.example"}, Stage: "connect"}, Deferred, 451, "4.7.0", "", "allow_plain_auth", false, time.Time{}, true},
		{"no AUTH mechanism", Result{Err: errNoAuthMechanism{host: "mx.example", offered: "CRAM-MD5"}, Stage: "connect"}, Deferred, 451, "4.7.0", "", "CRAM-MD5", false, time.Time{}, true},
		// connections
		{"backed off", Result{Err: errBackedOff{why: "connection refused"}, Stage: "connect"}, Deferred, 451, "4.4.1", "", "backed off", false, time.Time{}, false},
		{"worker stopping", Result{Err: context.Canceled, Stage: "connect"}, Deferred, 451, "4.4.7", "", "stopping", false, time.Time{}, false},
		{"connection refused", Result{Err: opErr(os.NewSyscallError("connect", syscall.ECONNREFUSED)), Stage: "connect"}, Deferred, 451, "4.4.1", "", "refused by mx.example", false, time.Time{}, false},
		{"timeout", Result{Err: opErr(os.ErrDeadlineExceeded), Stage: "connect"}, Deferred, 451, "4.4.2", "", "timeout", false, time.Time{}, false},
		{"connection lost", Result{Err: fmt.Errorf("dot: %w", io.ErrUnexpectedEOF), Stage: "data"}, Deferred, 451, "4.4.2", "", "connection lost", false, time.Time{}, false},
		{"connection reset", Result{Err: opErr(os.NewSyscallError("read", syscall.ECONNRESET)), Stage: "data"}, Deferred, 451, "4.4.2", "", "connection lost", false, time.Time{}, false},
		{"anything else", Result{Err: errors.New("malformed reply \"hello\""), Stage: "connect"}, Deferred, 451, "4.4.0", "", "malformed reply", false, time.Time{}, false},
		// the next hop names a time
		{"retry after, temporary", Result{Err: &RetryAfterError{At: at, Err: replyErr("send", 429, "4.7.0", "too many requests")}, Stage: "send"}, Deferred, 429, "4.7.0", "", "too many requests", false, at, false},
		{"retry after, worded as permanent", Result{Err: &RetryAfterError{At: at, Err: replyErr("send", 503, "5.3.0", "service unavailable")}, Stage: "send"}, Deferred, 503, "5.3.0", "", "service unavailable", false, at, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := classify(tc.res, "mx.example")
			if v.Class != tc.class || v.Reply == nil || v.Reply.Code != tc.code || v.Reply.Enhanced != tc.enh || v.Reason != tc.reason ||
				!strings.Contains(v.Reply.Text, tc.text) || v.Throttled != tc.throttled || !v.RetryAt.Equal(tc.retryAt) || v.AuthFailed != tc.auth {
				t.Fatalf("classify = %s %q reason %q throttled %v retry %v auth %v\nwant %s %d %s %q (containing %q) throttled %v retry %v auth %v",
					v.Class, v.Reply, v.Reason, v.Throttled, v.RetryAt, v.AuthFailed, tc.class, tc.code, tc.enh, tc.reason, tc.text, tc.throttled, tc.retryAt, tc.auth)
			}
			if v.Class == Failed && v.Reason == "" || v.Class != Failed && v.Reason != "" {
				t.Fatalf("reason %q for class %s", v.Reason, v.Class)
			}
			if v.Class != Delivered && v.Reply.Host == "" && tc.res.Stage != "route" {
				t.Fatalf("reply %q does not name the host", v.Reply)
			}
		})
	}
}
