package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

func smarthostConfig(t *testing.T, sink *testenv.Sink) *config.Config {
	cfg := testenv.TestConfig(t)
	cfg.Delivery.Smarthost = config.StringList{sink.Addr}
	cfg.Delivery.SmarthostTLS = "none"
	return cfg
}

func TestBodiesArriveByteIdentical(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	relay := testenv.StartRelay(t, smarthostConfig(t, sink), app.Options{})
	sizes := []struct {
		name string
		n    int
	}{
		{"1KiB", 1 << 10},
		{"1MiB+1", 1<<20 + 1},
		{"20MiB", 20 << 20},
	}
	for i, sz := range sizes {
		t.Run(sz.name, func(t *testing.T) {
			msg := testenv.RFC5322(fmt.Sprintf("size %s", sz.name), testenv.Body(sz.n))
			res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"ops@example.test"}, Data: msg})
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			got := sink.WaitFor(t, i+1, 60*time.Second)
			m := got[i]
			if m.QueueID() != res.QueueID {
				t.Fatalf("queue id at destination %q, client was told %q", m.QueueID(), res.QueueID)
			}
			if !bytes.Equal(m.AfterReceived(), msg) {
				t.Fatalf("body differs below the Received header: got %d bytes, sent %d", len(m.AfterReceived()), len(msg))
			}
			if m.From != "app@client.test" || len(m.Rcpts) != 1 || m.Rcpts[0] != "ops@example.test" {
				t.Fatalf("envelope: %q %q", m.From, m.Rcpts)
			}
		})
	}
}

// mxConfig routes by MX through a local DNS server; every MX host resolves
// to 127.0.0.1 and delivery.port is the sink's port.
func mxConfig(t *testing.T, dns *testenv.DNS, port int) *config.Config {
	cfg := testenv.TestConfig(t)
	cfg.Delivery.DNSServer = dns.Addr
	cfg.Delivery.Port = port
	cfg.Delivery.MXTLS = "none"
	return cfg
}

func TestTwoDomainsOneMessage(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	dns := testenv.NewDNS(t)
	dns.SetMX("a.test", testenv.MXRecord{Pref: 10, Host: "mx.a.test"})
	dns.SetMX("b.test", testenv.MXRecord{Pref: 10, Host: "mx.b.test"})
	dns.SetAddr("mx.a.test", "127.0.0.1")
	dns.SetAddr("mx.b.test", "127.0.0.1")
	relay := testenv.StartRelay(t, mxConfig(t, dns, sink.Port()), app.Options{})

	msg := testenv.RFC5322("two domains", testenv.Body(2000))
	res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"x@a.test", "y@b.test", "z@a.test"}, Data: msg})
	if err != nil {
		t.Fatal(err)
	}
	got := sink.WaitRecipients(t, 3, 30*time.Second)
	if len(got) != 2 {
		t.Fatalf("want one transaction per domain (2), got %d", len(got))
	}
	seen := map[string]int{}
	for _, m := range got {
		if m.QueueID() != res.QueueID || !bytes.Equal(m.AfterReceived(), msg) {
			t.Fatalf("wrong message at destination: id %q", m.QueueID())
		}
		for _, r := range m.Rcpts {
			seen[r]++
		}
	}
	for _, r := range []string{"x@a.test", "y@b.test", "z@a.test"} {
		if seen[r] != 1 {
			t.Errorf("%s delivered %d times", r, seen[r])
		}
	}
}

// /metrics exposes the series the dashboards and alerts need.
func TestMetricsExposed(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	cfg := smarthostConfig(t, sink)
	cfg.HTTP.Listen = "127.0.0.1:0"
	relay := testenv.StartRelay(t, cfg, app.Options{})
	if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "a@client.test", To: []string{"b@example.test"}, Data: testenv.RFC5322("m", testenv.Body(100))}); err != nil {
		t.Fatal(err)
	}
	sink.WaitFor(t, 1, 30*time.Second)
	testenv.Send(relay.Addr(), testenv.Mail{Local: "127.0.0.1", From: "a@client.test", To: []string{"bad@example.test."}, Data: []byte("x\r\n")}) //nolint:errcheck // refused on purpose
	var body string
	testenv.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + relay.App.HTTPAddr().String() + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, `jetrelay_deliveries_total{class="2xx",result="delivered"} 1`)
	}, "delivery not counted")
	for _, want := range []string{
		"jetrelay_smtp_sessions_total", "jetrelay_smtp_sessions_active", `jetrelay_smtp_rejects_total{reason="501_5.1.3"}`,
		"jetrelay_messages_accepted_total 1", "jetrelay_publish_seconds_bucket", "jetrelay_queue_ready",
		"jetrelay_queue_scheduled_retries", "jetrelay_queue_in_flight", "jetrelay_delivery_latency_seconds_bucket",
		"jetrelay_dead_letters_stored", "jetrelay_body_store_bytes", "jetrelay_broker_up 1", "process_resident_memory_bytes",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
