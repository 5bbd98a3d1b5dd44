package mtasts

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
)

// Store keeps policies where every worker finds them and a restart does
// not lose them (*broker.Client: the MAILSTS bucket).
type Store interface {
	// LoadMTASTSPolicy reports the cached policy of domain (false: none).
	LoadMTASTSPolicy(ctx context.Context, domain string) (contracts.MTASTSPolicy, bool, error)
	// SaveMTASTSPolicy stores a policy, replacing the domain's.
	SaveMTASTSPolicy(ctx context.Context, p contracts.MTASTSPolicy) error
}

// CacheOptions configure a Cache.
type CacheOptions struct {
	// Store is shared by the workers (nil: this process's memory only).
	Store Store
	// Fetcher fetches policies.
	Fetcher *Fetcher
	// Resolver looks up the TXT records (nil: the system's).
	Resolver *net.Resolver
	// RetryFetch: after a failed fetch, the same domain and TXT id are
	// not fetched again for this long (0: DefaultRetryFetch), so a domain
	// whose policy host is down does not cost every message a timeout.
	RetryFetch time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// DefaultRetryFetch is how long a failed fetch is remembered.
const DefaultRetryFetch = 5 * time.Minute

// storeRecheck: how long this process trusts that the store has no policy
// for a domain without a TXT record.
const storeRecheck = 10 * time.Minute

// Cache finds the policy that applies to a recipient domain: the TXT
// record first (every time: its id says whether the cached policy is
// current), then this process's memory, then the Store, and only then
// the policy host. Concurrent lookups of one domain fetch once.
type Cache struct {
	o        CacheOptions
	resolver *net.Resolver

	mu       sync.Mutex
	entries  map[string]*entry
	inflight map[string]chan struct{}
}

// entry is what this process knows of a domain.
type entry struct {
	rec     contracts.MTASTSPolicy
	policy  *Policy   // nil: no policy known
	checked time.Time // when the store was last read for this domain
	// the last failed fetch
	failID  string
	failAt  time.Time
	failure Failure
	failErr error
}

// NewCache builds a Cache.
func NewCache(o CacheOptions) *Cache {
	if o.RetryFetch <= 0 {
		o.RetryFetch = DefaultRetryFetch
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := o.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	return &Cache{o: o, resolver: r, entries: map[string]*entry{}, inflight: map[string]chan struct{}{}}
}

// Lookup is the policy that applies to a domain, and what went wrong
// finding it.
type Lookup struct {
	// Policy applies (nil: none; the destination is treated as having
	// no MTA-STS policy). A ModeNone policy applies nothing either.
	Policy *Policy
	// ID is the TXT id the policy was fetched for.
	ID string
	// Source: "memory", "store" or "fetched".
	Source string
	// Failure and Err: the domain publishes a policy (a TXT record) that
	// could not be had; Policy may still be an older cached one.
	Failure Failure
	Err     error
	// StoreErr: the shared store could not be read or written (the
	// policy was used from or kept in memory).
	StoreErr error
}

// Enforced reports whether the lookup found an enforce policy.
func (l Lookup) Enforced() bool { return l.Policy != nil && l.Policy.Mode == ModeEnforce }

// Get finds domain's policy.
func (c *Cache) Get(ctx context.Context, domain string) Lookup {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	id, terr := c.txt(ctx, domain)
	now := c.o.Now()
	e := c.snapshot(domain)
	var out Lookup
	if terr != nil {
		// No usable TXT record: a cached policy stays in force until it
		// expires (RFC 8461 §5.1); an invalid record is reported.
		if !e.valid(now) && now.Sub(e.checked) >= storeRecheck {
			e, out.StoreErr = c.load(ctx, domain, now)
		}
		if e.valid(now) {
			out.Policy, out.ID, out.Source = e.policy, e.rec.ID, "memory"
		}
		if errors.Is(terr, ErrInvalid) {
			out.Failure, out.Err = FailInvalid, &Error{Domain: domain, Failure: FailInvalid, Err: terr}
		}
		return out
	}
	if e.valid(now) && e.rec.ID == id {
		return Lookup{Policy: e.policy, ID: id, Source: "memory"}
	}
	e, out.StoreErr = c.load(ctx, domain, now)
	if e.valid(now) && e.rec.ID == id {
		out.Policy, out.ID, out.Source = e.policy, id, "store"
		return out
	}
	if e.failID == id && now.Sub(e.failAt) < c.o.RetryFetch {
		return c.failed(e, now, out)
	}
	// Fetch, once for all concurrent lookups of the domain.
	c.mu.Lock()
	wait, busy := c.inflight[domain]
	if !busy {
		c.inflight[domain] = make(chan struct{})
	}
	c.mu.Unlock()
	if busy {
		select {
		case <-wait:
		case <-ctx.Done():
			out.Failure, out.Err = FailFetch, &Error{Domain: domain, Failure: FailFetch, Err: ctx.Err()}
			return out
		}
		e = c.snapshot(domain)
		if e.valid(now) && e.rec.ID == id {
			out.Policy, out.ID, out.Source = e.policy, id, "fetched"
			return out
		}
		return c.failed(e, now, out)
	}
	defer func() {
		c.mu.Lock()
		close(c.inflight[domain])
		delete(c.inflight, domain)
		c.mu.Unlock()
	}()
	p, err := c.o.Fetcher.Fetch(ctx, domain)
	now = c.o.Now()
	if err != nil {
		var fe *Error
		if !errors.As(err, &fe) {
			fe = &Error{Domain: domain, Failure: FailFetch, Err: err}
		}
		c.update(domain, func(x *entry) { x.failID, x.failAt, x.failure, x.failErr = id, now, fe.Failure, fe })
		return c.failed(c.snapshot(domain), now, out)
	}
	rec := contracts.MTASTSPolicy{Domain: domain, ID: id, Fetched: now, Expires: now.Add(p.MaxAge), Text: p.Text}
	if c.o.Store != nil {
		if err := c.o.Store.SaveMTASTSPolicy(ctx, rec); err != nil {
			out.StoreErr = fmt.Errorf("saving the MTA-STS policy of %s: %w", domain, err)
		}
	}
	c.update(domain, func(x *entry) { x.rec, x.policy, x.checked, x.failID = rec, p, now, "" })
	out.Policy, out.ID, out.Source = p, id, "fetched"
	return out
}

// failed is the lookup after a failed fetch: the older cached policy if
// it is still valid, and the failure.
func (c *Cache) failed(e entry, now time.Time, out Lookup) Lookup {
	if e.valid(now) {
		out.Policy, out.ID, out.Source = e.policy, e.rec.ID, "memory"
	}
	out.Failure, out.Err = e.failure, e.failErr
	if out.Failure == "" {
		out.Failure, out.Err = FailFetch, errors.New("fetch failed")
	}
	return out
}

// txt looks up and parses _mta-sts.<domain>.
func (c *Cache) txt(ctx context.Context, domain string) (string, error) {
	recs, err := c.resolver.LookupTXT(ctx, "_mta-sts."+domain+".")
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return "", ErrNoRecord
		}
		return "", fmt.Errorf("TXT lookup of _mta-sts.%s: %w", domain, err)
	}
	return ParseTXT(recs)
}

// load reads the store into memory.
func (c *Cache) load(ctx context.Context, domain string, now time.Time) (entry, error) {
	if c.o.Store == nil {
		c.update(domain, func(x *entry) { x.checked = now })
		return c.snapshot(domain), nil
	}
	rec, ok, err := c.o.Store.LoadMTASTSPolicy(ctx, domain)
	if err != nil {
		return c.snapshot(domain), fmt.Errorf("reading the MTA-STS policy of %s: %w", domain, err)
	}
	var p *Policy
	if ok {
		if p, err = Parse(rec.Text); err != nil {
			ok = false // a stored policy that no longer parses is fetched again
		}
	}
	c.update(domain, func(x *entry) {
		x.checked = now
		if ok && (x.policy == nil || !rec.Fetched.Before(x.rec.Fetched)) {
			x.rec, x.policy = rec, p
		}
	})
	return c.snapshot(domain), nil
}

func (c *Cache) snapshot(domain string) entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[domain]; e != nil {
		return *e
	}
	return entry{}
}

// maxEntries bounds the domains this process remembers; past it, the
// domains without a valid policy are forgotten first (they cost only a
// store read to learn again).
const maxEntries = 10000

func (c *Cache) update(domain string, f func(*entry)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[domain]
	if e == nil {
		if len(c.entries) >= maxEntries {
			now := c.o.Now()
			for d, x := range c.entries {
				if !x.valid(now) {
					delete(c.entries, d)
				}
			}
			if len(c.entries) >= maxEntries {
				clear(c.entries)
			}
		}
		e = &entry{}
		c.entries[domain] = e
	}
	f(e)
}

func (e entry) valid(now time.Time) bool { return e.policy != nil && now.Before(e.rec.Expires) }
