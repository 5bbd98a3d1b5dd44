package delivery

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"runtime/debug"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/delivery/dkim"
	"github.com/jetrelay/jetrelay/delivery/mtasts"
	"github.com/jetrelay/jetrelay/delivery/tlsrpt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Options configure a worker process. A zero field takes its value from
// DefaultOptions, except where zero has a meaning of its own (Jitter,
// DelayWarning, DestinationBackoff: none).
type Options struct {
	Hostname     string // EHLO name and Reporting-MTA
	Concurrency  int    // jobs handled at once
	Schedule     []time.Duration
	MaxAge       time.Duration
	Jitter       float64
	DelayWarning time.Duration // 0: no delay DSNs
	// BounceSizeLimit caps the original message a DSN returns: over it,
	// only the header section comes back (Postfix's bounce_size_limit).
	BounceSizeLimit int
	Timeouts        Timeouts
	// MaxPerDestination caps concurrent connections to one destination;
	// MaxMessagesPerConnection is how many messages a connection carries
	// before it is closed; IdleTimeout closes a cached connection unused
	// this long.
	MaxPerDestination        int
	MaxMessagesPerConnection int
	IdleTimeout              time.Duration
	// DestinationBackoff is how long a destination that just failed at the
	// connection level is skipped (its jobs are deferred without a try);
	// 0: never.
	DestinationBackoff time.Duration
	// ShutdownGrace lets attempts in flight finish after the stop signal.
	ShutdownGrace time.Duration
	// PoisonDeliveries: a job handed out this many times without finishing
	// (workers crashing on it) is dead-lettered.
	PoisonDeliveries int
	// RootCAs verifies next hops (nil: the system pool).
	RootCAs *x509.CertPool
	// DKIM signs what the SMTP transport sends (nil: nothing is signed).
	DKIM       *dkim.Signer
	Registerer prometheus.Registerer
	// MTASTS applies MTA-STS policies to direct MX delivery and counts
	// the sessions for TLS reports (sts.go).
	MTASTS MTASTSOptions
}

// DefaultOptions are the defaults of every option; the configuration's
// defaults are read from here.
func DefaultOptions() Options {
	return Options{
		Concurrency:              32,
		Schedule:                 []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour},
		MaxAge:                   5 * 24 * time.Hour,
		Jitter:                   0.1,
		DelayWarning:             12 * time.Hour,
		BounceSizeLimit:          50000,
		Timeouts:                 DefaultTimeouts(),
		MaxPerDestination:        20,
		MaxMessagesPerConnection: 100,
		IdleTimeout:              30 * time.Second,
		DestinationBackoff:       time.Minute,
		ShutdownGrace:            30 * time.Second,
		PoisonDeliveries:         10,
		// MTA-STS is on by default for direct MX delivery, as in KumoMTA
		// and maddy: only domains that publish a policy are affected, and
		// they ask for it.
		MTASTS: MTASTSOptions{Enabled: true, HTTPSPort: 443, FetchTimeout: mtasts.DefaultFetchTimeout,
			MaxReportDomains: 100, ReportFlushInterval: tlsrpt.DefaultFlushInterval},
	}
}

func (o *Options) fill() {
	d := DefaultOptions()
	if o.Concurrency <= 0 {
		o.Concurrency = d.Concurrency
	}
	if len(o.Schedule) == 0 {
		o.Schedule = d.Schedule
	}
	if o.MaxAge <= 0 {
		o.MaxAge = d.MaxAge
	}
	if o.Timeouts == (Timeouts{}) {
		o.Timeouts = d.Timeouts
	}
	if o.MaxPerDestination <= 0 {
		o.MaxPerDestination = d.MaxPerDestination
	}
	if o.MaxMessagesPerConnection <= 0 {
		o.MaxMessagesPerConnection = d.MaxMessagesPerConnection
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = d.IdleTimeout
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = d.ShutdownGrace
	}
	if o.PoisonDeliveries <= 0 {
		o.PoisonDeliveries = d.PoisonDeliveries
	}
	if o.BounceSizeLimit <= 0 {
		o.BounceSizeLimit = d.BounceSizeLimit
	}
}

// Worker delivers jobs from the shared consumer.
type Worker struct {
	b       *broker.Client
	router  *Router
	pool    *pool
	smtp    *smtpTransport
	opts    Options
	log     zerolog.Logger
	metrics *metrics
	health  *authHealth
}

// New builds a worker.
func New(b *broker.Client, router *Router, opts Options, log zerolog.Logger) *Worker {
	opts.fill()
	log = log.With().Str("component", "delivery").Logger()
	m := newMetrics(opts.Registerer)
	p := newPool(opts.MaxPerDestination, opts.MaxMessagesPerConnection, opts.IdleTimeout, opts.DestinationBackoff)
	var st *sts
	if opts.MTASTS.Enabled {
		st = newSTS(b, router, opts.MTASTS, opts.RootCAs, opts.Registerer, log)
	}
	return &Worker{
		b:      b,
		router: router,
		pool:   p,
		smtp: &smtpTransport{
			hostname: opts.Hostname, router: router, pool: p,
			dialer:   &net.Dialer{Timeout: opts.Timeouts.Connect, KeepAlive: 30 * time.Second},
			timeouts: opts.Timeouts, rootCAs: opts.RootCAs, tlsOut: m.tls, log: log,
			dkim: opts.DKIM, sts: st,
		},
		opts:    opts,
		log:     log,
		metrics: m,
		health:  newAuthHealth(opts.Registerer, log),
	}
}

// transportFor picks the transport of a destination: its route's own
// (Microsoft Graph), or SMTP.
func (w *Worker) transportFor(d *Destination) Transport {
	if d.Transport != nil {
		return d.Transport
	}
	return w.smtp
}

// Run consumes jobs until ctx is cancelled, then lets attempts in flight
// finish within ShutdownGrace (after which they are cut off and their jobs
// go back to the queue for another worker).
func (w *Worker) Run(ctx context.Context) error {
	hardCtx, hardCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hardCancel()
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		w.sweepIdle(sweepCtx)
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
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		w.probeTokens(ctx)
	}()
	defer func() { <-probeDone }()
	if w.smtp.sts != nil {
		// The TLS report counts go to the broker until the last attempt
		// has ended, then once more.
		reportCtx, stopReport := context.WithCancel(context.WithoutCancel(ctx))
		reportDone := make(chan struct{})
		go func() {
			defer close(reportDone)
			w.smtp.sts.report.Run(reportCtx)
		}()
		defer func() { stopReport(); <-reportDone }()
	}
	err := w.b.ConsumeJobs(ctx, w.opts.Concurrency, func(_ context.Context, l *broker.Lease) {
		w.handle(hardCtx, l)
	})
	hardCancel()
	stopSweep()
	<-sweepDone
	w.pool.closeAll()
	w.log.Info().Msg("delivery worker stopped")
	return err
}

// sweepIdle closes idle connections every second until ctx ends.
func (w *Worker) sweepIdle(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.pool.sweep(false)
		}
	}
}

// handle processes one job: deliver it to each of its destinations, plan
// what follows, and settle the lease with that plan, which the broker
// records before it acknowledges the job.
func (w *Worker) handle(ctx context.Context, l *broker.Lease) {
	defer func() {
		if p := recover(); p != nil {
			w.log.Error().Str("msg_id", l.QueueID()).Interface("panic", p).Str("stack", string(debug.Stack())).
				Msg("panic while handling a job; it will be handed out again")
			_ = l.Return(5 * time.Second)
		}
	}()
	if l.Err != nil {
		w.log.Error().Str("msg_id", l.QueueID()).Err(l.Err).Msg("job does not decode; dead-lettering the raw payload")
		if err := l.DeadLetterRaw(ctx, l.Err.Error()); err != nil {
			w.log.Error().Str("msg_id", l.QueueID()).Err(err).Msg("could not dead-letter the malformed job; it will be handed out again")
			return
		}
		w.metrics.deadLetter("malformed")
		return
	}
	job := l.Job
	log := w.log.With().Str("msg_id", job.QueueID).Int("attempt", job.Attempt).Logger()
	if job.Part != "" {
		log = log.With().Str("part", job.Part).Logger()
	}
	now := time.Now()
	var p *plan
	if n := l.Deliveries(); int(n) > w.opts.PoisonDeliveries {
		log.Error().Uint64("deliveries", n).Msg("job keeps coming back without finishing: dead-lettering it")
		p = poisonPlan(job, n)
	} else {
		groups := w.attempt(ctx, l)
		p = w.plan(job, groups, func() (io.ReadCloser, error) { return l.OpenBody(ctx) }, now)
		w.logAttempt(job, groups, p, log)
	}
	err := l.Settle(ctx, p.outcome)
	if err != nil && !errors.Is(err, broker.ErrNotAcknowledged) {
		log.Error().Err(err).Msg("could not record the outcome of the attempt; the job will be tried again")
		return
	}
	w.logSettled(p, log)
	if err != nil {
		log.Warn().Err(err).Msg("the outcome is recorded, but the job may be handed out again")
	}
}
