package broker

import (
	"context"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
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
	}
}

func (q *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{q.ready, q.inflight, q.scheduled, q.dead, q.bodies, q.up} {
		ch <- d
	}
}

func (q *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	up := 1.0
	defer func() { ch <- prometheus.MustNewConstMetric(q.up, prometheus.GaugeValue, up) }()
	qs, err := q.c.queue.Info(ctx)
	if err != nil {
		up = 0
		return
	}
	cons, err := q.c.js.Consumer(ctx, contracts.StreamQueue, contracts.ConsumerDelivery)
	if err != nil {
		up = 0
		return
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		up = 0
		return
	}
	ready, inflight := float64(ci.NumPending), float64(ci.NumAckPending)
	sched := float64(qs.State.Msgs) - ready - inflight
	if sched < 0 {
		sched = 0
	}
	ch <- prometheus.MustNewConstMetric(q.ready, prometheus.GaugeValue, ready)
	ch <- prometheus.MustNewConstMetric(q.inflight, prometheus.GaugeValue, inflight)
	ch <- prometheus.MustNewConstMetric(q.scheduled, prometheus.GaugeValue, sched)
	if ds, err := q.c.dlq.Info(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(q.dead, prometheus.GaugeValue, float64(ds.State.Msgs))
	}
	if n, err := q.c.BodyBucketSize(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(q.bodies, prometheus.GaugeValue, float64(n))
	}
}
