package graph

import (
	"context"
	"strings"
	"sync"
)

// mailboxes limits the concurrent requests per mailbox (Exchange Online
// allows four per application and mailbox). A mailbox's semaphore exists
// only while someone holds or waits for it, so senders that come and go
// (the envelope sender as the mailbox) leave nothing behind.
type mailboxes struct {
	limit int
	mu    sync.Mutex
	m     map[string]*mailboxSlot
}

type mailboxSlot struct {
	sem  chan struct{}
	refs int // holders and waiters
}

func newMailboxes(limit int) *mailboxes {
	return &mailboxes{limit: limit, m: map[string]*mailboxSlot{}}
}

// acquire waits for a place for mailbox (case-insensitive) or until ctx
// ends; release gives it back.
func (b *mailboxes) acquire(ctx context.Context, mailbox string) (release func(), err error) {
	key := strings.ToLower(mailbox)
	b.mu.Lock()
	s := b.m[key]
	if s == nil {
		s = &mailboxSlot{sem: make(chan struct{}, b.limit)}
		b.m[key] = s
	}
	s.refs++
	b.mu.Unlock()
	done := func() {
		b.mu.Lock()
		if s.refs--; s.refs == 0 {
			delete(b.m, key)
		}
		b.mu.Unlock()
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-s.sem
			done()
		})
	}, nil
}

// size is the number of mailboxes with holders or waiters.
func (b *mailboxes) size() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}
