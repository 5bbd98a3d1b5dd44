package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Rate limits shared by every worker: a sliding-window count per route and
// limit, and slots per concurrent delivery, in the MAILRATE key-value
// bucket, changed only with compare-and-set so that no two workers take
// the same unit.

// quotaBuckets is how finely a window is counted: a window of a minute
// in 3 s buckets, a day in 72 min ones.
const quotaBuckets = 20

// quota is a key's recent use: units per bucket (start in Unix ms).
type quota struct {
	Buckets [][2]int64 `json:"b"`
}

// TakeQuota takes n units of key's limit: at most limit units in any
// window of length window (a sliding window, counted in buckets of a
// twentieth of it, so a unit is counted up to a bucket longer than it
// must: never more than limit in any window, sometimes a little less).
// It reports ok, or the earliest time n units could be taken. A key with
// nothing counted admits n even above limit, so that a message larger than
// the limit goes out alone instead of waiting forever.
func (c *Client) TakeQuota(ctx context.Context, key string, n, limit int64, window time.Duration, now time.Time) (ok bool, next time.Time, err error) {
	width := max(window/quotaBuckets, time.Millisecond)
	k := "q." + kvToken(key)
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	for try := 0; try < 50; try++ {
		var q quota
		var rev uint64
		e, err := c.rates.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return false, now, fmt.Errorf("%w: rate %s: %v", ErrUnavailable, key, err)
		default:
			rev = e.Revision()
			if json.Unmarshal(e.Value(), &q) != nil {
				q = quota{} // unreadable: start counting again
			}
		}
		// Keep the buckets that overlap the window ending now.
		var used int64
		live := q.Buckets[:0]
		for _, b := range q.Buckets {
			if time.UnixMilli(b[0]).Add(width).After(now.Add(-window)) {
				live = append(live, b)
				used += b[1]
			}
		}
		q.Buckets = live
		if used+n > limit && used > 0 {
			// The earliest time enough buckets have left the window.
			need := used + n - limit
			for _, b := range q.Buckets {
				need -= b[1]
				if need <= 0 {
					return false, time.UnixMilli(b[0]).Add(width).Add(window), nil
				}
			}
			return false, now.Add(window), nil
		}
		start := now.Truncate(width).UnixMilli()
		if l := len(q.Buckets); l > 0 && q.Buckets[l-1][0] == start {
			q.Buckets[l-1][1] += n
		} else {
			q.Buckets = append(q.Buckets, [2]int64{start, n})
		}
		val, _ := json.Marshal(q)
		if rev == 0 {
			_, err = c.rates.Create(ctx, k, val)
		} else {
			_, err = c.rates.Update(ctx, k, val, rev)
		}
		switch {
		case err == nil:
			return true, now, nil
		case errors.Is(err, jetstream.ErrKeyExists), isWrongLastSequence(err):
			// Another worker took some: read again, after a random pause
			// that grows, so that many workers do not collide again.
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(rand.Int64N(int64(time.Duration(try+1) * 2 * time.Millisecond)))):
			}
			continue
		}
		return false, now, fmt.Errorf("%w: rate %s: %v", ErrUnavailable, key, err)
	}
	return false, now, fmt.Errorf("%w: rate %s: too much contention", ErrUnavailable, key)
}

// Slot is a held unit of a route's concurrency limit; Release gives it
// back. A holder that dies without releasing loses it when it expires.
type Slot struct {
	c       *Client
	key     string
	rev     uint64
	stop    chan struct{}
	stopped chan struct{}
}

// AcquireSlot takes one of limit slots of key, held for ttl and renewed
// every ttl/3 until Release; it reports false when all are taken (by live
// holders).
func (c *Client) AcquireSlot(ctx context.Context, key string, limit int, ttl time.Duration) (*Slot, bool, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	for i := 0; i < limit; i++ {
		k := "s." + kvToken(key) + "." + strconv.Itoa(i)
		val := []byte(strconv.FormatInt(time.Now().Add(ttl).UnixNano(), 10))
		rev, err := c.rates.Create(ctx, k, val)
		if errors.Is(err, jetstream.ErrKeyExists) {
			e, gerr := c.rates.Get(ctx, k)
			if gerr != nil {
				if errors.Is(gerr, jetstream.ErrKeyNotFound) {
					continue
				}
				return nil, false, fmt.Errorf("%w: slot %s: %v", ErrUnavailable, key, gerr)
			}
			until, _ := strconv.ParseInt(string(e.Value()), 10, 64)
			if time.Now().UnixNano() < until {
				continue // held
			}
			// Its holder died: take it over.
			rev, err = c.rates.Update(ctx, k, val, e.Revision())
			if isWrongLastSequence(err) {
				continue
			}
		}
		if err != nil {
			return nil, false, fmt.Errorf("%w: slot %s: %v", ErrUnavailable, key, err)
		}
		s := &Slot{c: c, key: k, rev: rev, stop: make(chan struct{}), stopped: make(chan struct{})}
		go s.renew(ttl)
		return s, true, nil
	}
	return nil, false, nil
}

func (s *Slot) renew(ttl time.Duration) {
	defer close(s.stopped)
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := s.c.withTimeout(context.Background())
			rev, err := s.c.rates.Update(ctx, s.key, []byte(strconv.FormatInt(time.Now().Add(ttl).UnixNano(), 10)), s.rev)
			cancel()
			if err == nil {
				s.rev = rev
			}
		}
	}
}

// Release gives the slot back.
func (s *Slot) Release() {
	close(s.stop)
	<-s.stopped
	ctx, cancel := s.c.withTimeout(context.Background())
	defer cancel()
	_ = s.c.rates.Delete(ctx, s.key, jetstream.LastRevision(s.rev))
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		err != nil && strings.Contains(err.Error(), "wrong last sequence")
}

// kvToken makes s one key token: letters, digits, '-' and '_' stay, any
// other byte becomes '=' and two hex digits.
func kvToken(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "=%02x", c)
		}
	}
	return b.String()
}
