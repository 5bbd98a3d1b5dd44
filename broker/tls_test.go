package broker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
)

// MTA-STS policies round-trip through MAILSTS; TLS report counts from
// concurrent workers add up in MAILTLSRPT, and each day's report is
// claimed once.
func TestTLSBuckets(t *testing.T) {
	c := provisioned(t)
	ctx := context.Background()
	if _, ok, err := c.LoadMTASTSPolicy(ctx, "a.test"); ok || err != nil {
		t.Fatalf("empty bucket: %v %v", ok, err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	want := contracts.MTASTSPolicy{Domain: "a.test", ID: "one", Fetched: now, Expires: now.Add(time.Hour), Text: "version: STSv1\n"}
	if err := c.SaveMTASTSPolicy(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := c.LoadMTASTSPolicy(ctx, "a.test")
	if err != nil || !ok || got.ID != "one" || !got.Expires.Equal(want.Expires) || got.Text != want.Text {
		t.Fatalf("load = %+v %v %v", got, ok, err)
	}

	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				rc := contracts.TLSReportCounts{Day: "2026-05-01", Domain: "a.test", PolicyType: "sts", Success: 1}
				if i%2 == 0 {
					rc.Failure = 1
					rc.Details = []contracts.TLSFailureDetail{{ResultType: "starttls-not-supported", MXHost: "mx.a.test", Count: 1}}
				}
				if err := c.AddTLSReport(ctx, rc); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := c.AddTLSReport(ctx, contracts.TLSReportCounts{Day: "2026-05-02", Domain: "a.test", Success: 1}); err != nil {
		t.Fatal(err)
	}
	due, err := c.TLSReportsDue(ctx, "2026-05-02")
	if err != nil || len(due) != 1 {
		t.Fatalf("due = %+v, %v", due, err)
	}
	if d := due[0]; d.Success != 40 || d.Failure != 20 || len(d.Details) != 1 || d.Details[0].Count != 20 {
		t.Fatalf("counts = %+v", d)
	}
	if ok, err := c.ClaimTLSReport(ctx, "2026-05-01", "a.test", "w1"); !ok || err != nil {
		t.Fatalf("first claim: %v %v", ok, err)
	}
	if ok, err := c.ClaimTLSReport(ctx, "2026-05-01", "a.test", "w2"); ok || err != nil {
		t.Fatalf("second claim: %v %v", ok, err)
	}
	if due, _ := c.TLSReportsDue(ctx, "2026-05-03"); len(due) != 1 || due[0].Day != "2026-05-02" {
		t.Fatalf("a claimed report is still due: %+v", due)
	}
	if err := c.ReleaseTLSReport(ctx, "2026-05-01", "a.test"); err != nil {
		t.Fatal(err)
	}
	if due, _ := c.TLSReportsDue(ctx, "2026-05-03"); len(due) != 2 {
		t.Fatalf("released report not due again: %+v", due)
	}
	if ok, err := c.ClaimTLSReport(ctx, "2026-05-01", "a.test", "w2"); !ok || err != nil {
		t.Fatalf("claim after release: %v %v", ok, err)
	}
}
