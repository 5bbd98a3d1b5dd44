package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/queuectl"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// metricValue parses the value of a /metrics line ("" → -1).
func metricValue(t *testing.T, line string) float64 {
	t.Helper()
	if line == "" {
		return -1
	}
	f := strings.Fields(line)
	v, err := strconv.ParseFloat(f[len(f)-1], 64)
	if err != nil {
		t.Fatalf("metric line %q: %v", line, err)
	}
	return v
}

// The queue's shape in /metrics (issue 18, C.11): the oldest queued
// message's age, jobs per queue shard, recipients per destination domain
// with the label's cardinality bounded (the largest domains by name, the
// rest as "_other"), and failed outbound logins per route.
func TestQueueShapeMetrics(t *testing.T) {
	// Every destination defers: the mail stays queued.
	dest := testenv.NewSink(t, testenv.SinkOptions{})
	dest.OnRcpt(func(string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	})
	// A partner whose smart host refuses our password.
	partner := testenv.NewSink(t, testenv.SinkOptions{Users: map[string]string{"relay": "the-right-one"}, AllowInsecureAuth: true})

	cfg := testenv.TestConfig(t)
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Broker.QueueShards = 2
	cfg.Delivery.Smarthost = config.StringList{dest.Addr}
	cfg.Delivery.SmarthostTLS = "none"
	cfg.Delivery.Routes = map[string]config.Route{"partner.test": {Host: partner.Addr, TLS: "none", Username: "relay", Password: "a-wrong-one", AllowPlainAuth: true}}
	cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Hour)}
	relay := testenv.StartRelay(t, cfg, app.Options{})

	send := func(to ...string) {
		t.Helper()
		if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@corp.test", To: to, Data: testenv.RFC5322("shape", testenv.Body(100))}); err != nil {
			t.Fatal(err)
		}
	}
	// d00.test has 3 recipients, d01 … d24 one each, partner.test one:
	// 26 domains, of which the metrics name queuectl.ShapeTopDomains.
	start := time.Now()
	send("a@d00.test", "b@d00.test", "c@d00.test")
	firstQueued := time.Now()
	jobs := 1
	for i := 1; i < 25; i++ {
		send(fmt.Sprintf("x@d%02d.test", i))
		jobs++
	}
	send("x@partner.test")
	jobs++
	// Every job deferred (or refused at the partner's login) before the
	// first scrape: the shape is read once and cached for a while.
	testenv.Eventually(t, 60*time.Second, func() bool { return relay.State().Scheduled == uint64(jobs) }, "not every job deferred")

	scrapeStart := time.Now()
	age := metricValue(t, relay.Metric("jetrelay_queue_oldest_message_age_seconds "))
	scrapeEnd := time.Now()
	if lo, hi := scrapeStart.Sub(firstQueued).Seconds()-0.1, scrapeEnd.Sub(start).Seconds()+0.1; age < lo || age > hi {
		t.Errorf("oldest message age %.3fs, want between %.3fs and %.3fs", age, lo, hi)
	}
	if v := metricValue(t, relay.Metric("jetrelay_queue_shape_complete ")); v != 1 {
		t.Errorf("jetrelay_queue_shape_complete %v, want 1", v)
	}

	// Per shard: both shards hold jobs; together, all of them.
	var total float64
	for _, shard := range []string{"0", "1"} {
		v := metricValue(t, relay.Metric(`jetrelay_queue_shard_jobs{shard="`+shard+`",state="scheduled"}`))
		if v < 0 {
			t.Fatalf("no jetrelay_queue_shard_jobs for shard %s", shard)
		}
		total += v
	}
	if total != float64(jobs) {
		t.Errorf("scheduled jobs over the shards: %v, want %d", total, jobs)
	}
	if v := metricValue(t, relay.Metric(`jetrelay_queue_shard_jobs{shard="2"`)); v != -1 {
		t.Errorf("a third shard in the metrics: %v", v)
	}

	// Per domain: the largest first, ties by name, the rest as _other.
	want := map[string]float64{"d00.test": 3, queuectl.ShapeOtherDomain: 6} // d20 … d24 and partner.test
	for i := 1; i < queuectl.ShapeTopDomains; i++ {
		want[fmt.Sprintf("d%02d.test", i)] = 1
	}
	for dom, n := range want {
		if v := metricValue(t, relay.Metric(`jetrelay_queue_domain_recipients{domain="`+dom+`"}`)); v != n {
			t.Errorf("recipients queued for %s: %v, want %v", dom, v, n)
		}
	}
	for _, dom := range []string{"d20.test", "d24.test", "partner.test"} {
		if l := relay.Metric(`jetrelay_queue_domain_recipients{domain="` + dom + `"}`); l != "" {
			t.Errorf("%s has a label of its own beyond the top %d: %s", dom, queuectl.ShapeTopDomains, l)
		}
	}

	// A read that stops at its limit says so, and counts what it read.
	sh, err := queuectl.NewShapeCache(queuectl.New(relay.App.Broker()), time.Hour, 5).Get(context.Background())
	if err != nil || sh.Complete || sh.Jobs != 5 || sh.OldestAge() <= 0 {
		t.Errorf("shape limited to 5 jobs: %+v, %v", sh, err)
	}

	// Outbound auth failures, per route.
	if v := metricValue(t, relay.Metric(`jetrelay_outbound_auth_failures_total{route="route:partner.test"}`)); v < 1 {
		t.Errorf("outbound auth failures for the partner route: %v, want at least 1", v)
	}
	if v := metricValue(t, relay.Metric(`jetrelay_outbound_auth_ok{route="route:partner.test"}`)); v != 0 {
		t.Errorf("jetrelay_outbound_auth_ok for the partner route: %v, want 0", v)
	}
	if l := relay.Metric(`jetrelay_outbound_auth_failures_total{route="smarthost"}`); l != "" {
		t.Errorf("auth failures for a route without credentials: %s", l)
	}

	// A delivery-only worker on the same broker does not export the
	// queue's shape: more workers must not mean more scans of the queue.
	wcfg := *cfg
	wcfg.Broker.Listen = ""
	w := testenv.StartStages(t, &wcfg, app.Stages{Delivery: true}, app.Options{})
	if l := w.Metric("jetrelay_queue_oldest_message_age_seconds"); l != "" {
		t.Errorf("a delivery-only worker exports the queue's shape: %s", l)
	}
	if l := w.Metric("jetrelay_queue_ready"); l == "" {
		t.Errorf("the delivery-only worker's /metrics has no jetrelay_queue_ready (is it scraped at all?)")
	}
}
