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
