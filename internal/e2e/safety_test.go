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

// A client outside relay_networks is refused at RCPT and nothing of its
// transaction is published.
func TestRelayDeniedOutsideRelayNetworks(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	cfg := smarthostConfig(t, sink)
	cfg.Ingress.RelayNetworks = config.StringList{"127.0.0.1/32"}
	relay := testenv.StartRelay(t, cfg, app.Options{})

	_, err := testenv.Send(relay.Addr(), testenv.Mail{
		Local: "127.0.0.2", From: "spammer@client.test", To: []string{"victim@example.test"},
		Data: testenv.RFC5322("spam", testenv.Body(100)),
	})
	if code := testenv.SMTPCode(err); code != 554 {
		t.Fatalf("client 127.0.0.2: got %v, want 554 5.7.1", err)
	}
	if st := relay.State(); !st.Empty() || st.DeadLetters != 0 {
		t.Fatalf("something was published for a refused transaction: %+v", st)
	}
	// A sentinel from the allowed address goes through; after it, the
	// destination holds exactly that one message.
	res, err := testenv.Send(relay.Addr(), testenv.Mail{
		Local: "127.0.0.1", From: "app@client.test", To: []string{"ops@example.test"},
		Data: testenv.RFC5322("sentinel", testenv.Body(100)),
	})
	if err != nil {
		t.Fatalf("allowed client: %v", err)
	}
	got := sink.WaitFor(t, 1, 30*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	if len(sink.Messages()) != 1 || got[0].QueueID() != res.QueueID {
		t.Fatalf("destination got %d messages", len(sink.Messages()))
	}
}

// With the broker down the client gets 451, and nothing from that
// transaction is ever delivered.
func TestBrokerDownGives451(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	cfg := smarthostConfig(t, sink)
	cfg.Broker.PublishTimeout = config.Duration(2 * time.Second)
	relay := testenv.StartRelay(t, cfg, app.Options{})
	addr := relay.Addr()

	// Broker gone before the transaction: refused at MAIL.
	relay.App.Embedded().Server().Shutdown()
	testenv.Eventually(t, 10*time.Second, func() bool { return !relay.App.Broker().Connected() }, "client still connected")
	_, err := testenv.Send(addr, testenv.Mail{From: "app@client.test", To: []string{"ops@example.test"}, Data: testenv.RFC5322("lost-1", testenv.Body(100))})
	if code := testenv.SMTPCode(err); code != 451 {
		t.Fatalf("broker down at MAIL: got %v, want 451", err)
	}
	relay.Restart()

	// Broker gone between MAIL and the end of DATA: the publish fails.
	c, err := testenv.Begin(relay.Addr(), "app@client.test", []string{"ops@example.test"})
	if err != nil {
		t.Fatal(err)
	}
	relay.App.Embedded().Server().Shutdown()
	if _, err := c.Finish(testenv.RFC5322("lost-2", testenv.Body(100))); testenv.SMTPCode(err) != 451 {
		t.Fatalf("broker down during DATA: got %v, want 451", err)
	}
	relay.Restart()

	sentinel, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"ops@example.test"}, Data: testenv.RFC5322("sentinel", testenv.Body(100))})
	if err != nil {
		t.Fatal(err)
	}
	sink.WaitFor(t, 1, 30*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	for _, m := range sink.Messages() {
		if m.QueueID() != sentinel.QueueID {
			t.Fatalf("a message answered with 451 was delivered: %s", m.AfterReceived()[:80])
		}
	}
}

// Accepted messages survive a restart of serve while the destination is
// down, and each arrives exactly once when it comes back.
func TestRestartWithDestinationDown(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	sink.Close() // destination down
	relay := testenv.StartRelay(t, smarthostConfig(t, sink), app.Options{})

	const n = 20
	ids := map[string][]byte{}
	for i := 0; i < n; i++ {
		msg := testenv.RFC5322(fmt.Sprintf("restart %d", i), testenv.Body(500+i*5000))
		res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"ops@example.test"}, Data: msg})
		if err != nil {
			t.Fatal(err)
		}
		ids[res.QueueID] = msg
	}
	// Every message has been tried and is waiting for its retry.
	testenv.Eventually(t, 30*time.Second, func() bool {
		st := relay.State()
		return st.Scheduled+st.Ready+st.InFlight == n && st.Ready == 0 && st.InFlight == 0
	}, "messages not all deferred")
	relay.Restart()
	sink.Restart()
	sink.WaitFor(t, n, 60*time.Second)
	relay.WaitQueueEmpty(60 * time.Second)
	byID := sink.ByQueueID()
	if len(byID) != n {
		t.Fatalf("%d distinct messages arrived, want %d", len(byID), n)
	}
	for id, msg := range ids {
		got := byID[id]
		if len(got) != 1 {
			t.Errorf("%s arrived %d times", id, len(got))
			continue
		}
		if !bytes.Equal(got[0].AfterReceived(), msg) {
			t.Errorf("%s: body differs", id)
		}
	}
	if st := relay.State(); st.DeadLetters != 0 || st.BodyBytes > 4096 {
		t.Errorf("leftovers after delivery: %+v", st)
	}
}
