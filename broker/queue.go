package broker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrUnavailable wraps every failure to reach the broker or to get its
// acknowledgement in time: callers treat it as temporary.
var ErrUnavailable = errors.New("broker unavailable")

// ErrBodyNotFound means a job's body object is gone.
var ErrBodyNotFound = errors.New("body object not found")

// MsgID is the de-duplication ID of the job message for an attempt. The
// same job at the same attempt always gets the same ID, so republishing
// after a crash or a lost acknowledgement stores it once.
func MsgID(j *contracts.Job) string {
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

// PublishJob makes a job ready for delivery and returns once the broker
// has stored it (with sync_interval: always, on disk). inline is the body
// when it travels in the message, in parts taken in order (none when it is
// in the body bucket). The payload is framed into a reused buffer: the
// client copies it into its connection's buffer before it waits for the
// acknowledgement, and nothing holds on to it once PublishJob returns.
func (c *Client) PublishJob(ctx context.Context, j *contracts.Job, inline ...[]byte) error {
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
	shard := c.shardOf(j)
	err = c.publishIdempotent(ctx, jobMsg(contracts.JobSubject(shard, j.Dest(), j.JobID()), j, data),
		jetstream.WithMsgID(MsgID(j)), jetstream.WithExpectStream(contracts.QueueStream(shard)))
	if err != nil {
		return fmt.Errorf("%w: publish job %s: %v", ErrUnavailable, j.JobID(), err)
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
// process", which is still in doubt.
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
		switch {
		case err == nil:
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

// ScheduleJob stores a job that becomes ready at `at`: a NATS message
// schedule on the job's schedule subject, targeting its job subject. The
// schedule survives restarts of workers and of the broker; one that came
// due while the broker was down fires right after it is back.
func (c *Client) ScheduleJob(ctx context.Context, j *contracts.Job, inline []byte, at time.Time) error {
	return c.schedule(ctx, j, inline, at, MsgID(j))
}

// RescheduleJob replaces a pending schedule (same subject) with one due at
// `at`, e.g. "retry now" from the operator. The de-duplication ID differs
// from the original's so the broker does not drop it.
func (c *Client) RescheduleJob(ctx context.Context, j *contracts.Job, inline []byte, at time.Time) error {
	return c.schedule(ctx, j, inline, at, MsgID(j)+".r"+strconv.FormatInt(time.Now().UnixNano(), 36))
}

func (c *Client) schedule(ctx context.Context, j *contracts.Job, inline []byte, at time.Time, msgID string) error {
	data, err := contracts.EncodeJob(j, inline)
	if err != nil {
		return err
	}
	dest, id, shard := j.Dest(), j.JobID(), c.shardOf(j)
	err = c.publishIdempotent(ctx, jobMsg(contracts.ScheduleSubject(shard, dest, id), j, data),
		jetstream.WithMsgID(msgID),
		jetstream.WithExpectStream(contracts.QueueStream(shard)),
		jetstream.WithScheduleAt(at),
		jetstream.WithScheduleTarget(contracts.JobSubject(shard, dest, id)))
	if err != nil {
		return fmt.Errorf("%w: schedule job %s: %v", ErrUnavailable, id, err)
	}
	return nil
}

// PublishDeadLetter stores a dead letter; idempotent per d.ID.
func (c *Client) PublishDeadLetter(ctx context.Context, d *contracts.DeadLetter, inline []byte) error {
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
		return fmt.Errorf("%w: publish dead letter %s: %v", ErrUnavailable, d.ID, err)
	}
	return nil
}

// DeleteBody removes a body object; a missing one is not an error.
func (c *Client) DeleteBody(ctx context.Context, name string) error {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	err := c.bodies.Delete(ctx, name)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("%w: delete body %s: %v", ErrUnavailable, name, err)
	}
	return nil
}

// BodyBucketSize is the stored size of the body bucket in bytes.
func (c *Client) BodyBucketSize(ctx context.Context) (uint64, error) {
	st, err := c.bodies.Status(ctx)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// CreateBodyRefs records the first holders of a new body object.
func (c *Client) CreateBodyRefs(ctx context.Context, name string, holders ...string) error {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	val, _ := json.Marshal(holders)
	_, err := c.refs.Create(ctx, name, val)
	if errors.Is(err, jetstream.ErrKeyExists) {
		// A retried ingress publish: make sure the holders are recorded.
		_, _, err = c.UpdateBodyRefs(ctx, name, nil, holders)
	}
	if err != nil {
		return fmt.Errorf("%w: body refs %s: %v", ErrUnavailable, name, err)
	}
	return nil
}

// UpdateBodyRefs removes and adds holders of a body object atomically
// (compare-and-set). It reports how many holders remain and whether every
// holder in remove was present. When none remain the caller deletes the
// body with ReleaseBody. A missing key reads as no holders.
func (c *Client) UpdateBodyRefs(ctx context.Context, name string, remove, add []string) (remaining int, held bool, err error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	for try := 0; try < 50; try++ {
		entry, err := c.refs.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if len(add) == 0 {
				return 0, len(remove) == 0, nil
			}
			val, _ := json.Marshal(add)
			if _, err := c.refs.Create(ctx, name, val); errors.Is(err, jetstream.ErrKeyExists) {
				continue
			} else if err != nil {
				return 0, false, fmt.Errorf("%w: body refs %s: %v", ErrUnavailable, name, err)
			}
			return len(add), len(remove) == 0, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("%w: body refs %s: %v", ErrUnavailable, name, err)
		}
		var holders []string
		if len(entry.Value()) > 0 {
			if err := json.Unmarshal(entry.Value(), &holders); err != nil {
				return 0, false, fmt.Errorf("body refs %s: %w", name, err)
			}
		}
		held = true
		for _, r := range remove {
			i := slices.Index(holders, r)
			if i < 0 {
				held = false
				continue
			}
			holders = slices.Delete(holders, i, i+1)
		}
		for _, a := range add {
			if !slices.Contains(holders, a) {
				holders = append(holders, a)
			}
		}
		val, _ := json.Marshal(holders)
		if _, err := c.refs.Update(ctx, name, val, entry.Revision()); err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
				continue // lost a race with another worker: read again
			}
			return 0, false, fmt.Errorf("%w: body refs %s: %v", ErrUnavailable, name, err)
		}
		return len(holders), held, nil
	}
	return 0, false, fmt.Errorf("%w: body refs %s: too much contention", ErrUnavailable, name)
}

// BodyHolders lists the holders of a body object (nil when none).
func (c *Client) BodyHolders(ctx context.Context, name string) ([]string, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	entry, err := c.refs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: body refs %s: %v", ErrUnavailable, name, err)
	}
	var holders []string
	if len(entry.Value()) > 0 {
		if err := json.Unmarshal(entry.Value(), &holders); err != nil {
			return nil, fmt.Errorf("body refs %s: %w", name, err)
		}
	}
	return holders, nil
}

// ReleaseBody deletes a body that no job or dead letter holds any more,
// then its (empty) holder record.
func (c *Client) ReleaseBody(ctx context.Context, name string) error {
	if err := c.DeleteBody(ctx, name); err != nil {
		return err
	}
	if err := c.refs.Purge(ctx, name); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: body refs %s: %v", ErrUnavailable, name, err)
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

func decodeB64URL(s string) ([]byte, error) {
	if b, err := base64.URLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawURLEncoding.DecodeString(s)
}

// RetractJob removes a job that is ready for delivery (by its unique
// subject). It succeeds when the job is not, or no longer, in the queue.
func (c *Client) RetractJob(ctx context.Context, j *contracts.Job) error {
	shard := c.shardOf(j)
	err := c.queues[shard].Purge(ctx, jetstream.WithPurgeSubject(contracts.JobSubject(shard, j.Dest(), j.JobID())))
	if err != nil {
		return fmt.Errorf("%w: retract job %s: %v", ErrUnavailable, j.JobID(), err)
	}
	return nil
}
