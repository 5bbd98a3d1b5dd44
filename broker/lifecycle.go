package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go/jetstream"
)

// The job lifecycle. A message enters the queue with Enqueue; a delivery
// worker takes a job as a Lease and ends it with Lease.Settle (or gives it
// back); an operator moves jobs and dead letters with RetryNow, DeleteJob,
// Replay and RemoveDeadLetter. These are the only ways state changes, and
// each keeps the invariants together: publish with a deterministic ID
// before anything is removed, hold a body object before the record that
// needs it exists, let go of it only after the record is gone.

// Enqueue stores a new job: a message from the ingress, a notification
// (DSN) from delivery, a replayed dead letter. It returns once the broker
// has the job (with sync_interval: always, on disk); inline is the body in
// parts when it travels in the job. A job whose body is in the bucket
// (stored with PutBody) becomes a holder of it first.
//
// When it fails (ErrUnavailable), it makes sure, briefly, that nothing of
// the job is left to be delivered (a publish whose acknowledgement was
// lost may have stored it) and then lets go of the body; if the broker
// cannot confirm that, the body stays for the job that may exist, and the
// bucket's TTL is the backstop.
func (c *Client) Enqueue(ctx context.Context, j *contracts.Job, inline ...[]byte) error {
	if !j.Body.Inline() {
		if err := c.holdBody(ctx, j.Body.Object, j.JobID()); err != nil {
			return err
		}
	}
	err := c.publishJob(ctx, j, inline...)
	if err == nil {
		return nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if rerr := c.retract(rctx, j); rerr != nil {
		c.log.Warn().Err(rerr).Str("msg_id", j.QueueID).
			Msg("could not confirm that the failed publish left nothing behind; the message may be delivered although its sender was told to try again")
		return err
	}
	if !j.Body.Inline() {
		_ = c.letGoBody(rctx, j.Body.Object, j.JobID())
	}
	return err
}

// Outcome is what a delivery attempt leads to. Every recipient of the job
// is in exactly one of Delivered, a Retry, or Dead.
type Outcome struct {
	// Delivered are the recipients the next hop accepted, each with the
	// reply in LastReply. They are kept with the retries and the dead
	// letter (Job.Done), so the message's whole state stays visible.
	Delivered []contracts.Recipient
	// Retries are the groups of recipients to try again, each at its time.
	Retries []Retry
	// Postponed are groups of recipients that were not attempted (a
	// route's rate limit) and go out later, as the same attempt.
	Postponed []Postpone
	// Dead are the recipients given up on, if any.
	Dead *Dead
	// Notices are delivery status notifications to queue (jobs with
	// inline bodies, their IDs derived from the job and attempt).
	Notices []Notice
}

// Retry is a group of recipients to try again.
type Retry struct {
	Rcpts  []contracts.Recipient // each with its reply in LastReply
	At     time.Time
	Record contracts.AttemptRecord // this attempt, for the retry's history
	// DelayNotified: a delay warning was sent for these recipients.
	DelayNotified bool
}

// Postpone is a group of recipients that waits without an attempt.
type Postpone struct {
	Rcpts  []contracts.Recipient
	At     time.Time
	Reason string // shown by queue list and queue show
}

// Dead are recipients given up on.
type Dead struct {
	Reason     string // a contracts.Reason…
	Detail     string
	Rcpts      []contracts.Recipient // each with its reply in LastReply
	LastReply  *contracts.Reply
	HostsTried []string
	Records    []contracts.AttemptRecord // this attempt, for the history
}

// Notice is a message jetrelay sends itself (a DSN).
type Notice struct {
	Job  *contracts.Job
	Body []byte
}

// record stores everything an outcome of job j's attempt leads to, in an
// order that survives a crash at any point (every write is idempotent and
// is repeated when the job runs again): the body's new holders, the
// retries, the dead letter, the notices, and last this job's hold on the
// body. Each write is retried while the broker is unavailable. Then it
// sends, without waiting, the outcome record of the delivered recipients
// (outcomes.go), which nothing depends on.
func (c *Client) record(ctx context.Context, j *contracts.Job, inline []byte, o Outcome, now time.Time) error {
	type later struct {
		job *contracts.Job
		at  time.Time
	}
	var retries []later
	for _, r := range o.Retries {
		nj := j.Retry(r.Rcpts, r.Record, o.Delivered)
		nj.DelayNotified = nj.DelayNotified || r.DelayNotified
		retries = append(retries, later{nj, r.At})
	}
	for _, p := range o.Postponed {
		retries = append(retries, later{j.Postpone(p.Rcpts, p.Reason, o.Delivered), p.At})
	}
	var dl *contracts.DeadLetter
	if d := o.Dead; d != nil {
		dl = j.DeadLetter(d.Reason, d.Detail, d.Rcpts, d.LastReply, d.HostsTried, d.Records, o.Delivered, now)
	}
	object := j.Body.Object
	if object != "" {
		var holders []string
		for _, r := range retries {
			holders = append(holders, r.job.JobID())
		}
		if dl != nil {
			holders = append(holders, dlHolder(dl.ID))
		}
		if len(holders) > 0 {
			if err := retrying(ctx, func(ctx context.Context) error { return c.holdBody(ctx, object, holders...) }); err != nil {
				return err
			}
		}
	}
	for _, r := range retries {
		if err := retrying(ctx, func(ctx context.Context) error { return c.schedule(ctx, r.job, inline, r.at) }); err != nil {
			return err
		}
	}
	if dl != nil {
		if err := retrying(ctx, func(ctx context.Context) error { return c.publishDeadLetter(ctx, dl, inline) }); err != nil {
			return err
		}
	}
	for _, n := range o.Notices {
		if err := retrying(ctx, func(ctx context.Context) error { return c.publishJob(ctx, n.Job, n.Body) }); err != nil {
			return err
		}
	}
	if object != "" {
		if err := retrying(ctx, func(ctx context.Context) error { return c.letGoBody(ctx, object, j.JobID()) }); err != nil {
			return err
		}
	}
	// Last, and without waiting: the record of where the delivered
	// recipients went (outcomes.go), for send --wait.
	c.noteDelivered(j, o.Delivered, now)
	return nil
}

// RetryNow makes a scheduled job due now (postqueue -i). A job that is
// ready or being delivered is left alone; it reports whether it acted.
// The new schedule replaces the pending one on the job's own subject.
func (c *Client) RetryNow(ctx context.Context, qj *QueuedJob) (bool, error) {
	if !qj.Scheduled || qj.Job == nil {
		return false, nil
	}
	// A de-duplication ID of its own: the original schedule's would make
	// the broker drop this one.
	id := msgID(qj.Job) + ".r" + fmt.Sprint(time.Now().UnixNano())
	return true, c.scheduleOn(ctx, qj.Subject, scheduleTarget(qj.Subject), qj.Job, qj.Inline, time.Now(), id)
}

// DeleteJob removes a job from the queue. Unless purge, it first becomes
// a dead letter with reason "deleted" and detail, keeping its body, so an
// interrupted delete leaves the message in one place or both, never in
// none; with purge the job and, when nothing else holds it, its body are
// dropped. A job a worker is delivering at this moment may still be
// delivered by that attempt.
func (c *Client) DeleteJob(ctx context.Context, qj *QueuedJob, purge bool, detail string) error {
	if qj.Job == nil {
		return deleteMsg(ctx, c.queues[qj.Shard], qj.Seq)
	}
	j := qj.Job
	if !purge {
		d := j.Deleted(detail, time.Now())
		if !j.Body.Inline() {
			if err := c.holdBody(ctx, j.Body.Object, dlHolder(d.ID)); err != nil {
				return err
			}
		}
		if err := c.publishDeadLetter(ctx, d, qj.Inline); err != nil {
			return err
		}
	}
	var err error
	if qj.Scheduled {
		err = c.purgeQueueSubject(ctx, qj.Subject)
	} else {
		err = deleteMsg(ctx, c.queues[qj.Shard], qj.Seq)
	}
	if err != nil {
		return err
	}
	if !j.Body.Inline() {
		return c.letGoBody(ctx, j.Body.Object, j.JobID())
	}
	return nil
}

// ErrNotReplayable: the dead letter has nothing to deliver again.
var ErrNotReplayable = errors.New("dead letter cannot be replayed")

// Replay turns a dead letter back into a job (contracts.DeadLetter.Replay:
// its recipients, a fresh attempt count and lifetime, the same queue ID
// with a replay generation), sent to route (host:port) when given. The
// dead letter is removed only after the broker has the new job; a replay
// interrupted after that point and run again finds its record and only
// finishes the removal, so the message is never queued twice. It returns
// the new job, and already=true when an earlier run had queued it.
func (c *Client) Replay(ctx context.Context, sd *StoredDeadLetter, route string) (job *contracts.Job, already bool, err error) {
	d := sd.DL
	if d == nil || len(d.Job.Rcpts) == 0 || d.Reason == contracts.ReasonMalformed {
		return nil, false, fmt.Errorf("%w: %s has no recipients to deliver to", ErrNotReplayable, sd.ID())
	}
	nj := d.Replay(time.Now(), route)
	prev, done, err := c.replayedAs(ctx, d.ID)
	switch {
	case err != nil:
		return nil, false, err
	case done:
		already = true
		nj.Part = strings.TrimPrefix(prev, nj.QueueID+"-")
	default:
		if err := c.Enqueue(ctx, nj, sd.Inline); err != nil {
			return nil, false, err
		}
		if err := c.markReplayed(ctx, d.ID, nj.JobID()); err != nil {
			return nil, false, err
		}
	}
	return nj, already, c.RemoveDeadLetter(ctx, sd)
}

// RemoveDeadLetter deletes a dead letter for good, and its body when
// nothing else holds it.
func (c *Client) RemoveDeadLetter(ctx context.Context, sd *StoredDeadLetter) error {
	if err := deleteMsg(ctx, c.dlq, sd.Seq); err != nil {
		return err
	}
	if sd.DL == nil || sd.DL.Job.Body.Inline() {
		return nil
	}
	return c.letGoBody(ctx, sd.DL.Job.Body.Object, dlHolder(sd.DL.ID))
}

// ReleaseExpiredBodies releases the bodies of dead letters that the
// stream's retention removed (MaxAge removes records without telling
// anyone): every dead-letter holder whose record is gone is dropped, and a
// body nobody holds any more is deleted. Safe to run from several
// processes at once. It returns how many bodies it deleted.
func (c *Client) ReleaseExpiredBodies(ctx context.Context) (int, error) {
	objs, err := c.bodyObjects(ctx)
	if err != nil {
		return 0, err
	}
	released := 0
	for _, obj := range objs {
		holders, err := c.bodyHolders(ctx, obj)
		if err != nil {
			return released, err
		}
		var gone []string
		for _, h := range holders {
			id, ok := strings.CutPrefix(h, dlHolderPrefix)
			if !ok {
				continue
			}
			exists, err := c.deadLetterExists(ctx, id)
			if err != nil {
				return released, err
			}
			if !exists {
				gone = append(gone, h)
			}
		}
		if len(gone) == 0 && len(holders) > 0 {
			continue
		}
		left, _, err := c.updateBodyRefs(ctx, obj, gone, nil)
		if err != nil {
			return released, err
		}
		if left == 0 {
			if err := c.releaseBody(ctx, obj); err != nil {
				return released, err
			}
			released++
		}
	}
	return released, nil
}

// deadLetterExists reports whether the dead letter with this ID is still
// stored.
func (c *Client) deadLetterExists(ctx context.Context, id string) (bool, error) {
	_, err := c.dlq.GetLastMsgForSubject(ctx, contracts.DeadLetterSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// A dead letter written before subjects carried the queue ID.
		_, err = c.dlq.GetLastMsgForSubject(ctx, contracts.SubjectDeadLetterPrefix+id)
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: dead letter %s: %v", ErrUnavailable, id, err)
	}
	return true, nil
}

// replayKeyPrefix marks replay records in the holder bucket. Queue IDs
// (the keys of body holders) never contain '.', so they cannot collide.
const replayKeyPrefix = "replay."

// markReplayed records that a dead letter was replayed as a job, so that
// a replay run again after an interruption does not queue it twice.
func (c *Client) markReplayed(ctx context.Context, deadLetterID, jobID string) error {
	if _, err := c.refs.Put(ctx, replayKeyPrefix+deadLetterID, []byte(jobID)); err != nil {
		return fmt.Errorf("%w: replay record: %v", ErrUnavailable, err)
	}
	return nil
}

// replayedAs returns the job a dead letter was replayed as, if it was.
func (c *Client) replayedAs(ctx context.Context, deadLetterID string) (string, bool, error) {
	e, err := c.refs.Get(ctx, replayKeyPrefix+deadLetterID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("%w: replay record: %v", ErrUnavailable, err)
	}
	return string(e.Value()), true, nil
}
