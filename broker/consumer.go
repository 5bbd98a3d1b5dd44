package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go/jetstream"
)

// Msg is one job handed to a delivery worker. Exactly one of Ack, Nak or
// Term must be called; InProgress keeps it from being redelivered while a
// long SMTP session runs.
type Msg struct {
	m    jetstream.Msg
	meta *jetstream.MsgMetadata
}

// Data is the payload (decode with contracts.DecodeJob).
func (m *Msg) Data() []byte { return m.m.Data() }

// Subject is the job subject.
func (m *Msg) Subject() string { return m.m.Subject() }

// Header returns one header value.
func (m *Msg) Header(key string) string { return m.m.Headers().Get(key) }

// Delivered is how many times the broker has handed out this message (1 on
// the first delivery).
func (m *Msg) Delivered() uint64 {
	if m.meta == nil {
		return 1
	}
	return m.meta.NumDelivered
}

// StreamSeq is the message's sequence in the queue stream.
func (m *Msg) StreamSeq() uint64 {
	if m.meta == nil {
		return 0
	}
	return m.meta.Sequence.Stream
}

// Ack finishes the job and waits for the broker to confirm it: only then is
// the job gone from the queue.
func (m *Msg) Ack(ctx context.Context) error {
	if err := m.m.DoubleAck(ctx); err != nil {
		return fmt.Errorf("%w: ack: %v", ErrUnavailable, err)
	}
	return nil
}

// Nak hands the job back for redelivery after delay (0: at once).
func (m *Msg) Nak(delay time.Duration) error {
	if delay > 0 {
		return m.m.NakWithDelay(delay)
	}
	return m.m.Nak()
}

// InProgress resets the broker's redelivery timer.
func (m *Msg) InProgress() error { return m.m.InProgress() }

// ConsumeJobs runs concurrency fetch loops on the shared delivery consumer
// and calls handle for every job, at most concurrency at a time. Each loop
// asks the broker for one job only when it is free, so no job waits in a
// local buffer while its AckWait runs (which would hand it to a second
// worker). ConsumeJobs returns when ctx is cancelled and every handle call
// has returned; handle receives a context that is not cancelled with ctx,
// so attempts in flight can finish (the handler bounds them itself).
//
// The loops are spread over the queue's shards: with at least as many
// loops as shards, loop i serves shard i mod the number of shards; with
// fewer (concurrency below queue_shards), each loop takes turns over its
// shards, so the limit holds and no shard is left out (a job may then
// wait a few seconds for its turn).
func (c *Client) ConsumeJobs(ctx context.Context, concurrency int, handle func(context.Context, *Msg)) error {
	cons := make([]jetstream.Consumer, len(c.queues))
	for i := range cons {
		var err error
		cons[i], err = c.js.Consumer(ctx, contracts.QueueStream(i), contracts.ConsumerDelivery)
		if err != nil {
			return fmt.Errorf("delivery consumer of %s: %w", contracts.QueueStream(i), err)
		}
	}
	loops := make([][]jetstream.Consumer, max(concurrency, 1))
	for i := range max(len(loops), len(cons)) {
		loops[i%len(loops)] = append(loops[i%len(loops)], cons[i%len(cons)])
	}
	var wg sync.WaitGroup
	for _, mine := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.fetchLoop(ctx, mine, handle)
		}()
	}
	wg.Wait()
	return nil
}

// fetchLoop takes one job at a time from its consumers and handles it. A
// loop with one consumer waits up to 30 s for a job; one with several
// waits up to 2 s on each in turn. The broker's side of a fetch expires a
// tenth of the wait before the client stops listening: a job sent at the
// last moment must still find the loop there, or it sits out an AckWait.
func (c *Client) fetchLoop(ctx context.Context, cons []jetstream.Consumer, handle func(context.Context, *Msg)) {
	wait := 30 * time.Second
	if len(cons) > 1 {
		wait = 2 * time.Second
	}
	backoff := 100 * time.Millisecond
	for turn := 0; ctx.Err() == nil; turn++ {
		fctx, cancel := context.WithTimeout(ctx, wait)
		jm, err := cons[turn%len(cons)].Next(jetstream.FetchContext(fctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) || errors.Is(err, jetstream.ErrNoMessages) {
				continue // nothing to do on this shard for now
			}
			c.log.Warn().Err(err).Msg("fetching jobs failed, retrying")
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			if backoff < 5*time.Second {
				backoff *= 2
			}
			continue
		}
		backoff = 100 * time.Millisecond
		meta, _ := jm.Metadata()
		handle(context.WithoutCancel(ctx), &Msg{m: jm, meta: meta})
	}
}
