// Package filter selects jobs and dead letters for the operator's
// commands: one set of criteria with one meaning for the live queue and
// the dead letters alike (queue list/show/retry/delete, deadletter
// list/show/replay/purge).
//
// IDs: a queue ID names every job and dead letter of its message; a longer
// ID (a job's "<queue id>-<part>", a dead letter's "<job id>-d<attempt>")
// names that one record. Every such ID starts with its message's queue ID,
// so an ID copied from an old log line still finds the message: Widen
// turns record IDs into their messages once the records are gone.
package filter

import (
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
)

// Filter selects records. Empty fields match everything.
type Filter struct {
	// IDs: queue IDs or record IDs (see the package doc).
	IDs []string
	// Domain: a recipient's domain, exactly (case-insensitive).
	Domain string
	// From, Rcpt: substrings of the sender and of a recipient
	// (case-insensitive).
	From, Rcpt string
	// ReasonContains: a substring (case-insensitive) of a dead letter's
	// reason, detail or last reply, or of a job's last error.
	ReasonContains string
	// Since, Until bound when a dead letter was given up on, or when a
	// job's message was received: Since ≤ t < Until.
	Since, Until time.Time
	// OlderThan: given up on (dead letters) or received (jobs) longer ago
	// than this.
	OlderThan time.Duration
}

// Empty reports whether the filter matches everything.
func (f Filter) Empty() bool {
	return len(f.IDs) == 0 && f.Domain == "" && f.From == "" && f.Rcpt == "" && f.ReasonContains == "" &&
		f.Since.IsZero() && f.Until.IsZero() && f.OlderThan == 0
}

// MatchJob reports whether a job in the queue passes the filter at now.
func (f Filter) MatchJob(j *contracts.Job, now time.Time) bool {
	return f.matchIDs(j.QueueID, j.JobID(), "") &&
		f.matchEnvelope(j) &&
		(f.ReasonContains == "" || containsFold(j.LastError.String(), f.ReasonContains)) &&
		f.matchTime(j.ReceivedAt, now)
}

// MatchDeadLetter reports whether a dead letter passes the filter at now.
func (f Filter) MatchDeadLetter(d *contracts.DeadLetter, now time.Time) bool {
	return f.matchIDs(d.Job.QueueID, d.Job.JobID(), d.ID) &&
		f.matchEnvelope(&d.Job) &&
		(f.ReasonContains == "" || containsFold(d.Reason+" "+d.Detail+" "+d.LastReply.String(), f.ReasonContains)) &&
		f.matchTime(d.DeadAt, now)
}

func (f Filter) matchIDs(queueID, jobID, recordID string) bool {
	if len(f.IDs) == 0 {
		return true
	}
	for _, id := range f.IDs {
		if id == queueID || id == jobID || (recordID != "" && id == recordID) {
			return true
		}
	}
	return false
}

func (f Filter) matchEnvelope(j *contracts.Job) bool {
	if f.Domain != "" && !anyRcpt(j.Rcpts, func(r contracts.Recipient) bool { return strings.EqualFold(r.Domain(), f.Domain) }) {
		return false
	}
	if f.From != "" && !containsFold(j.From, f.From) {
		return false
	}
	if f.Rcpt != "" && !anyRcpt(j.Rcpts, func(r contracts.Recipient) bool { return containsFold(r.Addr, f.Rcpt) }) {
		return false
	}
	return true
}

func (f Filter) matchTime(t, now time.Time) bool {
	if !f.Since.IsZero() && t.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !t.Before(f.Until) {
		return false
	}
	if f.OlderThan > 0 && now.Sub(t) < f.OlderThan {
		return false
	}
	return true
}

// QueueIDs returns the queue IDs of the messages the filter's IDs belong
// to, when the filter is nothing but IDs that all start with a queue ID:
// then every match is among those messages' records, which the broker
// finds by subject without reading the rest.
func (f Filter) QueueIDs() ([]string, bool) {
	if len(f.IDs) == 0 {
		return nil, false
	}
	rest := f
	rest.IDs = nil
	if !rest.Empty() {
		return nil, false
	}
	var out []string
	seen := map[string]bool{}
	for _, id := range f.IDs {
		q, ok := contracts.QueueIDOf(id)
		if !ok {
			return nil, false
		}
		if !seen[q] {
			seen[q] = true
			out = append(out, q)
		}
	}
	return out, true
}

// Widen returns the filter with every record ID replaced by its message's
// queue ID, and whether anything changed.
func (f Filter) Widen() (Filter, bool) {
	changed := false
	ids := make([]string, len(f.IDs))
	for i, id := range f.IDs {
		ids[i] = id
		if q, ok := contracts.QueueIDOf(id); ok && q != id {
			ids[i], changed = q, true
		}
	}
	f.IDs = ids
	return f, changed
}

func anyRcpt(rs []contracts.Recipient, f func(contracts.Recipient) bool) bool {
	for _, r := range rs {
		if f(r) {
			return true
		}
	}
	return false
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
