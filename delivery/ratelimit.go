package delivery

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// RateLimit spreads a route's mail out instead of hitting its provider's
// limits (Exchange Online: 30 messages a minute and 10,000 recipients a
// day per mailbox; Graph: 4 requests at once). The broker counts, so the
// limits hold across every worker. A group over a limit is not attempted:
// it waits in the queue for its window (Outcome.Postponed), with the
// reason visible in `queue list`.
type RateLimit struct {
	Messages         int           // in any window of Per
	Per              time.Duration // default 1m
	RecipientsPerDay int           // in any 24 hours
	Connections      int           // deliveries at once
}

func (l RateLimit) active() bool {
	return l.Messages > 0 || l.RecipientsPerDay > 0 || l.Connections > 0
}

// slotWait is how long a group waits for a free connection slot before it
// is postponed; slotTTL how long a slot outlives a holder that died.
const (
	slotWait = 10 * time.Second
	slotTTL  = 30 * time.Second
)

// admit asks the broker whether g may go now under its route's limits. It
// returns what releases a connection slot taken, or the time g may try
// again and why.
func (w *Worker) admit(ctx context.Context, g *group) (release func(), wait time.Time, reason string) {
	lim, key := g.dest.Limit, g.dest.Key
	release = func() {}
	unavailable := func(err error) (func(), time.Time, string) {
		release()
		return func() {}, time.Now().Add(jitter(30 * time.Second)), "the rate limiter is unavailable: " + err.Error()
	}
	if lim.Connections > 0 {
		deadline := time.Now().Add(slotWait)
		for {
			slot, ok, err := w.b.AcquireSlot(ctx, key, lim.Connections, slotTTL)
			if err != nil {
				return unavailable(err)
			}
			if ok {
				release = slot.Release
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return func() {}, time.Now().Add(jitter(20 * time.Second)),
					fmt.Sprintf("waiting for a connection slot (%d at once on %s)", lim.Connections, key)
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	now := time.Now()
	if lim.Messages > 0 {
		per := lim.Per
		if per <= 0 {
			per = time.Minute
		}
		ok, next, err := w.b.TakeQuota(ctx, key+".messages", 1, int64(lim.Messages), per, now)
		if err != nil {
			return unavailable(err)
		}
		if !ok {
			release()
			// Spread the waiting messages over a window from the first
			// free moment, so that they do not all come back at once.
			return func() {}, next.Add(time.Duration(rand.Int64N(int64(per)))),
				fmt.Sprintf("waiting for rate limit: %d messages per %s on %s", lim.Messages, per, key)
		}
	}
	if lim.RecipientsPerDay > 0 {
		ok, next, err := w.b.TakeQuota(ctx, key+".recipients", int64(len(g.rcpts)), int64(lim.RecipientsPerDay), 24*time.Hour, now)
		if err != nil {
			return unavailable(err)
		}
		if !ok {
			release()
			return func() {}, next.Add(time.Duration(rand.Int64N(int64(time.Hour)))),
				fmt.Sprintf("waiting for rate limit: %d recipients per day on %s", lim.RecipientsPerDay, key)
		}
	}
	return release, time.Time{}, ""
}

// jitter spreads d by up to a fifth either way.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}
