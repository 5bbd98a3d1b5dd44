package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/cli"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// A burst of 200 messages to a smart host limited to 30 messages per
// window: none refused or dead-lettered, the next hop never sees more than
// 30 in any window, and queue list says why the others wait. The window is
// 4 s instead of Exchange Online's minute, so that the test takes about
// 30 s instead of 7 minutes; the limiter works the same for any window.
func TestRateLimitSpreadsABurst(t *testing.T) {
	const n, limit, per = 200, 30, 4 * time.Second
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	cfg := smarthostConfig(t, sink)
	cfg.Delivery.SmarthostRateLimit = config.RateLimit{Messages: limit, Per: config.Duration(per), Connections: 4}
	relay := testenv.StartRelay(t, cfg, app.Options{})

	var wg sync.WaitGroup
	var refused atomic.Int32
	for c := 0; c < 10; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < n; i += 10 {
				if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "erp@client.test", To: []string{fmt.Sprintf("u%d@example.test", i)},
					Data: testenv.RFC5322("burst", testenv.Body(300))}); err != nil {
					refused.Add(1)
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if refused.Load() > 0 {
		t.Fatalf("%d messages refused", refused.Load())
	}
	// While the burst drains, the waiting jobs say why.
	testenv.Eventually(t, 30*time.Second, func() bool {
		for _, j := range jsonLines[cli.JobJSON](t, mustJR(t, relay, "queue", "list", "--json"), "job") {
			if strings.Contains(j.Waiting, "waiting for rate limit: 30 messages per 4s on smarthost") && j.Attempt == 1 {
				return true
			}
		}
		return false
	}, "queue list does not show jobs waiting for the rate limit")
	if out := mustJR(t, relay, "queue", "list"); !strings.Contains(out, "waiting for rate limit") {
		t.Fatalf("queue list table:\n%s", out)
	}
	msgs := sink.WaitFor(t, n, 2*time.Minute)
	relay.WaitQueueEmpty(30 * time.Second)
	if len(sink.Messages()) != n || len(deadLetters(t, relay)) != 0 {
		t.Fatalf("%d messages arrived, %d dead letters", len(sink.Messages()), len(deadLetters(t, relay)))
	}
	at := make([]time.Time, len(msgs))
	for i, m := range msgs {
		at[i] = m.At
	}
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	most := 0
	for i := range at {
		k := 0
		for j := i; j < len(at) && at[j].Sub(at[i]) < per; j++ {
			k++
		}
		most = max(most, k)
	}
	t.Logf("%d messages over %s; at most %d in any %s", n, at[len(at)-1].Sub(at[0]).Round(time.Millisecond), most, per)
	if most > limit {
		t.Fatalf("the next hop saw %d messages within %s (limit %d)", most, per, limit)
	}
	if peak := sink.PeakConnections(); peak > 4 {
		t.Fatalf("%d connections at once (limit 4)", peak)
	}
}

// Exchange Online's submission quota, worded as a permanent failure, is
// retried later, never bounced.
func TestSubmissionQuotaIsRetried(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	var first atomic.Bool
	first.Store(true)
	sink.OnData(func(*testenv.Message) *smtp.SMTPError {
		if first.CompareAndSwap(true, false) {
			return smtpErr(554, smtp.EnhancedCode{5, 2, 0}, "STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception")
		}
		return nil
	})
	relay := testenv.StartRelay(t, smarthostConfig(t, sink), app.Options{})
	res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "erp@client.test", To: []string{"ops@example.test"}, Data: testenv.RFC5322("quota", testenv.Body(300))})
	if err != nil {
		t.Fatal(err)
	}
	sink.WaitFor(t, 1, 30*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	if got := sink.ByQueueID()[res.QueueID]; len(got) != 1 || len(sink.Messages()) != 1 || len(deadLetters(t, relay)) != 0 {
		t.Fatalf("after the quota reply: %d deliveries, %d messages (bounces?), %d dead letters", len(got), len(sink.Messages()), len(deadLetters(t, relay)))
	}
}
