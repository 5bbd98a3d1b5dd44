package graph

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/delivery"
	"github.com/jetrelay/jetrelay/delivery/oauth"
	"github.com/rs/zerolog"
)

// Graph endpoints (the service root, with the API version).
const (
	// DefaultBaseURL is the global service.
	DefaultBaseURL = "https://graph.microsoft.com/v1.0"
	// BaseURLUSGov is Microsoft Graph for US Government L4 (GCC High).
	BaseURLUSGov = "https://graph.microsoft.us/v1.0"
	// BaseURLUSGovDoD is Microsoft Graph for US Government L5 (DoD).
	BaseURLUSGovDoD = "https://dod-graph.microsoft.us/v1.0"
	// BaseURLChina is Microsoft Graph operated by 21Vianet.
	BaseURLChina = "https://microsoftgraph.chinacloudapi.cn/v1.0"
)

// Defaults of Options.
const (
	// DefaultMaxRequestBytes is Graph's limit for a sendMail request; the
	// base64 form of the message is measured against it.
	DefaultMaxRequestBytes = 4 << 20
	// DefaultMaxConcurrentPerMailbox is Exchange Online's limit of
	// concurrent Graph requests per application and mailbox.
	DefaultMaxConcurrentPerMailbox = 4
	// DefaultTimeout bounds one HTTP request.
	DefaultTimeout = 2 * time.Minute
)

// Options configure a Transport.
type Options struct {
	// BaseURL is the Graph service root with its version, https only
	// (default DefaultBaseURL; BaseURLUSGov, BaseURLUSGovDoD or
	// BaseURLChina for the national clouds).
	BaseURL string
	// Tokens supplies app-only access tokens for Graph (the caller asks
	// for the scope https://graph.microsoft.com/.default or the national
	// cloud's equivalent). Required.
	Tokens oauth.Source
	// HTTPClient sends the requests (default: a client of its own, which
	// does not follow redirects). Its Timeout, if any, applies too.
	HTTPClient *http.Client
	// Sender is the mailbox to send as (/users/{Sender}/sendMail: a user
	// principal name, an SMTP address or an object ID). Empty: the
	// envelope sender of each message.
	Sender string
	// MaxRequestBytes is the largest request body, i.e. the base64 form
	// of the message (default DefaultMaxRequestBytes). Larger messages
	// fail permanently with 552 5.3.4 before any request.
	MaxRequestBytes int64
	// MaxConcurrentPerMailbox bounds the requests in flight per mailbox in
	// this Transport (default DefaultMaxConcurrentPerMailbox); a delivery
	// waits for its turn as long as its context allows.
	MaxConcurrentPerMailbox int
	// Timeout bounds one HTTP request, answer included (default
	// DefaultTimeout).
	Timeout time.Duration
	// Log receives the transport's own events (zero value: none).
	Log zerolog.Logger
}

// Transport delivers through Microsoft Graph's sendMail with the message
// as MIME. It implements delivery.Transport; see the package comment.
type Transport struct {
	opts     Options
	base     string // BaseURL without a trailing slash
	host     string
	baseErr  error // BaseURL does not parse
	client   *http.Client
	inFlight *mailboxes
	log      zerolog.Logger
}

var _ delivery.Transport = (*Transport)(nil)

// New returns a Transport; zero Options fields take their defaults.
func New(o Options) *Transport {
	if o.BaseURL == "" {
		o.BaseURL = DefaultBaseURL
	}
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.MaxConcurrentPerMailbox <= 0 {
		o.MaxConcurrentPerMailbox = DefaultMaxConcurrentPerMailbox
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	t := &Transport{opts: o, base: strings.TrimRight(o.BaseURL, "/"), client: o.HTTPClient,
		inFlight: newMailboxes(o.MaxConcurrentPerMailbox), log: o.Log}
	u, err := url.Parse(t.base)
	switch {
	case err != nil:
		t.baseErr = err
	case u.Scheme != "https", u.Host == "":
		// Bearer tokens never travel in plaintext.
		t.baseErr = fmt.Errorf("%q is not an https URL", o.BaseURL)
	default:
		t.host = u.Host
	}
	if t.client == nil {
		t.client = &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			// sendMail does not redirect; a redirect is not an acceptance.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return t
}

// Host is the Graph host the Transport talks to.
func (t *Transport) Host() string { return t.host }

// Deliver sends the message once for all of req.Rcpts and gives each the
// same Result (Graph is all-or-nothing per request).
func (t *Transport) Deliver(ctx context.Context, req *delivery.Request) *delivery.Report {
	rep := &delivery.Report{Results: make([]delivery.Result, len(req.Rcpts)), Host: t.host, Start: time.Now()}
	defer func() { rep.Duration = time.Since(rep.Start) }()
	fill := func(r delivery.Result) *delivery.Report {
		for i := range rep.Results {
			rep.Results[i] = r
		}
		return rep
	}
	config := func(text string) *delivery.Report {
		// A configuration problem: the message waits for an operator.
		return fill(delivery.Result{Reply: &contracts.Reply{Code: 451, Enhanced: "4.3.5", Text: text, Host: t.host}, Stage: Stage})
	}
	log := t.log.With().Str("msg_id", req.Job.QueueID).Logger()
	if req.Job.Part != "" {
		log = log.With().Str("part", req.Job.Part).Logger()
	}
	switch {
	case t.baseErr != nil:
		return config("Microsoft Graph base URL: " + t.baseErr.Error())
	case t.opts.Tokens == nil:
		return config("no token source configured for Microsoft Graph")
	}
	mailbox := t.opts.Sender
	if mailbox == "" {
		mailbox = req.Job.From
	}
	if mailbox == "" {
		return config("no mailbox to send as: the envelope sender is null and no sender is configured for this Microsoft Graph route")
	}
	body, size, extra, err := t.prepare(req, log)
	if err != nil {
		var tl *errTooLarge
		if errors.As(err, &tl) {
			return fill(delivery.Result{Reply: &contracts.Reply{Code: 552, Enhanced: "5.3.4", Text: tl.Error(), Host: t.host}, Stage: Stage})
		}
		return fill(delivery.Result{Err: err, Stage: "body"})
	}

	release, err := t.inFlight.acquire(ctx, mailbox)
	if err != nil {
		return fill(delivery.Result{Err: err, Stage: Stage})
	}
	defer release()
	rep.Tried = []string{t.host}
	o := outcome{host: t.host, size: size, limit: t.opts.MaxRequestBytes, senderFixed: t.opts.Sender != "", extra: extra}
	endpoint := t.base + "/users/" + url.PathEscape(mailbox) + "/sendMail"

	// One POST; a second one only after a 401, which Graph answers
	// without sending anything.
	var a *answer
	for try := 0; try < 2; try++ {
		tok, err := t.opts.Tokens.Token(ctx)
		if err != nil {
			return fill(delivery.Result{Err: err, Stage: "auth"})
		}
		rep.Bytes += int64(len(body))
		a, err = t.post(ctx, endpoint, tok.Value, body)
		if err != nil {
			return fill(delivery.Result{Err: err, Stage: Stage})
		}
		rep.IP, rep.TLS = a.ip, a.tls
		if a.status != http.StatusUnauthorized || try == 1 {
			break
		}
		log.Warn().Str("mailbox", mailbox).Str("token_source", t.opts.Tokens.Name()).Str("graph_error", a.err().Error()).
			Msg("Microsoft Graph refused the token; retrying once with a fresh one")
		t.opts.Tokens.Invalidate(tok.Value)
	}
	o.now = time.Now()
	return fill(result(a, o))
}

// prepare reads the message and returns the request body: the base64 of
// the message with the envelope recipients that no recipient field names
// added to its Bcc field. size is the message's size with that field;
// extra are the header recipients outside the envelope. A message too
// large for a request is an *errTooLarge, found before reading it when
// the job's size says so.
func (t *Transport) prepare(req *delivery.Request, log zerolog.Logger) (body []byte, size int64, extra []string, err error) {
	limit := t.opts.MaxRequestBytes
	if size := req.Job.Body.Size; encodedLen(size) > limit {
		return nil, 0, nil, &errTooLarge{size: size, limit: limit}
	}
	raw, err := t.read(req)
	if err != nil {
		return nil, 0, nil, err
	}
	h := parseHeader(raw)
	envelope := make([]string, len(req.Rcpts))
	for i, r := range req.Rcpts {
		envelope[i] = r.Addr
	}
	missing, extra := h.recipients(envelope)
	if len(h.bad) > 0 {
		log.Warn().Strs("fields", h.bad).Msg("Microsoft Graph: recipient header fields that do not parse; Graph may read them differently")
	}
	if len(extra) > 0 {
		log.Warn().Strs("header_rcpts", extra).
			Msg("Microsoft Graph sends to every recipient in the header: these are not recipients of this delivery and get a copy too (route all recipients of a message through the same Graph route)")
	}
	at, ins := h.bccInsert(raw, missing)
	size = int64(len(raw) + len(ins))
	if encodedLen(size) > limit {
		return nil, 0, nil, &errTooLarge{size: size, limit: limit}
	}
	if len(missing) > 0 {
		log.Debug().Strs("bcc", missing).Msg("Microsoft Graph: envelope recipients added to the Bcc field")
	}
	return encode(raw, at, ins), size, extra, nil
}

// read opens and reads the message, bounded by the request limit.
func (t *Transport) read(req *delivery.Request) ([]byte, error) {
	rc, err := req.Body()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", delivery.ErrBodyRead, err)
	}
	defer rc.Close()
	raw, err := readMessage(rc, req.Job.Body.Size, t.opts.MaxRequestBytes)
	var tl *errTooLarge
	if err != nil && !errors.As(err, &tl) {
		return nil, fmt.Errorf("%w: %w", delivery.ErrBodyRead, err)
	}
	return raw, err
}

// post sends one sendMail request and reads the answer.
func (t *Transport) post(ctx context.Context, endpoint, token string, body []byte) (*answer, error) {
	ctx, cancel := context.WithTimeout(ctx, t.opts.Timeout)
	defer cancel()
	a := &answer{}
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) {
			if ra := ci.Conn.RemoteAddr(); ra != nil {
				a.ip = ra.String()
			}
		},
	})
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "text/plain")
	hr.Header.Set("Authorization", "Bearer "+token)
	resp, err := t.client.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	a.status = resp.StatusCode
	a.retryAfter = resp.Header.Get("Retry-After")
	a.requestID = resp.Header.Get("request-id")
	if resp.TLS != nil {
		a.tls = tls.VersionName(resp.TLS.Version) + " " + tls.CipherSuiteName(resp.TLS.CipherSuite)
	}
	a.body, err = io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil && a.status != http.StatusAccepted {
		// The status is known; a body cut short only loses details.
		a.body = nil
	}
	return a, nil
}
