package console

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
)

// The overview's chart: recipients delivered and dead-lettered per minute
// over the last hour, from the broker's records — the outcome records
// (MAILDONE, kept an hour) for delivered, the dead letters of the last
// hour for failed — so that it shows the whole relay, whichever process
// delivered, and survives a restart of the console's process. Operator
// deletes (reason "deleted") are not failures and are not counted.

const (
	chartMinutes = 60
	// statsEvery is how often the chart is read again at most.
	statsEvery = 30 * time.Second
	chartW     = 600
	chartH     = 120
)

type chart struct {
	From, To          time.Time
	Delivered, Failed []int
	TotalDelivered    int
	TotalFailed       int
	Max               int
	Bars              []bar
	Kept              bool // the broker keeps outcome records
	W, H              int
}

// bar is one minute's two bars, in SVG coordinates.
type bar struct {
	X, W              int
	DY, DH, FY, FH    int
	Minute            string
	Delivered, Failed int
}

type statsCache struct {
	mu   sync.Mutex
	last *chart
	at   time.Time
}

func (c *statsCache) get(ctx context.Context, b *broker.Client, now time.Time) (*chart, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last != nil && now.Sub(c.at) < statsEvery && now.After(c.at) {
		return c.last, nil
	}
	ch, err := readChart(ctx, b, now)
	if err != nil {
		return c.last, err
	}
	c.last, c.at = ch, now
	return ch, nil
}

func readChart(ctx context.Context, b *broker.Client, now time.Time) (*chart, error) {
	end := now.Truncate(time.Minute).Add(time.Minute)
	from := end.Add(-chartMinutes * time.Minute)
	ch := &chart{From: from, To: end, Delivered: make([]int, chartMinutes), Failed: make([]int, chartMinutes), W: chartW, H: chartH}
	slot := func(t time.Time) int {
		i := int(t.Sub(from) / time.Minute)
		if i < 0 || i >= chartMinutes {
			return -1
		}
		return i
	}
	err := b.DeliveredSince(ctx, from, func(d *broker.Delivered) bool {
		ch.Kept = true
		if i := slot(d.At); i >= 0 {
			n := len(d.Rcpts) + d.More
			ch.Delivered[i] += n
			ch.TotalDelivered += n
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("delivered in the last hour: %w", err)
	}
	err = b.DeadLettersSince(ctx, from, func(e *broker.StoredDeadLetter) bool {
		if e.DL == nil || e.DL.Reason == contracts.ReasonDeleted {
			return true
		}
		if i := slot(e.DL.DeadAt); i >= 0 {
			ch.Failed[i] += len(e.DL.Job.Rcpts)
			ch.TotalFailed += len(e.DL.Job.Rcpts)
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("dead-lettered in the last hour: %w", err)
	}
	ch.Max = 1
	for i := range chartMinutes {
		ch.Max = max(ch.Max, ch.Delivered[i], ch.Failed[i])
	}
	bw := chartW / chartMinutes
	half := chartH / 2
	for i := range chartMinutes {
		dh := ch.Delivered[i] * (half - 2) / ch.Max
		fh := ch.Failed[i] * (half - 2) / ch.Max
		ch.Bars = append(ch.Bars, bar{
			X: i * bw, W: bw - 1,
			DY: half - dh, DH: dh, FY: half, FH: fh,
			Minute:    from.Add(time.Duration(i) * time.Minute).Local().Format("15:04"),
			Delivered: ch.Delivered[i], Failed: ch.Failed[i],
		})
	}
	return ch, nil
}
