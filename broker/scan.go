package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go"
)

// StoredMsg is a message as stored in a stream.
type StoredMsg struct {
	Seq     uint64
	Subject string
	Time    time.Time
	Header  nats.Header
	Data    []byte
}

// scanBatch is how many messages one direct-get request returns.
const scanBatch = 256

// scan reads the messages of a stream whose subject matches filter, in
// sequence order starting at from, without a consumer and without holding
// them all in memory: batched direct gets of scanBatch messages. fn returns
// false to stop.
func (c *Client) scan(ctx context.Context, stream, filter string, from uint64, fn func(*StoredMsg) bool) error {
	if from == 0 {
		from = 1
	}
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("%w: scan %s: %v", ErrUnavailable, stream, err)
	}
	defer sub.Unsubscribe()
batches:
	for {
		req, _ := json.Marshal(map[string]any{"seq": from, "next_by_subj": filter, "batch": scanBatch, "max_bytes": 8 << 20})
		if err := c.nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, req); err != nil {
			return fmt.Errorf("%w: scan %s: %v", ErrUnavailable, stream, err)
		}
		got := 0
		for {
			wait := 5 * time.Second
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
				wait = time.Until(dl)
			}
			m, err := sub.NextMsg(wait)
			if err != nil {
				return fmt.Errorf("%w: scan %s: %v", ErrUnavailable, stream, err)
			}
			switch m.Header.Get("Status") {
			case "":
			case "404": // nothing (more) matches
				return nil
			case "204": // end of this batch
				pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
				if pending == 0 || got == 0 {
					return nil
				}
				continue batches
			case "408":
				return fmt.Errorf("%w: scan %s: request timeout", ErrUnavailable, stream)
			default:
				return fmt.Errorf("scan %s: status %s %s", stream, m.Header.Get("Status"), m.Header.Get("Description"))
			}
			seq, _ := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
			ts, _ := time.Parse(time.RFC3339Nano, m.Header.Get("Nats-Time-Stamp"))
			got++
			from = seq + 1
			if !fn(&StoredMsg{Seq: seq, Subject: m.Header.Get("Nats-Subject"), Time: ts, Header: m.Header, Data: m.Data}) {
				return nil
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
}

// QueuedJob is a job in the live queue.
type QueuedJob struct {
	Shard     int
	Seq       uint64 // sequence in its shard's stream
	Cursor    uint64 // position across shards, for paging (see ScanQueue)
	Subject   string
	Scheduled bool      // a retry waiting for its time (else ready or being delivered)
	NextAt    time.Time // when a scheduled retry becomes due
	Stored    time.Time // when this message was stored
	Job       *contracts.Job
	Inline    []byte // the body when it travels in the job
	Err       error  // the payload did not decode
}

// cursorShift puts the shard above the sequence in a paging cursor.
const cursorShift = 48

// ScanQueue calls fn for every job in the live queue (ready, in flight and
// scheduled), shard by shard in sequence order, starting after the cursor
// `after` (0: from the start; else a QueuedJob.Cursor). Delivered jobs
// below the ack floor, waiting to be purged, are skipped (one delivered in
// the last moments above the floor may still show).
func (c *Client) ScanQueue(ctx context.Context, after uint64, fn func(*QueuedJob) bool) error {
	floors, err := c.ackFloors(ctx)
	if err != nil {
		return err
	}
	startShard, startSeq := int(after>>cursorShift), after&(1<<cursorShift-1)
	stop := false
	for shard := startShard; shard < len(c.queues) && !stop; shard++ {
		from := uint64(1)
		if shard == startShard {
			from = startSeq + 1
		}
		err := c.scanShard(ctx, shard, contracts.QueueSubjects(shard), from, floors[shard], func(qj *QueuedJob) bool {
			stop = !fn(qj)
			return !stop
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// MessageJobs calls fn for the jobs of one message in the live queue, found
// by its queue ID without reading the rest of the queue. (Jobs written
// before subjects carried the queue ID are found by ScanQueue only.)
func (c *Client) MessageJobs(ctx context.Context, queueID string, fn func(*QueuedJob) bool) error {
	shard := contracts.ShardOf(queueID, len(c.queues))
	floors, err := c.ackFloors(ctx)
	if err != nil {
		return err
	}
	return c.scanShard(ctx, shard, contracts.JobsOf(shard, queueID), 1, floors[shard], fn)
}

func (c *Client) scanShard(ctx context.Context, shard int, filter string, from, floor uint64, fn func(*QueuedJob) bool) error {
	return c.scan(ctx, contracts.QueueStream(shard), filter, from, func(m *StoredMsg) bool {
		qs, _ := contracts.ParseQueueSubject(m.Subject)
		if qs.Kind == "job" && m.Seq <= floor {
			return true
		}
		qj := &QueuedJob{Shard: shard, Seq: m.Seq, Cursor: uint64(shard)<<cursorShift | m.Seq, Subject: m.Subject, Stored: m.Time}
		if qs.Kind == "sched" {
			qj.Scheduled = true
			qj.NextAt = scheduleTime(m.Header.Get(contracts.HeaderSchedule))
		}
		qj.Job, qj.Inline, qj.Err = contracts.DecodeJob(m.Data)
		return fn(qj)
	})
}

// scheduleTime reads "@at 2026-11-22T18:30:00Z".
func scheduleTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339, strings.TrimPrefix(s, "@at "))
	return t
}

// StoredDeadLetter is a record in the dead-letter stream.
type StoredDeadLetter struct {
	Seq    uint64
	Stored time.Time
	DL     *contracts.DeadLetter
	Inline []byte
	Err    error
}

// ID is the dead letter's ID, or its sequence when it does not decode.
func (s *StoredDeadLetter) ID() string {
	if s.DL != nil {
		return s.DL.ID
	}
	return fmt.Sprintf("#%d", s.Seq)
}

// ScanDeadLetters calls fn for every dead letter from sequence `from` on.
func (c *Client) ScanDeadLetters(ctx context.Context, from uint64, fn func(*StoredDeadLetter) bool) error {
	return c.scanDeadLetters(ctx, contracts.SubjectDeadLettersAll, from, fn)
}

// MessageDeadLetters calls fn for the dead letters of one message, found
// by its queue ID without reading the other dead letters. (Dead letters
// written before subjects carried the queue ID are found by
// ScanDeadLetters only.)
func (c *Client) MessageDeadLetters(ctx context.Context, queueID string, fn func(*StoredDeadLetter) bool) error {
	return c.scanDeadLetters(ctx, contracts.DeadLettersOf(queueID), 1, fn)
}

func (c *Client) scanDeadLetters(ctx context.Context, filter string, from uint64, fn func(*StoredDeadLetter) bool) error {
	return c.scan(ctx, contracts.StreamDeadLetter, filter, from, func(m *StoredMsg) bool {
		sd := &StoredDeadLetter{Seq: m.Seq, Stored: m.Time}
		sd.DL, sd.Inline, sd.Err = contracts.DecodeDeadLetter(m.Data)
		return fn(sd)
	})
}

// seqSince is the sequence of the first message of a stream stored at or
// after since; ok is false when there is none.
func (c *Client) seqSince(ctx context.Context, stream string, since time.Time) (seq uint64, ok bool, err error) {
	req, _ := json.Marshal(map[string]any{"start_time": since.UTC()})
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	m, err := c.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+stream, req)
	if err != nil {
		return 0, false, fmt.Errorf("%w: %s since %s: %v", ErrUnavailable, stream, since.Format(time.RFC3339), err)
	}
	switch m.Header.Get("Status") {
	case "":
	case "404":
		return 0, false, nil
	default:
		return 0, false, fmt.Errorf("%s since %s: status %s %s", stream, since.Format(time.RFC3339), m.Header.Get("Status"), m.Header.Get("Description"))
	}
	seq, err = strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s since %s: no sequence in the reply", stream, since.Format(time.RFC3339))
	}
	return seq, true, nil
}

// DeadLettersSince calls fn for every dead letter written at or after
// since, oldest first, without reading the older ones.
func (c *Client) DeadLettersSince(ctx context.Context, since time.Time, fn func(*StoredDeadLetter) bool) error {
	seq, ok, err := c.seqSince(ctx, contracts.StreamDeadLetter, since)
	if err != nil || !ok {
		return err
	}
	return c.ScanDeadLetters(ctx, seq, fn)
}

// DeliveredSince calls fn for every outcome record written at or after
// since (records are kept OutcomeTTL), oldest first. It calls nothing
// when the broker keeps no records.
func (c *Client) DeliveredSince(ctx context.Context, since time.Time, fn func(*Delivered) bool) error {
	if !c.outcomes {
		return nil
	}
	seq, ok, err := c.seqSince(ctx, outcomeStream, since)
	if err != nil || !ok {
		return err
	}
	return c.scan(ctx, outcomeStream, outcomeSubject+">", seq, func(m *StoredMsg) bool {
		var d Delivered
		if json.Unmarshal(m.Data, &d) != nil {
			return true
		}
		return fn(&d)
	})
}
