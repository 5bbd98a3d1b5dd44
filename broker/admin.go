package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go/jetstream"
)

// Operations for the operator tools (queue and dead-letter commands) and
// for the dead-letter sweeper.

// DeleteQueueMsg removes one message from a queue shard by sequence; a
// message already gone is not an error.
func (c *Client) DeleteQueueMsg(ctx context.Context, shard int, seq uint64) error {
	if shard < 0 || shard >= len(c.queues) {
		return fmt.Errorf("no queue shard %d", shard)
	}
	return deleteMsg(ctx, c.queues[shard], seq)
}

// DeleteDeadLetterMsg removes one dead letter by sequence; one already
// gone is not an error.
func (c *Client) DeleteDeadLetterMsg(ctx context.Context, seq uint64) error {
	return deleteMsg(ctx, c.dlq, seq)
}

func deleteMsg(ctx context.Context, s jetstream.Stream, seq uint64) error {
	err := s.DeleteMsg(ctx, seq)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("%w: delete message %d: %v", ErrUnavailable, seq, err)
	}
	return nil
}

// PurgeQueueSubject removes every message on one queue subject (cancels a
// scheduled retry, removes a delivered job).
func (c *Client) PurgeQueueSubject(ctx context.Context, subject string) error {
	qs, ok := contracts.ParseQueueSubject(subject)
	if !ok || qs.Shard >= len(c.queues) {
		return fmt.Errorf("not a queue subject: %q", subject)
	}
	if err := c.queues[qs.Shard].Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return fmt.Errorf("%w: purge %s: %v", ErrUnavailable, subject, err)
	}
	return nil
}

// DeadLetterExists reports whether the dead letter with this ID is still
// stored.
func (c *Client) DeadLetterExists(ctx context.Context, id string) (bool, error) {
	_, err := c.dlq.GetLastMsgForSubject(ctx, contracts.DeadLetterSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: dead letter %s: %v", ErrUnavailable, id, err)
	}
	return true, nil
}

// BodyObjects lists the body objects that have a holder record.
func (c *Client) BodyObjects(ctx context.Context) ([]string, error) {
	lister, err := c.refs.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: list body holders: %v", ErrUnavailable, err)
	}
	var out []string
	for k := range lister.Keys() {
		if !strings.HasPrefix(k, replayKeyPrefix) {
			out = append(out, k)
		}
	}
	_ = lister.Stop() // the lister has ended: Stop only reports its closed subscription
	return out, nil
}

// replayKeyPrefix marks replay records in the holder bucket. Queue IDs
// (the keys of body holders) never contain '.', so they cannot collide.
const replayKeyPrefix = "replay."

// MarkReplayed records that a dead letter was replayed as a job, so that
// a replay run again after an interruption does not publish it twice.
func (c *Client) MarkReplayed(ctx context.Context, deadLetterID, jobID string) error {
	if _, err := c.refs.Put(ctx, replayKeyPrefix+deadLetterID, []byte(jobID)); err != nil {
		return fmt.Errorf("%w: replay record: %v", ErrUnavailable, err)
	}
	return nil
}

// ReplayedAs returns the job a dead letter was replayed as, if it was.
func (c *Client) ReplayedAs(ctx context.Context, deadLetterID string) (string, bool, error) {
	e, err := c.refs.Get(ctx, replayKeyPrefix+deadLetterID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("%w: replay record: %v", ErrUnavailable, err)
	}
	return string(e.Value()), true, nil
}
