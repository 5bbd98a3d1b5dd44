package broker

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// AUTH failures lock a key out once, whichever of many ingresses records
// the failure that reaches the limit; every watcher sees the lockout, it
// ends on its own, and AuthUnlock lifts it everywhere at once.
func TestAuthLockouts(t *testing.T) {
	e := startTest(t, t.TempDir())
	c := connectTest(t, e)
	if err := c.Provision(context.Background(), Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const limit, window, lockout = 5, time.Minute, 15 * time.Minute
	// A second process: an ingress elsewhere, watching the same bucket.
	other := connectTest(t, e)
	if err := other.Provision(ctx, Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	watch, err := other.WatchAuthLocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()

	// Failures spread wider than the window never lock.
	t0 := time.Now()
	for i := 0; i < 10; i++ {
		if until, locked, err := c.AuthFail(ctx, "user:slow", limit, window, lockout, t0.Add(time.Duration(i)*window/2)); err != nil || locked || !until.IsZero() {
			t.Fatalf("failure %d half a window apart: %v %v %v", i, until, locked, err)
		}
	}

	// Concurrent failures of one key: exactly one of them locks it.
	now := time.Now()
	var lockers atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(cl *Client) {
			defer wg.Done()
			until, locked, err := cl.AuthFail(ctx, "ip:192.0.2.7", limit, window, lockout, now)
			if err != nil {
				t.Error(err)
				return
			}
			if locked {
				lockers.Add(1)
				if !until.Equal(now.Add(lockout).Truncate(time.Millisecond)) {
					t.Errorf("locked until %v, want %v", until, now.Add(lockout))
				}
			}
		}([]*Client{c, other}[i%2])
	}
	wg.Wait()
	if n := lockers.Load(); n != 1 {
		t.Fatalf("%d failures reported the lockout, want 1", n)
	}
	eventually(t, 5*time.Second, func() bool { _, ok := watch.Locked("ip:192.0.2.7", time.Now()); return ok }, "the watcher does not see the lockout")
	if _, ok := watch.Locked("ip:192.0.2.8", time.Now()); ok {
		t.Fatal("another address is locked out")
	}
	// It ends on its own.
	if _, ok := watch.Locked("ip:192.0.2.7", now.Add(lockout+time.Second)); ok {
		t.Fatal("still locked out after the lockout")
	}
	ls, err := c.AuthLockouts(ctx, time.Now())
	if err != nil || len(ls) != 1 || ls[0].Key != "ip:192.0.2.7" {
		t.Fatalf("lockouts: %+v, %v", ls, err)
	}

	// Lifted by another process (the CLI: Bind, which leaves the bucket
	// alone; it is found by name).
	cli := connectTest(t, e)
	if err := cli.Bind(ctx, Settings{}); err != nil {
		t.Fatal(err)
	}
	until, err := cli.AuthUnlock(ctx, "ip:192.0.2.7", time.Now())
	if err != nil || until.IsZero() {
		t.Fatalf("unlock: %v, %v", until, err)
	}
	eventually(t, 5*time.Second, func() bool { _, ok := watch.Locked("ip:192.0.2.7", time.Now()); return !ok }, "still locked out after unlock")
	if until, err := cli.AuthUnlock(ctx, "ip:192.0.2.7", time.Now()); err != nil || !until.IsZero() {
		t.Fatalf("second unlock: %v, %v", until, err)
	}
	// The count starts again.
	if _, locked, err := c.AuthFail(ctx, "ip:192.0.2.7", limit, window, lockout, time.Now()); err != nil || locked {
		t.Fatalf("first failure after unlock: %v %v", locked, err)
	}
	if ls, err := cli.AuthLockouts(ctx, time.Now()); err != nil || len(ls) != 0 {
		t.Fatalf("lockouts after unlock: %+v, %v", ls, err)
	}
}
