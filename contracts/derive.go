package contracts

import (
	"strconv"
	"time"
)

// The jobs and dead letters that follow from a job are derived here, and
// only here, so that every stage and tool names them alike: the IDs are
// deterministic (a republish after a crash is de-duplicated by the
// broker) and all start with the message's queue ID.

// Retry derives the job that tries rcpts again after j's attempt: the
// same message and queue ID, a part named by [PartOf], the next attempt
// number, rec appended to the history and delivered appended to Done.
// Each recipient carries its reply from this attempt in LastReply; the
// first of those becomes LastError.
func (j *Job) Retry(rcpts []Recipient, rec AttemptRecord, delivered []Recipient) *Job {
	nj := *j
	nj.Version = 0
	nj.Rcpts = append([]Recipient(nil), rcpts...)
	nj.Part = PartOf(j.JobID(), j.Attempt, nj.Rcpts)
	nj.Attempt = j.Attempt + 1
	nj.Waiting = ""
	nj.LastError = nil
	if len(rcpts) > 0 {
		nj.LastError = rcpts[0].LastReply
	}
	nj.History = append([]AttemptRecord(nil), j.History...)
	nj.AddHistory(rec)
	nj.Done = appendDone(j.Done, delivered)
	return &nj
}

// Postpone derives the job that takes rcpts to a later time without an
// attempt (a route's rate limit was reached): the same attempt number and
// history, a part of its own (PartOf plus "w": a new subject, so nothing
// done to this job's subject can touch it), Waiting set to reason.
func (j *Job) Postpone(rcpts []Recipient, reason string, delivered []Recipient) *Job {
	nj := *j
	nj.Version = 0
	nj.Rcpts = append([]Recipient(nil), rcpts...)
	nj.Part = PartOf(j.JobID(), j.Attempt, nj.Rcpts) + "w"
	nj.Waiting = reason
	nj.History = append([]AttemptRecord(nil), j.History...)
	nj.Done = appendDone(j.Done, delivered)
	return &nj
}

// DeadLetter derives the dead letter of rcpts (each with its LastReply)
// given up at j's attempt. records are this attempt's records, added to
// the history; delivered are the recipients this attempt delivered.
func (j *Job) DeadLetter(reason, detail string, rcpts []Recipient, last *Reply, tried []string, records []AttemptRecord, delivered []Recipient, at time.Time) *DeadLetter {
	dj := *j
	dj.Version = 0
	dj.Waiting = ""
	dj.Rcpts = append([]Recipient(nil), rcpts...)
	dj.History = append([]AttemptRecord(nil), j.History...)
	for _, r := range records {
		dj.AddHistory(r)
	}
	dj.Done = appendDone(j.Done, delivered)
	return &DeadLetter{
		ID:         DeadLetterID(j.JobID(), j.Attempt),
		Reason:     reason,
		Detail:     detail,
		DeadAt:     at.UTC(),
		LastReply:  last,
		HostsTried: tried,
		Job:        dj,
	}
}

// Deleted derives the dead letter an operator's delete of j writes
// (reason "deleted"), distinct from any dead letter of the same attempt.
func (j *Job) Deleted(detail string, at time.Time) *DeadLetter {
	dj := *j
	dj.Version = 0
	return &DeadLetter{
		ID:        DeletedID(j.JobID(), j.Attempt),
		Reason:    ReasonDeleted,
		Detail:    detail,
		DeadAt:    at.UTC(),
		LastReply: j.LastError,
		Job:       dj,
	}
}

// Replay derives the job a dead letter is replayed as: its recipients,
// attempt 1, a fresh queue lifetime from at, the same queue ID with a
// replay generation in the part ("r1", "r2"…), ReplayOf and ReplayCount
// set, and route (host:port, or "") as a one-off next hop. The history and
// Done travel along.
func (d *DeadLetter) Replay(at time.Time, route string) *Job {
	nj := d.Job
	nj.Version = 0
	nj.ReplayCount = d.Job.ReplayCount + 1
	nj.ReplayOf = d.ID
	nj.Part = d.Job.Part + "r" + strconv.Itoa(nj.ReplayCount)
	nj.Attempt = 1
	nj.FirstSeen = at.UTC()
	nj.LastError = nil
	nj.Waiting = ""
	nj.DelayNotified = false
	nj.Route = route
	nj.History = append([]AttemptRecord(nil), d.Job.History...)
	nj.Done = append([]Recipient(nil), d.Job.Done...)
	nj.Rcpts = make([]Recipient, len(d.Job.Rcpts))
	for i, r := range d.Job.Rcpts {
		r.LastReply = nil
		nj.Rcpts[i] = r
	}
	return &nj
}

func appendDone(done, delivered []Recipient) []Recipient {
	if len(delivered) == 0 {
		return done
	}
	out := append(append([]Recipient(nil), done...), delivered...)
	if len(out) > MaxDone {
		out = out[len(out)-MaxDone:]
	}
	return out
}
