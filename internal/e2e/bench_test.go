package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/bench"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// Hot-path benchmarks. They report messages per second; per-message
// allocations are those of the whole process (ingress, broker, worker and
// the test's own clients and sink), so compare them between runs, not with
// a micro-benchmark. The side-by-side comparison with Postfix is
// `bench/compare.sh` (see BENCHMARKS.md).

const benchConc = 20

func sendConcurrently(b *testing.B, addr string, n int, msg []byte) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, benchConc)
	for w := 0; w < benchConc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if _, err := testenv.Send(addr, testenv.Mail{From: "bench@client.test", To: []string{"sink@example.test"}, Data: msg}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// BenchmarkIngressPublish: SMTP DATA → 250 after the broker's ack
// (sync_interval: always), 20 concurrent clients, 1 KiB messages.
func BenchmarkIngressPublish(b *testing.B) {
	cfg := testenv.TestConfig(b)
	relay := testenv.StartStages(b, cfg, app.Stages{Broker: true, Ingress: true}, app.Options{})
	msg := testenv.RFC5322("bench", testenv.Body(1024))
	b.ReportAllocs()
	b.ResetTimer()
	sendConcurrently(b, relay.Addr(), b.N, msg)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkWorkerDeliver: jobs already queued → delivered to a sink.
func BenchmarkWorkerDeliver(b *testing.B) {
	sink := testenv.NewSink(b, testenv.SinkOptions{})
	cfg := testenv.TestConfig(b)
	cfg.Delivery.Smarthost = config.StringList{sink.Addr}
	cfg.Delivery.SmarthostTLS = "none"
	pub := testenv.StartStages(b, cfg, app.Stages{Broker: true}, app.Options{})
	body := testenv.RFC5322("bench", testenv.Body(1024))
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		j := &contracts.Job{QueueID: contracts.NewQueueID(time.Now()), ReceivedAt: time.Now(), FirstSeen: time.Now(),
			From: "bench@client.test", Rcpts: []contracts.Recipient{{Addr: fmt.Sprintf("u%d@example.test", i)}}, Attempt: 1}
		if err := pub.App.Broker().Enqueue(ctx, j, body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	// The worker attaches to the same broker through data_dir.
	wcfg := *cfg
	wcfg.Broker.Listen = ""
	w := testenv.StartStages(b, &wcfg, app.Stages{Delivery: true}, app.Options{})
	sink.WaitFor(b, b.N, 5*time.Minute)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	w.Stop()
}

// BenchmarkPipeline: SMTP in → JetStream → SMTP out, end to end, as
// `jetrelay serve` runs it. cpu-ms/op is this test process's CPU (relay,
// clients and sink) per message: on a shared machine it moves less with
// the neighbours' load than msgs/s does.
func BenchmarkPipeline(b *testing.B) {
	sink := testenv.NewSink(b, testenv.SinkOptions{})
	cfg := testenv.TestConfig(b)
	cfg.Delivery.Smarthost = config.StringList{sink.Addr}
	cfg.Delivery.SmarthostTLS = "none"
	relay := testenv.StartRelay(b, cfg, app.Options{})
	msg := testenv.RFC5322("bench", testenv.Body(1024))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := bench.SelfCPU()
	sendConcurrently(b, relay.Addr(), b.N, msg)
	sink.WaitFor(b, b.N, 5*time.Minute)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric((bench.SelfCPU()-cpu0)*1000/float64(b.N), "cpu-ms/op")
}

// BenchmarkDeliverAuth: jobs already queued → a smart host that wants
// authentication, each message on a new connection (so each logs in):
// AUTH LOGIN with a password against XOAUTH2 with a cached Entra token.
// The difference is the cost of the XOAUTH2 path per login (the token
// cache lookup and the longer SASL exchange); cpu-ms/op is this test
// process's CPU (relay, sink, fake token server) per message.
func BenchmarkDeliverAuth(b *testing.B) {
	for _, mech := range []string{"login", "xoauth2"} {
		b.Run(mech, func(b *testing.B) {
			idp := testenv.NewOAuthServer(b)
			idp.AddEntraApp(testenv.EntraApp{Tenant: tenant, ClientID: appID, Secrets: []string{"bench-secret"}})
			so := testenv.SinkOptions{AllowInsecureAuth: true, Users: map[string]string{mailbox: "password"}, AuthMechs: []string{"LOGIN"}}
			if mech == "xoauth2" {
				so = testenv.SinkOptions{AllowInsecureAuth: true, Bearer: func(user, token string) bool { return user == mailbox && idp.Valid(token) }}
			}
			sink := testenv.NewSink(b, so)
			cfg := testenv.TestConfig(b)
			cfg.Delivery.Smarthost = config.StringList{sink.Addr}
			cfg.Delivery.SmarthostTLS = "none"
			cfg.Delivery.SmarthostAllowPlainAuth = true
			cfg.Delivery.SmarthostUsername = mailbox
			cfg.Delivery.MaxMessagesPerConnection = 1
			if mech == "xoauth2" {
				cfg.Delivery.SmarthostOAuth = config.OAuth{Provider: "entra", Authority: idp.URL, TenantID: tenant, ClientID: appID, ClientSecret: "bench-secret"}
			} else {
				cfg.Delivery.SmarthostPassword = "password"
			}
			pub := testenv.StartStages(b, cfg, app.Stages{Broker: true}, app.Options{})
			body := testenv.RFC5322("bench", testenv.Body(1024))
			ctx := context.Background()
			for i := 0; i < b.N; i++ {
				j := &contracts.Job{QueueID: contracts.NewQueueID(time.Now()), ReceivedAt: time.Now(), FirstSeen: time.Now(),
					From: "bench@client.test", Rcpts: []contracts.Recipient{{Addr: fmt.Sprintf("u%d@example.test", i)}}, Attempt: 1}
				if err := pub.App.Broker().Enqueue(ctx, j, body); err != nil {
					b.Fatal(err)
				}
			}
			wcfg := *cfg
			wcfg.Broker.Listen = ""
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := bench.SelfCPU()
			w := testenv.StartStages(b, &wcfg, app.Stages{Delivery: true}, app.Options{HTTPClient: idp.Client})
			sink.WaitFor(b, b.N, 5*time.Minute)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric((bench.SelfCPU()-cpu0)*1000/float64(b.N), "cpu-ms/op")
			if mech == "xoauth2" && idp.Issued() > 2 {
				b.Fatalf("%d tokens fetched for %d messages: the cache does not hold", idp.Issued(), b.N)
			}
			w.Stop()
		})
	}
}
