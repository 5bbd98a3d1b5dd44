package e2e

import (
	"bytes"
	"fmt"
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
