package broker

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Settings are the broker-side parameters of the pipeline. A zero field
// takes its value from DefaultSettings.
type Settings struct {
	Replicas int
	// QueueShards is the number of streams the queue is spread over (the
	// same in every process of a deployment). 0 (the default) adopts the
	// layout already on the broker, and for a new queue takes
	// AutoQueueShards; a number is checked against the broker's layout.
	QueueShards int
	// DedupeWindow is the Nats-Msg-Id duplicate window of both streams.
	// It must cover the longest wait between two attempts (a worker that
	// stalled and settles a job late republishes its follow-ups with the
	// same IDs) and at least an hour; it costs memory in proportion to the
	// message rate.
	DedupeWindow time.Duration
	// AckWait of the delivery consumer: a job whose worker stopped
	// reporting progress (it died) is handed out again after this. Workers
	// report progress every AckWait/4 while they work on a job, so a long
	// delivery is never handed out twice; a short AckWait makes a crash
	// cost seconds.
	AckWait time.Duration
	// MaxAckPending caps jobs in flight across all workers.
	MaxAckPending int
	// QueueMaxAge is the backstop lifetime of everything in the live queue
	// and of body objects: delivery.retry.max_age plus the dead-letter
	// retention plus a margin. Jobs normally leave long before.
	QueueMaxAge time.Duration
	// DeadLetterRetention is MaxAge of the dead-letter stream.
	DeadLetterRetention time.Duration
	// InlineMaxBytes is the configured inline limit; the effective one also
	// respects the server's max_payload.
	InlineMaxBytes int64
	// PublishTimeout bounds each publish.
	PublishTimeout time.Duration
}

// DefaultSettings are the defaults of every setting; the configuration's
// defaults are read from here. QueueMaxAge is derived: the default queue
// lifetime (five days) plus DeadLetterRetention plus a day.
func DefaultSettings() Settings {
	return Settings{
		Replicas:            1,
		QueueShards:         0, // auto
		DedupeWindow:        time.Hour,
		AckWait:             10 * time.Second,
		MaxAckPending:       20000,
		DeadLetterRetention: 30 * 24 * time.Hour,
		InlineMaxBytes:      256 << 10,
		PublishTimeout:      10 * time.Second,
	}
}

// MinDedupeWindow is the shortest duplicate window the broker is given.
const MinDedupeWindow = time.Hour

func (s *Settings) fill() {
	d := DefaultSettings()
	if s.Replicas < 1 {
		s.Replicas = d.Replicas
	}
	if s.QueueShards < 1 {
		s.QueueShards = AutoQueueShards()
	}
	if s.DedupeWindow <= 0 {
		s.DedupeWindow = d.DedupeWindow
	}
	if s.AckWait <= 0 {
		s.AckWait = d.AckWait
	}
	if s.MaxAckPending <= 0 {
		s.MaxAckPending = d.MaxAckPending
	}
	if s.DeadLetterRetention <= 0 {
		s.DeadLetterRetention = d.DeadLetterRetention
	}
	if s.QueueMaxAge <= 0 {
		s.QueueMaxAge = 5*24*time.Hour + s.DeadLetterRetention + 24*time.Hour
	}
	if s.DedupeWindow > s.QueueMaxAge {
		s.DedupeWindow = s.QueueMaxAge
	}
	if s.InlineMaxBytes <= 0 {
		s.InlineMaxBytes = d.InlineMaxBytes
	}
	if s.PublishTimeout <= 0 {
		s.PublishTimeout = d.PublishTimeout
	}
}

// envelopeRoom is what the inline limit leaves of max_payload for the JSON
// envelope and headers.
const envelopeRoom = 64 << 10

// QueueStreamConfig is the live queue. Retries are scheduled messages
// (AllowMsgSchedules) that the server turns into jobs when they are due.
//
// It uses Limits retention, not WorkQueue as the design first suggested:
// in a WorkQueue stream every acknowledgement deletes its message, and
// with sync_interval: always each delete is one more fsync per message. An
// acknowledged job is removed instead by PurgeDelivered, in bulk up to the
// consumer's ack floor (one store operation for many jobs), so a message
// costs one fsync on the way in and a share of one on the way out; that
// measured 20% more messages per second end to end. Until the purge runs
// (a second, or as long as an older job is still being delivered), an
// acknowledged job is still stored; ScanQueue hides those below the ack
// floor, and workers purge their own ones individually when the floor is
// held up (see ackedJobs in delivery).
func (s Settings) QueueStreamConfig(shard int) jetstream.StreamConfig {
	s.fill()
	return jetstream.StreamConfig{
		Name:              contracts.QueueStream(shard),
		Description:       "jetrelay live queue (one shard): jobs ready for delivery and scheduled retries",
		Subjects:          []string{contracts.QueueSubjects(shard)},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          s.Replicas,
		Duplicates:        s.DedupeWindow,
		MaxAge:            s.QueueMaxAge,
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
		AllowMsgTTL:       true,
		AllowMsgSchedules: true,
		// The layout every process must agree on, on every shard.
		Metadata: map[string]string{metaQueueShards: strconv.Itoa(s.QueueShards)},
	}
}

// metaQueueShards is the queue streams' metadata key that records how many
// shards the queue has.
const metaQueueShards = "jetrelay.queue_shards"

// BodyStreamConfig is the stream behind the body bucket: what nats.go's
// CreateObjectStore makes (so the nats CLI and js.ObjectStore read it),
// plus a per-subject limit that no body reaches. The limit is there for
// its side effect: the server then cuts the stream into 4 MiB blocks
// instead of 8 MiB ones (autoTuneFileStorageBlockSize). A worker reading
// a chunk whose block has left the cache makes the server load the whole
// block, and every block in use is a buffer of that size, so halving it
// halves the memory and the copying that each large body costs.
func (s Settings) BodyStreamConfig() jetstream.StreamConfig {
	s.fill()
	return jetstream.StreamConfig{
		Name:        bodyStream,
		Description: "jetrelay message bodies above the inline limit",
		Subjects:    []string{chunkSubject(">"), "$O." + contracts.BucketBodies + ".M.>"},
		MaxAge:      s.QueueMaxAge,
		MaxBytes:    -1,
		// One chunk subject holds one body: at 64 KiB chunks (the
		// smallest) a body would need 64 TiB to reach this.
		MaxMsgsPerSubject: 1 << 30,
		Storage:           jetstream.FileStorage,
		Replicas:          s.Replicas,
		Discard:           jetstream.DiscardNew,
		AllowRollup:       true,
		AllowDirect:       true,
	}
}

// DeadLetterStreamConfig keeps dead letters for the retention period.
func (s Settings) DeadLetterStreamConfig() jetstream.StreamConfig {
	s.fill()
	return jetstream.StreamConfig{
		Name:        contracts.StreamDeadLetter,
		Description: "jetrelay dead letters: messages given up on, for inspection and replay",
		Subjects:    []string{contracts.SubjectDeadLettersAll},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
		Duplicates:  min(s.DedupeWindow, s.DeadLetterRetention),
		MaxAge:      s.DeadLetterRetention,
		Discard:     jetstream.DiscardOld,
		AllowDirect: true,
	}
}

// DeliveryConsumerConfig is the one durable consumer all workers share.
// MaxDeliver is unlimited on purpose: a job that keeps coming back is
// dead-lettered by the worker itself (reason "poison"), so nothing ever
// stays stuck in the queue unseen.
func (s Settings) DeliveryConsumerConfig(shard int) jetstream.ConsumerConfig {
	s.fill()
	return jetstream.ConsumerConfig{
		Durable:       contracts.ConsumerDelivery,
		Description:   "jetrelay delivery workers",
		FilterSubject: contracts.JobsFilter(shard),
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       s.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: s.MaxAckPending,
		MaxWaiting:    4096,
		Replicas:      s.Replicas,
	}
}

// ScheduledCounterConfig is a consumer that nobody reads: its pending
// count is the number of scheduled retries, which the queue's metrics and
// `queue list` report without scanning the stream.
func ScheduledCounterConfig(s Settings, shard int) jetstream.ConsumerConfig {
	s.fill()
	return jetstream.ConsumerConfig{
		Durable:       contracts.ConsumerScheduled,
		Description:   "jetrelay: counts scheduled retries (never consumed)",
		FilterSubject: contracts.SchedulesFilter(shard),
		AckPolicy:     jetstream.AckNonePolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas:      s.Replicas,
	}
}

// Provision creates or updates every stream, bucket and consumer jetrelay
// needs, then binds the client to them. It is idempotent and safe when
// several processes start at once: creating what exists with the same
// configuration succeeds, and a cluster that is still electing its leader
// is waited for (bounded by ctx).
func (c *Client) Provision(ctx context.Context, s Settings) error {
	auto := s.QueueShards < 1
	if auto {
		have, err := c.layoutOnBroker(ctx)
		if err != nil {
			return err
		}
		s.QueueShards = have
		if have == 0 {
			s.QueueShards = AutoQueueShards()
		}
	}
	s.fill()
	if err := c.checkShards(ctx, s.QueueShards); err != nil {
		return err
	}
	if err := c.provision(ctx, s); err != nil {
		return err
	}
	if !auto {
		return nil
	}
	// Two processes that chose a layout for a new queue at the same time
	// on machines of different sizes: the one that lost finds the other's
	// layout on the broker and refuses, rather than use streams no one
	// reads.
	return c.checkShards(ctx, s.QueueShards)
}

// AutoQueueShards is the number of queue shards a new queue gets when
// broker.queue_shards is not set: twice the CPUs this process may use,
// from 4 to 16. Each shard is a stream of its own, stored and fsynced by
// the server in parallel with the others, and the file system commits
// the flushes of concurrent streams together (BENCHMARKS.md, shards).
func AutoQueueShards() int {
	return min(max(2*runtime.GOMAXPROCS(0), 4), 16)
}

func (c *Client) provision(ctx context.Context, s Settings) error {
	c.set = s
	c.queues = make([]jetstream.Stream, s.QueueShards)
	type step struct {
		what string
		do   func(context.Context) error
	}
	var steps []step
	for i := 0; i < s.QueueShards; i++ {
		steps = append(steps,
			step{"stream " + contracts.QueueStream(i), func(ctx context.Context) error {
				st, err := c.ensureStream(ctx, s.QueueStreamConfig(i))
				if err == nil {
					c.queues[i] = st
				}
				return err
			}},
			step{contracts.QueueStream(i) + " consumer " + contracts.ConsumerDelivery, func(ctx context.Context) error {
				_, err := c.ensureConsumer(ctx, contracts.QueueStream(i), s.DeliveryConsumerConfig(i))
				return err
			}},
			step{contracts.QueueStream(i) + " consumer " + contracts.ConsumerScheduled, func(ctx context.Context) error {
				_, err := c.ensureConsumer(ctx, contracts.QueueStream(i), ScheduledCounterConfig(s, i))
				return err
			}})
	}
	steps = append(steps, []step{
		{"stream " + contracts.StreamDeadLetter, func(ctx context.Context) error {
			st, err := c.ensureStream(ctx, s.DeadLetterStreamConfig())
			if err == nil {
				c.dlq = st
			}
			return err
		}},
		{"object store " + contracts.BucketBodies, func(ctx context.Context) error {
			if _, err := c.ensureStream(ctx, s.BodyStreamConfig()); err != nil {
				return err
			}
			obs, err := c.js.ObjectStore(ctx, contracts.BucketBodies)
			if err == nil {
				c.bodies = obs
			}
			return err
		}},
		{"key-value " + contracts.BucketBodyRefs, func(ctx context.Context) error {
			kv, err := c.ensureKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket:      contracts.BucketBodyRefs,
				Description: "jetrelay: which jobs and dead letters still need each body object",
				History:     1,
				TTL:         s.QueueMaxAge,
				Storage:     jetstream.FileStorage,
				Replicas:    s.Replicas,
			})
			if err == nil {
				c.refs = kv
			}
			return err
		}},
		{"key-value " + contracts.BucketRates, func(ctx context.Context) error {
			kv, err := c.ensureKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket:      contracts.BucketRates,
				Description: "jetrelay: rate-limit counters and concurrency slots of the routes",
				History:     1,
				TTL:         48 * time.Hour, // the longest window is a day
				Storage:     jetstream.FileStorage,
				Replicas:    s.Replicas,
			})
			if err == nil {
				c.rates = kv
			}
			return err
		}},
		{"key-value " + contracts.BucketAuth, func(ctx context.Context) error {
			kv, err := c.ensureKeyValue(ctx, authKeyValueConfig(s))
			if err == nil {
				c.authMu.Lock()
				c.auths = kv
				c.authMu.Unlock()
			}
			return err
		}},
		{"key-value " + contracts.BucketMTASTS, func(ctx context.Context) (err error) {
			c.sts, err = c.ensureKeyValue(ctx, mtastsKeyValueConfig(s))
			return err
		}},
		{"key-value " + contracts.BucketTLSReports, func(ctx context.Context) (err error) {
			c.tlsrpt, err = c.ensureKeyValue(ctx, tlsReportKeyValueConfig(s))
			return err
		}},
	}...)
	for _, st := range steps {
		if err := retryTransient(ctx, c, st.what, st.do); err != nil {
			return fmt.Errorf("provision %s: %w", st.what, err)
		}
	}
	c.provisionOutcomes(ctx, s)
	c.setInlineLimit()
	return nil
}

// Bind attaches to the streams and buckets without creating or changing
// them: what the CLI does, so that an operator's command never alters the
// layout a running relay depends on.
func (c *Client) Bind(ctx context.Context, s Settings) error {
	s.fill()
	// The CLI follows the layout on the broker, whatever its own
	// configuration says.
	have, err := c.layoutOnBroker(ctx)
	if err != nil {
		return err
	}
	if have > 0 {
		s.QueueShards = have
	}
	c.set = s
	c.queues = make([]jetstream.Stream, s.QueueShards)
	type step struct {
		what string
		do   func(context.Context) error
	}
	var steps []step
	for i := 0; i < s.QueueShards; i++ {
		steps = append(steps, step{"stream " + contracts.QueueStream(i), func(ctx context.Context) (err error) {
			c.queues[i], err = c.js.Stream(ctx, contracts.QueueStream(i))
			return err
		}})
	}
	steps = append(steps, []step{
		{"stream " + contracts.StreamDeadLetter, func(ctx context.Context) (err error) {
			c.dlq, err = c.js.Stream(ctx, contracts.StreamDeadLetter)
			return err
		}},
		{"object store " + contracts.BucketBodies, func(ctx context.Context) (err error) {
			c.bodies, err = c.js.ObjectStore(ctx, contracts.BucketBodies)
			return err
		}},
		{"key-value " + contracts.BucketBodyRefs, func(ctx context.Context) (err error) {
			c.refs, err = c.js.KeyValue(ctx, contracts.BucketBodyRefs)
			return err
		}},
	}...)
	steps = append(steps, step{"key-value " + contracts.BucketOutcomes + " (optional)", c.bindOutcomes})
	for _, st := range steps {
		if err := retryTransient(ctx, c, st.what, st.do); err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
				return fmt.Errorf("%s does not exist: has a jetrelay stage ever run against this broker? (%w)", st.what, err)
			}
			return fmt.Errorf("%s: %w", st.what, err)
		}
	}
	c.setInlineLimit()
	return nil
}

// ensureStream creates a stream, or updates it when its configuration
// changed. Creating one that exists with the same configuration succeeds
// without touching it: the common case at every start, and the safe one
// when several processes start at once (an update rewrites the stream's
// configuration while others may be reading it).
func (c *Client) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	st, err := c.js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return c.js.UpdateStream(ctx, cfg)
	}
	return st, err
}

// ensureConsumer is ensureStream for a consumer.
func (c *Client) ensureConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	cons, err := c.js.CreateConsumer(ctx, stream, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return c.js.UpdateConsumer(ctx, stream, cfg)
	}
	return cons, err
}

// ensureKeyValue is ensureStream for a key-value bucket.
func (c *Client) ensureKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := c.js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		return c.js.UpdateKeyValue(ctx, cfg)
	}
	return kv, err
}

// ErrShardMismatch means broker.queue_shards differs from the number of
// queue streams on the broker while they still hold jobs.
var ErrShardMismatch = errors.New("broker.queue_shards does not match the queue on the broker")

// shardsOnBroker counts the queue streams on the broker (0: none yet).
func (c *Client) shardsOnBroker(ctx context.Context) (int, error) {
	n := 0
	names := c.js.StreamNames(ctx)
	for name := range names.Name() {
		k, err := strconv.Atoi(strings.TrimPrefix(name, contracts.StreamQueuePrefix))
		if strings.HasPrefix(name, contracts.StreamQueuePrefix) && err == nil && k >= n {
			n = k + 1
		}
	}
	return n, names.Err()
}

// layoutOnBroker is the number of queue shards recorded on the broker (0:
// no queue yet, or none readable right now). Every shard records the count
// it was created with, so a queue that another process is still creating
// reads right. A shard that cannot be read is skipped, never guessed at:
// a node that has just restarted may not see every stream yet.
func (c *Client) layoutOnBroker(ctx context.Context) (int, error) {
	n := 0
	err := retryTransient(ctx, c, "queue layout", func(ctx context.Context) error {
		n = 0
		count, err := c.shardsOnBroker(ctx)
		if err != nil || count == 0 {
			return err
		}
		for shard := 0; shard < count; shard++ {
			st, err := c.js.Stream(ctx, contracts.QueueStream(shard))
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if v, err := strconv.Atoi(st.CachedInfo().Config.Metadata[metaQueueShards]); err == nil && v > 0 {
				n = v
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("queue layout on the broker: %w", err)
	}
	return n, nil
}

// checkShards refuses a shard count that differs from the queue's layout
// on the broker: a process with another count would publish to streams no
// worker reads, or never read some that hold mail. Only Reshard changes
// the layout.
func (c *Client) checkShards(ctx context.Context, want int) error {
	have, err := c.layoutOnBroker(ctx)
	if err != nil {
		return err
	}
	if have == 0 || have == want {
		return nil
	}
	return fmt.Errorf("%w: it is %d, the queue on the broker has %d shards; set broker.queue_shards: %d in every process, or stop every ingress and delivery process and run `jetrelay queue reshard %d`",
		ErrShardMismatch, want, have, have, want)
}

// ErrQueueBusy means Reshard found jobs in the queue or workers attached.
var ErrQueueBusy = errors.New("the queue is in use")

// Reshard changes the number of queue shards to s.QueueShards. The queue
// must be empty and no delivery worker attached (their waiting fetches
// show on the broker); ingresses must be stopped too, which the broker
// cannot see. It deletes the surplus shards, then provisions the layout.
func (c *Client) Reshard(ctx context.Context, s Settings) error {
	s.fill()
	var count int
	err := retryTransient(ctx, c, "queue streams", func(ctx context.Context) (err error) {
		count, err = c.shardsOnBroker(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("list queue streams: %w", err)
	}
	var jobs uint64
	for shard := 0; shard < count; shard++ {
		n, waiting, err := c.shardUse(ctx, shard)
		if err != nil {
			return fmt.Errorf("queue depth of %s: %w", contracts.QueueStream(shard), err)
		}
		if waiting > 0 {
			return fmt.Errorf("%w: delivery workers are attached to %s; stop every ingress and delivery process first", ErrQueueBusy, contracts.QueueStream(shard))
		}
		jobs += n
	}
	if jobs > 0 {
		return fmt.Errorf("%w: %d jobs are queued; let them be delivered (or move them with `jetrelay queue delete`) first", ErrQueueBusy, jobs)
	}
	for shard := s.QueueShards; shard < count; shard++ {
		err := retryTransient(ctx, c, "delete "+contracts.QueueStream(shard), func(ctx context.Context) error {
			err := c.js.DeleteStream(ctx, contracts.QueueStream(shard))
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("delete surplus queue stream %s: %w", contracts.QueueStream(shard), err)
		}
	}
	if err := c.provision(ctx, s); err != nil {
		return err
	}
	c.log.Warn().Int("from", count).Int("to", s.QueueShards).Msg("changed the number of queue shards")
	return nil
}

// shardUse counts the jobs a queue stream holds (ready, in flight and
// scheduled) and the fetches waiting on its delivery consumer (attached
// workers). A stream without its consumers (provisioning cut short)
// counts every message it stores.
func (c *Client) shardUse(ctx context.Context, shard int) (jobs uint64, waiting int, err error) {
	stream := contracts.QueueStream(shard)
	err = retryTransient(ctx, c, "queue depth of "+stream, func(ctx context.Context) error {
		jobs, waiting = 0, 0
		for _, name := range []string{contracts.ConsumerDelivery, contracts.ConsumerScheduled} {
			cons, err := c.js.Consumer(ctx, stream, name)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil
			}
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				st, err := c.js.Stream(ctx, stream)
				if errors.Is(err, jetstream.ErrStreamNotFound) {
					return nil
				}
				if err != nil {
					return err
				}
				jobs = st.CachedInfo().State.Msgs
				return nil
			}
			if err != nil {
				return err
			}
			ci, err := cons.Info(ctx)
			if err != nil {
				return err
			}
			jobs += ci.NumPending + uint64(ci.NumAckPending)
			waiting += ci.NumWaiting
		}
		return nil
	})
	return jobs, waiting, err
}

func (c *Client) setInlineLimit() {
	limit := c.set.InlineMaxBytes
	if mp := c.nc.MaxPayload() - envelopeRoom; mp > 0 && int64(mp) < limit {
		limit = int64(mp)
	}
	c.maxData = int(limit)
}

// InlineLimit is the largest body that travels inside a job message.
func (c *Client) InlineLimit() int { return c.maxData }

// retryTransient runs one provisioning call with a short per-call timeout
// and retries while the error looks like a cluster that is not ready yet
// (no leader, no responders, timeouts). A request sent before the meta
// leader exists gets no reply at all, hence the per-call timeout.
func retryTransient(ctx context.Context, c *Client, what string, do func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := do(callCtx)
		cancel()
		if err == nil {
			return nil
		}
		if !transient(err) || ctx.Err() != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
			}
			return err
		}
		if attempt == 1 || attempt%10 == 0 {
			c.log.Info().Err(err).Str("what", what).Int("attempt", attempt).Msg("broker not ready yet, retrying")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

func transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount:
			return false
		}
		// 503 "JetStream system temporarily unavailable", 10008 no leader, …
		return apiErr.Code == 503 || apiErr.Code == 500 || apiErr.Code == 408
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoHeartbeat) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) ||
		isNoResponders(err) || isTimeout(err)
}
