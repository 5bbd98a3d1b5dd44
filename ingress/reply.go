package ingress

import (
	"context"
	"errors"
	"net"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/broker"
)

// Conditions a session can run into. reply maps each to its SMTP reply;
// they are wrapped with detail for the log, never shown to the client.
var (
	ErrRelayDenied = errors.New("relay access denied")
	// ErrRelayDeniedAuthTLS: a client that could relay after AUTH was not
	// offered AUTH, for want of TLS.
	ErrRelayDeniedAuthTLS = errors.New("relay access denied, AUTH only over TLS")
	ErrBadSender          = errors.New("bad sender address syntax")
	ErrBadRecipient       = errors.New("bad recipient address syntax")
	ErrNeedSMTPUTF8       = errors.New("non-ASCII address without SMTPUTF8")
	ErrBareLineEnding     = errors.New("bare CR or LF in message data")
	ErrMailLoop           = errors.New("too many Received headers: mail loop")
	ErrTooLarge           = errors.New("message exceeds the size limit")
	ErrAuthRequired       = errors.New("authentication required")
	ErrAuthFailed         = errors.New("authentication failed")
	ErrAuthPlaintext      = errors.New("authentication over plaintext refused")
	// ErrAuthPlaintextNetwork: allow_insecure_auth is set, but the client
	// is not in insecure_auth_networks.
	ErrAuthPlaintextNetwork = errors.New("authentication over plaintext refused for this client address")
	ErrAuthLockedOut        = errors.New("too many failed authentications")
	// ErrUserLockedOut: the user is locked out (failures from anywhere),
	// the client address is not.
	ErrUserLockedOut     = errors.New("too many failed authentications for this user")
	ErrTLSRequired       = errors.New("STARTTLS required")
	ErrSenderNotAllowed  = errors.New("sender not allowed for this user")
	ErrShuttingDown      = errors.New("ingress shutting down")
	ErrNoValidRecipients = errors.New("no valid recipients")
	ErrReadTimeout       = errors.New("client read timeout")
	ErrClientGone        = errors.New("client connection lost")
	ErrTooManyErrors     = errors.New("too many errors")
)

// Replies, one per row of design.md's table and per condition above.
var (
	replyRelayDenied  = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relay access denied"}
	replyRelayNoAuth  = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relay access denied; AUTH is offered only over TLS: use STARTTLS (plaintext AUTH: ingress.allow_insecure_auth, ingress.insecure_auth_networks)"}
	replyBadSender    = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "Bad sender address syntax"}
	replyBadRcpt      = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax"}
	replyNeedUTF8     = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7}, Message: "Non-ASCII address requires SMTPUTF8"}
	replyBareLF       = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Bare CR or LF in message data is not allowed; use CRLF line endings"}
	replyMailLoop     = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 4, 6}, Message: "Too many Received headers: mail loop detected"}
	replyTooLarge     = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message size exceeds fixed limit"}
	replyAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	replyAuthFailed   = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	replyAuthPlain    = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for authentication: use STARTTLS, or allow plaintext AUTH with ingress.allow_insecure_auth"}
	replyAuthPlainNet = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for authentication from this address: use STARTTLS, or add it to ingress.insecure_auth_networks"}
	replyLockedOut    = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentications, try again later"}
	replyUserLocked   = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentications for this user, try again later"}
	replyTLSRequired  = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Must issue a STARTTLS command first"}
	replySenderDenied = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender address not allowed for this user"}
	replyShutdown     = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, try again later"}
	replyUnavailable  = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary queue failure, try again later"}
	replyNoStorage    = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage, try again later"}
	replyNoRcpts      = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
	replyTimeout      = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Timeout exceeded, closing connection"}
	replyClientGone   = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 0}, Message: "Connection lost"}
	replyTooManyErrs  = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many errors, closing connection"}
	replyLineTooLong  = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Line too long"}
)

// reply is the one funnel from an internal error to an SMTP reply. It
// returns nil for nil. Anything unknown is a temporary 451 4.3.0: a bug or
// an unforeseen condition must make the client retry, never bounce.
func reply(err error) *smtp.SMTPError {
	if err == nil {
		return nil
	}
	// Replies produced by go-smtp itself (e.g. ErrDataTooLarge from the DATA
	// reader) pass through, but only as the exact values: a wrapped one is
	// also recognised, so the caller can add context freely.
	var se *smtp.SMTPError
	switch {
	case errors.Is(err, ErrRelayDenied):
		return replyRelayDenied
	case errors.Is(err, ErrRelayDeniedAuthTLS):
		return replyRelayNoAuth
	case errors.Is(err, ErrBadSender):
		return replyBadSender
	case errors.Is(err, ErrBadRecipient):
		return replyBadRcpt
	case errors.Is(err, ErrNeedSMTPUTF8):
		return replyNeedUTF8
	case errors.Is(err, ErrBareLineEnding):
		return replyBareLF
	case errors.Is(err, ErrMailLoop):
		return replyMailLoop
	case errors.Is(err, ErrTooLarge), errors.Is(err, smtp.ErrDataTooLarge):
		return replyTooLarge
	case errors.Is(err, ErrAuthRequired):
		return replyAuthRequired
	case errors.Is(err, ErrAuthFailed):
		return replyAuthFailed
	case errors.Is(err, ErrAuthPlaintext):
		return replyAuthPlain
	case errors.Is(err, ErrAuthPlaintextNetwork):
		return replyAuthPlainNet
	case errors.Is(err, ErrAuthLockedOut):
		return replyLockedOut
	case errors.Is(err, ErrUserLockedOut):
		return replyUserLocked
	case errors.Is(err, ErrTLSRequired):
		return replyTLSRequired
	case errors.Is(err, ErrSenderNotAllowed):
		return replySenderDenied
	case errors.Is(err, ErrShuttingDown):
		return replyShutdown
	case errors.Is(err, ErrNoValidRecipients):
		return replyNoRcpts
	case errors.Is(err, ErrTooManyErrors):
		return replyTooManyErrs
	case errors.Is(err, smtp.ErrTooLongLine):
		// go-smtp limits command lines only (third_party/go-smtp), so
		// no message should get here; if one does, a retry would fail
		// the same way.
		return replyLineTooLong
	case errors.Is(err, broker.ErrNoStorage):
		// Before ErrUnavailable, which it comes with.
		return replyNoStorage
	case errors.Is(err, broker.ErrUnavailable), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, context.Canceled):
		// Before the timeout case: a context deadline is also a net.Error.
		return replyUnavailable
	case errors.Is(err, ErrReadTimeout), isNetTimeout(err):
		return replyTimeout
	case errors.Is(err, ErrClientGone), errors.Is(err, smtp.ErrDataReset):
		return replyClientGone
	case errors.As(err, &se):
		return se
	}
	return replyUnavailable
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// asError turns a reply into the error value go-smtp wants: a bare
// *smtp.SMTPError (never wrapped), or a nil interface for success.
func asError(r *smtp.SMTPError) error {
	if r == nil {
		return nil
	}
	return r
}

// queuedReply is the success reply to DATA/BDAT. go-smtp sends the code
// and text of an *smtp.SMTPError as they are, which is how the queue ID
// gets into the 250 line.
func queuedReply(id string) error {
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "queued as " + id}
}
