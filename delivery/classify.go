package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/delivery/oauth"
)

// The classification funnel: every result a transport reports (a reply of
// any code, or an error) becomes a Verdict here and nowhere else, like the
// ingress's reply funnel. Errors that reach it carry their meaning in their
// type; the funnel decides the reply that is recorded for the recipient,
// whether the failure is temporary or permanent, and any time the next hop
// asked to be left alone until.

// Class is what became of a recipient in one attempt.
type Class int

const (
	// Deferred: try again later.
	Deferred Class = iota
	// Delivered: the next hop took responsibility (2xx).
	Delivered
	// Failed: permanently; dead-letter (and bounce) the recipient.
	Failed
)

func (c Class) String() string {
	return [...]string{"deferred", "delivered", "failed"}[c]
}

// Verdict is the funnel's decision for one recipient.
type Verdict struct {
	Class Class
	// Reply is what is recorded and reported: the next hop's reply, or a
	// reply that describes the condition (code 451/5xx, enhanced code).
	Reply *contracts.Reply
	// Reason is the dead-letter reason of a Failed recipient.
	Reason string
	// RetryAt is the earliest time the next hop asked to be tried again
	// (zero: no request; the retry schedule decides).
	RetryAt time.Time
	// Throttled: the next hop limits our sending rate or quota.
	Throttled bool
	// AuthFailed: jetrelay could not authenticate to the next hop (its
	// credentials or token refused, or no token to be had for a reason an
	// operator must fix). Every message to that destination will fail the
	// same way until then, so it is reported as the destination's health.
	AuthFailed bool
}

// AuthError is a next hop's refusal of jetrelay's credentials (a refused
// token, an HTTP 401 or 403 from an API), after the one retry with a fresh
// token. It is temporary for the message, which waits in the queue.
type AuthError struct {
	Host string
	Err  error
}

func (e *AuthError) Error() string {
	return "authentication to " + e.Host + " failed: " + e.Err.Error()
}
func (e *AuthError) Unwrap() error { return e.Err }

// ReplyError is a reply that ended a step of the dialogue for every
// recipient at once (a refused greeting, EHLO, STARTTLS or AUTH).
type ReplyError struct {
	Stage string
	Reply contracts.Reply
}

func (e *ReplyError) Error() string { return e.Stage + ": " + e.Reply.String() }

// RouteError is a failure to find the next hop.
type RouteError struct {
	Kind   RouteFailure
	Domain string
	Err    error // the resolver's error, if any
	// Resolver names the DNS server that answered or failed
	// ("resolver 10.0.0.53:53", "system resolver 127.0.0.53:53"), and
	// What the lookup ("MX", "address").
	Resolver, What string
}

// RouteFailure says why routing failed.
type RouteFailure int

const (
	// RouteNotFound: the domain does not exist (NXDOMAIN, no address).
	RouteNotFound RouteFailure = iota
	// RouteNullMX: the domain publishes a null MX (RFC 7505).
	RouteNullMX
	// RouteBadLiteral: an address literal that is not an address.
	RouteBadLiteral
	// RouteNoAddress: MX hosts without addresses.
	RouteNoAddress
	// RouteDNS: the lookup failed (SERVFAIL, timeout, refused).
	RouteDNS
)

func (e *RouteError) Error() string {
	at := ""
	if e.Resolver != "" {
		at = " (" + e.Resolver + ")"
	}
	if e.Err != nil {
		return fmt.Sprintf("routing %s%s: %v", e.Domain, at, e.Err)
	}
	return "routing " + e.Domain + at
}

// RetryAfterError is a failure after which the next hop asked not to be
// tried before At (an HTTP 429 or 503 with Retry-After).
type RetryAfterError struct {
	At  time.Time
	Err error
}

func (e *RetryAfterError) Error() string { return e.Err.Error() }
func (e *RetryAfterError) Unwrap() error { return e.Err }

// tlsError: the TLS policy could not be met with a host.
type tlsError struct {
	host    string
	offered bool // the host offered STARTTLS (else: it did not)
	err     error
}

func (e *tlsError) Error() string {
	if !e.offered {
		return "TLS is required but " + e.host + " does not offer STARTTLS"
	}
	return "TLS is required but failed with " + e.host + ": " + e.err.Error()
}
func (e *tlsError) Unwrap() error { return e.err }

// errTLSFailed marks a failed STARTTLS or handshake, after which an
// opportunistic policy may reconnect without TLS.
var errTLSFailed = errors.New("TLS failed")

// errPlainAuth: credentials would go to a host without TLS.
type errPlainAuth struct{ host string }

func (e errPlainAuth) Error() string {
	return "refusing to send credentials to " + e.host + " without TLS (set allow_plain_auth to permit it)"
}

// errNoAuthMechanism: the host offers no mechanism jetrelay can use.
type errNoAuthMechanism struct{ host, offered string }

func (e errNoAuthMechanism) Error() string {
	return fmt.Sprintf("%s offers no supported AUTH mechanism (it offers %q)", e.host, e.offered)
}

// errBackedOff: the destination failed a moment ago and is not tried.
type errBackedOff struct{ why string }

func (e errBackedOff) Error() string {
	return "destination backed off after a recent failure: " + e.why
}

// ErrBodyRead wraps a failure to read the message from the broker (a
// transport wraps it around the cause: broker.ErrBodyNotFound when the
// body is gone, which dead-letters the message as body-missing).
var ErrBodyRead = errors.New("reading the message body failed")

// errNoReply: the next hop gave no reply for a recipient.
var errNoReply = errors.New("no reply for this recipient")

// classify is the funnel. host names the next hop for replies that do not
// say it.
func classify(r Result, host string) Verdict {
	if r.Err == nil {
		if r.Reply == nil {
			return classify(Result{Err: errNoReply, Stage: r.Stage}, host)
		}
		return classifyReply(r.Stage, r.Reply)
	}
	var v Verdict
	var ra *RetryAfterError
	if errors.As(r.Err, &ra) {
		v = classify(Result{Err: ra.Err, Stage: r.Stage}, host)
		v.RetryAt = ra.At
		if v.Class == Failed {
			// The next hop asked to be tried again: not a final answer.
			v.Class, v.Reason = Deferred, ""
		}
		return v
	}
	temp := func(enh, text string) Verdict {
		return Verdict{Class: Deferred, Reply: &contracts.Reply{Code: 451, Enhanced: enh, Text: text, Host: host}}
	}
	var re *ReplyError
	var ro *RouteError
	var ae *AuthError
	var oe *oauth.Error
	var te *tlsError
	var se *stsError
	var pa errPlainAuth
	var na errNoAuthMechanism
	var bo errBackedOff
	var ne net.Error
	switch err := r.Err; {
	case errors.As(err, &ae):
		v := temp("4.7.0", ae.Error())
		v.AuthFailed = true
		return v
	case errors.As(err, &oe):
		// No token: the message waits whatever the reason; a reason an
		// operator must fix (bad secret, no consent) marks the
		// destination's authentication as failing.
		v := temp("4.7.0", "could not get an OAuth token: "+oe.Error())
		v.AuthFailed = !oe.Temporary
		return v
	case errors.As(err, &re):
		rep := re.Reply
		if rep.Host == "" {
			rep.Host = host
		}
		switch re.Stage {
		case "greeting", "ehlo", "helo", "starttls", "auth":
			// A host that refuses to talk, even with 5xx (Postfix's
			// smtp_skip_5xx_greeting), is skipped; if all are, the message
			// is deferred, not bounced. A refused AUTH is a configuration
			// problem that a retry after fixing it must survive.
			v := Verdict{Class: Deferred, Reply: &rep}
			if rep.Code/100 != 4 {
				v = temp("4.4.0", fmt.Sprintf("%s said %s at %s", rep.Host, strings.TrimSpace(rep.String()), re.Stage))
			}
			v.AuthFailed = re.Stage == "auth" && rep.Code/100 == 5
			return v
		}
		return classifyReply(re.Stage, &rep)
	case errors.As(err, &ro):
		return classifyRoute(ro)
	case errors.Is(err, ErrBodyRead):
		if errors.Is(err, broker.ErrBodyNotFound) {
			v := temp("4.3.0", "the message body is missing from the body store: "+err.Error())
			v.Class, v.Reason = Failed, contracts.ReasonBodyMissing
			v.Reply.Code, v.Reply.Enhanced = 554, "5.3.0"
			return v
		}
		return temp("4.3.0", "could not read the message body: "+err.Error())
	case errors.As(err, &se):
		// The recipient domain's MTA-STS policy (enforce) is not met: no
		// allowed MX host, or no valid TLS with it. Temporary: the domain
		// or its hosts may be fixed, and the policy says to wait.
		return temp("4.7.5", se.Error())
	case errors.As(err, &te):
		return temp("4.7.5", te.Error())
	case errors.As(err, &pa):
		v := temp("4.7.0", pa.Error())
		v.AuthFailed = true
		return v
	case errors.As(err, &na):
		v := temp("4.7.0", na.Error())
		v.AuthFailed = true
		return v
	case errors.As(err, &bo):
		return temp("4.4.1", bo.Error())
	case errors.Is(err, errNoReply):
		return temp("4.4.2", "no reply for this recipient")
	case errors.Is(err, context.Canceled):
		return temp("4.4.7", "delivery interrupted: the worker is stopping")
	case errors.Is(err, errTLSFailed):
		return temp("4.7.5", "TLS with "+host+" failed: "+err.Error())
	case errors.Is(err, syscall.ECONNREFUSED):
		return temp("4.4.1", "connection refused by "+host)
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return temp("4.4.2", "timeout talking to "+host+": "+err.Error())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return temp("4.4.2", "connection lost with "+host+": "+err.Error())
	}
	// Anything else is temporary: an unknown failure must never bounce a
	// message that a retry would deliver.
	return temp("4.4.0", r.Err.Error())
}

// classifyReply reads a reply to a step that concerns the recipient
// (MAIL, RCPT, DATA, the final dot, or a transport's equivalent).
func classifyReply(stage string, r *contracts.Reply) Verdict {
	switch r.Code / 100 {
	case 2:
		return Verdict{Class: Delivered, Reply: r}
	case 4:
		return Verdict{Class: Deferred, Reply: r, Throttled: throttling(r)}
	case 5:
	default:
		// A reply without a valid code: a condition that stands in for one.
		return Verdict{Class: Deferred, Reply: r}
	}
	switch {
	case stage == "rcpt" && r.Code == 552 && r.Enhanced != "5.3.4":
		// RFC 5321 §4.5.3.1.10: 552 to RCPT means "too many recipients"
		// in practice; the rest go in the next transaction.
		cp := *r
		cp.Code, cp.Enhanced = 452, "4"+strings.TrimPrefix(r.Enhanced, "5")
		cp.Text = "(552 to RCPT treated as temporary) " + r.Text
		return Verdict{Class: Deferred, Reply: &cp}
	case throttling(r):
		// A provider's sending limit, worded as a permanent failure: the
		// message is fine, it has to wait.
		return Verdict{Class: Deferred, Reply: r, Throttled: true}
	case (stage == "mail" || stage == "rcpt") && r.Code == 530 && (r.Enhanced == "5.7.0" || r.Enhanced == "5.7.57"):
		// Authentication required: jetrelay's own configuration (no or
		// wrong credentials for this next hop), not the message's fault;
		// it waits in the queue for the operator to fix it.
		return Verdict{Class: Deferred, Reply: r}
	}
	return Verdict{Class: Failed, Reply: r, Reason: contracts.ReasonRejected}
}

// throttling recognises replies by which providers limit how much a
// sender may send, some of which are worded as permanent failures
// (Exchange Online's "554 5.2.0 STOREDRV.Submission.Exception:
// SubmissionQuotaExceededException", Gmail's "550 5.4.5 Daily user sending
// quota exceeded").
func throttling(r *contracts.Reply) bool {
	t := strings.ToLower(r.Text)
	switch {
	case strings.Contains(t, "quotaexceeded"), strings.Contains(t, "ratelimitexceeded"),
		strings.Contains(t, "sending quota exceeded"), strings.Contains(t, "rate limit exceeded"):
		return true
	case r.Enhanced == "5.4.5" || r.Enhanced == "4.4.5":
		return true
	case r.Code == 432 && r.Enhanced == "4.3.2":
		return true
	case strings.HasPrefix(r.Enhanced, "4.7.") && strings.Contains(t, "throttl"):
		return true
	}
	return false
}

// classifyRoute reads a routing failure: a domain that does not exist or
// takes no mail is permanent, a lookup that failed is temporary.
func classifyRoute(e *RouteError) Verdict {
	perm := func(code int, enh, text string) Verdict {
		return Verdict{Class: Failed, Reason: contracts.ReasonRejected, Reply: &contracts.Reply{Code: code, Enhanced: enh, Text: text}}
	}
	switch e.Kind {
	case RouteNotFound:
		if e.Resolver != "" {
			return perm(550, "5.1.2", "domain "+e.Domain+" not found: "+e.Resolver+" answered that it does not exist")
		}
		return perm(550, "5.1.2", "domain "+e.Domain+" not found")
	case RouteNullMX:
		return perm(556, "5.1.10", e.Domain+" does not accept mail (null MX)")
	case RouteBadLiteral:
		return perm(550, "5.1.2", "bad address literal "+e.Domain)
	case RouteNoAddress:
		return Verdict{Class: Deferred, Reply: &contracts.Reply{Code: 451, Enhanced: "4.4.4", Text: "no address found for the MX hosts of " + e.Domain}}
	}
	what, at := e.What, e.Resolver
	if what == "" {
		what = "DNS"
	}
	if at == "" {
		at = "the resolver"
	}
	return Verdict{Class: Deferred, Reply: &contracts.Reply{Code: 451, Enhanced: "4.4.3",
		Text: fmt.Sprintf("%s lookup for %s failed at %s: %s", what, e.Domain, at, dnsReason(e.Err))}}
}

// dnsError turns a lookup failure into a RouteError: NXDOMAIN means the
// domain does not exist, anything else that the lookup failed. resolver
// names the server asked (see Router.resolverOf).
func dnsError(domain, what, resolver string, err error) error {
	if isNotFound(err) {
		return &RouteError{Kind: RouteNotFound, Domain: domain, Err: err, Resolver: resolver, What: what}
	}
	return &RouteError{Kind: RouteDNS, Domain: domain, Err: err, Resolver: resolver, What: what}
}

// dnsReason is what went wrong with a lookup, without Go's "lookup
// <name> on <server>:" in front: that names the server of
// /etc/resolv.conf even when another resolver was asked.
func dnsReason(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		switch {
		case de.IsTimeout:
			return "no answer in time (" + de.Err + ")"
		case de.Err != "":
			return de.Err
		}
	}
	if err == nil {
		return "no answer"
	}
	return err.Error()
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}
