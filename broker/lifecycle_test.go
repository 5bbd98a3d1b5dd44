package broker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
)

// take runs ConsumeJobs until handle says it is done.
func take(t *testing.T, c *Client, handle func(context.Context, *Lease) (done bool)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.ConsumeJobs(ctx, 1, func(ctx context.Context, l *Lease) {
			if handle(ctx, l) {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("no job handed out")
	}
}

func messageJobs(t *testing.T, c *Client, qid string) []*QueuedJob {
	t.Helper()
	var out []*QueuedJob
	if err := c.MessageJobs(context.Background(), qid, func(q *QueuedJob) bool { out = append(out, q); return true }); err != nil {
		t.Fatal(err)
	}
	return out
}

func messageDeadLetters(t *testing.T, c *Client, qid string) []*StoredDeadLetter {
	t.Helper()
	var out []*StoredDeadLetter
	if err := c.MessageDeadLetters(context.Background(), qid, func(s *StoredDeadLetter) bool { out = append(out, s); return true }); err != nil {
		t.Fatal(err)
	}
	return out
}

// One message through the whole lifecycle, its body in the bucket: an
// attempt that delivers one recipient, defers one and rejects one (with a
// DSN), retry now, the retry deleted to the dead letters, a replay, and
// the removal of the last dead letter, which releases the body. Every
// record is found by the message's queue ID, and the body lives exactly
// as long as something holds it.
func TestLifecycle(t *testing.T) {
	c := provisioned(t) // 3 shards
	ctx := context.Background()
	qid := contracts.NewQueueID(time.Now())
	body := bytes.Repeat([]byte("0123456789abcdef"), 30000)
	size, err := c.PutBody(ctx, qid, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	job := &contracts.Job{
		QueueID: qid, ReceivedAt: time.Now(), FirstSeen: time.Now(), From: "app@example.org", Attempt: 1,
		Rcpts: []contracts.Recipient{{Addr: "ok@a.example"}, {Addr: "later@b.example"}, {Addr: "bad@c.example"}},
		Body:  contracts.Body{Object: qid, Size: size},
	}
	if err := c.Enqueue(ctx, job); err != nil {
		t.Fatal(err)
	}
	if h, _ := c.bodyHolders(ctx, qid); !slices.Equal(h, []string{qid}) {
		t.Fatalf("holders after Enqueue: %v", h)
	}
	ok := &contracts.Reply{Code: 250, Text: "ok", Host: "mx"}
	tmp := &contracts.Reply{Code: 451, Enhanced: "4.3.0", Text: "later", Host: "mx"}
	bad := &contracts.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user", Host: "mx"}
	dsn := &contracts.Job{QueueID: contracts.DerivedQueueID(time.Now(), qid+"/dsn"), Kind: contracts.KindDSN, Attempt: 1,
		Rcpts: []contracts.Recipient{{Addr: "app@example.org"}}}
	take(t, c, func(ctx context.Context, l *Lease) bool {
		if l.Job == nil || l.Job.QueueID != qid || l.Deliveries() != 1 {
			t.Errorf("lease %+v", l)
		}
		rc, err := l.OpenBody(ctx)
		if err != nil {
			t.Error(err)
			return true
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, body) {
			t.Error("body differs")
		}
		err = l.Settle(ctx, Outcome{
			Delivered: []contracts.Recipient{{Addr: "ok@a.example", LastReply: ok}},
			Retries: []Retry{{Rcpts: []contracts.Recipient{{Addr: "later@b.example", LastReply: tmp}}, At: time.Now().Add(time.Hour),
				Record: contracts.AttemptRecord{Attempt: 1, Result: contracts.ResultDeferred, Reply: tmp}}},
			Dead: &Dead{Reason: contracts.ReasonRejected, Detail: "1 recipient(s) failed permanently", LastReply: bad,
				Rcpts: []contracts.Recipient{{Addr: "bad@c.example", LastReply: bad}}},
			Notices: []Notice{{Job: dsn, Body: []byte("Subject: bounce\r\n\r\nsorry\r\n")}},
		})
		if err != nil {
			t.Error(err)
		}
		if err := l.Settle(ctx, Outcome{}); !errors.Is(err, ErrLeaseEnded) {
			t.Errorf("second Settle: %v", err)
		}
		return true
	})
	jobs := messageJobs(t, c, qid)
	if len(jobs) != 1 || !jobs[0].Scheduled || jobs[0].Job.Attempt != 2 || jobs[0].Job.Rcpts[0].Addr != "later@b.example" ||
		len(jobs[0].Job.Done) != 1 || jobs[0].Job.Done[0].LastReply.Code != 250 || len(jobs[0].Job.History) != 1 {
		t.Fatalf("jobs of the message after the attempt: %+v", jobs)
	}
	dls := messageDeadLetters(t, c, qid)
	if len(dls) != 1 || dls[0].DL.Reason != contracts.ReasonRejected || dls[0].DL.Job.Rcpts[0].Addr != "bad@c.example" || len(dls[0].DL.Job.Done) != 1 {
		t.Fatalf("dead letters of the message: %+v", dls)
	}
	if n := len(messageJobs(t, c, dsn.QueueID)); n != 1 {
		t.Fatalf("DSN jobs: %d", n)
	}
	retry := jobs[0].Job
	if h, _ := c.bodyHolders(ctx, qid); !slices.Equal(h, []string{retry.JobID(), dlHolder(dls[0].DL.ID)}) {
		t.Fatalf("holders after the attempt: %v", h)
	}

	// Retry now replaces the schedule on the job's own subject.
	if acted, err := c.RetryNow(ctx, jobs[0]); err != nil || !acted {
		t.Fatalf("RetryNow: %v %v", acted, err)
	}
	eventually(t, 10*time.Second, func() bool {
		js := messageJobs(t, c, qid)
		return len(js) == 1 && !js[0].Scheduled
	}, "the retry did not become ready")
	// Delete: to the dead letters, still holding the body.
	if err := c.DeleteJob(ctx, messageJobs(t, c, qid)[0], false, "deleted by test"); err != nil {
		t.Fatal(err)
	}
	if n := len(messageJobs(t, c, qid)); n != 0 {
		t.Fatalf("%d jobs left after delete", n)
	}
	dls = messageDeadLetters(t, c, qid)
	if len(dls) != 2 || dls[1].DL.Reason != contracts.ReasonDeleted || dls[1].DL.Job.Rcpts[0].Addr != "later@b.example" {
		t.Fatalf("dead letters after delete: %+v", dls)
	}
	// Replay the deleted one: the same queue ID, a new generation.
	nj, already, err := c.Replay(ctx, dls[1], "")
	if err != nil || already || nj.QueueID != qid || nj.ReplayCount != 1 || nj.Attempt != 1 {
		t.Fatalf("Replay: %+v %v %v", nj, already, err)
	}
	jobs = messageJobs(t, c, qid)
	if len(jobs) != 1 || jobs[0].Job.JobID() != nj.JobID() || jobs[0].Scheduled {
		t.Fatalf("jobs after the replay: %+v", jobs)
	}
	// A replay run again finds its record and queues nothing more.
	if _, already, err := c.Replay(ctx, dls[1], ""); err != nil || !already {
		t.Fatalf("Replay again: %v %v", already, err)
	}
	if n := len(messageJobs(t, c, qid)); n != 1 {
		t.Fatalf("a repeated replay queued the message again: %d jobs", n)
	}
	// The replayed job is delivered; then the last dead letter is removed.
	take(t, c, func(ctx context.Context, l *Lease) bool {
		if err := l.Settle(ctx, Outcome{Delivered: l.Job.Rcpts}); err != nil { // the replay, or the DSN
			t.Error(err)
		}
		return l.Job.QueueID == qid
	})
	eventually(t, 10*time.Second, func() bool { return len(messageJobs(t, c, qid)) == 0 }, "the replayed job is still queued")
	if _, err := c.OpenBody(ctx, qid); err != nil {
		t.Fatalf("the body went while a dead letter still holds it: %v", err)
	}
	dls = messageDeadLetters(t, c, qid)
	if len(dls) != 1 {
		t.Fatalf("dead letters: %d", len(dls))
	}
	if err := c.RemoveDeadLetter(ctx, dls[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenBody(ctx, qid); !errors.Is(err, ErrBodyNotFound) {
		t.Fatalf("the body outlived its last holder: %v", err)
	}
}

// A worker that holds a job longer than AckWait keeps it: ConsumeJobs
// reports progress, so the broker does not hand it to another loop. A
// handler that ends neither way has the job handed out again.
func TestLeaseKeptAlive(t *testing.T) {
	e := startTest(t, t.TempDir())
	c := connectTest(t, e)
	ctx := context.Background()
	const ackWait = time.Second
	if err := c.Provision(ctx, Settings{AckWait: ackWait, QueueShards: 1}); err != nil {
		t.Fatal(err)
	}
	j := &contracts.Job{QueueID: contracts.NewQueueID(time.Now()), Rcpts: []contracts.Recipient{{Addr: "a@example.com"}}, Attempt: 1}
	if err := c.Enqueue(ctx, j, []byte("body\r\n")); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var seen []uint64
	var forgot atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.ConsumeJobs(cctx, 3, func(ctx context.Context, l *Lease) {
			mu.Lock()
			seen = append(seen, l.Deliveries())
			n := len(seen)
			mu.Unlock()
			switch n {
			case 1:
				time.Sleep(4 * ackWait) // a slow delivery, far longer than AckWait
				if err := l.Return(0); err != nil {
					t.Error(err)
				}
			case 2:
				forgot.Store(true) // returns without ending the lease
			default:
				_ = l.Settle(ctx, Outcome{Delivered: l.Job.Rcpts})
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the job was not handed out three times")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(seen, []uint64{1, 2, 3}) {
		t.Fatalf("deliveries seen: %v; a job held longer than AckWait was handed out twice at once", seen)
	}
	queueSettles(t, c, "the job is still queued", QueueState.Empty)
}

// TakeQuota never lets more than the limit through in any window, from
// many workers at once, and says when the next unit frees up; AcquireSlot
// holds at most its limit, and a slot whose holder died is taken over.
func TestRateLimits(t *testing.T) {
	c := provisioned(t)
	ctx := context.Background()
	const limit, window = 10, 2 * time.Second
	var mu sync.Mutex
	var taken []time.Time
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * window)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				now := time.Now()
				ok, next, err := c.TakeQuota(ctx, "route:corp.example.messages", 1, limit, window, now)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					mu.Lock()
					taken = append(taken, now)
					mu.Unlock()
					continue
				}
				if !next.After(now) {
					t.Errorf("refused, next %v is not later than now %v", next, now)
					return
				}
				select {
				case <-time.After(time.Until(next)):
				case <-time.After(time.Until(deadline)):
				}
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(taken, func(a, b time.Time) int { return a.Compare(b) })
	if len(taken) < 2*limit {
		t.Fatalf("only %d units in %s with a limit of %d per %s", len(taken), 3*window, limit, window)
	}
	for i := range taken {
		n := 0
		for j := i; j < len(taken) && taken[j].Sub(taken[i]) < window; j++ {
			n++
		}
		if n > limit {
			t.Fatalf("%d units within %s from %v (limit %d)", n, window, taken[i], limit)
		}
	}
	// A request above the limit passes alone in an empty window.
	if ok, _, err := c.TakeQuota(ctx, "big", 50, limit, window, time.Now()); !ok || err != nil {
		t.Fatalf("a large request in an empty window: %v %v", ok, err)
	}
	if ok, _, _ := c.TakeQuota(ctx, "big", 1, limit, window, time.Now()); ok {
		t.Fatal("more after a large request in the same window")
	}

	s1, ok1, err1 := c.AcquireSlot(ctx, "route:x", 2, time.Minute)
	s2, ok2, err2 := c.AcquireSlot(ctx, "route:x", 2, time.Minute)
	_, ok3, err3 := c.AcquireSlot(ctx, "route:x", 2, time.Minute)
	if !ok1 || !ok2 || ok3 || err1 != nil || err2 != nil || err3 != nil {
		t.Fatalf("slots: %v %v %v (%v %v %v)", ok1, ok2, ok3, err1, err2, err3)
	}
	s1.Release()
	s3, ok, err := c.AcquireSlot(ctx, "route:x", 2, time.Minute)
	if !ok || err != nil {
		t.Fatalf("a released slot is not free: %v", err)
	}
	s2.Release()
	s3.Release()
	// A holder that dies leaves its slot until it expires.
	dead, ok, _ := c.AcquireSlot(ctx, "route:y", 1, 300*time.Millisecond)
	if !ok {
		t.Fatal("no slot")
	}
	close(dead.stop) // stops renewing, as a process that died would
	<-dead.stopped
	eventually(t, 5*time.Second, func() bool {
		s, ok, _ := c.AcquireSlot(ctx, "route:y", 1, time.Minute)
		if ok {
			s.Release()
		}
		return ok
	}, "the slot of a dead holder was not taken over")
}

// With the queue spread over 8 shards, every per-message operation finds
// the message's jobs on its own shard: a repeated Enqueue stores one job,
// MessageJobs and ScanQueue see each job once, DeleteJob moves it to the
// dead letters, and Replay queues it again on the same shard, once.
func TestShardedQueueOperations(t *testing.T) {
	e := startTest(t, t.TempDir())
	c := connectTest(t, e)
	ctx := context.Background()
	const shards, n = 8, 64
	if err := c.Provision(ctx, Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, QueueShards: shards}); err != nil {
		t.Fatal(err)
	}
	var qids []string
	onShard := map[int]int{}
	for i := 0; i < n; i++ {
		qid := contracts.NewQueueID(time.Now())
		qids = append(qids, qid)
		onShard[contracts.ShardOf(qid, shards)]++
		j := &contracts.Job{QueueID: qid, ReceivedAt: time.Now(), FirstSeen: time.Now(), From: "app@example.org", Attempt: 1,
			Rcpts: []contracts.Recipient{{Addr: "a@example.com"}}, Body: contracts.Body{Size: 6}}
		for try := 0; try < 2; try++ { // a client's retry, or an ingress that lost the broker's ack
			if err := c.Enqueue(ctx, j, []byte("body\r\n")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(onShard) != shards {
		t.Fatalf("%d messages landed on %d of %d shards: %v", n, len(onShard), shards, onShard)
	}
	seen := map[string]int{}
	if err := c.ScanQueue(ctx, 0, func(q *QueuedJob) bool {
		seen[q.Job.QueueID]++
		if q.Shard != contracts.ShardOf(q.Job.QueueID, shards) {
			t.Errorf("%s found on shard %d", q.Job.QueueID, q.Shard)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	for _, qid := range qids {
		if seen[qid] != 1 {
			t.Fatalf("%s: %d jobs in the scan after two Enqueues", qid, seen[qid])
		}
	}
	queueSettles(t, c, "ready count", func(st QueueState) bool { return st.Ready == n })
	for _, qid := range qids {
		jobs := messageJobs(t, c, qid)
		if len(jobs) != 1 {
			t.Fatalf("%s: %d jobs", qid, len(jobs))
		}
		if err := c.DeleteJob(ctx, jobs[0], false, "deleted by test"); err != nil {
			t.Fatal(err)
		}
	}
	queueSettles(t, c, "the queue after deleting every job", QueueState.Empty)
	for _, qid := range qids {
		dls := messageDeadLetters(t, c, qid)
		if len(dls) != 1 || dls[0].DL.Reason != contracts.ReasonDeleted {
			t.Fatalf("%s: dead letters %+v", qid, dls)
		}
		nj, already, err := c.Replay(ctx, dls[0], "")
		if err != nil || already || nj.QueueID != qid {
			t.Fatalf("%s: Replay %+v %v %v", qid, nj, already, err)
		}
		if _, already, err := c.Replay(ctx, dls[0], ""); err != nil || !already {
			t.Fatalf("%s: second Replay: %v %v", qid, already, err)
		}
		jobs := messageJobs(t, c, qid)
		if len(jobs) != 1 || jobs[0].Job.JobID() != nj.JobID() || jobs[0].Shard != contracts.ShardOf(qid, shards) {
			t.Fatalf("%s: jobs after the replay: %+v", qid, jobs)
		}
	}
	queueSettles(t, c, "ready count after the replays", func(st QueueState) bool { return st.Ready == n })
}
