package broker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/bench"
	"github.com/rs/zerolog"
)

// BenchmarkBodyRoundTrip: a body put into the body bucket and read back
// whole through OpenBody (checked by size and chunk count), then deleted, on the
// embedded server with sync_interval: always. This is the broker's share
// of every message above the inline limit, without any SMTP. The client
// is connected in-process, as in `jetrelay serve`; cpu-ms/op is the CPU
// time of this process per body, client and server together.
func BenchmarkBodyRoundTrip(b *testing.B) {
	for _, size := range []int{1 << 20, 10 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			e := startTest(b, b.TempDir())
			cr := e.Credentials()
			c, err := Connect(context.Background(), ConnectOptions{Name: "bench", InProcess: e.Server(), User: cr.User, Password: cr.Password}, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(c.Close)
			ctx := context.Background()
			if err := c.Provision(ctx, Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, QueueShards: 1}); err != nil {
				b.Fatal(err)
			}
			body := bytes.Repeat([]byte("0123456789abcde\n"), size/16)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			cpu0 := bench.SelfCPU()
			i := 0
			for b.Loop() {
				i++
				name := fmt.Sprintf("bench-%d", i)
				if _, err := c.PutBody(ctx, name, bytes.NewReader(body)); err != nil {
					b.Fatal(err)
				}
				r, err := c.OpenBody(ctx, name)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, r)
				r.Close()
				if err != nil || n != int64(size) {
					b.Fatalf("read back %d of %d bytes: %v", n, size, err)
				}
				if err := c.releaseBody(ctx, name); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric((bench.SelfCPU()-cpu0)*1000/float64(b.N), "cpu-ms/op")
		})
	}
}

// BenchmarkOutcomeRecord: the outcome record of a job delivered to one
// recipient (outcomes.go), what Settle adds per job, sent in-process as
// `jetrelay serve` does, until the broker has stored every record.
// cpu-us/op is this process's CPU per record, client and server together.
func BenchmarkOutcomeRecord(b *testing.B) {
	e := startTest(b, b.TempDir())
	cr := e.Credentials()
	c, err := Connect(context.Background(), ConnectOptions{Name: "bench", InProcess: e.Server(), User: cr.User, Password: cr.Password}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	ctx := context.Background()
	if err := c.Provision(ctx, Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, QueueShards: 1}); err != nil {
		b.Fatal(err)
	}
	st, err := c.js.Stream(ctx, outcomeStream)
	if err != nil {
		b.Fatal(err)
	}
	delivered := []contracts.Recipient{{Addr: "someone@example.test", LastReply: &contracts.Reply{Code: 250, Enhanced: "2.0.0",
		Text: "Ok: queued as 4XYZ12AB", Host: "mx1.example.test"}}}
	now := time.Now()
	b.ReportAllocs()
	cpu0 := bench.SelfCPU()
	n := 0
	for b.Loop() {
		n++
		j := &contracts.Job{QueueID: contracts.NewQueueID(now), Attempt: 1}
		c.noteDelivered(j, delivered, now)
	}
	// Wait (bounded) until the broker has stored every record.
	for deadline := time.Now().Add(30 * time.Second); ; {
		info, err := st.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if info.State.Msgs >= uint64(n) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d records stored after 30 s", info.State.Msgs, n)
		}
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric((bench.SelfCPU()-cpu0)*1e6/float64(b.N), "cpu-us/op")
}
