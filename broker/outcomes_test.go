package broker

import (
	"context"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go/jetstream"
)

// provisionedServer is provisioned, with the server for more clients.
func provisionedServer(t *testing.T) (*Client, *Embedded) {
	t.Helper()
	e := startTest(t, t.TempDir())
	c := connectTest(t, e)
	if err := c.Provision(context.Background(), Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, QueueShards: 3}); err != nil {
		t.Fatal(err)
	}
	return c, e
}

// A job settled with delivered recipients leaves a record of who accepted
// them with which reply, found by the queue ID, also by a client that only
// binds (the CLI); a job settled without delivered recipients leaves none.
func TestOutcomeRecord(t *testing.T) {
	c, e := provisionedServer(t)
	ctx := context.Background()
	qid := contracts.NewQueueID(time.Now())
	job := &contracts.Job{QueueID: qid, ReceivedAt: time.Now(), FirstSeen: time.Now(), From: "app@example.org", Attempt: 1,
		Rcpts: []contracts.Recipient{{Addr: "ok@a.example"}, {Addr: "later@b.example"}}}
	if err := c.Enqueue(ctx, job, []byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	ok := &contracts.Reply{Code: 250, Enhanced: "2.0.0", Text: "Ok: queued as 4XYZ", Host: "mx.a.example"}
	later := &contracts.Reply{Code: 451, Enhanced: "4.3.2", Text: "busy", Host: "mx.b.example"}
	take(t, c, func(ctx context.Context, l *Lease) bool {
		rec := contracts.AttemptRecord{Attempt: 1, At: time.Now(), Result: contracts.ResultDeferred, Reply: later}
		err := l.Settle(ctx, Outcome{
			Delivered: []contracts.Recipient{{Addr: "ok@a.example", Notify: []string{"SUCCESS"}, LastReply: ok}},
			Retries:   []Retry{{Rcpts: []contracts.Recipient{{Addr: "later@b.example", LastReply: later}}, At: time.Now().Add(time.Hour), Record: rec}},
		})
		if err != nil {
			t.Error(err)
		}
		return true
	})

	cli := connectTest(t, e)
	if err := cli.Bind(ctx, Settings{}); err != nil {
		t.Fatal(err)
	}
	var recs []Delivered
	eventually(t, 10*time.Second, func() bool {
		var kept bool
		var err error
		recs, kept, err = cli.MessageDelivered(ctx, qid)
		return err == nil && kept && len(recs) == 1
	}, "no outcome record")
	r := recs[0]
	if r.QueueID != qid || r.Part != "" || r.Attempt != 1 || len(r.Rcpts) != 1 || r.Rcpts[0].Addr != "ok@a.example" ||
		*r.Rcpts[0].LastReply != *ok || r.Rcpts[0].Notify != nil || time.Since(r.At) > time.Minute {
		t.Fatalf("record %+v", r)
	}

	// The retry is dead-lettered: nothing delivered, no record.
	for _, q := range messageJobs(t, c, qid) {
		if q.Scheduled {
			if _, err := c.RetryNow(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
	}
	take(t, c, func(ctx context.Context, l *Lease) bool {
		if l.Job.QueueID != qid {
			return false
		}
		return l.Settle(ctx, Outcome{Dead: &Dead{Reason: contracts.ReasonRejected, Rcpts: l.Job.Rcpts}}) == nil
	})
	if recs, _, _ := cli.MessageDelivered(ctx, qid); len(recs) != 1 {
		t.Fatalf("records after a settle without deliveries: %+v", recs)
	}

	// The bucket: memory, an hour, bounded, the oldest dropped first.
	info, err := c.js.Stream(ctx, outcomeStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.CachedInfo().Config
	if cfg.Storage != jetstream.MemoryStorage || cfg.MaxAge != OutcomeTTL || cfg.MaxBytes <= 0 || cfg.Discard != jetstream.DiscardOld {
		t.Fatalf("bucket config %+v", cfg)
	}
}

// A relay whose broker has no outcome bucket (an older relay) is followed
// without records.
func TestOutcomeRecordAbsent(t *testing.T) {
	c, e := provisionedServer(t)
	ctx := context.Background()
	if err := c.js.DeleteStream(ctx, outcomeStream); err != nil {
		t.Fatal(err)
	}
	cli := connectTest(t, e)
	if err := cli.Bind(ctx, Settings{}); err != nil {
		t.Fatal(err)
	}
	if recs, kept, err := cli.MessageDelivered(ctx, contracts.NewQueueID(time.Now())); err != nil || kept || recs != nil {
		t.Fatalf("%v %v %v", recs, kept, err)
	}
}
