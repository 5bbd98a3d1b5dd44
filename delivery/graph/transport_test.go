package graph_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/delivery"
	"github.com/jetrelay/jetrelay/delivery/graph"
	"github.com/jetrelay/jetrelay/delivery/oauth"
	"github.com/jetrelay/jetrelay/internal/testenv"
	"github.com/rs/zerolog"
)

// tokens is a fake oauth.Source: "tok-1", then "tok-2" after an
// Invalidate, and so on.
type tokens struct {
	mu          sync.Mutex
	issued      int
	cur         string
	invalidated []string
	err         error
}

func (s *tokens) Token(context.Context) (oauth.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return oauth.Token{}, s.err
	}
	if s.cur == "" {
		s.issued++
		s.cur = fmt.Sprintf("tok-%d", s.issued)
	}
	return oauth.Token{Value: s.cur, Expiry: time.Now().Add(time.Hour)}, nil
}

func (s *tokens) Invalidate(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalidated = append(s.invalidated, v)
	if v == s.cur {
		s.cur = ""
	}
}

func (s *tokens) Name() string { return "fake tenant" }

func (s *tokens) Invalidated() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.invalidated)
}

// logBuf is a zerolog destination safe for concurrent deliveries.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type env struct {
	srv    *testenv.GraphServer
	tokens *tokens
	tr     *graph.Transport
	log    *logBuf
	host   string
}

func newEnv(t *testing.T, so testenv.GraphOptions, o graph.Options) *env {
	t.Helper()
	e := &env{srv: testenv.NewGraphServer(t, so), tokens: &tokens{}, log: &logBuf{}}
	if o.BaseURL == "" {
		o.BaseURL = e.srv.BaseURL
	}
	o.HTTPClient = e.srv.Client
	if o.Tokens == nil {
		o.Tokens = e.tokens
	}
	o.Log = zerolog.New(e.log)
	e.tr = graph.New(o)
	u, _ := url.Parse(e.srv.BaseURL)
	e.host = u.Host
	return e
}

const msgText = "Received: from app (app [10.0.0.5]) by relay (jetrelay) with ESMTP id 0123456789ABCDEF\r\n" +
	"From: SQL Server <sql@corp.example>\r\n" +
	"To: Alice <alice@corp.example>\r\n" +
	"Cc: bob@corp.example\r\n" +
	"Subject: nightly report\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"All jobs succeeded.\r\nBcc: this line is body, not header\r\n"

func request(from, msg string, rcpts ...string) *delivery.Request {
	job := &contracts.Job{QueueID: "0123456789ABCDEF", From: from, Body: contracts.Body{Size: int64(len(msg))}, Attempt: 1}
	req := &delivery.Request{Job: job, Dest: &delivery.Destination{Key: "route:graph", Kind: "route"}}
	for _, r := range rcpts {
		req.Rcpts = append(req.Rcpts, contracts.Recipient{Addr: r})
	}
	job.Rcpts = req.Rcpts
	req.Body = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(msg)), nil }
	return req
}

// same checks that every recipient got one result and returns it.
func same(t *testing.T, rep *delivery.Report, n int) delivery.Result {
	t.Helper()
	if len(rep.Results) != n {
		t.Fatalf("%d results, want %d", len(rep.Results), n)
	}
	for _, r := range rep.Results[1:] {
		if r.Reply != rep.Results[0].Reply || r.Err != rep.Results[0].Err || r.Stage != rep.Results[0].Stage {
			t.Fatalf("results differ: %+v", rep.Results)
		}
	}
	return rep.Results[0]
}

func TestDeliverAccepted(t *testing.T) {
	e := newEnv(t, testenv.GraphOptions{}, graph.Options{})
	rep := e.tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example", "Bob@Corp.example"))
	r := same(t, rep, 2)
	if r.Err != nil || r.Reply == nil || r.Reply.Code != 250 || r.Reply.Enhanced != "2.0.0" || r.Stage != graph.Stage ||
		!strings.HasPrefix(r.Reply.Text, "accepted by Microsoft Graph (202) request-id ") || r.Reply.Host != e.host {
		t.Fatalf("result %+v reply %+v", r, r.Reply)
	}
	enc := base64.StdEncoding.EncodedLen(len(msgText))
	if rep.Host != e.host || !slices.Equal(rep.Tried, []string{e.host}) || rep.Bytes != int64(enc) || rep.ReportsSuccess ||
		!strings.HasPrefix(rep.TLS, "TLS") || rep.IP != e.host || rep.Start.IsZero() || rep.Duration <= 0 {
		t.Fatalf("report %+v", rep)
	}
	msgs := e.srv.WaitFor(t, 1, 5*time.Second)
	m := msgs[0]
	if string(m.MIME) != msgText || m.Mailbox != "sql@corp.example" || m.Token != "tok-1" {
		t.Fatalf("server got mailbox %q token %q\n%q", m.Mailbox, m.Token, m.MIME)
	}
	if !slices.Equal(m.To, []string{"alice@corp.example"}) || !slices.Equal(m.Cc, []string{"bob@corp.example"}) || len(m.Bcc) != 0 {
		t.Fatalf("recipients %q %q %q", m.To, m.Cc, m.Bcc)
	}
	if e.srv.Requests() != 1 {
		t.Fatalf("%d requests", e.srv.Requests())
	}
}

// TestBccRecipient: a recipient only in the envelope gets the message
// through a Bcc field; To, Cc and the body are untouched.
func TestBccRecipient(t *testing.T) {
	e := newEnv(t, testenv.GraphOptions{}, graph.Options{})
	rep := e.tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example", "bob@corp.example", "audit@corp.example", "dba@other.example"))
	if r := same(t, rep, 4); r.Reply == nil || r.Reply.Code != 250 {
		t.Fatalf("result %+v", r)
	}
	m := e.srv.WaitFor(t, 1, 5*time.Second)[0]
	if !slices.Equal(m.Bcc, []string{"audit@corp.example", "dba@other.example"}) || !slices.Equal(m.To, []string{"alice@corp.example"}) || !slices.Equal(m.Cc, []string{"bob@corp.example"}) {
		t.Fatalf("recipients %q %q %q", m.To, m.Cc, m.Bcc)
	}
	head, body, _ := strings.Cut(msgText, "\r\n\r\n")
	want := head + "\r\nBcc: <audit@corp.example>,\r\n <dba@other.example>\r\n\r\n" + body
	if string(m.MIME) != want {
		t.Fatalf("MIME\n%q\nwant\n%q", m.MIME, want)
	}
	if rep.Bytes != int64(base64.StdEncoding.EncodedLen(len(want))) {
		t.Fatalf("bytes %d", rep.Bytes)
	}
}

// TestHeaderRecipientsOutsideDelivery: Graph sends to every header
// recipient; those outside the delivery are logged (with msg_id) and
// named in the reply, and the header is left as it is.
func TestHeaderRecipientsOutsideDelivery(t *testing.T) {
	e := newEnv(t, testenv.GraphOptions{}, graph.Options{})
	rep := e.tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example"))
	r := same(t, rep, 1)
	if r.Reply == nil || r.Reply.Code != 250 || !strings.Contains(r.Reply.Text, "also sent to 1 header recipient(s) outside this delivery: bob@corp.example") {
		t.Fatalf("reply %+v", r.Reply)
	}
	if m := e.srv.WaitFor(t, 1, 5*time.Second)[0]; string(m.MIME) != msgText {
		t.Fatalf("the message was changed:\n%q", m.MIME)
	}
	log := e.log.String()
	if !strings.Contains(log, `"msg_id":"0123456789ABCDEF"`) || !strings.Contains(log, `"header_rcpts":["bob@corp.example"]`) || !strings.Contains(log, `"level":"warn"`) {
		t.Fatalf("log %s", log)
	}
}

// TestAnswers: every scripted answer of the server becomes the Result the
// funnel reads right, with exactly one request.
func TestAnswers(t *testing.T) {
	type check func(t *testing.T, r delivery.Result, start time.Time)
	reply := func(code int, enh string, texts ...string) check {
		return func(t *testing.T, r delivery.Result, _ time.Time) {
			t.Helper()
			if r.Err != nil || r.Reply == nil || r.Reply.Code != code || r.Reply.Enhanced != enh {
				t.Fatalf("result %+v (%v) reply %+v, want %d %s", r, r.Err, r.Reply, code, enh)
			}
			for _, s := range texts {
				if !strings.Contains(r.Reply.Text, s) {
					t.Fatalf("reply %q lacks %q", r.Reply.Text, s)
				}
			}
		}
	}
	retryAfter := func(d time.Duration, texts ...string) check {
		return func(t *testing.T, r delivery.Result, start time.Time) {
			t.Helper()
			var ra *delivery.RetryAfterError
			var re *delivery.ReplyError
			if !errors.As(r.Err, &ra) || !errors.As(ra.Err, &re) || re.Reply.Code != 451 || re.Reply.Enhanced != "4.7.0" {
				t.Fatalf("result %+v (%v), want a RetryAfterError with 451 4.7.0", r, r.Err)
			}
			if ra.At.Before(start.Add(d)) || ra.At.After(time.Now().Add(d)) {
				t.Fatalf("retry at %v, want %v after %v", ra.At, d, start)
			}
			for _, s := range texts {
				if !strings.Contains(re.Reply.Text, s) {
					t.Fatalf("reply %q lacks %q", re.Reply.Text, s)
				}
			}
		}
	}
	authErr := func(code string) check {
		return func(t *testing.T, r delivery.Result, _ time.Time) {
			t.Helper()
			var ae *delivery.AuthError
			var ge *graph.Error
			if !errors.As(r.Err, &ae) || !errors.As(r.Err, &ge) || ge.Code != code || r.Reply != nil {
				t.Fatalf("result %+v (%v), want an AuthError with %s", r, r.Err, code)
			}
		}
	}
	tests := []struct {
		name   string
		script testenv.GraphReply
		check  check
	}{
		{"429 Retry-After 2", testenv.GraphReply{Status: 429, Code: "ApplicationThrottled", Message: "Application is over its MailboxConcurrency limit.", RetryAfter: "2"},
			retryAfter(2*time.Second, "Microsoft Graph 429 ApplicationThrottled: Application is over its MailboxConcurrency limit.", "throttled")},
		{"503 Retry-After 5", testenv.GraphReply{Status: 503, Code: "ServiceUnavailable", Message: "busy", RetryAfter: "5"}, retryAfter(5*time.Second, "503 ServiceUnavailable")},
		{"429 without Retry-After", testenv.GraphReply{Status: 429, Code: "ApplicationThrottled", Message: "x"}, reply(451, "4.7.0", "throttled")},
		{"503 without Retry-After", testenv.GraphReply{Status: 503, Code: "ServiceUnavailable", Message: "busy"}, reply(451, "4.3.0", "Microsoft Graph 503 ServiceUnavailable: busy")},
		{"500", testenv.GraphReply{Status: 500, Code: "ErrorInternalServerError", Message: "An internal server error occurred."}, reply(451, "4.3.0", "Microsoft Graph 500 ErrorInternalServerError: An internal server error occurred.")},
		{"400 ErrorInvalidRecipients", testenv.GraphReply{Status: 400, Code: "ErrorInvalidRecipients", Message: "At least one recipient isn't valid., Recipient 'x' is not resolved."},
			reply(550, "5.1.1", "Microsoft Graph 400 ErrorInvalidRecipients: At least one recipient isn't valid., Recipient 'x' is not resolved.", "request-id ")},
		{"400 bad MIME", testenv.GraphReply{Status: 400, Code: "ErrorMimeContentInvalid", Message: "The MIME content is invalid."}, reply(554, "5.6.0", "ErrorMimeContentInvalid")},
		{"403", testenv.GraphReply{Status: 403, Code: "ErrorAccessDenied", Message: "Access is denied. Check credentials and try again."}, authErr("ErrorAccessDenied")},
		{"404 mailbox of the envelope sender", testenv.GraphReply{Status: 404, Code: "ErrorInvalidUser", Message: "The requested user 'sql@corp.example' is invalid."}, reply(550, "5.1.8", "ErrorInvalidUser")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, testenv.GraphOptions{}, graph.Options{})
			e.srv.Script(tc.script)
			start := time.Now()
			rep := e.tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example", "bob@corp.example"))
			tc.check(t, same(t, rep, 2), start)
			if n := e.srv.Requests(); n != 1 {
				t.Fatalf("%d requests, want 1 (no retry of our own)", n)
			}
			if len(e.srv.Messages()) != 0 || len(e.tokens.Invalidated()) != 0 {
				t.Fatal("accepted, or a token invalidated")
			}
		})
	}
}

func TestUnauthorizedOnce(t *testing.T) {
	e := newEnv(t, testenv.GraphOptions{}, graph.Options{})
	e.srv.SetTokens(func(tok string) bool { return tok != "tok-1" }) // tok-1 expired early
	rep := e.tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example", "bob@corp.example"))
	if r := same(t, rep, 2); r.Reply == nil || r.Reply.Code != 250 {
		t.Fatalf("result %+v", r)
	}
	if inv := e.tokens.Invalidated(); !slices.Equal(inv, []string{"tok-1"}) {
		t.Fatalf("invalidated %q", inv)
	}
	if m := e.srv.WaitFor(t, 1, 5*time.Second); len(m) != 1 || m[0].Token != "tok-2" || e.srv.Requests() != 2 {
		t.Fatalf("%d messages, %d requests", len(m), e.srv.Requests())
	}
	if rep.Bytes != 2*int64(base64.StdEncoding.EncodedLen(len(msgText))) {
		t.Fatalf("bytes %d: the body went twice", rep.Bytes)
	}
	if !strings.Contains(e.log.String(), `"msg_id":"0123456789ABCDEF"`) {
		t.Fatalf("log %s", e.log.String())
	}
}

func TestUnauthorizedTwice(t *testing.T) {
	e := newEnv(t, testenv.GraphOptions{}, graph.Options{})
	e.srv.SetTokens(func(string) bool { return false })
	rep := e.tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example"))
	r := same(t, rep, 1)
	var ae *delivery.AuthError
	var ge *graph.Error
	if !errors.As(r.Err, &ae) || ae.Host != e.host || !errors.As(r.Err, &ge) || ge.Status != 401 || ge.Code != "InvalidAuthenticationToken" {
		t.Fatalf("result %+v (%v)", r, r.Err)
	}
	if e.srv.Requests() != 2 || !slices.Equal(e.tokens.Invalidated(), []string{"tok-1"}) {
		t.Fatalf("%d requests, invalidated %q: want 2 and one", e.srv.Requests(), e.tokens.Invalidated())
	}
}

func TestTokenErrorPassedThrough(t *testing.T) {
	e := newEnv(t, testenv.GraphOptions{}, graph.Options{})
	oe := &oauth.Error{Provider: "entra", Status: 401, Code: "invalid_client", Description: "AADSTS7000215: Invalid client secret provided."}
	e.tokens.err = oe
	r := same(t, e.tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example")), 1)
	if r.Err != error(oe) || r.Reply != nil {
		t.Fatalf("result %+v, want the *oauth.Error itself", r)
	}
	if e.srv.Requests() != 0 {
		t.Fatal("a request without a token")
	}
}

func TestTooLarge(t *testing.T) {
	big := msgText + strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz\r\n", 100) // 4.1 KB
	t.Run("declared size", func(t *testing.T) {
		e := newEnv(t, testenv.GraphOptions{}, graph.Options{MaxRequestBytes: 4000})
		req := request("sql@corp.example", big, "alice@corp.example")
		opened := false
		req.Body = func() (io.ReadCloser, error) { opened = true; return io.NopCloser(strings.NewReader(big)), nil }
		r := same(t, e.tr.Deliver(context.Background(), req), 1)
		want := fmt.Sprintf("message of %d bytes is too large for a Microsoft Graph MIME send (limit 4000 bytes encoded); route it through SMTP with XOAUTH2 instead", len(big))
		if r.Reply == nil || r.Reply.Code != 552 || r.Reply.Enhanced != "5.3.4" || r.Reply.Text != want || opened || e.srv.Requests() != 0 {
			t.Fatalf("reply %+v, opened %v, %d requests", r.Reply, opened, e.srv.Requests())
		}
	})
	t.Run("size found reading", func(t *testing.T) {
		e := newEnv(t, testenv.GraphOptions{}, graph.Options{MaxRequestBytes: 4000})
		req := request("sql@corp.example", big, "alice@corp.example")
		req.Job.Body.Size = 100 // wrong: reading finds out
		r := same(t, e.tr.Deliver(context.Background(), req), 1)
		if r.Reply == nil || r.Reply.Code != 552 || r.Reply.Enhanced != "5.3.4" || e.srv.Requests() != 0 {
			t.Fatalf("reply %+v, %d requests", r.Reply, e.srv.Requests())
		}
	})
	t.Run("the Bcc field tips it over", func(t *testing.T) {
		limit := int64(base64.StdEncoding.EncodedLen(len(msgText)))
		e := newEnv(t, testenv.GraphOptions{}, graph.Options{MaxRequestBytes: limit})
		r := same(t, e.tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example", "bob@corp.example", "hidden@corp.example")), 3)
		if r.Reply == nil || r.Reply.Code != 552 || e.srv.Requests() != 0 {
			t.Fatalf("reply %+v, %d requests", r.Reply, e.srv.Requests())
		}
	})
	t.Run("413 from Graph", func(t *testing.T) {
		e := newEnv(t, testenv.GraphOptions{MaxRequestBytes: 1000}, graph.Options{})
		r := same(t, e.tr.Deliver(context.Background(), request("sql@corp.example", big, "alice@corp.example")), 1)
		if r.Reply == nil || r.Reply.Code != 552 || r.Reply.Enhanced != "5.3.4" || !strings.Contains(r.Reply.Text, "413") || e.srv.Requests() != 1 {
			t.Fatalf("reply %+v, %d requests", r.Reply, e.srv.Requests())
		}
	})
}

// TestConcurrencyPerMailbox: ten deliveries at once as one mailbox, never
// more than four requests in flight; another mailbox is not held up.
func TestConcurrencyPerMailbox(t *testing.T) {
	e := newEnv(t, testenv.GraphOptions{}, graph.Options{Sender: "app@corp.example"})
	release := make(chan struct{})
	stop := make(chan struct{})
	defer close(stop)
	e.srv.OnRequest(func(c testenv.GraphCall) *testenv.GraphReply {
		if c.Mailbox == "app@corp.example" {
			select {
			case <-release:
			case <-stop:
			}
		}
		return nil
	})
	const n = 10
	var wg sync.WaitGroup
	var delivered atomic.Int32
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep := e.tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example", "bob@corp.example"))
			if r := rep.Results[1]; r.Reply != nil && r.Reply.Code == 250 {
				delivered.Add(1)
			}
		}()
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return e.srv.InFlight() >= 4 }, "4 requests in flight")

	// Another mailbox goes through meanwhile.
	other := graph.New(graph.Options{BaseURL: e.srv.BaseURL, HTTPClient: e.srv.Client, Tokens: e.tokens, Sender: "other@corp.example"})
	if r := same(t, other.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example")), 1); r.Reply == nil || r.Reply.Code != 250 {
		t.Fatalf("other mailbox: %+v", r)
	}
	// A delivery waiting for its turn gives up with its context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := same(t, e.tr.Deliver(ctx, request("sql@corp.example", msgText, "alice@corp.example")), 1); !errors.Is(r.Err, context.Canceled) {
		t.Fatalf("cancelled while waiting: %+v", r)
	}

	for range n {
		release <- struct{}{} // one request answered, the next one may go
	}
	wg.Wait()
	if delivered.Load() != n || e.srv.PeakInFlightFor("APP@corp.example") != 4 || len(e.srv.Messages()) != n+1 {
		t.Fatalf("delivered %d, peak %d, accepted %d", delivered.Load(), e.srv.PeakInFlightFor("app@corp.example"), len(e.srv.Messages()))
	}
}

// TestSenderMailbox: the configured sender, else the envelope sender, is
// the mailbox, escaped as one path segment; no mailbox at all waits.
func TestSenderMailbox(t *testing.T) {
	tests := []struct {
		name, sender, from string
		mailbox, escaped   string
	}{
		{"envelope sender", "", "sql@corp.example", "sql@corp.example", "sql@corp.example"},
		{"configured sender", "Reports@Corp.example", "sql@corp.example", "Reports@Corp.example", "Reports@Corp.example"},
		{"object ID", "3f1b2c4d-0000-4000-8000-0123456789ab", "sql@corp.example", "3f1b2c4d-0000-4000-8000-0123456789ab", "3f1b2c4d-0000-4000-8000-0123456789ab"},
		{"escaping", "", "o'brien/x?y#z%+tag é@corp.example", "o'brien/x?y#z%+tag é@corp.example", "o%27brien%2Fx%3Fy%23z%25+tag%20%C3%A9@corp.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, testenv.GraphOptions{}, graph.Options{Sender: tc.sender})
			if r := same(t, e.tr.Deliver(context.Background(), request(tc.from, msgText, "alice@corp.example", "bob@corp.example")), 2); r.Reply == nil || r.Reply.Code != 250 {
				t.Fatalf("result %+v %+v", r, r.Reply)
			}
			m := e.srv.WaitFor(t, 1, 5*time.Second)[0]
			if m.Mailbox != tc.mailbox || m.EscapedMailbox != tc.escaped {
				t.Fatalf("mailbox %q escaped %q, want %q %q", m.Mailbox, m.EscapedMailbox, tc.mailbox, tc.escaped)
			}
		})
	}
	t.Run("null sender, none configured", func(t *testing.T) {
		e := newEnv(t, testenv.GraphOptions{}, graph.Options{})
		r := same(t, e.tr.Deliver(context.Background(), request("", msgText, "alice@corp.example")), 1)
		if r.Reply == nil || r.Reply.Code != 451 || r.Reply.Enhanced != "4.3.5" || e.srv.Requests() != 0 {
			t.Fatalf("reply %+v", r.Reply)
		}
	})
	t.Run("404 for a configured sender waits", func(t *testing.T) {
		e := newEnv(t, testenv.GraphOptions{}, graph.Options{Sender: "typo@corp.example"})
		e.srv.Script(testenv.GraphReply{Status: 404, Code: "ErrorInvalidUser", Message: "The requested user 'typo@corp.example' is invalid."})
		r := same(t, e.tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example")), 1)
		if r.Reply == nil || r.Reply.Code != 451 || r.Reply.Enhanced != "4.3.5" {
			t.Fatalf("reply %+v", r.Reply)
		}
	})
}

func TestBasePath(t *testing.T) {
	e := newEnv(t, testenv.GraphOptions{BasePath: "/graph/v1.0"}, graph.Options{})
	e.tr = graph.New(graph.Options{BaseURL: e.srv.BaseURL + "/", HTTPClient: e.srv.Client, Tokens: e.tokens})
	if r := same(t, e.tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example", "bob@corp.example")), 2); r.Reply == nil || r.Reply.Code != 250 {
		t.Fatalf("result %+v %+v", r, r.Reply)
	}
}

func TestFailuresBeforeAnAnswer(t *testing.T) {
	t.Run("body unreadable", func(t *testing.T) {
		e := newEnv(t, testenv.GraphOptions{}, graph.Options{})
		req := request("sql@corp.example", msgText, "alice@corp.example")
		corrupt := errors.New("body object corrupt")
		req.Body = func() (io.ReadCloser, error) {
			return io.NopCloser(io.MultiReader(strings.NewReader(msgText), errorReader{corrupt})), nil
		}
		r := same(t, e.tr.Deliver(context.Background(), req), 1)
		if !errors.Is(r.Err, corrupt) || r.Stage != "body" || e.srv.Requests() != 0 {
			t.Fatalf("result %+v", r)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		e := newEnv(t, testenv.GraphOptions{}, graph.Options{Timeout: 100 * time.Millisecond})
		stop := make(chan struct{})
		defer close(stop)
		e.srv.OnRequest(func(testenv.GraphCall) *testenv.GraphReply { <-stop; return nil })
		r := same(t, e.tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example")), 1)
		var ne net.Error
		if !errors.As(r.Err, &ne) || !ne.Timeout() || r.Reply != nil {
			t.Fatalf("result %+v (%v), want a timeout", r, r.Err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		tr := graph.New(graph.Options{BaseURL: "https://" + addr + "/v1.0", Tokens: &tokens{}})
		r := same(t, tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example")), 1)
		if r.Err == nil || r.Reply != nil || r.Stage != graph.Stage {
			t.Fatalf("result %+v", r)
		}
	})
}

type errorReader struct{ err error }

func (e errorReader) Read([]byte) (int, error) { return 0, e.err }

func TestBaseURLMustBeHTTPS(t *testing.T) {
	for _, base := range []string{"http://127.0.0.1:1/v1.0", "graph.microsoft.com/v1.0", "https:///v1.0"} {
		tr := graph.New(graph.Options{BaseURL: base, Tokens: &tokens{}})
		r := same(t, tr.Deliver(context.Background(), request("sql@corp.example", msgText, "alice@corp.example")), 1)
		if r.Reply == nil || r.Reply.Code != 451 || r.Reply.Enhanced != "4.3.5" {
			t.Fatalf("%s: %+v", base, r)
		}
	}
	if tr := graph.New(graph.Options{}); tr.Host() != "graph.microsoft.com" {
		t.Fatalf("default host %q", tr.Host())
	}
}
