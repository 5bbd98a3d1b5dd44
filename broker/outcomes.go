package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go/jetstream"
)

// The outcome record: which host accepted a delivered recipient with which
// reply. A job that is delivered in full leaves nothing else behind (its
// job is acknowledged and purged, no retry or dead letter carries its
// recipients in Done), so that `jetrelay send --wait` can say where a
// message went, Settle writes one small record per job with delivered
// recipients into the MAILDONE bucket: in the broker's memory, for an
// hour, bounded in size with the oldest records dropped first.
//
// It is not part of the lifecycle and costs the hot path no wait: the
// record is a plain publish into the bucket's subject, sent before the
// job's acknowledgement on the same connection, never acknowledged
// itself. Lost records (a broker restart, the bound, a broker that
// refused the bucket) only make `send --wait` say less.

// Outcome record settings.
const (
	// OutcomeTTL is how long a record is kept.
	OutcomeTTL = time.Hour
	// outcomeMaxBytes bounds the bucket: about 200,000 records of one
	// recipient; past it the oldest go first.
	outcomeMaxBytes = 64 << 20
	// outcomeMaxRcpts caps the recipients one record lists.
	outcomeMaxRcpts = 100
)

// outcomeStream is the stream behind the bucket, laid out as NATS
// key-value buckets are (so `nats kv get MAILDONE <key>` reads it).
var (
	outcomeStream  = "KV_" + contracts.BucketOutcomes
	outcomeSubject = "$KV." + contracts.BucketOutcomes + "."
)

// Delivered is an outcome record: the recipients of one job that next
// hops accepted, each with the reply that accepted it (LastReply, whose
// Host is the host that gave it).
type Delivered struct {
	QueueID string                `json:"queue_id"`
	Part    string                `json:"part,omitempty"`
	Attempt int                   `json:"attempt"`
	At      time.Time             `json:"at"`
	Rcpts   []contracts.Recipient `json:"rcpts"`
	// More counts recipients beyond the ones listed (outcomeMaxRcpts).
	More int `json:"more,omitempty"`
}

// OutcomeStreamConfig is the bucket's stream: memory storage (no fsync
// on the hot path, gone with a broker restart), an hour's records,
// bounded, the oldest dropped first (unlike a bucket nats.go creates,
// which refuses new keys when full).
func (s Settings) OutcomeStreamConfig() jetstream.StreamConfig {
	s.fill()
	return jetstream.StreamConfig{
		Name:              outcomeStream,
		Description:       "jetrelay: recent delivered recipients with the host and reply that accepted them (for send --wait)",
		Subjects:          []string{outcomeSubject + ">"},
		Storage:           jetstream.MemoryStorage,
		Replicas:          s.Replicas,
		MaxAge:            OutcomeTTL,
		MaxBytes:          outcomeMaxBytes,
		MaxMsgs:           -1,
		MaxMsgsPerSubject: 1,
		MaxConsumers:      -1,
		Discard:           jetstream.DiscardOld,
		Duplicates:        2 * time.Minute,
		AllowRollup:       true,
		DenyDelete:        true,
		AllowDirect:       true,
	}
}

// provisionOutcomes creates the bucket. A broker that refuses it (no
// memory storage for JetStream, say) costs only the records: the relay
// runs without them.
func (c *Client) provisionOutcomes(ctx context.Context, s Settings) {
	err := retryTransient(ctx, c, "key-value "+contracts.BucketOutcomes, func(ctx context.Context) error {
		_, err := c.ensureStream(ctx, s.OutcomeStreamConfig())
		return err
	})
	if err != nil {
		c.log.Warn().Err(err).Msg("no record of delivered recipients (jetrelay send --wait cannot say which host accepted a message): the broker refused the " +
			contracts.BucketOutcomes + " bucket")
		return
	}
	c.outcomes = true
}

// bindOutcomes finds the bucket, if the relay keeps one.
func (c *Client) bindOutcomes(ctx context.Context) error {
	_, err := c.js.Stream(ctx, outcomeStream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		c.outcomes = false
		return nil
	case err != nil:
		return err
	}
	c.outcomes = true
	return nil
}

// outcomeKey names a job's record: "<queue id>.<part>", "_" for no part.
func outcomeKey(j *contracts.Job) string {
	part := j.Part
	if part == "" {
		part = "_"
	}
	return j.QueueID + "." + part
}

// noteDelivered sends the outcome record of job j's delivered recipients.
// It does not wait for the broker, and a failure only loses the record.
func (c *Client) noteDelivered(j *contracts.Job, delivered []contracts.Recipient, now time.Time) {
	if !c.outcomes || len(delivered) == 0 {
		return
	}
	d := Delivered{QueueID: j.QueueID, Part: j.Part, Attempt: j.Attempt, At: now.UTC()}
	n := min(len(delivered), outcomeMaxRcpts)
	d.Rcpts = make([]contracts.Recipient, n)
	for i, r := range delivered[:n] {
		d.Rcpts[i] = contracts.Recipient{Addr: r.Addr, LastReply: r.LastReply}
	}
	d.More = len(delivered) - n
	data, err := json.Marshal(&d)
	if err != nil {
		return
	}
	_ = c.nc.Publish(outcomeSubject+outcomeKey(j), data)
}

// MessageDelivered returns the outcome records of a message (its jobs
// settled in the last OutcomeTTL with delivered recipients), oldest
// first. kept is false when the broker keeps no records (a relay older
// than the bucket, or a broker that refused it).
func (c *Client) MessageDelivered(ctx context.Context, queueID string) (recs []Delivered, kept bool, err error) {
	if !c.outcomes {
		return nil, false, nil
	}
	err = c.scan(ctx, outcomeStream, outcomeSubject+queueID+".>", 1, func(m *StoredMsg) bool {
		var d Delivered
		if json.Unmarshal(m.Data, &d) == nil {
			recs = append(recs, d)
		}
		return true
	})
	if err != nil {
		return nil, true, fmt.Errorf("outcome records of %s: %w", queueID, err)
	}
	return recs, true, nil
}
