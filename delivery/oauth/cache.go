package oauth

import (
	"context"
	"fmt"
	"sync"
	"time"
)

const (
	// refreshBefore is how long before its expiry a token is replaced;
	// short-lived tokens are replaced after 4/5 of their lifetime.
	refreshBefore = 5 * time.Minute
	// defaultLifetime applies when the endpoint gives no expires_in.
	defaultLifetime = time.Hour
	// failureHold is how long a failed fetch answers later callers
	// before the next fetch; an endpoint's Retry-After extends it up to
	// maxFailureHold.
	failureHold    = time.Second
	maxFailureHold = time.Minute
	// defaultTimeout bounds one fetch.
	defaultTimeout = 30 * time.Second
)

// fetchFunc gets a new token. It returns an *Error on failure, and a
// Token whose Expiry is set.
type fetchFunc func(ctx context.Context) (Token, error)

// cache is the Source of every provider: the cached token, the single
// fetch in flight, and the last failure.
type cache struct {
	provider string
	name     string
	timeout  time.Duration
	fetch    fetchFunc

	mu        sync.Mutex
	tok       Token
	fetched   time.Time // when tok was asked for
	call      *call     // the fetch in flight, if any
	failErr   error
	failUntil time.Time
}

// call is one fetch, shared by every caller that waits for it.
type call struct {
	done    chan struct{}
	cancel  context.CancelFunc
	waiters int
	tok     Token // result, set before done is closed
	err     error
}

func newCache(provider, name string, timeout time.Duration, fetch fetchFunc) *cache {
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	return &cache{provider: provider, name: name, timeout: timeout, fetch: fetch}
}

func (c *cache) Name() string { return c.name }

// Token implements Source.
func (c *cache) Token(ctx context.Context) (Token, error) {
	now := time.Now()
	c.mu.Lock()
	if c.fresh(now) {
		t := c.tok
		c.mu.Unlock()
		return t, nil
	}
	if now.Before(c.failUntil) {
		t, err := c.tok, c.failErr
		usable := c.usable(now)
		c.mu.Unlock()
		if usable {
			return t, nil
		}
		return Token{}, err
	}
	if err := ctx.Err(); err != nil {
		c.mu.Unlock()
		return Token{}, c.waitError(err)
	}
	cl := c.call
	if cl == nil {
		cl = c.start(ctx)
	}
	cl.waiters++
	c.mu.Unlock()

	select {
	case <-cl.done:
		return cl.tok, cl.err
	case <-ctx.Done():
	}
	select {
	case <-cl.done: // finished meanwhile: take the answer
		return cl.tok, cl.err
	default:
	}
	c.mu.Lock()
	cl.waiters--
	if cl.waiters == 0 && c.call == cl {
		// Nobody waits any more: stop the fetch; the next caller starts
		// a new one rather than joining a cancelled one.
		c.call = nil
		cl.cancel()
	}
	c.mu.Unlock()
	return Token{}, c.waitError(ctx.Err())
}

// Invalidate implements Source.
func (c *cache) Invalidate(value string) {
	if value == "" {
		return
	}
	c.mu.Lock()
	if c.tok.Value == value {
		c.tok = Token{}
	}
	c.mu.Unlock()
}

// start begins a fetch; c.mu is held. The fetch keeps the caller's
// context values but not its cancellation: it is shared.
func (c *cache) start(ctx context.Context) *call {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	cl := &call{done: make(chan struct{}), cancel: cancel}
	c.call = cl
	asked := time.Now()
	go func() {
		tok, err := c.fetch(fctx)
		cancel()
		c.finish(cl, asked, tok, err)
	}()
	return cl
}

func (c *cache) finish(cl *call, asked time.Time, tok Token, err error) {
	now := time.Now()
	c.mu.Lock()
	if err == nil {
		c.tok, c.fetched = tok, asked
		c.failErr, c.failUntil = nil, time.Time{}
	}
	if c.call == cl {
		c.call = nil
		if err != nil {
			c.failErr, c.failUntil = err, now.Add(holdFor(err))
			if c.usable(now) {
				// The early refresh failed but the token still works.
				tok, err = c.tok, nil
			}
		}
	}
	cl.tok, cl.err = tok, err
	c.mu.Unlock()
	close(cl.done)
}

// fresh: the cached token is not within its refresh margin. c.mu is held.
func (c *cache) fresh(now time.Time) bool {
	return c.tok.Value != "" && now.Before(c.tok.Expiry.Add(-c.margin()))
}

// usable: the cached token is still valid, with a little room for the
// time it takes to use it. c.mu is held.
func (c *cache) usable(now time.Time) bool {
	return c.tok.Value != "" && now.Before(c.tok.Expiry.Add(-c.margin()/4))
}

// margin is how long before its expiry the cached token is replaced.
func (c *cache) margin() time.Duration {
	return min(refreshBefore, c.tok.Expiry.Sub(c.fetched)/5)
}

// waitError is the answer to a caller whose context ended first.
func (c *cache) waitError(err error) *Error {
	return &Error{Provider: c.provider, Source: c.name, Temporary: true,
		Err: fmt.Errorf("gave up waiting for the token endpoint: %w", err)}
}

func holdFor(err error) time.Duration {
	if e, ok := err.(*Error); ok && e.RetryAfter > failureHold {
		return min(e.RetryAfter, maxFailureHold)
	}
	return failureHold
}
