package contracts

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"
)

// SchemaVersion is the newest envelope version this build writes and reads.
//
//   - 1: the first.
//   - 2: Body.SHA256 is optional (written empty): a body is checked by its
//     size (and, in the bucket, its chunk count), the broker checksums
//     every stored record. A worker of version 1 would refuse such a job
//     as altered, so it refuses version 2 as unsupported instead (and
//     dead-letters it for a replay after the upgrade): upgrade delivery
//     workers before ingresses.
const SchemaVersion = 2

// Job is the envelope of one unit of delivery work: a message (by value or
// by reference) and the recipients still to be delivered.
//
// The ingress publishes one Job per accepted SMTP transaction. A delivery
// attempt may split it: every group of recipients that must be retried
// becomes a new Job with its own [Job.Part], carrying the attempt count and
// history forward. A Job is immutable once published; progress is recorded
// by publishing the next one.
type Job struct {
	Version int `json:"v"`
	// QueueID is assigned by the ingress at MAIL FROM and reported to the
	// client in "250 2.0.0 queued as <id>". It stays the same for every part
	// and retry of the message; it is the key to grep logs by.
	QueueID string `json:"queue_id"`
	// Part distinguishes the jobs a message was split into ("" for the job
	// the ingress published). See [PartOf].
	Part string `json:"part,omitempty"`
	// Kind is "" for mail from clients and KindDSN for delivery status
	// notifications jetrelay generated itself (never bounced again).
	Kind string `json:"kind,omitempty"`

	ReceivedAt time.Time `json:"received_at"`
	// FirstSeen starts the queue lifetime (delivery.retry.max_age). It equals
	// ReceivedAt, except for a replayed dead letter, which gets a fresh one.
	FirstSeen time.Time `json:"first_seen"`

	Client Client      `json:"client"`
	From   string      `json:"from"` // envelope sender without angle brackets; "" is the null sender <>
	Params MailParams  `json:"params"`
	Rcpts  []Recipient `json:"rcpts"`
	Body   Body        `json:"body"`

	// Attempt is the number of the delivery attempt this job is for, from 1.
	Attempt int `json:"attempt"`
	// LastError is the reply or condition that made the previous attempt fail.
	LastError *Reply `json:"last_error,omitempty"`
	// History has one record per finished attempt, oldest first, capped at
	// MaxHistory (the oldest records are dropped first).
	History []AttemptRecord `json:"history,omitempty"`

	// Route, when set, overrides routing for this job with a next hop
	// "host:port" (used by deadletter replay --route).
	Route string `json:"route,omitempty"`
	// ReplayOf is the dead-letter ID this job was replayed from, and
	// ReplayCount how many times that message has been replayed so far.
	ReplayOf    string `json:"replay_of,omitempty"`
	ReplayCount int    `json:"replay_count,omitempty"`
	// DelayNotified is set once a delay-warning DSN was sent for this job.
	DelayNotified bool `json:"delay_notified,omitempty"`
	// Waiting says why the job waits without an attempt having failed
	// (a route's rate limit), for `queue list` and `queue show`.
	Waiting string `json:"waiting,omitempty"`
	// Done lists the recipients of the message that earlier attempts
	// delivered, each with the reply that accepted it (LastReply), carried
	// forward with the recipients still to go so that the message's whole
	// state shows under its queue ID. Capped at MaxDone.
	Done []Recipient `json:"done,omitempty"`
}

// MaxDone caps Job.Done.
const MaxDone = 1000

// KindDSN marks a job that carries a delivery status notification generated
// by jetrelay.
const KindDSN = "dsn"

// MaxHistory caps Job.History so that an envelope stays small however often
// a message is retried.
const MaxHistory = 32

// Client describes the SMTP client that handed the message to the ingress.
type Client struct {
	Addr     string `json:"addr"`                // IP:port of the client
	HELO     string `json:"helo,omitempty"`      // name given in EHLO/HELO
	AuthUser string `json:"auth_user,omitempty"` // SASL user, when the client authenticated
	TLS      string `json:"tls,omitempty"`       // e.g. "TLSv1.3 TLS_AES_128_GCM_SHA256"; "" for plaintext
	Proto    string `json:"proto,omitempty"`     // SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA (RFC 3848)
}

// MailParams are the MAIL FROM parameters the ingress accepted.
type MailParams struct {
	Body       string `json:"body,omitempty"` // 7BIT or 8BITMIME
	SMTPUTF8   bool   `json:"smtputf8,omitempty"`
	RequireTLS bool   `json:"requiretls,omitempty"`
	Ret        string `json:"ret,omitempty"`   // DSN RET: FULL or HDRS
	EnvID      string `json:"envid,omitempty"` // DSN ENVID
	Size       int64  `json:"size,omitempty"`  // SIZE= declared by the client
}

// Recipient is one RCPT TO with its DSN parameters.
type Recipient struct {
	Addr   string   `json:"addr"`
	Notify []string `json:"notify,omitempty"` // NEVER, or SUCCESS/FAILURE/DELAY
	ORcpt  string   `json:"orcpt,omitempty"`  // "rfc822;addr" as given
	// LastReply is this recipient's outcome in the previous attempt.
	LastReply *Reply `json:"last_reply,omitempty"`
}

// Domain returns the part of the address after the last '@', as written.
func (r Recipient) Domain() string { return AddrDomain(r.Addr) }

// AddrDomain returns the part of an address after the last '@', or "" when
// there is none.
func AddrDomain(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

// Body says where a message's bytes are: inline after the envelope, or in
// the body bucket under Object.
type Body struct {
	Size int64 `json:"size"`
	// SHA256 is the hex digest of the body, written by builds before
	// 2026-12 and checked when present; empty in jobs written since
	// (the broker checksums every stored record, and a body object is
	// checked by its size and chunk count).
	SHA256 string `json:"sha256,omitempty"`
	Object string `json:"object,omitempty"` // object name in BucketBodies; "" means inline
	// MaxLine is the length of the body's longest line (after the header
	// section, without its CRLF), as the ingress counted it; 0 when
	// unknown. Delivery keeps every line on the wire within 998 octets
	// (RFC 5321 §4.5.3.1.6): a body whose lines are all shorter passes
	// untouched.
	MaxLine int `json:"max_line,omitempty"`
}

// Inline reports whether the body travels after the envelope.
func (b Body) Inline() bool { return b.Object == "" }

// Reply is an SMTP reply or a condition that stands in for one (a refused
// connection is recorded with Code 0 and a Text).
type Reply struct {
	Code     int    `json:"code,omitempty"`
	Enhanced string `json:"enhanced,omitempty"` // "4.4.1"
	Text     string `json:"text"`
	Host     string `json:"host,omitempty"` // the host that gave it, if any
}

// Temporary reports whether the reply is a 4xx or a condition without a code.
func (r *Reply) Temporary() bool { return r != nil && (r.Code == 0 || r.Code/100 == 4) }

// String renders the reply like a log line: "450 4.2.1 mailbox busy".
func (r *Reply) String() string {
	if r == nil {
		return ""
	}
	var b strings.Builder
	if r.Code != 0 {
		fmt.Fprintf(&b, "%d ", r.Code)
	}
	if r.Enhanced != "" {
		b.WriteString(r.Enhanced)
		b.WriteByte(' ')
	}
	b.WriteString(r.Text)
	return b.String()
}

// AttemptRecord is what one delivery attempt did.
type AttemptRecord struct {
	Attempt  int           `json:"attempt"`
	At       time.Time     `json:"at"`
	Duration time.Duration `json:"duration_ns"`
	Host     string        `json:"host,omitempty"` // next hop name
	IP       string        `json:"ip,omitempty"`   // address connected to
	TLS      string        `json:"tls,omitempty"`
	// Result is "delivered", "deferred", "failed" or "mixed" (some of each).
	Result string `json:"result"`
	Reply  *Reply `json:"reply,omitempty"`
	Rcpts  int    `json:"rcpts"`
}

// Attempt results.
const (
	ResultDelivered = "delivered"
	ResultDeferred  = "deferred"
	ResultFailed    = "failed"
	ResultMixed     = "mixed"
)

// JobID names one job: the queue ID, plus "-" and the part when there is one.
func (j *Job) JobID() string {
	if j.Part == "" {
		return j.QueueID
	}
	return j.QueueID + "-" + j.Part
}

// Dest is the destination token of the job's subject: the encoded domain
// of its recipients, or MultiDest when they span several domains.
func (j *Job) Dest() string {
	var dom string
	for i, r := range j.Rcpts {
		d := strings.ToLower(r.Domain())
		if i == 0 {
			dom = d
		} else if d != dom {
			return MultiDest
		}
	}
	return DestToken(dom)
}

// Domains returns the distinct lower-cased recipient domains, sorted.
func (j *Job) Domains() []string {
	seen := make(map[string]struct{}, 1)
	var out []string
	for _, r := range j.Rcpts {
		d := strings.ToLower(r.Domain())
		if _, ok := seen[d]; !ok {
			seen[d] = struct{}{}
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out
}

// AddHistory appends a record, dropping the oldest beyond MaxHistory.
func (j *Job) AddHistory(rec AttemptRecord) {
	j.History = append(j.History, rec)
	if n := len(j.History); n > MaxHistory {
		j.History = append(j.History[:0:0], j.History[n-MaxHistory:]...)
	}
}

// PartOf derives a deterministic part name for a group of recipients split
// from a job at a given attempt: the same inputs always give the same name,
// so a worker that crashes and redoes the split republishes the same jobs
// (and the broker's de-duplication drops the copies).
func PartOf(parent string, attempt int, rcpts []Recipient) string {
	addrs := make([]string, len(rcpts))
	for i, r := range rcpts {
		addrs[i] = strings.ToLower(r.Addr)
	}
	sort.Strings(addrs)
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d", parent, attempt)
	for _, a := range addrs {
		h.Write([]byte{0})
		h.Write([]byte(a))
	}
	return hex.EncodeToString(h.Sum(nil)[:5])
}
