package broker

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// queueCollector reports the queue's depth from the broker at scrape
// time: jobs ready, jobs being delivered, retries scheduled, dead letters
// and the body store's size. It costs three API requests per scrape, not
// one per message.
type queueCollector struct {
	c         *Client
	ready     *prometheus.Desc
	inflight  *prometheus.Desc
	scheduled *prometheus.Desc
	dead      *prometheus.Desc
	bodies    *prometheus.Desc
	up        *prometheus.Desc
	shard     *prometheus.Desc
}

// NewQueueCollector returns a collector for the client's queue.
func NewQueueCollector(c *Client) prometheus.Collector {
	return &queueCollector{
		c:         c,
		ready:     prometheus.NewDesc("jetrelay_queue_ready", "Jobs waiting for a delivery worker.", nil, nil),
		inflight:  prometheus.NewDesc("jetrelay_queue_in_flight", "Jobs handed to a worker and not yet finished.", nil, nil),
		scheduled: prometheus.NewDesc("jetrelay_queue_scheduled_retries", "Retries waiting for their time.", nil, nil),
		dead:      prometheus.NewDesc("jetrelay_dead_letters_stored", "Dead letters in the dead-letter stream.", nil, nil),
		bodies:    prometheus.NewDesc("jetrelay_body_store_bytes", "Bytes in the body object store.", nil, nil),
		up:        prometheus.NewDesc("jetrelay_broker_up", "1 when the broker answered the last scrape.", nil, nil),
		shard: prometheus.NewDesc("jetrelay_queue_shard_jobs", "Jobs per queue shard (MAILQ_<shard>) by state: ready, in_flight, scheduled.",
			[]string{"shard", "state"}, nil),
	}
}

func (q *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{q.ready, q.inflight, q.scheduled, q.dead, q.bodies, q.up, q.shard} {
		ch <- d
	}
}

func (q *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := q.c.QueueState(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(q.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(q.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(q.ready, prometheus.GaugeValue, float64(st.Ready))
	ch <- prometheus.MustNewConstMetric(q.inflight, prometheus.GaugeValue, float64(st.InFlight))
	ch <- prometheus.MustNewConstMetric(q.scheduled, prometheus.GaugeValue, float64(st.Scheduled))
	ch <- prometheus.MustNewConstMetric(q.dead, prometheus.GaugeValue, float64(st.DeadLetters))
	ch <- prometheus.MustNewConstMetric(q.bodies, prometheus.GaugeValue, float64(st.BodyBytes))
	for i, sh := range st.Shards {
		n := strconv.Itoa(i)
		ch <- prometheus.MustNewConstMetric(q.shard, prometheus.GaugeValue, float64(sh.Ready), n, "ready")
		ch <- prometheus.MustNewConstMetric(q.shard, prometheus.GaugeValue, float64(sh.InFlight), n, "in_flight")
		ch <- prometheus.MustNewConstMetric(q.shard, prometheus.GaugeValue, float64(sh.Scheduled), n, "scheduled")
	}
}

// QueueState is the queue at a glance.
type QueueState struct {
	Ready       uint64 // jobs waiting for a worker
	InFlight    uint64 // jobs being delivered
	Scheduled   uint64 // retries waiting for their time
	DeadLetters uint64
	BodyBytes   uint64 // size of the body object store
	// Shards are the same counts per queue shard (MAILQ_<i>).
	Shards []ShardState
}

// ShardState is one queue shard's depth.
type ShardState struct{ Ready, InFlight, Scheduled uint64 }

// Empty reports whether nothing is queued, in flight or scheduled.
func (s QueueState) Empty() bool { return s.Ready+s.InFlight+s.Scheduled == 0 }

// QueueState reads the queue's depth from the broker (a few API calls per
// shard, not one per message).
func (c *Client) QueueState(ctx context.Context) (QueueState, error) {
	var st QueueState
	for shard := range c.queues {
		ci, err := c.consumerInfo(ctx, shard, contracts.ConsumerDelivery)
		if err != nil {
			return st, err
		}
		st.Ready += ci.NumPending
		st.InFlight += uint64(ci.NumAckPending)
		si, err := c.consumerInfo(ctx, shard, contracts.ConsumerScheduled)
		if err != nil {
			return st, err
		}
		st.Scheduled += si.NumPending
		st.Shards = append(st.Shards, ShardState{Ready: ci.NumPending, InFlight: uint64(ci.NumAckPending), Scheduled: si.NumPending})
	}
	ds, err := c.dlq.Info(ctx)
	if err != nil {
		return st, fmt.Errorf("%w: dead-letter info: %v", ErrUnavailable, err)
	}
	st.DeadLetters = ds.State.Msgs
	if n, err := c.bodyBucketSize(ctx); err == nil {
		st.BodyBytes = n
	}
	return st, nil
}

// consumerInfo asks for a queue consumer's state: one request, the
// consumer handle being kept from the first call.
func (c *Client) consumerInfo(ctx context.Context, shard int, name string) (*jetstream.ConsumerInfo, error) {
	stream := contracts.QueueStream(shard)
	key := stream + "/" + name
	var cons jetstream.Consumer
	if v, ok := c.consumers.Load(key); ok {
		cons = v.(jetstream.Consumer)
	} else {
		var err error
		cons, err = c.js.Consumer(ctx, stream, name)
		if err != nil {
			return nil, fmt.Errorf("%w: consumer %s of %s: %v", ErrUnavailable, name, stream, err)
		}
		c.consumers.Store(key, cons)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		c.consumers.Delete(key)
		return nil, fmt.Errorf("%w: consumer %s of %s: %v", ErrUnavailable, name, stream, err)
	}
	return ci, nil
}

// ackFloors are, per shard, the stream sequence up to which every job has
// been acknowledged.
func (c *Client) ackFloors(ctx context.Context) ([]uint64, error) {
	floors := make([]uint64, len(c.queues))
	for shard := range c.queues {
		ci, err := c.consumerInfo(ctx, shard, contracts.ConsumerDelivery)
		if err != nil {
			return nil, err
		}
		floors[shard] = ci.AckFloor.Stream
	}
	return floors, nil
}

// purgeBelowFloors removes the acknowledged jobs below each shard's ack
// floor, one operation per shard whose floor moved since last (nil on the
// first call), and returns the floors. Safe from any number of processes.
func (c *Client) purgeBelowFloors(ctx context.Context, last []uint64) ([]uint64, error) {
	floors, err := c.ackFloors(ctx)
	if err != nil {
		return last, err
	}
	for shard, floor := range floors {
		if shard < len(last) && floor <= last[shard] {
			continue
		}
		if err := c.queues[shard].Purge(ctx, jetstream.WithPurgeSubject(contracts.JobsFilter(shard)), jetstream.WithPurgeSequence(floor+1)); err != nil {
			return last, fmt.Errorf("%w: purge delivered jobs: %v", ErrUnavailable, err)
		}
	}
	return floors, nil
}
