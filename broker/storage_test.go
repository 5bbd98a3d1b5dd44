package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// Which broker answers mean "out of storage" (452 4.3.1 at the ingress),
// and which stay plain unavailability (451 4.3.0).
func TestStorageErrors(t *testing.T) {
	api := func(code jetstream.ErrorCode, desc string) error {
		return fmt.Errorf("publish: %w", &jetstream.APIError{Code: 503, ErrorCode: code, Description: desc})
	}
	cases := []struct {
		name    string
		err     error
		storage bool
	}{
		{"server store limit", api(10023, "insufficient resources"), true},
		{"account store limit", api(10047, "insufficient storage resources available"), true},
		{"disk full", api(10077, "write /data/nats/jetstream/1.blk: no space left on device"), true},
		{"stream max bytes", api(10077, "maximum bytes exceeded"), true},
		{"other store failure", api(10077, "stream sealed"), false},
		{"message too large", api(10054, "message size exceeds maximum allowed"), false},
		{"no leader", api(10008, "JetStream system temporarily unavailable"), false},
		{"timeout", context.DeadlineExceeded, false},
		{"raw ENOSPC", errors.New("write /x: no space left on device"), true},
	}
	for _, tc := range cases {
		c := &Client{}
		err := c.classifyWrite(tc.err)
		if got := errors.Is(err, ErrNoStorage); got != tc.storage {
			t.Errorf("%s: storage %v, want %v (%v)", tc.name, got, tc.storage, err)
		}
		if got := c.Storage() != nil; got != tc.storage {
			t.Errorf("%s: Storage() reports a problem: %v, want %v", tc.name, got, tc.storage)
		}
		c.storage.wroteOK()
		if err := c.Storage(); err != nil {
			t.Errorf("%s: a successful write does not clear the problem: %v", tc.name, err)
		}
	}
}

// An unanswered publish ends as a storage error when the embedded server's
// watch says a store failed to write, and stays a timeout when the watch
// only says the reserve is gone (the write may still succeed).
func TestStorageUnansweredPublish(t *testing.T) {
	for _, tc := range []struct {
		name    string
		local   error
		storage bool
	}{
		{"store write failed", fmt.Errorf("%w: %w: stream MAILQ_2 write error", ErrNoStorage, errStoreWriteFailed), true},
		{"below min_free", fmt.Errorf("%w: 1 MiB free, below broker.min_free", ErrNoStorage), false},
		{"fine", nil, false},
	} {
		c := &Client{}
		f := func() error { return tc.local }
		c.storage.local.Store(&f)
		err := c.classifyWrite(context.DeadlineExceeded)
		if got := errors.Is(err, ErrNoStorage); got != tc.storage {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
