package deadletter

import (
	"context"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
)

// Writer records dead letters. Delivery uses it; it is the one place that
// knows how a dead letter is stored.
type Writer struct {
	b *broker.Client
}

// NewWriter returns a Writer on the broker connection.
func NewWriter(b *broker.Client) *Writer { return &Writer{b: b} }

// Write stores a dead letter. inline is the body when the job carried it
// inline (nil when it is in the object store, which the caller has
// already marked as held by Holder(d.ID)). Idempotent per d.ID.
func (w *Writer) Write(ctx context.Context, d *contracts.DeadLetter, inline []byte) error {
	return w.b.PublishDeadLetter(ctx, d, inline)
}

// Holder is the name under which a dead letter holds its body object.
func Holder(id string) string { return holderPrefix + id }

const holderPrefix = "dl:"
