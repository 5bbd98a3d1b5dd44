package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go"
)

// Lease is a job handed to a delivery worker. While the worker holds it,
// ConsumeJobs reports progress to the broker every AckWait/4, so the job
// is not handed to anyone else however long the delivery takes; if the
// worker dies, the reports stop and the broker hands the job out again
// after AckWait. The worker ends a lease exactly once: Settle (the job is
// done, its follow-ups stored), Return (untouched, for later) or, for a
// payload that does not decode, DeadLetterRaw.
type Lease struct {
	// Job is the decoded job; nil when the payload does not decode (Err).
	Job *contracts.Job
	// Inline is the body when it travels in the job.
	Inline []byte
	// Err is why the payload does not decode.
	Err error

	c    *Client
	m    *nats.Msg
	meta *nats.MsgMetadata
	// reconnected is closed once the connection the job came on has come
	// back after losing its server (nil: never).
	reconnected <-chan struct{}
	ended       atomic.Bool
	progress    time.Time // last sign of life sent (the keeper's, under Client.leaseMu)
}

// Deliveries is how many times the broker has handed out this job (1 on
// the first delivery).
func (l *Lease) Deliveries() uint64 {
	if l.meta == nil {
		return 1
	}
	return l.meta.NumDelivered
}

// StreamSeq is the job's sequence in its queue stream.
func (l *Lease) StreamSeq() uint64 {
	if l.meta == nil {
		return 0
	}
	return l.meta.Sequence.Stream
}

// QueueID is the job's queue ID, also when the payload does not decode
// (from the message header; "" if even that is missing).
func (l *Lease) QueueID() string {
	if l.Job != nil {
		return l.Job.QueueID
	}
	return l.m.Header.Get(contracts.HeaderQueueID)
}

// OpenBody opens the job's message for reading.
func (l *Lease) OpenBody(ctx context.Context) (io.ReadCloser, error) {
	return l.c.OpenJobBody(ctx, l.Job, l.Inline)
}

// ErrLeaseEnded: Settle, Return or DeadLetterRaw was called before.
var ErrLeaseEnded = errors.New("the job was already settled or returned")

// Settle records what the attempt leads to (Outcome: retries, dead
// letter, notices, the body's holders) and then acknowledges the job, so
// that a crash at any point runs the job again without losing or doubling
// anything. When the outcome cannot be recorded (the broker unavailable
// for about 30 s) the job is returned for another try in 10 s and the
// error says why.
func (l *Lease) Settle(ctx context.Context, o Outcome) error {
	if !l.ended.CompareAndSwap(false, true) {
		return ErrLeaseEnded
	}
	if err := l.c.record(ctx, l.Job, l.Inline, o, time.Now()); err != nil {
		_ = l.nak(10 * time.Second)
		return fmt.Errorf("recording the outcome of job %s: %w", l.Job.JobID(), err)
	}
	return l.ack(ctx)
}

// DeadLetterRaw dead-letters a job whose payload does not decode, with
// the raw payload as its body so that nothing is lost, and acknowledges it.
func (l *Lease) DeadLetterRaw(ctx context.Context, detail string) error {
	if !l.ended.CompareAndSwap(false, true) {
		return ErrLeaseEnded
	}
	qid := l.QueueID()
	if qid == "" {
		qid = fmt.Sprintf("SEQ%d", l.StreamSeq())
	}
	d := &contracts.DeadLetter{
		ID:     contracts.DeadLetterID(fmt.Sprintf("%s-s%d", qid, l.StreamSeq()), 0),
		Reason: contracts.ReasonMalformed,
		Detail: detail,
		DeadAt: time.Now().UTC(),
		Job:    contracts.Job{QueueID: qid, ReceivedAt: time.Now().UTC()},
	}
	if err := retrying(ctx, func(ctx context.Context) error { return l.c.publishDeadLetter(ctx, d, l.m.Data) }); err != nil {
		_ = l.nak(30 * time.Second)
		return err
	}
	return l.ack(ctx)
}

// Return gives the job back untouched: it is handed out again after delay
// (0: at once).
func (l *Lease) Return(delay time.Duration) error {
	if !l.ended.CompareAndSwap(false, true) {
		return ErrLeaseEnded
	}
	return l.nak(delay)
}

func (l *Lease) nak(delay time.Duration) error {
	if delay > 0 {
		return l.m.NakWithDelay(delay)
	}
	return l.m.Nak()
}

// ackTimeout bounds one try of an acknowledgement.
const ackTimeout = time.Second

// ErrAckUnanswered means the broker will never answer the ack: it died
// after handing out the job and came back without its record of doing so
// (a single server writes that record at most every 100 ms). It ignores
// acks for deliveries it does not know, and will hand the job out again.
var ErrAckUnanswered = errors.New("ack unanswered: the broker restarted and does not know it handed out the job")

// ack acknowledges a finished job and waits for the broker to confirm it,
// retrying with short timeouts for up to an AckWait: while the consumer's
// leader moves (a broker node restarting) acks get no answer, and a job
// whose ack is lost is handed out again and delivered twice. Acks are
// idempotent. It stops at once when the broker restarted without its
// record of handing out the job (ErrAckUnanswered): that ack will never
// be answered. The job is then remembered for the purge of delivered
// jobs (purgeDelivered).
func (l *Lease) ack(ctx context.Context) error {
	deadline := time.Now().Add(l.c.set.AckWait)
	var err error
	for try := 1; ; try++ {
		actx, cancel := context.WithTimeout(ctx, ackTimeout)
		err = l.ackOnce(actx)
		cancel()
		if err == nil {
			if try > 1 {
				l.c.log.Info().Str("msg_id", l.QueueID()).Int("tries", try).Msg("ack went through after retrying")
			}
			l.c.delivered(l)
			return nil
		}
		if errors.Is(err, ErrAckUnanswered) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%w: job %s: %w", ErrNotAcknowledged, l.QueueID(), err)
}

// ErrNotAcknowledged: the job's outcome was recorded but the broker did
// not confirm the acknowledgement; it may hand the job out again (and its
// next run finds the outcome recorded, or delivers once more).
var ErrNotAcknowledged = errors.New("job not acknowledged")

func (l *Lease) ackOnce(ctx context.Context) error {
	if err := l.m.AckSync(nats.Context(ctx)); err != nil {
		timedOut := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		if timedOut && closed(l.reconnected) && l.unknownToBroker(ctx) {
			return fmt.Errorf("%w (stream %s, sequence %d)", ErrAckUnanswered, l.meta.Stream, l.meta.Sequence.Stream)
		}
		return fmt.Errorf("%w: ack: %v", ErrUnavailable, err)
	}
	return nil
}

// unknownToBroker reports whether the consumer that handed out the job has
// no record of it: its last delivered sequence is below the job's, the
// case in which the server ignores an ack. (A consumer that moved to
// another cluster node keeps its record, and answers once it is settled.)
func (l *Lease) unknownToBroker(ctx context.Context) bool {
	if l.meta == nil {
		return false
	}
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	cons, err := l.c.js.Consumer(ictx, l.meta.Stream, l.meta.Consumer)
	if err != nil {
		return false
	}
	return cons.CachedInfo().Delivered.Stream < l.meta.Sequence.Stream
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

// ConsumeJobs runs concurrency fetch loops on the shared delivery consumer
// and calls handle for every job, at most concurrency at a time. Each loop
// asks the broker for one job only when it is free, so no job waits in a
// local buffer while its AckWait runs (which would hand it to a second
// worker). ConsumeJobs returns when ctx is cancelled and every handle call
// has returned; handle receives a context that is not cancelled with ctx,
// so attempts in flight can finish (the handler bounds them itself).
//
// While a handler holds a lease, ConsumeJobs reports progress for it every
// AckWait/4. A job whose body another run of it has already let go of
// (that run got as far as recording the outcome, not as far as the ack)
// is acknowledged without calling handle. A handler that returns without
// ending its lease has the job returned for another try in 5 s.
//
// The loops are spread over the queue's shards: with at least as many
// loops as shards, loop i serves shard i mod the number of shards; with
// fewer (concurrency below queue_shards), each loop takes turns over its
// shards, so the limit holds and no shard is left out (a job may then
// wait a few seconds for its turn).
func (c *Client) ConsumeJobs(ctx context.Context, concurrency int, handle func(context.Context, *Lease)) error {
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
	keeperCtx, stopKeeper := context.WithCancel(context.WithoutCancel(ctx))
	keeperDone := make(chan struct{})
	go func() {
		defer close(keeperDone)
		c.keep(keeperCtx)
	}()
	var wg sync.WaitGroup
	for _, mine := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.fetchLoop(ctx, mine, handle)
		}()
	}
	wg.Wait()
	stopKeeper()
	<-keeperDone
	return nil
}

// fetchLoop takes one job at a time from its consumers and handles it. A
// loop with one consumer waits up to 30 s for a job; one with several
// waits up to 2 s on each in turn. The broker's side of a fetch expires a
// tenth of the wait before the client stops listening: a job sent at the
// last moment must still find the loop there, or it sits out an AckWait.
func (c *Client) fetchLoop(ctx context.Context, cons []*puller, handle func(context.Context, *Lease)) {
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
		c.run(context.WithoutCancel(ctx), c.lease(m, p.sentOn), handle)
	}
}

// lease decodes a job message into a Lease.
func (c *Client) lease(m *nats.Msg, reconnected <-chan struct{}) *Lease {
	meta, _ := m.Metadata()
	l := &Lease{c: c, m: m, meta: meta, reconnected: reconnected}
	l.Job, l.Inline, l.Err = contracts.DecodeJob(m.Data)
	return l
}

// run hands a lease to handle while the keeper keeps it alive.
func (c *Client) run(ctx context.Context, l *Lease, handle func(context.Context, *Lease)) {
	c.leaseMu.Lock()
	l.progress = time.Now()
	c.leases[l] = struct{}{}
	c.leaseMu.Unlock()
	defer func() {
		c.leaseMu.Lock()
		delete(c.leases, l)
		c.leaseMu.Unlock()
	}()
	if l.Job != nil && !l.Job.Body.Inline() {
		holders, err := c.bodyHolders(ctx, l.Job.Body.Object)
		if err == nil && !slices.Contains(holders, l.Job.JobID()) {
			// An earlier run of this job recorded its outcome and let go
			// of the body, and did not get as far as the ack.
			c.log.Info().Str("msg_id", l.Job.QueueID).Str("part", l.Job.Part).Int("attempt", l.Job.Attempt).
				Msg("job already finished by an earlier run; acknowledging it")
			l.ended.Store(true)
			if err := l.ack(ctx); err != nil {
				c.log.Warn().Err(err).Str("msg_id", l.Job.QueueID).Msg("ack failed")
			}
			return
		}
	}
	handle(ctx, l)
	if !l.ended.Load() {
		c.log.Error().Str("msg_id", l.QueueID()).Msg("a job was left neither settled nor returned; returning it for another try")
		_ = l.Return(5 * time.Second)
	}
}

// keep reports progress for the leases in flight (every AckWait/4 for
// each) and purges delivered jobs, until ctx ends.
func (c *Client) keep(ctx context.Context) {
	every := c.set.AckWait / 4
	tick := min(c.set.AckWait/8, 500*time.Millisecond)
	if tick < 50*time.Millisecond {
		tick = 50 * time.Millisecond
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	var floors []uint64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.leaseMu.Lock()
			var due []*Lease
			for l := range c.leases {
				if now.Sub(l.progress) >= every {
					l.progress = now
					due = append(due, l)
				}
			}
			c.leaseMu.Unlock()
			for _, l := range due {
				if !l.ended.Load() {
					_ = l.m.InProgress()
				}
			}
			floors = c.purgeDelivered(ctx, floors, now)
		}
	}
}

// ackedJob is a job this process acknowledged. The queue keeps delivered
// jobs until the shared ack floor passes them (purgeBelowFloors); when an
// older job holds the floor up, the process purges its own ones by subject
// after a short while, so that `queue list` never shows them for long.
type ackedJob struct {
	shard   int
	seq     uint64
	subject string
	at      time.Time
}

// delivered remembers an acknowledged job for purgeDelivered.
func (c *Client) delivered(l *Lease) {
	qs, _ := contracts.ParseQueueSubject(l.m.Subject)
	c.leaseMu.Lock()
	c.acked = append(c.acked, ackedJob{shard: qs.Shard, seq: l.StreamSeq(), subject: l.m.Subject, at: time.Now()})
	c.leaseMu.Unlock()
}

// purgeDelivered removes delivered jobs from the queue: all of them below
// the ack floor at once, and this process's own ones above it one by one
// once they are older than purgeAfter.
func (c *Client) purgeDelivered(ctx context.Context, last []uint64, now time.Time) []uint64 {
	const purgeAfter = 2 * time.Second
	c.leaseMu.Lock()
	idle := len(c.acked) == 0
	c.leaseMu.Unlock()
	if idle {
		// Nothing of ours waits for a purge: the processes that
		// acknowledged jobs purge them, and an idle one asks nothing.
		return last
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	floors, err := c.purgeBelowFloors(pctx, last)
	if err != nil {
		return last
	}
	c.leaseMu.Lock()
	var late []ackedJob
	keep := c.acked[:0]
	for _, a := range c.acked {
		switch {
		case a.shard < len(floors) && a.seq <= floors[a.shard]:
		case now.Sub(a.at) >= purgeAfter:
			late = append(late, a)
		default:
			keep = append(keep, a)
		}
	}
	c.acked = keep
	c.leaseMu.Unlock()
	for _, a := range late {
		if err := c.purgeQueueSubject(pctx, a.subject); err != nil {
			c.leaseMu.Lock()
			c.acked = append(c.acked, a) // try again next time
			c.leaseMu.Unlock()
			break
		}
	}
	return floors
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
