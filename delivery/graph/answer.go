package graph

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/delivery"
)

// Stage is the Result stage of everything Microsoft Graph answered.
const Stage = "graph"

// Error is an answer from Microsoft Graph other than 202 Accepted: the
// HTTP status, Graph's error code and message, and the request-id that
// Microsoft's support asks for.
type Error struct {
	Status    int
	Code      string // "ErrorInvalidRecipients", "ErrorAccessDenied"… ("" when the body was not Graph's error JSON)
	Message   string
	RequestID string
}

func (e *Error) Error() string {
	code := e.Code
	if code == "" {
		code = http.StatusText(e.Status)
	}
	s := fmt.Sprintf("Microsoft Graph %d %s", e.Status, code)
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RequestID != "" {
		s += " (request-id " + e.RequestID + ")"
	}
	return s
}

// answer is what Graph said to one POST.
type answer struct {
	status     int
	retryAfter string
	requestID  string // the request-id header
	body       []byte // at most maxAnswer bytes
	tls, ip    string
}

// maxAnswer bounds how much of an answer's body is read.
const maxAnswer = 64 << 10

// graphErrorJSON is Graph's error body.
type graphErrorJSON struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError struct {
			RequestID string `json:"request-id"`
			Date      string `json:"date"`
		} `json:"innerError"`
	} `json:"error"`
}

// err reads the answer as an *Error.
func (a *answer) err() *Error {
	e := &Error{Status: a.status, RequestID: a.requestID}
	var j graphErrorJSON
	if json.Unmarshal(a.body, &j) == nil && j.Error.Code != "" {
		e.Code, e.Message = clean(j.Error.Code, 100), clean(j.Error.Message, 500)
		if j.Error.InnerError.RequestID != "" {
			e.RequestID = j.Error.InnerError.RequestID
		}
	} else if len(a.body) > 0 {
		e.Message = clean(string(a.body), 200)
	}
	e.RequestID = clean(e.RequestID, 100)
	return e
}

// clean makes s one line of printable text of at most n bytes, fit for a
// reply that goes into logs, dead letters and DSNs.
func clean(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		i := n
		for i > 0 && s[i]&0xC0 == 0x80 { // not inside a UTF-8 sequence
			i--
		}
		s = s[:i] + "…"
	}
	return s
}

// outcome is the context result needs besides the answer.
type outcome struct {
	host        string
	size        int64    // the message's size (bytes, before encoding)
	limit       int64    // MaxRequestBytes
	senderFixed bool     // the mailbox is configured (Options.Sender), not the envelope sender's
	extra       []string // header recipients outside the envelope
	now         time.Time
}

// result maps Graph's answer to the Result every recipient gets (Graph is
// all-or-nothing per request). A 401 here is the second one, after the
// retry with a fresh token.
func result(a *answer, o outcome) delivery.Result {
	reply := func(code int, enh, text string) delivery.Result {
		return delivery.Result{Reply: &contracts.Reply{Code: code, Enhanced: enh, Text: text, Host: o.host}, Stage: Stage}
	}
	e := a.err()
	switch s := a.status; {
	case s == http.StatusAccepted:
		text := "accepted by Microsoft Graph (202)"
		if a.requestID != "" {
			text += " request-id " + clean(a.requestID, 100)
		}
		return reply(250, "2.0.0", text+extraNote(o.extra))
	case s == http.StatusUnauthorized, s == http.StatusForbidden:
		// The token is refused, or the application may not send as this
		// mailbox (no Mail.Send permission, an application access policy
		// that leaves the mailbox out): jetrelay's configuration, not the
		// message's fault. It waits in the queue.
		return delivery.Result{Err: &delivery.AuthError{Host: o.host, Err: e}, Stage: "auth"}
	case s == http.StatusRequestEntityTooLarge, e.Code == "ErrorMessageSizeExceeded":
		tl := &errTooLarge{size: o.size, limit: o.limit}
		return reply(552, "5.3.4", tl.Error()+" ("+e.Error()+")")
	case s == http.StatusTooManyRequests, (s == http.StatusServiceUnavailable || s == http.StatusGatewayTimeout) && a.retryAfter != "":
		r := reply(451, "4.7.0", e.Error()+" (throttled)")
		if at, ok := retryAfter(a.retryAfter, o.now); ok {
			r.Err = &delivery.RetryAfterError{At: at, Err: &delivery.ReplyError{Stage: Stage, Reply: *r.Reply}}
			r.Reply = nil
		}
		return r
	case s >= 500 && s < 600:
		r := reply(451, "4.3.0", e.Error())
		if at, ok := retryAfter(a.retryAfter, o.now); ok {
			r.Err = &delivery.RetryAfterError{At: at, Err: &delivery.ReplyError{Stage: Stage, Reply: *r.Reply}}
			r.Reply = nil
		}
		return r
	case s == http.StatusNotFound && o.senderFixed:
		// The configured mailbox does not exist (or is not reachable
		// through Graph): every message would fail the same way until an
		// operator fixes the route, so none is bounced.
		return reply(451, "4.3.5", e.Error()+" (the configured sender mailbox)")
	case s >= 400 && s < 500:
		code, enh := 550, "5.0.0"
		switch lc := strings.ToLower(e.Code); {
		case strings.Contains(lc, "recipient"):
			enh = "5.1.1"
		case strings.Contains(lc, "mime"), strings.Contains(lc, "base64"):
			code, enh = 554, "5.6.0"
		case s == http.StatusNotFound:
			enh = "5.1.8" // the envelope sender has no mailbox here
		}
		return reply(code, enh, e.Error())
	}
	// 1xx, 3xx, a 2xx other than 202: not an acceptance we know of.
	return reply(451, "4.3.0", "unexpected answer: "+e.Error())
}

// extraNote says, in the 202 reply, who else Graph sent the message to:
// the recipients of its header that this delivery was not for.
func extraNote(extra []string) string {
	if len(extra) == 0 {
		return ""
	}
	const show = 5
	list := extra
	if len(list) > show {
		list = list[:show]
	}
	s := fmt.Sprintf("; also sent to %d header recipient(s) outside this delivery: %s", len(extra), clean(strings.Join(list, ", "), 600))
	if len(extra) > show {
		s += fmt.Sprintf(" and %d more", len(extra)-show)
	}
	return s
}

// maxRetryAfter bounds a Retry-After (the plan turns a time past the
// queue lifetime into an expiry anyway).
const maxRetryAfter = 30 * 24 * time.Hour

// retryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return time.Time{}, false
		}
		d := maxRetryAfter
		if n < int64(maxRetryAfter/time.Second) {
			d = time.Duration(n) * time.Second
		}
		return now.Add(d), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return time.Time{}, false
	}
	if t.Before(now) {
		t = now
	}
	if t.After(now.Add(maxRetryAfter)) {
		t = now.Add(maxRetryAfter)
	}
	return t, true
}
