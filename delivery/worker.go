package delivery

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/deadletter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Options configure a worker process.
type Options struct {
	Hostname     string // EHLO name and Reporting-MTA
	Concurrency  int    // jobs handled at once
	Schedule     []time.Duration
	MaxAge       time.Duration
	Jitter       float64
	DelayWarning time.Duration // 0: no delay DSNs
	Timeouts     Timeouts
	// MaxPerDestination, MaxMessagesPerConnection, IdleTimeout: see config.
	MaxPerDestination        int
	MaxMessagesPerConnection int
	IdleTimeout              time.Duration
	// DestinationBackoff is how long a destination that just failed at the
	// connection level is skipped (its jobs are deferred without a try).
	DestinationBackoff time.Duration
	// AckWait of the consumer; progress is reported every AckWait/4.
	AckWait time.Duration
	// ShutdownGrace lets attempts in flight finish after the stop signal.
	ShutdownGrace time.Duration
	// PoisonDeliveries: a job handed out this many times without finishing
	// (workers crashing on it) is dead-lettered.
	PoisonDeliveries int
	// RootCAs verifies next hops (nil: the system pool).
	RootCAs    *x509.CertPool
	Registerer prometheus.Registerer
}

// Worker delivers jobs from the shared consumer.
type Worker struct {
	b       *broker.Client
	dl      *deadletter.Writer
	router  *Router
	pool    *pool
	dialer  *net.Dialer
	opts    Options
	log     zerolog.Logger
	metrics *metrics

	mu       sync.Mutex
	inflight map[*broker.Msg]*flight
	acked    []ackedJob // acknowledged jobs not yet known to be purged
}

// ackedJob is a job this worker acknowledged. The queue keeps delivered
// jobs until the shared ack floor passes them (PurgeDelivered); when an
// older job holds the floor up, the worker purges its own ones by subject
// after a short while, so that `queue list` never shows them for long.
type ackedJob struct {
	shard   int
	seq     uint64
	subject string
	at      time.Time
}

type flight struct {
	started  time.Time
	progress time.Time
}

// New builds a worker.
func New(b *broker.Client, router *Router, opts Options, log zerolog.Logger) *Worker {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 32
	}
	if len(opts.Schedule) == 0 {
		opts.Schedule = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour}
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = 5 * 24 * time.Hour
	}
	if opts.Timeouts == (Timeouts{}) {
		opts.Timeouts = DefaultTimeouts()
	}
	if opts.MaxPerDestination <= 0 {
		opts.MaxPerDestination = 20
	}
	if opts.MaxMessagesPerConnection <= 0 {
		opts.MaxMessagesPerConnection = 100
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 30 * time.Second
	}
	if opts.AckWait <= 0 {
		opts.AckWait = time.Minute
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 30 * time.Second
	}
	if opts.PoisonDeliveries <= 0 {
		opts.PoisonDeliveries = 10
	}
	return &Worker{
		b:        b,
		dl:       deadletter.NewWriter(b),
		router:   router,
		pool:     newPool(opts.MaxPerDestination, opts.MaxMessagesPerConnection, opts.IdleTimeout, opts.DestinationBackoff),
		dialer:   &net.Dialer{Timeout: opts.Timeouts.Connect, KeepAlive: 30 * time.Second},
		opts:     opts,
		log:      log.With().Str("component", "delivery").Logger(),
		metrics:  newMetrics(opts.Registerer),
		inflight: map[*broker.Msg]*flight{},
	}
}

// Run consumes jobs until ctx is cancelled, then lets attempts in flight
// finish within ShutdownGrace (after which they are cut off and their jobs
// go back to the queue for another worker).
func (w *Worker) Run(ctx context.Context) error {
	hardCtx, hardCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hardCancel()
	var bg sync.WaitGroup
	bgCtx, bgCancel := context.WithCancel(context.Background())
	bg.Add(1)
	go func() {
		defer bg.Done()
		w.housekeeping(bgCtx)
	}()
	stopGrace := context.AfterFunc(ctx, func() {
		w.log.Info().Dur("grace", w.opts.ShutdownGrace).Msg("delivery stopping: no new jobs, finishing attempts in flight")
		t := time.NewTimer(w.opts.ShutdownGrace)
		select {
		case <-t.C:
			w.log.Warn().Msg("grace period over, interrupting attempts in flight (their jobs will be redelivered)")
			hardCancel()
		case <-hardCtx.Done():
			t.Stop()
		}
	})
	defer stopGrace()
	w.log.Info().Int("concurrency", w.opts.Concurrency).Msg("delivery worker started")
	err := w.b.ConsumeJobs(ctx, w.opts.Concurrency, func(_ context.Context, m *broker.Msg) {
		w.handle(hardCtx, m)
	})
	hardCancel()
	bgCancel()
	bg.Wait()
	w.pool.sweep(true)
	w.log.Info().Msg("delivery worker stopped")
	return err
}

// housekeeping keeps long attempts alive (InProgress) and closes idle
// connections.
func (w *Worker) housekeeping(ctx context.Context) {
	// Often enough to purge delivered jobs promptly and to keep the
	// longest attempts alive (progress every AckWait/4).
	tick := min(w.opts.AckWait/8, 500*time.Millisecond)
	if tick < 100*time.Millisecond {
		tick = 100 * time.Millisecond
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	lastSweep := time.Now()
	var floors []uint64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			floors = w.purgeDelivered(ctx, floors, now)
			w.mu.Lock()
			var due []*broker.Msg
			for m, f := range w.inflight {
				if now.Sub(f.progress) >= w.opts.AckWait/4 {
					f.progress = now
					due = append(due, m)
				}
			}
			w.mu.Unlock()
			for _, m := range due {
				_ = m.InProgress()
			}
			if now.Sub(lastSweep) > time.Second {
				w.pool.sweep(false)
				lastSweep = now
			}
		}
	}
}

// purgeDelivered removes delivered jobs from the queue: all of them below
// the ack floor at once, and this worker's own ones above it one by one
// once they are older than purgeAfter.
func (w *Worker) purgeDelivered(ctx context.Context, last []uint64, now time.Time) []uint64 {
	const purgeAfter = 2 * time.Second
	w.mu.Lock()
	idle := len(w.acked) == 0
	w.mu.Unlock()
	if idle {
		// Nothing of ours waits for a purge: the workers that acknowledged
		// jobs purge them, and an idle worker asks the broker nothing.
		return last
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	floors, err := w.b.PurgeDelivered(pctx, last)
	if err != nil {
		return last
	}
	w.mu.Lock()
	var late []ackedJob
	keep := w.acked[:0]
	for _, a := range w.acked {
		switch {
		case a.shard < len(floors) && a.seq <= floors[a.shard]:
		case now.Sub(a.at) >= purgeAfter:
			late = append(late, a)
		default:
			keep = append(keep, a)
		}
	}
	w.acked = keep
	w.mu.Unlock()
	for _, a := range late {
		if err := w.b.PurgeQueueSubject(pctx, a.subject); err != nil {
			w.mu.Lock()
			w.acked = append(w.acked, a) // try again next time
			w.mu.Unlock()
			break
		}
	}
	return floors
}

func (w *Worker) track(m *broker.Msg) func() {
	now := time.Now()
	w.mu.Lock()
	w.inflight[m] = &flight{started: now, progress: now}
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		delete(w.inflight, m)
		w.mu.Unlock()
	}
}

// bodySource opens a job's body for each transaction that needs it.
type bodySource struct {
	ctx    context.Context
	b      *broker.Client
	inline []byte
	object string
}

func (s bodySource) open() (io.ReadCloser, error) {
	if s.object == "" {
		return io.NopCloser(bytes.NewReader(s.inline)), nil
	}
	return s.b.OpenBody(s.ctx, s.object)
}

// outcome sorts the recipients of one job after an attempt.
type outcome struct {
	delivered []rcptResult
	temporary []rcptResult
	permanent []rcptResult
	groups    []*groupResult
}

type rcptResult struct {
	rcpt  contracts.Recipient
	reply *contracts.Reply
	group *groupResult
}

// handle processes one job: deliver, then record the consequences (retry
// schedule, dead letter, DSN), and only then acknowledge. Every publish
// before the ack is idempotent, so a crash at any point re-runs the job
// without losing or doubling its follow-ups.
func (w *Worker) handle(ctx context.Context, m *broker.Msg) {
	defer w.track(m)()
	defer func() {
		if p := recover(); p != nil {
			w.log.Error().Interface("panic", p).Str("stack", string(debug.Stack())).Uint64("stream_seq", m.StreamSeq()).
				Msg("panic while handling a job; it will be redelivered")
			_ = m.Nak(5 * time.Second)
		}
	}()
	job, inline, err := contracts.DecodeJob(m.Data())
	if err != nil {
		w.deadMalformed(ctx, m, err)
		return
	}
	log := w.log.With().Str("msg_id", job.QueueID).Str("job_id", job.JobID()).Int("attempt", job.Attempt).Logger()
	if int(m.Delivered()) > w.opts.PoisonDeliveries {
		log.Error().Uint64("deliveries", m.Delivered()).Msg("job keeps coming back without finishing: dead-lettering it")
		w.finish(ctx, m, job, inline, nil, &finalPlan{dead: w.deadFor(job, job.Rcpts, contracts.ReasonPoison,
			fmt.Sprintf("handed out %d times without finishing (worker crashes?)", m.Delivered()), nil, nil)}, log)
		return
	}
	if !job.Body.Inline() {
		holders, err := w.b.BodyHolders(ctx, job.Body.Object)
		if err == nil && !contains(holders, job.JobID()) {
			// A previous run of this job got as far as releasing its body
			// but not to the ack: its work is done.
			log.Info().Msg("job already finished by an earlier attempt; acknowledging")
			w.ack(ctx, m, log)
			return
		}
	}

	src := bodySource{ctx: ctx, b: w.b, inline: inline, object: job.Body.Object}
	oc := w.attempt(ctx, job, src)
	plan := w.plan(job, oc, src, time.Now())
	w.logAttempt(job, oc, plan, log)
	w.finish(ctx, m, job, inline, oc, plan, log)
}

// attempt delivers every destination group of the job, concurrently when
// there are several.
func (w *Worker) attempt(ctx context.Context, job *contracts.Job, src bodySource) *outcome {
	var keys []string
	groups := map[string]*destination{}
	members := map[string][]contracts.Recipient{}
	for _, r := range job.Rcpts {
		d := w.router.destinationFor(job, r.Domain())
		if _, ok := groups[d.key]; !ok {
			keys = append(keys, d.key)
			groups[d.key] = d
		}
		members[d.key] = append(members[d.key], r)
	}
	results := make([]*groupResult, len(keys))
	if len(keys) == 1 {
		results[0] = w.deliverGroup(ctx, job, src, groups[keys[0]], members[keys[0]])
	} else {
		var wg sync.WaitGroup
		for i, k := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = w.deliverGroup(ctx, job, src, groups[k], members[k])
			}()
		}
		wg.Wait()
	}
	oc := &outcome{groups: results}
	for _, g := range results {
		for i, r := range g.rcpts {
			rep := g.replies[i]
			rr := rcptResult{rcpt: r, reply: rep, group: g}
			switch {
			case rep != nil && rep.Code/100 == 2:
				oc.delivered = append(oc.delivered, rr)
			case rep == nil || rep.Temporary():
				oc.temporary = append(oc.temporary, rr)
			default:
				oc.permanent = append(oc.permanent, rr)
			}
		}
	}
	return oc
}

// finalPlan is everything a finished attempt leads to.
type finalPlan struct {
	retries   []retryJob
	dead      *contracts.DeadLetter
	dsns      []*contracts.Job
	dsnBodies [][]byte
}

type retryJob struct {
	job *contracts.Job
	at  time.Time
}

// plan decides the follow-ups of an attempt.
func (w *Worker) plan(job *contracts.Job, oc *outcome, src bodySource, now time.Time) *finalPlan {
	p := &finalPlan{}
	var deadRcpts []contracts.Recipient
	var deadReplies []*contracts.Reply
	var lastReply *contracts.Reply
	var tried []string
	for _, g := range oc.groups {
		tried = append(tried, g.tried...)
	}
	for _, rr := range oc.permanent {
		deadRcpts = append(deadRcpts, rr.rcpt)
		deadReplies = append(deadReplies, rr.reply)
		lastReply = rr.reply
	}
	reason := contracts.ReasonRejected
	bodyMissing := false
	for _, g := range oc.groups {
		bodyMissing = bodyMissing || g.bodyMissing
	}

	if len(oc.temporary) > 0 {
		next := w.nextAttempt(job.Attempt, now)
		expired := next.After(job.FirstSeen.Add(w.opts.MaxAge))
		switch {
		case bodyMissing:
			reason = contracts.ReasonBodyMissing
			for _, rr := range oc.temporary {
				deadRcpts = append(deadRcpts, rr.rcpt)
				deadReplies = append(deadReplies, rr.reply)
				lastReply = rr.reply
			}
		case expired:
			if len(oc.permanent) == 0 {
				reason = contracts.ReasonExpired
			}
			for _, rr := range oc.temporary {
				deadRcpts = append(deadRcpts, rr.rcpt)
				r := *rr.reply
				r.Text = "delivery time expired: " + r.Text
				deadReplies = append(deadReplies, &r)
				lastReply = rr.reply
			}
		default:
			p.retries = w.retries(job, oc, next, now)
		}
	}
	if len(deadRcpts) > 0 {
		detail := fmt.Sprintf("%d recipient(s) failed permanently", len(deadRcpts))
		switch reason {
		case contracts.ReasonExpired:
			detail = fmt.Sprintf("still failing temporarily after %s (delivery.retry.max_age)", w.opts.MaxAge)
		case contracts.ReasonBodyMissing:
			detail = "the message body is missing from the body store"
		}
		p.dead = w.deadFor(job, deadRcpts, reason, detail, deadReplies, tried)
		p.dead.LastReply = lastReply
	}
	w.planDSNs(job, oc, p, src, now)
	return p
}

// retries builds one retry job per destination group that has temporary
// failures, carrying only those recipients forward.
func (w *Worker) retries(job *contracts.Job, oc *outcome, next, now time.Time) []retryJob {
	byGroup := map[*groupResult][]rcptResult{}
	var order []*groupResult
	for _, rr := range oc.temporary {
		if _, ok := byGroup[rr.group]; !ok {
			order = append(order, rr.group)
		}
		byGroup[rr.group] = append(byGroup[rr.group], rr)
	}
	out := make([]retryJob, 0, len(order))
	for _, g := range order {
		rrs := byGroup[g]
		nj := *job
		nj.Version = 0
		nj.Rcpts = make([]contracts.Recipient, len(rrs))
		for i, rr := range rrs {
			r := rr.rcpt
			r.LastReply = rr.reply
			nj.Rcpts[i] = r
		}
		nj.Part = contracts.PartOf(job.JobID(), job.Attempt, nj.Rcpts)
		nj.Attempt = job.Attempt + 1
		nj.LastError = rrs[0].reply
		nj.History = append([]contracts.AttemptRecord(nil), job.History...)
		nj.AddHistory(attemptRecord(job.Attempt, g, contracts.ResultDeferred, rrs[0].reply))
		out = append(out, retryJob{job: &nj, at: next})
	}
	return out
}

func attemptRecord(attempt int, g *groupResult, result string, r *contracts.Reply) contracts.AttemptRecord {
	return contracts.AttemptRecord{
		Attempt: attempt, At: g.start, Duration: g.dur, Host: g.host, IP: g.ip, TLS: g.tls,
		Result: result, Reply: r, Rcpts: len(g.rcpts),
	}
}

// nextAttempt applies delivery.retry.schedule: the wait before attempt n+1
// is schedule[n-1], the last entry repeating, spread by ±jitter.
func (w *Worker) nextAttempt(attempt int, now time.Time) time.Time {
	i := attempt - 1
	if i >= len(w.opts.Schedule) {
		i = len(w.opts.Schedule) - 1
	}
	if i < 0 {
		i = 0
	}
	d := w.opts.Schedule[i]
	if j := w.opts.Jitter; j > 0 {
		d += time.Duration((rand.Float64()*2 - 1) * j * float64(d))
	}
	return now.Add(d)
}

func (w *Worker) deadFor(job *contracts.Job, rcpts []contracts.Recipient, reason, detail string, replies []*contracts.Reply, tried []string) *contracts.DeadLetter {
	dj := *job
	dj.Version = 0
	dj.Rcpts = make([]contracts.Recipient, len(rcpts))
	for i, r := range rcpts {
		if i < len(replies) {
			r.LastReply = replies[i]
		}
		dj.Rcpts[i] = r
	}
	return &contracts.DeadLetter{
		ID:         contracts.DeadLetterID(job.JobID(), job.Attempt),
		Reason:     reason,
		Detail:     detail,
		DeadAt:     time.Now().UTC(),
		HostsTried: tried,
		Job:        dj,
	}
}

// finish publishes the plan, releases the body if nothing needs it any
// more, and acknowledges the job. Publish first, ack last.
func (w *Worker) finish(ctx context.Context, m *broker.Msg, job *contracts.Job, inline []byte, oc *outcome, p *finalPlan, log zerolog.Logger) {
	err := w.publishPlan(ctx, job, inline, p, log)
	if err != nil {
		log.Error().Err(err).Msg("could not record the outcome of the attempt; the job will be retried")
		_ = m.Nak(10 * time.Second)
		return
	}
	w.ack(ctx, m, log)
}

func (w *Worker) publishPlan(ctx context.Context, job *contracts.Job, inline []byte, p *finalPlan, log zerolog.Logger) error {
	var holders []string
	if !job.Body.Inline() {
		for _, r := range p.retries {
			holders = append(holders, r.job.JobID())
		}
		if p.dead != nil {
			holders = append(holders, deadletter.Holder(p.dead.ID))
		}
		if len(holders) > 0 {
			if _, _, err := w.retryPublish(ctx, func(ctx context.Context) (int, bool, error) {
				return w.b.UpdateBodyRefs(ctx, job.Body.Object, nil, holders)
			}); err != nil {
				return err
			}
		}
	}
	for _, r := range p.retries {
		r := r
		if _, _, err := w.retryPublish(ctx, func(ctx context.Context) (int, bool, error) {
			return 0, false, w.b.ScheduleJob(ctx, r.job, inline, r.at)
		}); err != nil {
			return err
		}
	}
	if p.dead != nil {
		if _, _, err := w.retryPublish(ctx, func(ctx context.Context) (int, bool, error) {
			return 0, false, w.dl.Write(ctx, p.dead, inline)
		}); err != nil {
			return err
		}
		w.metrics.dead.WithLabelValues(p.dead.Reason).Inc()
		log.Warn().Str("reason", p.dead.Reason).Str("dead_letter", p.dead.ID).Int("rcpts", len(p.dead.Job.Rcpts)).
			Str("detail", p.dead.Detail).Msg("dead-lettered")
	}
	for i, d := range p.dsns {
		d, body := d, p.dsnBodies[i]
		if _, _, err := w.retryPublish(ctx, func(ctx context.Context) (int, bool, error) {
			return 0, false, w.b.PublishJob(ctx, d, body)
		}); err != nil {
			return err
		}
		log.Info().Str("dsn_id", d.QueueID).Str("rcpt", d.Rcpts[0].Addr).Msg("DSN queued")
	}
	if !job.Body.Inline() {
		left, _, err := w.retryPublish(ctx, func(ctx context.Context) (int, bool, error) {
			return w.b.UpdateBodyRefs(ctx, job.Body.Object, []string{job.JobID()}, nil)
		})
		if err != nil {
			return err
		}
		if left == 0 {
			if err := w.b.ReleaseBody(ctx, job.Body.Object); err != nil {
				log.Warn().Err(err).Msg("could not delete the body object; the bucket TTL will")
			}
		}
	}
	return nil
}

// retryPublish retries a broker operation for up to ~30s: after a
// delivery, giving up means the job runs again and the recipients that
// were just delivered get the message twice.
func (w *Worker) retryPublish(ctx context.Context, f func(context.Context) (int, bool, error)) (int, bool, error) {
	var err error
	backoff := 200 * time.Millisecond
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		var b bool
		n, b, err = f(ctx)
		if err == nil || !errors.Is(err, broker.ErrUnavailable) || time.Now().After(deadline) || ctx.Err() != nil {
			return n, b, err
		}
		select {
		case <-ctx.Done():
			return 0, false, err
		case <-time.After(backoff):
		}
		if backoff < 3*time.Second {
			backoff *= 2
		}
	}
}

// ack acknowledges a finished job, retrying with short timeouts for up to
// an AckWait: while the consumer's leader moves (a broker node restarting)
// acks get no answer, and a job whose ack is lost is handed out again and
// delivered twice. Acks are idempotent. An ack that lands only after the
// job was handed out again no longer prevents that duplicate, but it does
// stop a third delivery; meanwhile the job's slot stays taken, which is
// what a worker whose broker is unreachable should do anyway. It stops at
// once when the broker restarted without its record of handing out the
// job (broker.ErrAckUnanswered): that ack will never be answered, and
// waiting for it would hold the slot for an AckWait for nothing.
func (w *Worker) ack(ctx context.Context, m *broker.Msg, log zerolog.Logger) {
	deadline := time.Now().Add(w.opts.AckWait)
	var err error
	for try := 1; ; try++ {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		err = m.Ack(actx)
		cancel()
		if err == nil {
			if try > 1 {
				log.Info().Int("tries", try).Msg("ack went through after retrying")
			}
			qs, _ := contracts.ParseQueueSubject(m.Subject())
			w.mu.Lock()
			w.acked = append(w.acked, ackedJob{shard: qs.Shard, seq: m.StreamSeq(), subject: m.Subject(), at: time.Now()})
			w.mu.Unlock()
			return
		}
		if errors.Is(err, broker.ErrAckUnanswered) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	log.Warn().Err(err).Msg("ack failed; the job may be delivered again")
}

// deadMalformed dead-letters a payload that does not decode, keeping the
// raw bytes as its body so nothing is lost.
func (w *Worker) deadMalformed(ctx context.Context, m *broker.Msg, derr error) {
	qid := m.Header(contracts.HeaderQueueID)
	if qid == "" {
		qid = fmt.Sprintf("SEQ%d", m.StreamSeq())
	}
	log := w.log.With().Str("msg_id", qid).Logger()
	log.Error().Err(derr).Str("subject", m.Subject()).Msg("job does not decode; dead-lettering the raw payload")
	d := &contracts.DeadLetter{
		ID:     contracts.DeadLetterID(fmt.Sprintf("%s-s%d", qid, m.StreamSeq()), 0),
		Reason: contracts.ReasonMalformed,
		Detail: derr.Error(),
		DeadAt: time.Now().UTC(),
		Job:    contracts.Job{QueueID: qid, ReceivedAt: time.Now().UTC()},
	}
	if _, _, err := w.retryPublish(ctx, func(ctx context.Context) (int, bool, error) {
		return 0, false, w.dl.Write(ctx, d, m.Data())
	}); err != nil {
		log.Error().Err(err).Msg("could not dead-letter the malformed job; leaving it for redelivery")
		_ = m.Nak(30 * time.Second)
		return
	}
	w.metrics.dead.WithLabelValues(contracts.ReasonMalformed).Inc()
	w.ack(ctx, m, log)
}

// logAttempt writes one event per destination group: the delivery log.
func (w *Worker) logAttempt(job *contracts.Job, oc *outcome, p *finalPlan, log zerolog.Logger) {
	for _, g := range oc.groups {
		result, class := groupResultName(g)
		ev := log.Info()
		if result != contracts.ResultDelivered {
			ev = log.Warn()
		}
		rcpts := zerolog.Arr()
		for i, r := range g.rcpts {
			rcpts.Dict(zerolog.Dict().Str("rcpt", r.Addr).Str("reply", g.replies[i].String()))
		}
		ev = ev.Str("domain", g.dest.domain).Str("route", g.dest.key).Str("host", g.host).Str("ip", g.ip).
			Str("tls", g.tls).Array("rcpts", rcpts).Str("result", result).Dur("duration", g.dur)
		if len(g.replies) > 0 && g.replies[0] != nil {
			ev = ev.Int("smtp_code", g.replies[0].Code).Str("smtp_enh", g.replies[0].Enhanced)
		}
		if len(p.retries) > 0 && result != contracts.ResultDelivered {
			ev = ev.Time("next_attempt", p.retries[0].at)
		}
		ev.Msg("delivery attempt")
		w.metrics.deliveries.WithLabelValues(result, class).Inc()
	}
	for range oc.delivered {
		w.metrics.latency.Observe(time.Since(job.ReceivedAt).Seconds())
	}
}

func groupResultName(g *groupResult) (string, string) {
	var ok, temp, perm int
	for _, r := range g.replies {
		switch {
		case r != nil && r.Code/100 == 2:
			ok++
		case r == nil || r.Temporary():
			temp++
		default:
			perm++
		}
	}
	class := "4xx"
	if g.replies[0] != nil && g.replies[0].Code/100 == 2 {
		class = "2xx"
	} else if g.replies[0] != nil && g.replies[0].Code/100 == 5 {
		class = "5xx"
	}
	switch {
	case ok == len(g.replies):
		return contracts.ResultDelivered, class
	case temp == len(g.replies):
		return contracts.ResultDeferred, class
	case perm == len(g.replies):
		return contracts.ResultFailed, class
	}
	return contracts.ResultMixed, class
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
