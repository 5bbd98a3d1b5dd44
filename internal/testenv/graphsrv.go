package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// GraphMessage is one message a GraphServer accepted (answered 202).
type GraphMessage struct {
	// Mailbox is the {id} of /users/{id}/sendMail, unescaped, and
	// EscapedMailbox as it was in the request path.
	Mailbox, EscapedMailbox string
	Token                   string // the bearer token
	MIME                    []byte // the decoded message
	To, Cc, Bcc             []string
	At                      time.Time
}

// Recipients are To, Cc and Bcc together: whom Graph would send to.
func (m *GraphMessage) Recipients() []string {
	return append(append(append([]string(nil), m.To...), m.Cc...), m.Bcc...)
}

// GraphReply is a scripted answer. Status 0 is 202; any other status
// answers with Graph's error JSON (Code, Message).
type GraphReply struct {
	Status        int
	Code, Message string
	// RetryAfter is the Retry-After header ("" none): seconds or an HTTP date.
	RetryAfter string
}

// GraphCall is one request that reached the script (authorised, well
// formed), and what it was answered.
type GraphCall struct {
	Mailbox string
	Token   string
	Bytes   int // request body size
	Status  int
}

// GraphOptions configure a GraphServer.
type GraphOptions struct {
	// BasePath is the service root's path (default "/v1.0").
	BasePath string
	// MaxRequestBytes answers 413 to larger request bodies (0: no limit).
	MaxRequestBytes int64
	// Tokens says whether a bearer token is valid (nil: any non-empty one).
	Tokens func(token string) bool
	// PKI signs the server's certificate (nil: a new one), so that one
	// client can trust it and, say, an OAuthServer made with the same.
	PKI *PKI
}

// GraphServer is a fake Microsoft Graph sendMail endpoint on loopback,
// over TLS with a throwaway certificate. It checks what Graph checks
// (bearer token, Content-Type text/plain, base64 of a MIME message with
// recipients), records the messages it accepts and answers what the test
// scripts, 202 otherwise. It is safe for concurrent use.
type GraphServer struct {
	// BaseURL is the service root ("https://127.0.0.1:port/v1.0").
	BaseURL string
	// Client trusts the server's certificate.
	Client *http.Client

	opts GraphOptions
	srv  *http.Server

	mu        sync.Mutex
	script    []GraphReply
	onRequest func(GraphCall) *GraphReply
	msgs      []*GraphMessage
	calls     []GraphCall
	changed   chan struct{}
	mbLive    map[string]int // requests in flight per mailbox (lower case)
	mbPeak    map[string]int

	requests atomic.Int64
	inFlight atomic.Int64
	peak     atomic.Int64
}

// NewGraphServer starts a fake Graph server; it stops when the test ends.
func NewGraphServer(t testing.TB, o GraphOptions) *GraphServer {
	t.Helper()
	if o.BasePath == "" {
		o.BasePath = "/v1.0"
	}
	o.BasePath = "/" + strings.Trim(o.BasePath, "/")
	if o.BasePath == "/" {
		o.BasePath = ""
	}
	pki := o.PKI
	if pki == nil {
		pki = NewPKI(t)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &GraphServer{opts: o, changed: make(chan struct{}), mbLive: map[string]int{}, mbPeak: map[string]int{}}
	s.srv = &http.Server{Handler: s, TLSConfig: pki.ServerConfig(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)}
	s.BaseURL = "https://" + l.Addr().String() + o.BasePath
	s.Client = &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientConfig(""), ForceAttemptHTTP2: true}}
	go func() { _ = s.srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() {
		_ = s.srv.Close()
		s.Client.CloseIdleConnections()
	})
	return s
}

// SetTokens replaces the token validator.
func (s *GraphServer) SetTokens(valid func(token string) bool) {
	s.mu.Lock()
	s.opts.Tokens = valid
	s.mu.Unlock()
}

// Script answers the next requests, in order, with these replies; after
// them the server accepts again.
func (s *GraphServer) Script(r ...GraphReply) {
	s.mu.Lock()
	s.script = append(s.script, r...)
	s.mu.Unlock()
}

// OnRequest is called for every request that reached the script, before
// the script; a non-nil reply answers it. It may block (to hold requests
// in flight); it must return once the test ends.
func (s *GraphServer) OnRequest(f func(GraphCall) *GraphReply) {
	s.mu.Lock()
	s.onRequest = f
	s.mu.Unlock()
}

// Messages returns a copy of what was accepted so far.
func (s *GraphServer) Messages() []*GraphMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*GraphMessage(nil), s.msgs...)
}

// Calls returns the requests that reached the script, in order.
func (s *GraphServer) Calls() []GraphCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]GraphCall(nil), s.calls...)
}

// Requests counts every request received (whatever its answer).
func (s *GraphServer) Requests() int64 { return s.requests.Load() }

// InFlight is the number of requests being handled now.
func (s *GraphServer) InFlight() int64 { return s.inFlight.Load() }

// PeakInFlight is the largest number of requests handled at once.
func (s *GraphServer) PeakInFlight() int64 { return s.peak.Load() }

// PeakInFlightFor is the largest number of requests for one mailbox
// (case-insensitive) handled at once.
func (s *GraphServer) PeakInFlightFor(mailbox string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mbPeak[strings.ToLower(mailbox)]
}

// WaitFor waits until at least n messages were accepted and returns them.
func (s *GraphServer) WaitFor(t testing.TB, n int, timeout time.Duration) []*GraphMessage {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		got, ch := len(s.msgs), s.changed
		s.mu.Unlock()
		if got >= n {
			return s.Messages()
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("graph server: %d message(s) after %s, want %d", got, timeout, n)
		}
	}
}

func (s *GraphServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	live := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for {
		p := s.peak.Load()
		if live <= p || s.peak.CompareAndSwap(p, live) {
			break
		}
	}
	// POST {base}/users/{id}/sendMail
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), s.opts.BasePath+"/users/")
	esc, ok2 := strings.CutSuffix(rest, "/sendMail")
	mailbox, err := url.PathUnescape(esc)
	if !ok || !ok2 || esc == "" || strings.Contains(esc, "/") || err != nil {
		graphAnswer(w, GraphReply{Status: http.StatusNotFound, Code: "ResourceNotFound", Message: "Resource not found for the segment '" + r.URL.EscapedPath() + "'."})
		return
	}
	mb := strings.ToLower(mailbox)
	s.mu.Lock()
	s.mbLive[mb]++
	s.mbPeak[mb] = max(s.mbPeak[mb], s.mbLive[mb])
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.mbLive[mb]--
		s.mu.Unlock()
	}()
	if r.Method != http.MethodPost {
		graphAnswer(w, GraphReply{Status: http.StatusMethodNotAllowed, Code: "Request_BadRequest", Message: "Specified HTTP method is not allowed for the request target."})
		return
	}
	s.mu.Lock()
	valid := s.opts.Tokens
	s.mu.Unlock()
	token, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !bearer || token == "" || (valid != nil && !valid(token)) {
		graphAnswer(w, GraphReply{Status: http.StatusUnauthorized, Code: "InvalidAuthenticationToken", Message: "Access token validation failure. Invalid audience."})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, max(s.opts.MaxRequestBytes, 64<<20)+1))
	if err != nil {
		return
	}
	if s.opts.MaxRequestBytes > 0 && int64(len(body)) > s.opts.MaxRequestBytes {
		graphAnswer(w, GraphReply{Status: http.StatusRequestEntityTooLarge, Code: "RequestEntityTooLarge", Message: "The maximum request length supported is 4MB."})
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "text/plain" {
		graphAnswer(w, GraphReply{Status: http.StatusUnsupportedMediaType, Code: "UnsupportedMediaType", Message: "Content-Type must be text/plain for a MIME message."})
		return
	}
	raw, err := base64.StdEncoding.DecodeString(string(body))
	if err != nil {
		graphAnswer(w, GraphReply{Status: http.StatusBadRequest, Code: "ErrorMimeContentInvalidBase64String", Message: "Invalid base64 string for MIME content."})
		return
	}
	m := &GraphMessage{Mailbox: mailbox, EscapedMailbox: esc, Token: token, MIME: raw}
	if msg, err := mail.ReadMessage(bytes.NewReader(raw)); err == nil {
		m.To, m.Cc, m.Bcc = graphAddrs(msg.Header, "To"), graphAddrs(msg.Header, "Cc"), graphAddrs(msg.Header, "Bcc")
	}
	if len(m.Recipients()) == 0 {
		graphAnswer(w, GraphReply{Status: http.StatusBadRequest, Code: "ErrorInvalidRecipients", Message: "At least one recipient isn't valid., A message can't be sent because it contains no recipients."})
		return
	}

	call := GraphCall{Mailbox: mailbox, Token: token, Bytes: len(body)}
	s.mu.Lock()
	f := s.onRequest
	s.mu.Unlock()
	var reply *GraphReply
	if f != nil {
		reply = f(call)
	}
	s.mu.Lock()
	if reply == nil && len(s.script) > 0 {
		reply = &s.script[0]
		s.script = s.script[1:]
	}
	if reply == nil {
		reply = &GraphReply{}
	}
	call.Status = reply.Status
	if call.Status == 0 {
		call.Status = http.StatusAccepted
		m.At = time.Now()
		s.msgs = append(s.msgs, m)
		close(s.changed)
		s.changed = make(chan struct{})
	}
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	graphAnswer(w, *reply)
}

// graphAddrs reads one recipient field (every occurrence), lower case.
func graphAddrs(h mail.Header, name string) []string {
	var out []string
	for _, v := range h[name] {
		list, err := mail.ParseAddressList(v)
		if err != nil {
			continue
		}
		for _, a := range list {
			out = append(out, strings.ToLower(a.Address))
		}
	}
	return out
}

// graphAnswer writes a reply the way Graph does: request-id headers, and
// the error JSON for anything but 202.
func graphAnswer(w http.ResponseWriter, r GraphReply) {
	id := graphRequestID()
	w.Header().Set("request-id", id)
	w.Header().Set("client-request-id", id)
	if r.RetryAfter != "" {
		w.Header().Set("Retry-After", r.RetryAfter)
	}
	if r.Status == 0 || r.Status == http.StatusAccepted {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	var e struct {
		Error struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			InnerError struct {
				Date      string `json:"date"`
				RequestID string `json:"request-id"`
			} `json:"innerError"`
		} `json:"error"`
	}
	e.Error.Code, e.Error.Message = r.Code, r.Message
	e.Error.InnerError.Date = time.Now().UTC().Format("2006-01-02T15:04:05")
	e.Error.InnerError.RequestID = id
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.Status)
	_ = json.NewEncoder(w).Encode(e)
}

func graphRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
