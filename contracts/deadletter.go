package contracts

import (
	"strconv"
	"time"
)

// DeadLetter records a job that jetrelay gave up on: the job as it was last
// attempted (its Rcpts are the recipients that failed, each with its
// LastReply), why, and when. Its body stays available for as long as the
// record exists, so it can be inspected and replayed.
type DeadLetter struct {
	Version int `json:"v"`
	// ID is unique per dead letter and deterministic (see [DeadLetterID]).
	ID     string    `json:"id"`
	Reason string    `json:"reason"` // one of the Reason constants
	Detail string    `json:"detail"` // human-readable explanation
	DeadAt time.Time `json:"dead_at"`
	// LastReply is the last SMTP reply or condition seen.
	LastReply *Reply `json:"last_reply,omitempty"`
	// HostsTried lists the next hops the final attempt tried, in order.
	HostsTried []string `json:"hosts_tried,omitempty"`
	Job        Job      `json:"job"`
}

// Reasons a job becomes a dead letter.
const (
	ReasonRejected    = "rejected"     // a permanent (5xx) reply or permanent routing failure
	ReasonExpired     = "expired"      // still failing temporarily at the end of delivery.retry.max_age
	ReasonBodyMissing = "body-missing" // the body object was gone
	ReasonMalformed   = "malformed"    // the job could not be decoded
	ReasonPoison      = "poison"       // redelivered too often without finishing (worker crashes)
	ReasonDeleted     = "deleted"      // deleted by an operator
)

// DeadLetterID derives the ID of the dead letter written for a job at an
// attempt. Deterministic, so a republish after a crash is de-duplicated.
func DeadLetterID(jobID string, attempt int) string {
	return jobID + "-d" + strconv.Itoa(attempt)
}

// DeletedID derives the ID of the dead letter an operator's delete writes
// for a job at an attempt (distinct from DeadLetterID of the same job).
func DeletedID(jobID string, attempt int) string {
	return jobID + "-x" + strconv.Itoa(attempt)
}
