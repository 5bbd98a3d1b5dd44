package delivery

import (
	"context"
	"sync"
	"time"
)

// pool caches idle SMTP connections per destination and caps concurrent
// connections per destination (delivery.max_per_destination, Postfix's
// default_destination_concurrency_limit). It also remembers destinations
// that just failed at the connection level (refused, timed out, 421) so
// that the jobs behind them are deferred at once instead of hammering a
// host that is down.
//
// A connection leaves the pool's count only when it is closed: one that
// is being retired (QUIT sent, 221 awaited) still counts, and a new
// connection to the same destination waits for it (waitClosed), so that
// a next hop limited to N connections never sees N+1 for the moment
// between an old connection's QUIT and a new one's greeting.
type pool struct {
	maxPerDest  int
	maxMsgs     int
	idleTimeout time.Duration
	backoff     time.Duration
	now         func() time.Time

	mu    sync.Mutex
	idle  map[string][]*smtpConn
	slots map[string]chan struct{}
	dead  map[string]deadInfo
	// closing counts the connections per destination being retired;
	// closed is closed and replaced whenever a retirement ends.
	closing map[string]int
	closed  chan struct{}
}

type deadInfo struct {
	until time.Time
	why   string
}

func newPool(maxPerDest, maxMsgs int, idleTimeout, backoff time.Duration) *pool {
	return &pool{
		maxPerDest: maxPerDest, maxMsgs: maxMsgs, idleTimeout: idleTimeout, backoff: backoff,
		now:   time.Now,
		idle:  map[string][]*smtpConn{},
		slots: map[string]chan struct{}{},
		dead:  map[string]deadInfo{},

		closing: map[string]int{},
		closed:  make(chan struct{}),
	}
}

// acquire waits for a connection slot for dest and returns the function
// that gives it back.
func (p *pool) acquire(ctx context.Context, dest string) (func(), error) {
	p.mu.Lock()
	ch, ok := p.slots[dest]
	if !ok {
		ch = make(chan struct{}, p.maxPerDest)
		p.slots[dest] = ch
	}
	p.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// get returns a cached connection to dest, or nil.
func (p *pool) get(dest string) *smtpConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[dest]
	for len(list) > 0 {
		c := list[len(list)-1]
		list = list[:len(list)-1]
		if p.now().Sub(c.lastUse) < p.idleTimeout && !c.broken {
			p.idle[dest] = list
			return c
		}
		p.retireLocked(dest, c)
	}
	delete(p.idle, dest)
	return nil
}

// put caches a connection for reuse, or closes it when it is broken or
// has carried its share of messages.
func (p *pool) put(dest string, c *smtpConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.broken || c.sent >= p.maxMsgs || p.maxMsgs <= 1 {
		p.retireLocked(dest, c)
		return
	}
	c.lastUse = p.now()
	p.idle[dest] = append(p.idle[dest], c)
}

// retireLocked says goodbye to c in the background; until it is closed
// it counts in closing[dest]. p.mu is held.
func (p *pool) retireLocked(dest string, c *smtpConn) {
	p.closing[dest]++
	go func() {
		c.quit()
		p.mu.Lock()
		if p.closing[dest]--; p.closing[dest] <= 0 {
			delete(p.closing, dest)
		}
		close(p.closed)
		p.closed = make(chan struct{})
		p.mu.Unlock()
	}()
}

// closeAll says goodbye to every idle connection and returns when every
// connection being retired is closed: the worker's last step, so that no
// goroutine of the pool outlives it.
func (p *pool) closeAll() {
	p.sweep(true)
	for {
		p.mu.Lock()
		n, ch := len(p.closing), p.closed
		p.mu.Unlock()
		if n == 0 {
			return
		}
		<-ch
	}
}

// waitClosed returns once no connection to dest is being retired (QUIT
// waits at most a few seconds for its reply), or when ctx ends.
func (p *pool) waitClosed(ctx context.Context, dest string) error {
	for {
		p.mu.Lock()
		n, ch := p.closing[dest], p.closed
		p.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// markDead records that dest failed at the connection level.
func (p *pool) markDead(dest, why string) {
	if p.backoff <= 0 {
		return
	}
	p.mu.Lock()
	p.dead[dest] = deadInfo{until: p.now().Add(p.backoff), why: why}
	p.mu.Unlock()
}

// markAlive forgets a failure once dest answered properly.
func (p *pool) markAlive(dest string) {
	p.mu.Lock()
	delete(p.dead, dest)
	p.mu.Unlock()
}

// isDead reports whether dest is backed off, and why.
func (p *pool) isDead(dest string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.dead[dest]
	if !ok {
		return "", false
	}
	if p.now().After(d.until) {
		delete(p.dead, dest)
		return "", false
	}
	return d.why, true
}

// sweep closes connections idle for too long. The worker calls it
// periodically and at shutdown with all=true.
func (p *pool) sweep(all bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for dest, list := range p.idle {
		keep := list[:0]
		for _, c := range list {
			if all || p.now().Sub(c.lastUse) >= p.idleTimeout {
				p.retireLocked(dest, c)
			} else {
				keep = append(keep, c)
			}
		}
		if len(keep) == 0 {
			delete(p.idle, dest)
		} else {
			p.idle[dest] = keep
		}
	}
	for dest, ch := range p.slots {
		if len(ch) == 0 && len(p.idle[dest]) == 0 {
			delete(p.slots, dest)
		}
	}
}
