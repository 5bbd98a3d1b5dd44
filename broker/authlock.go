package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go/jetstream"
)

// AUTH lockouts that every ingress of a deployment shares: for each key
// (the ingress uses one per client address and one per user) the recent
// failed AUTH attempts and the time the key is locked out until, in the
// MAILAUTH key-value bucket, changed only with compare-and-set so that
// exactly one ingress locks a key out (and logs it). Every ingress watches
// the bucket (AuthLocks), so that a check costs no round trip; `jetrelay
// user unlock` deletes a key, which every watcher sees at once.

// AuthLockoutMaxAge is how long the bucket keeps a key after its last
// change, so the longest lockout and failure window there can be.
const AuthLockoutMaxAge = 24 * time.Hour

// authRecord is a key's state in the bucket.
type authRecord struct {
	Key   string  `json:"k"`           // the key as given (bucket keys are encoded)
	Fails []int64 `json:"f,omitempty"` // failures within the window, Unix ms
	Until int64   `json:"u,omitempty"` // locked out until, Unix ms
}

// AuthLockout is a key that is locked out.
type AuthLockout struct {
	Key   string
	Until time.Time
}

func authBucketKey(key string) string { return kvToken(key) }

func authKeyValueConfig(s Settings) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      contracts.BucketAuth,
		Description: "jetrelay: failed AUTH attempts and lockouts at the ingress, per client address and per user",
		History:     1,
		TTL:         AuthLockoutMaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
	}
}

// authKV is the bucket, found on first use by the commands that do not
// provision (Bind leaves it alone: a relay older than the bucket has none).
func (c *Client) authKV(ctx context.Context) (jetstream.KeyValue, error) {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	if c.auths != nil {
		return c.auths, nil
	}
	kv, err := c.js.KeyValue(ctx, contracts.BucketAuth)
	if err != nil {
		return nil, err
	}
	c.auths = kv
	return kv, nil
}

// AuthFail records a failed AUTH of key at now. The failure that makes
// limit within window locks key out until now+lockout; it reports that
// time and true, and only this call does (another ingress's concurrent
// failure of the same key sees it locked already, and reports false).
// A key that is locked out stays so, whatever more fails.
func (c *Client) AuthFail(ctx context.Context, key string, limit int, window, lockout time.Duration, now time.Time) (until time.Time, locked bool, err error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	kv, err := c.authKV(ctx)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("%w: auth lockouts: %v", ErrUnavailable, err)
	}
	k := authBucketKey(key)
	for try := 0; try < 50; try++ {
		rec := authRecord{Key: key}
		var rev uint64
		e, err := kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return time.Time{}, false, fmt.Errorf("%w: auth lockouts: %v", ErrUnavailable, err)
		default:
			rev = e.Revision()
			if json.Unmarshal(e.Value(), &rec) != nil {
				rec = authRecord{Key: key}
			}
		}
		if rec.Until > now.UnixMilli() {
			return time.UnixMilli(rec.Until), false, nil
		}
		rec.Until = 0
		live := rec.Fails[:0]
		for _, f := range rec.Fails {
			if now.Sub(time.UnixMilli(f)) < window {
				live = append(live, f)
			}
		}
		rec.Fails = append(live, now.UnixMilli())
		if len(rec.Fails) >= limit {
			rec.Fails = nil
			rec.Until = now.Add(lockout).UnixMilli()
		}
		val, _ := json.Marshal(rec)
		if rev == 0 {
			_, err = kv.Create(ctx, k, val)
		} else {
			_, err = kv.Update(ctx, k, val, rev)
		}
		switch {
		case err == nil:
			if rec.Until != 0 {
				return time.UnixMilli(rec.Until), true, nil
			}
			return time.Time{}, false, nil
		case errors.Is(err, jetstream.ErrKeyExists), isWrongLastSequence(err):
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(rand.Int64N(int64(time.Duration(try+1) * 2 * time.Millisecond)))):
			}
			continue
		}
		return time.Time{}, false, fmt.Errorf("%w: auth lockouts: %v", ErrUnavailable, err)
	}
	return time.Time{}, false, fmt.Errorf("%w: auth lockouts %s: too much contention", ErrUnavailable, key)
}

// AuthUnlock removes key's failures and lockout. It reports until when the
// key was locked out (zero: it was not).
func (c *Client) AuthUnlock(ctx context.Context, key string, now time.Time) (time.Time, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	kv, err := c.authKV(ctx)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return time.Time{}, nil // no ingress of this version has run: nothing is locked
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: auth lockouts: %v", ErrUnavailable, err)
	}
	k := authBucketKey(key)
	var until time.Time
	e, err := kv.Get(ctx, k)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("%w: auth lockouts: %v", ErrUnavailable, err)
	}
	var rec authRecord
	if json.Unmarshal(e.Value(), &rec) == nil && rec.Until > now.UnixMilli() {
		until = time.UnixMilli(rec.Until)
	}
	if err := kv.Purge(ctx, k); err != nil {
		return time.Time{}, fmt.Errorf("%w: auth lockouts: %v", ErrUnavailable, err)
	}
	return until, nil
}

// AuthLockouts lists the keys locked out at now, by key.
func (c *Client) AuthLockouts(ctx context.Context, now time.Time) ([]AuthLockout, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	kv, err := c.authKV(ctx)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: auth lockouts: %v", ErrUnavailable, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("%w: auth lockouts: %v", ErrUnavailable, err)
	}
	defer w.Stop()
	var out []AuthLockout
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: auth lockouts: %v", ErrUnavailable, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
				return out, nil
			}
			var rec authRecord
			if json.Unmarshal(e.Value(), &rec) == nil && rec.Until > now.UnixMilli() {
				out = append(out, AuthLockout{Key: rec.Key, Until: time.UnixMilli(rec.Until)})
			}
		}
	}
}

// AuthLocks is one process's view of the locked keys, kept up to date by
// watching the bucket: Locked answers without a round trip, AuthFail
// records through the broker.
type AuthLocks struct {
	c      *Client
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	until map[string]time.Time // by bucket key; only keys locked out
}

// WatchAuthLocks starts watching the lockouts; it stops when ctx ends or
// on Stop.
func (c *Client) WatchAuthLocks(ctx context.Context) (*AuthLocks, error) {
	kv, err := c.authKV(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: auth lockouts: %v", ErrUnavailable, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	w, err := kv.WatchAll(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: auth lockouts: %v", ErrUnavailable, err)
	}
	a := &AuthLocks{c: c, cancel: cancel, done: make(chan struct{}), until: map[string]time.Time{}}
	go a.run(ctx, w)
	return a, nil
}

func (a *AuthLocks) run(ctx context.Context, w jetstream.KeyWatcher) {
	defer close(a.done)
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				continue // the initial values are in
			}
			a.apply(e)
		}
	}
}

func (a *AuthLocks) apply(e jetstream.KeyValueEntry) {
	var rec authRecord
	locked := e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &rec) == nil && rec.Until != 0
	a.mu.Lock()
	defer a.mu.Unlock()
	if !locked {
		delete(a.until, e.Key())
		return
	}
	a.until[e.Key()] = time.UnixMilli(rec.Until)
	if len(a.until) > 10000 {
		now := time.Now()
		for k, u := range a.until {
			if !now.Before(u) {
				delete(a.until, k)
			}
		}
	}
}

// Locked reports whether key is locked out at now, and until when.
func (a *AuthLocks) Locked(key string, now time.Time) (time.Time, bool) {
	k := authBucketKey(key)
	a.mu.Lock()
	defer a.mu.Unlock()
	u, ok := a.until[k]
	if !ok {
		return time.Time{}, false
	}
	if !now.Before(u) {
		delete(a.until, k)
		return time.Time{}, false
	}
	return u, true
}

// Fail is Client.AuthFail.
func (a *AuthLocks) Fail(ctx context.Context, key string, limit int, window, lockout time.Duration, now time.Time) (time.Time, bool, error) {
	until, locked, err := a.c.AuthFail(ctx, key, limit, window, lockout, now)
	if err == nil && !until.IsZero() {
		// Known at once here, before the watch brings it.
		a.mu.Lock()
		a.until[authBucketKey(key)] = until
		a.mu.Unlock()
	}
	return until, locked, err
}

// Stop ends the watch.
func (a *AuthLocks) Stop() {
	a.cancel()
	<-a.done
}
