package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The publishing primitives of the lifecycle (lifecycle.go): each writes
// one message with its de-duplication ID and waits for the broker's
// acknowledgement. Nothing outside this package publishes.

// ErrUnavailable wraps every failure to reach the broker or to get its
// acknowledgement in time: callers treat it as temporary.
var ErrUnavailable = errors.New("broker unavailable")

// msgID is the de-duplication ID of the job message for an attempt. The
// same job at the same attempt always gets the same ID, so republishing
// after a crash or a lost acknowledgement stores it once.
func msgID(j *contracts.Job) string {
	return j.JobID() + "." + strconv.Itoa(j.Attempt)
}

// shardOf is the queue shard a job lives in.
func (c *Client) shardOf(j *contracts.Job) int { return contracts.ShardOf(j.QueueID, len(c.queues)) }

// Shards is the number of queue shards.
func (c *Client) Shards() int { return len(c.queues) }

func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.set.PublishTimeout)
}

func jobMsg(subject string, j *contracts.Job, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(contracts.HeaderQueueID, j.QueueID)
	m.Header.Set(contracts.HeaderKind, contracts.KindJob)
	m.Header.Set(contracts.HeaderAttempt, strconv.Itoa(j.Attempt))
	return m
}

// jobSubject is the subject a job is ready for delivery on.
func (c *Client) jobSubject(j *contracts.Job) string {
	return contracts.JobSubject(c.shardOf(j), j.Dest(), j.QueueID, j.Part)
}

// publishJob makes a job ready for delivery and returns once the broker
// has stored it (with sync_interval: always, on disk). inline is the body
// when it travels in the message, in parts taken in order (none when it is
// in the body bucket). The payload is framed into a reused buffer: the
// client copies it into its connection's buffer before it waits for the
// acknowledgement, and nothing holds on to it once publishJob returns.
func (c *Client) publishJob(ctx context.Context, j *contracts.Job, inline ...[]byte) error {
	bp := payloadPool.Get().(*[]byte)
	data, err := contracts.AppendJob((*bp)[:0], j, inline...)
	if err != nil {
		payloadPool.Put(bp)
		return err
	}
	defer func() {
		if cap(data) <= maxPooledPayload {
			*bp = data[:0]
			payloadPool.Put(bp)
		}
	}()
	err = c.publishIdempotent(ctx, jobMsg(c.jobSubject(j), j, data),
		jetstream.WithMsgID(msgID(j)), jetstream.WithExpectStream(contracts.QueueStream(c.shardOf(j))))
	if err != nil {
		return fmt.Errorf("%w: publish job %s: %w", ErrUnavailable, j.JobID(), err)
	}
	return nil
}

// payloadPool recycles the buffers jobs are framed into; buffers larger
// than maxPooledPayload (a body far above the default inline limit) are
// left to the garbage collector.
var payloadPool = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledPayload = 512 << 10

// jsErrCodeDuplicateInProcess is a clustered stream's answer to a copy of a
// message whose first copy is still being replicated ("duplicate message
// id is in process", 409): not a refusal, the outcome is still pending.
const jsErrCodeDuplicateInProcess jetstream.ErrorCode = 10158

// publishIdempotent publishes a message that carries a de-duplication ID
// and waits for the broker's acknowledgement. An attempt that was sent and
// got no answer is in doubt: the broker may have stored the message and
// lost the reply (the node the client talks to going away, a stream leader
// dying before it answered). It is sent again, with the same ID, until an
// answer arrives; the stream stores it at most once and answers
// "duplicate" for a copy it already has. Attempts that could not leave
// (reconnecting) or that nobody received (no stream leader: an election)
// are retried too, after a short wait.
//
// The budget is PublishTimeout, and up to three times that while a copy
// is in doubt: an election after a stream leader dies takes several
// seconds, and the client waiting a little longer for its 250 is better
// than a 451 for a message that was stored (which it would send again).
// So a publish that returns an error has most likely stored nothing, and
// one that returns nil stored exactly one copy. Errors the broker answered
// with (a wrong stream, a message too large) are final, except "in
// process", which is still in doubt. A lack of storage, answered or seen
// by the embedded server's watch while no answer comes, ends the publish
// at once with ErrNoStorage (a store that failed to write stores nothing).
func (c *Client) publishIdempotent(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 3*c.set.PublishTimeout)
	defer cancel()
	// Long enough for a busy broker's fsync, short enough to leave room
	// for a try after the client moved to another node.
	per := max(c.set.PublishTimeout/3, time.Second)
	doubt := false
	for try := 1; ; try++ {
		actx, acancel := context.WithTimeout(ctx, per)
		_, err := c.js.PublishMsg(actx, m, opts...)
		acancel()
		var apiErr *jetstream.APIError
		inProcess := errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeDuplicateInProcess
		unanswered := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		doubt = doubt || inProcess || unanswered
		if err != nil {
			if serr := c.classifyWrite(err); errors.Is(serr, ErrNoStorage) {
				return serr
			}
		}
		switch {
		case err == nil:
			c.storage.wroteOK()
			return nil
		case !inProcess && apiErr != nil, errors.Is(err, nats.ErrConnectionClosed), ctx.Err() != nil:
			return err
		case !doubt && time.Since(start) >= c.set.PublishTimeout:
			return err // nothing was ever sent, or nobody received it
		case !unanswered:
			// No stream leader right now (an election), the connection
			// reconnecting, or (on a cluster) the first copy still being
			// replicated: wait a moment before the next try.
			select {
			case <-ctx.Done():
				return err
			case <-time.After(min(time.Duration(try)*50*time.Millisecond, 500*time.Millisecond)):
			}
		}
	}
}

// schedule stores a job that becomes ready at `at`: a NATS message
// schedule on the job's schedule subject, targeting its job subject. The
// schedule survives restarts of workers and of the broker; one that came
// due while the broker was down fires right after it is back.
func (c *Client) schedule(ctx context.Context, j *contracts.Job, inline []byte, at time.Time) error {
	// Schedules fire on whole seconds: round up, so that a retry never
	// comes before its time (a next hop's Retry-After, a rate window).
	if t := at.Truncate(time.Second); t.Before(at) {
		at = t.Add(time.Second)
	}
	shard, dest := c.shardOf(j), j.Dest()
	return c.scheduleOn(ctx, contracts.ScheduleSubject(shard, dest, j.QueueID, j.Part),
		contracts.JobSubject(shard, dest, j.QueueID, j.Part), j, inline, at, msgID(j))
}

// scheduleOn publishes a schedule on subject (one per subject: a new one
// replaces a pending one) that turns into a job on target at `at`.
func (c *Client) scheduleOn(ctx context.Context, subject, target string, j *contracts.Job, inline []byte, at time.Time, id string) error {
	data, err := contracts.EncodeJob(j, inline)
	if err != nil {
		return err
	}
	err = c.publishIdempotent(ctx, jobMsg(subject, j, data),
		jetstream.WithMsgID(id),
		jetstream.WithExpectStream(contracts.QueueStream(c.shardOf(j))),
		jetstream.WithScheduleAt(at),
		jetstream.WithScheduleTarget(target))
	if err != nil {
		return fmt.Errorf("%w: schedule job %s: %w", ErrUnavailable, j.JobID(), err)
	}
	return nil
}

// publishDeadLetter stores a dead letter; idempotent per d.ID.
func (c *Client) publishDeadLetter(ctx context.Context, d *contracts.DeadLetter, inline []byte) error {
	data, err := contracts.EncodeDeadLetter(d, inline)
	if err != nil {
		return err
	}
	m := nats.NewMsg(contracts.DeadLetterSubject(d.ID))
	m.Data = data
	m.Header.Set(contracts.HeaderQueueID, d.Job.QueueID)
	m.Header.Set(contracts.HeaderKind, contracts.KindDeadLetter)
	err = c.publishIdempotent(ctx, m, jetstream.WithMsgID("dl."+d.ID), jetstream.WithExpectStream(contracts.StreamDeadLetter))
	if err != nil {
		return fmt.Errorf("%w: publish dead letter %s: %w", ErrUnavailable, d.ID, err)
	}
	return nil
}

// retract removes a job that is ready for delivery (by its unique
// subject). It succeeds when the job is not, or no longer, in the queue.
func (c *Client) retract(ctx context.Context, j *contracts.Job) error {
	err := c.queues[c.shardOf(j)].Purge(ctx, jetstream.WithPurgeSubject(c.jobSubject(j)))
	if err != nil {
		return fmt.Errorf("%w: retract job %s: %v", ErrUnavailable, j.JobID(), err)
	}
	return nil
}

// purgeQueueSubject removes every message on one queue subject (cancels a
// scheduled retry, removes a delivered job).
func (c *Client) purgeQueueSubject(ctx context.Context, subject string) error {
	qs, ok := contracts.ParseQueueSubject(subject)
	if !ok || qs.Shard >= len(c.queues) {
		return fmt.Errorf("not a queue subject: %q", subject)
	}
	if err := c.queues[qs.Shard].Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return fmt.Errorf("%w: purge %s: %v", ErrUnavailable, subject, err)
	}
	return nil
}

// deleteMsg removes one message by sequence; one already gone is not an
// error.
func deleteMsg(ctx context.Context, s jetstream.Stream, seq uint64) error {
	err := s.DeleteMsg(ctx, seq)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		// nats.go reports a refused delete without the server's error
		// code: ask whether the message is still there.
		if _, gerr := s.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
			return nil
		}
		return fmt.Errorf("%w: delete message %d: %v", ErrUnavailable, seq, err)
	}
	return nil
}

func isNoResponders(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// retrying runs a broker operation until it succeeds, fails for a reason
// other than ErrUnavailable, or about 30 s have passed: a follow-up of a
// delivery that is not recorded means the job runs again and recipients
// that were just delivered get the message twice.
func retrying(ctx context.Context, f func(context.Context) error) error {
	backoff := 200 * time.Millisecond
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f(ctx)
		if err == nil || !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		if backoff < 3*time.Second {
			backoff *= 2
		}
	}
}

// scheduleTarget is the job subject a schedule subject turns into.
func scheduleTarget(subject string) string {
	return strings.Replace(subject, ".sched.", ".job.", 1)
}
