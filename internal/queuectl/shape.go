package queuectl

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// AgeBuckets are the upper bounds of the age columns of a Shape, Postfix
// qshape's defaults: 5, 10, 20, … 1280 minutes, and older.
var AgeBuckets = []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute,
	80 * time.Minute, 160 * time.Minute, 320 * time.Minute, 640 * time.Minute, 1280 * time.Minute}

// Shape is the queue at one moment, like Postfix's qshape: recipients per
// destination domain and message age (since the ingress accepted it),
// the oldest message, and jobs per shard.
type Shape struct {
	At      time.Time
	Jobs    int
	Rcpts   int
	Oldest  time.Time   // zero when the queue is empty
	Total   DomainRow   // every domain together
	Domains []DomainRow // by recipients, most first
	// Complete is false when the scan stopped at its limit: the counts
	// are those of the jobs read (the oldest in each shard first).
	Complete bool
}

// DomainRow is one destination domain's recipients per age bucket:
// Counts[i] are younger than AgeBuckets[i], the last column older than
// them all.
type DomainRow struct {
	Domain string
	Total  int
	Counts []int
}

// OldestAge is the oldest queued message's age at the shape's time.
func (s *Shape) OldestAge() time.Duration {
	if s.Oldest.IsZero() {
		return 0
	}
	return s.At.Sub(s.Oldest)
}

func bucketOf(age time.Duration) int {
	for i, b := range AgeBuckets {
		if age < b {
			return i
		}
	}
	return len(AgeBuckets)
}

// Shape reads the queue (every job: ready, in flight and scheduled), at
// most maxJobs of them (0: all), and counts its recipients by domain and
// age.
func (q *Queue) Shape(ctx context.Context, maxJobs int) (*Shape, error) {
	now := q.now()
	s := &Shape{At: now, Complete: true, Total: DomainRow{Domain: "TOTAL", Counts: make([]int, len(AgeBuckets)+1)}}
	rows := map[string]*DomainRow{}
	err := q.b.ScanQueue(ctx, 0, func(e *Entry) bool {
		if maxJobs > 0 && s.Jobs >= maxJobs {
			s.Complete = false
			return false
		}
		if e.Job == nil {
			return true
		}
		s.Jobs++
		if s.Oldest.IsZero() || e.Job.ReceivedAt.Before(s.Oldest) {
			s.Oldest = e.Job.ReceivedAt
		}
		b := bucketOf(now.Sub(e.Job.ReceivedAt))
		for _, r := range e.Job.Rcpts {
			d := strings.ToLower(r.Domain())
			row, ok := rows[d]
			if !ok {
				row = &DomainRow{Domain: d, Counts: make([]int, len(AgeBuckets)+1)}
				rows[d] = row
			}
			row.Total++
			row.Counts[b]++
			s.Total.Total++
			s.Total.Counts[b]++
			s.Rcpts++
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		s.Domains = append(s.Domains, *r)
	}
	sort.Slice(s.Domains, func(i, k int) bool {
		if s.Domains[i].Total != s.Domains[k].Total {
			return s.Domains[i].Total > s.Domains[k].Total
		}
		return s.Domains[i].Domain < s.Domains[k].Domain
	})
	return s, nil
}

// ShapeCache reads the queue's shape at most once per interval for any
// number of readers (the metrics scrape, the console's overview), so that
// neither reads the whole queue more often than that.
type ShapeCache struct {
	q        *Queue
	every    time.Duration
	maxJobs  int
	mu       sync.Mutex
	last     *Shape
	lastErr  error
	lastRead time.Time
}

// Shape cache settings.
const (
	// ShapeInterval is how old a cached shape may be.
	ShapeInterval = 15 * time.Second
	// ShapeMaxJobs bounds one read of the queue: a deeper queue's shape
	// is that of its oldest jobs in each shard, marked incomplete.
	ShapeMaxJobs = 100_000
	// ShapeTopDomains is how many domains the metrics name; the rest are
	// counted together under ShapeOtherDomain, which bounds the label's
	// cardinality whatever the queue holds.
	ShapeTopDomains  = 20
	ShapeOtherDomain = "_other"
)

// NewShapeCache returns a cache of q's shape, read at most once per every
// (0: ShapeInterval), at most maxJobs jobs (0: ShapeMaxJobs).
func NewShapeCache(q *Queue, every time.Duration, maxJobs int) *ShapeCache {
	if every <= 0 {
		every = ShapeInterval
	}
	if maxJobs <= 0 {
		maxJobs = ShapeMaxJobs
	}
	return &ShapeCache{q: q, every: every, maxJobs: maxJobs}
}

// Get returns the shape, read again when the cached one is older than
// the interval (readers meanwhile wait for that one read).
func (c *ShapeCache) Get(ctx context.Context) (*Shape, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.lastRead.IsZero() && time.Since(c.lastRead) < c.every {
		return c.last, c.lastErr
	}
	s, err := c.q.Shape(ctx, c.maxJobs)
	c.lastRead = time.Now()
	if err != nil {
		// Keep the last good shape for the console; the metrics say the
		// read failed.
		c.lastErr = err
		return c.last, err
	}
	c.last, c.lastErr = s, nil
	return s, nil
}

// shapeCollector exports the shape as metrics at scrape time.
type shapeCollector struct {
	c                  *ShapeCache
	oldest, dom, compl *prometheus.Desc
}

// NewShapeCollector exports the cache's shape: the oldest queued
// message's age, queued recipients per destination domain (the
// ShapeTopDomains largest, the rest under ShapeOtherDomain), and whether
// the last read covered the whole queue.
func NewShapeCollector(c *ShapeCache) prometheus.Collector {
	return &shapeCollector{
		c:      c,
		oldest: prometheus.NewDesc("jetrelay_queue_oldest_message_age_seconds", "Age of the oldest message in the queue (since the ingress accepted it); 0 when the queue is empty.", nil, nil),
		dom: prometheus.NewDesc("jetrelay_queue_domain_recipients", "Recipients in the queue per destination domain: the "+
			"20 largest domains by name, the rest together as domain=\"_other\".", []string{"domain"}, nil),
		compl: prometheus.NewDesc("jetrelay_queue_shape_complete", "1 when the last read of the queue's shape covered every job, 0 when it stopped at its limit (100000 jobs) or failed.", nil, nil),
	}
}

func (s *shapeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.oldest
	ch <- s.dom
	ch <- s.compl
}

func (s *shapeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sh, err := s.c.Get(ctx)
	if sh == nil {
		ch <- prometheus.MustNewConstMetric(s.compl, prometheus.GaugeValue, 0)
		return
	}
	complete := 0.0
	if err == nil && sh.Complete {
		complete = 1
	}
	ch <- prometheus.MustNewConstMetric(s.compl, prometheus.GaugeValue, complete)
	ch <- prometheus.MustNewConstMetric(s.oldest, prometheus.GaugeValue, sh.OldestAge().Seconds())
	other := 0
	for i, d := range sh.Domains {
		if i >= ShapeTopDomains {
			other += d.Total
			continue
		}
		ch <- prometheus.MustNewConstMetric(s.dom, prometheus.GaugeValue, float64(d.Total), d.Domain)
	}
	if len(sh.Domains) > ShapeTopDomains {
		ch <- prometheus.MustNewConstMetric(s.dom, prometheus.GaugeValue, float64(other), ShapeOtherDomain)
	}
}
