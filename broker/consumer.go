package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go"
)

// Msg is one job handed to a delivery worker. Exactly one of Ack, Nak or
// Term must be called; InProgress keeps it from being redelivered while a
// long SMTP session runs.
type Msg struct {
	c    *Client
	m    *nats.Msg
	meta *nats.MsgMetadata
	// reconnected is closed once the connection the job came on has come
	// back after losing its server (nil: never).
	reconnected <-chan struct{}
}

// Data is the payload (decode with contracts.DecodeJob).
func (m *Msg) Data() []byte { return m.m.Data }

// Subject is the job subject.
func (m *Msg) Subject() string { return m.m.Subject }

// Header returns one header value.
func (m *Msg) Header(key string) string { return m.m.Header.Get(key) }

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

// ackTimeout bounds an Ack whose context has no deadline.
const ackTimeout = 5 * time.Second

// ErrAckUnanswered means the broker will never answer the ack: it died
// after handing out the job and came back without its record of doing so
// (a single server writes that record at most every 100 ms). It ignores
// acks for deliveries it does not know, and will hand the job out again.
var ErrAckUnanswered = errors.New("ack unanswered: the broker restarted and does not know it handed out the job")

// Ack finishes the job and waits for the broker to confirm it: only then is
// the job gone from the queue. It fails with ErrUnavailable while the
// broker cannot be reached (worth retrying), and with ErrAckUnanswered
// when retrying is pointless.
func (m *Msg) Ack(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ackTimeout)
		defer cancel()
	}
	if err := m.m.AckSync(nats.Context(ctx)); err != nil {
		timedOut := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		if timedOut && closed(m.reconnected) && m.unknownToBroker(ctx) {
			return fmt.Errorf("%w (stream %s, sequence %d)", ErrAckUnanswered, m.meta.Stream, m.meta.Sequence.Stream)
		}
		return fmt.Errorf("%w: ack: %v", ErrUnavailable, err)
	}
	return nil
}

// unknownToBroker reports whether the consumer that handed out the job has
// no record of it: its last delivered sequence is below the job's, the
// case in which the server ignores an ack. (A consumer that moved to
// another cluster node keeps its record, and answers once it is settled.)
func (m *Msg) unknownToBroker(ctx context.Context) bool {
	if m.c == nil || m.meta == nil {
		return false
	}
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	cons, err := m.c.js.Consumer(ictx, m.meta.Stream, m.meta.Consumer)
	if err != nil {
		return false
	}
	return cons.CachedInfo().Delivered.Stream < m.meta.Sequence.Stream
}

// closed reports whether ch is closed (a nil ch never is).
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
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
	streams := make([]string, len(c.queues))
	for i := range streams {
		streams[i] = contracts.QueueStream(i)
		if _, err := c.js.Consumer(ctx, streams[i], contracts.ConsumerDelivery); err != nil {
			return fmt.Errorf("delivery consumer of %s: %w", streams[i], err)
		}
	}
	loops := make([][]*puller, max(concurrency, 1))
	defer func() {
		for _, mine := range loops {
			for _, p := range mine {
				p.close()
			}
		}
	}()
	for i := range max(len(loops), len(streams)) {
		p, err := newPuller(c.nc, c.reconnected, streams[i%len(streams)], contracts.ConsumerDelivery)
		if err != nil {
			return err
		}
		loops[i%len(loops)] = append(loops[i%len(loops)], p)
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
func (c *Client) fetchLoop(ctx context.Context, cons []*puller, handle func(context.Context, *Msg)) {
	wait := 30 * time.Second
	if len(cons) > 1 {
		wait = 2 * time.Second
	}
	backoff := 100 * time.Millisecond
	for turn := 0; ctx.Err() == nil; turn++ {
		p := cons[turn%len(cons)]
		m, err := p.next(ctx, wait)
		if err != nil {
			if ctx.Err() != nil {
				return
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
		if m == nil {
			continue // nothing to do on this shard for now
		}
		backoff = 100 * time.Millisecond
		meta, _ := m.Metadata()
		handle(context.WithoutCancel(ctx), &Msg{c: c, m: m, meta: meta, reconnected: p.sentOn})
	}
}

// puller asks one consumer for one job at a time over a subscription it
// keeps for the life of its fetch loop. (nats.go's Consumer.Next opens and
// closes a subscription and starts a goroutine for every job: per job a
// SUB and an UNSUB for the server, and a change to its subject index.)
//
// At most one request is in flight, and the broker ends every request
// with a job or a status (408 when it expires, 409 when it cannot be
// served), so whatever arrives on the subscription answers that request.
// When no answer came at all by the time the loop stops waiting, or the
// connection came back since the request was sent (a broker restart loses
// the requests it held), the puller moves to a new subscription and asks
// again: the server hands nothing to a request whose reply subject nobody
// listens to any more, and a late answer that was already on its way goes
// nowhere (a job then waits out its AckWait, as it would with nats.go)
// instead of being taken for the answer to the next request.
//
// The subscription delivers into a small channel of the puller's own: a
// synchronous subscription would allocate nats.go's default 64k-entry
// channel (512 KiB) for each loop (32 by default); one answer at a time
// needs a few.
type puller struct {
	nc      *nats.Conn
	reconn  *signal
	subject string // the consumer's next-message request subject
	sub     *nats.Subscription
	msgs    chan *nats.Msg
	req     []byte          // the request body for wait reqWait
	reqWait time.Duration   // (a loop always waits the same)
	waiting bool            // a request is in flight
	until   time.Time       // when the loop stops waiting for it
	sentOn  <-chan struct{} // closed once the connection came back after the request was sent (kept with the job it brought)
}

func newPuller(nc *nats.Conn, reconn *signal, stream, consumer string) (*puller, error) {
	p := &puller{nc: nc, reconn: reconn, subject: "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer}
	if err := p.subscribe(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *puller) subscribe() error {
	msgs := make(chan *nats.Msg, 8)
	sub, err := p.nc.ChanSubscribe(p.nc.NewInbox(), msgs)
	if err != nil {
		return fmt.Errorf("%w: subscribe for jobs: %v", ErrUnavailable, err)
	}
	p.sub, p.msgs = sub, msgs
	return nil
}

func (p *puller) close() {
	if p.sub != nil {
		_ = p.sub.Unsubscribe()
	}
}

// abandon leaves the request in flight and its subscription behind.
func (p *puller) abandon() {
	p.close()
	p.sub, p.waiting, p.sentOn = nil, false, nil
}

// pullRequest is the body of a next-message request for one job.
type pullRequest struct {
	Batch   int           `json:"batch"`
	Expires time.Duration `json:"expires"`
}

// next returns the next job, or nil when wait passed without one.
func (p *puller) next(ctx context.Context, wait time.Duration) (*nats.Msg, error) {
	if p.waiting && len(p.msgs) == 0 && (time.Now().After(p.until) || closed(p.sentOn)) {
		// The last request got no answer in time, or went with a server:
		// leave it behind.
		p.abandon()
	}
	if p.sub == nil {
		if err := p.subscribe(); err != nil {
			return nil, err
		}
	}
	if !p.waiting {
		if p.req == nil || p.reqWait != wait {
			// The broker ends the request a tenth of the wait before
			// the loop gives up on it, so that its answer arrives in
			// time.
			p.req, _ = json.Marshal(pullRequest{Batch: 1, Expires: wait - wait/10})
			p.reqWait = wait
		}
		sentOn := p.reconn.Wait()
		if err := p.nc.PublishRequest(p.subject, p.sub.Subject, p.req); err != nil {
			return nil, fmt.Errorf("%w: ask for a job: %v", ErrUnavailable, err)
		}
		p.waiting, p.until, p.sentOn = true, time.Now().Add(wait), sentOn
	}
	wctx, cancel := context.WithDeadline(ctx, p.until)
	defer cancel()
	for {
		var m *nats.Msg
		select {
		case m = <-p.msgs: // an answer that is there goes first
		default:
			select {
			case m = <-p.msgs:
			case <-p.sentOn:
				// Reconnected: the request may be gone with the
				// server. An answer that made it is still taken;
				// otherwise the caller's next call asks again at once.
				select {
				case m = <-p.msgs:
				default:
					p.abandon()
					return nil, nil
				}
			case <-wctx.Done():
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, nil // still waiting: the next call replaces it
			}
		}
		status := ""
		if len(m.Data) == 0 && m.Header != nil {
			status = m.Header.Get("Status")
		}
		switch status {
		case "": // a job
			p.waiting = false
			return m, nil
		case "100": // a heartbeat (not asked for): keep waiting
			continue
		case "404", "408": // no job before the request expired
			p.waiting = false
			return nil, nil
		default: // 409: consumer deleted, leader changed, server shutting down...
			p.waiting = false
			return nil, fmt.Errorf("%w: ask for a job: %s %s", ErrUnavailable, status, m.Header.Get("Description"))
		}
	}
}
