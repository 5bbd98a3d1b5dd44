package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// graphRelay sends everything through a fake Microsoft Graph with tokens
// from a fake Entra ID.
func graphRelay(t *testing.T, configure func(*config.Config)) (*testenv.Relay, *testenv.GraphServer) {
	t.Helper()
	idp := testenv.NewOAuthServer(t)
	idp.AddEntraApp(testenv.EntraApp{Tenant: tenant, ClientID: appID, Secrets: []string{"graph-secret"}})
	gs := testenv.NewGraphServer(t, testenv.GraphOptions{PKI: idp.PKI, Tokens: idp.Valid})
	cfg := testenv.TestConfig(t)
	cfg.Delivery.SmarthostTransport = "graph"
	cfg.Delivery.SmarthostUsername = mailbox
	cfg.Delivery.SmarthostOAuth = config.OAuth{Provider: "entra", Authority: idp.URL, TenantID: tenant, ClientID: appID, ClientSecret: "graph-secret"}
	cfg.Delivery.SmarthostGraph = config.Graph{BaseURL: gs.BaseURL}
	if configure != nil {
		configure(cfg)
	}
	// The token endpoint and Graph share a test CA, so one client trusts both.
	return testenv.StartRelay(t, cfg, app.Options{HTTPClient: idp.Client}), gs
}

// A message goes out through Graph's sendMail as the configured mailbox;
// an envelope recipient the headers do not name (Bcc) receives it too.
func TestGraphDelivers(t *testing.T) {
	relay, gs := graphRelay(t, nil)
	res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "dbmail@corp.example", To: []string{"oncall@example.test", "hidden@example.test"},
		Data: []byte("From: dbmail@corp.example\r\nTo: oncall@example.test\r\nSubject: BAM alert\r\n\r\nqueue depth\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	m := gs.WaitFor(t, 1, 30*time.Second)[0]
	relay.WaitQueueEmpty(30 * time.Second)
	if m.Mailbox != mailbox || !slices.Equal(m.To, []string{"oncall@example.test"}) || !slices.Contains(m.Bcc, "hidden@example.test") {
		t.Fatalf("sent as %q to %v cc %v bcc %v", m.Mailbox, m.To, m.Cc, m.Bcc)
	}
	if !strings.Contains(string(m.MIME), "id "+res.QueueID) || !strings.Contains(string(m.MIME), "\r\n\r\nqueue depth\r\n") {
		t.Fatalf("the message Graph got:\n%s", m.MIME)
	}
}

// Graph's 429 with Retry-After: retried at that time (here long before
// the retry schedule's hour); 400 ErrorInvalidRecipients: dead-lettered
// with Graph's code and message; a message too large for a MIME send: a
// clear permanent error, never truncated.
func TestGraphAnswers(t *testing.T) {
	relay, gs := graphRelay(t, func(cfg *config.Config) {
		cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Hour)}
	})
	gs.Script(testenv.GraphReply{Status: 429, Code: "ApplicationThrottled", Message: "Application is over its MailboxConcurrency limit.", RetryAfter: "2"})
	start := time.Now()
	throttled, err := testenv.Send(relay.Addr(), testenv.Mail{From: "dbmail@corp.example", To: []string{"ops@example.test"}, Data: testenv.RFC5322("throttled", testenv.Body(200))})
	if err != nil {
		t.Fatal(err)
	}
	m := gs.WaitFor(t, 1, 30*time.Second)[0]
	if !strings.Contains(string(m.MIME), throttled.QueueID) || time.Since(start) > 20*time.Second || time.Since(start) < 2*time.Second {
		t.Fatalf("the throttled message went out after %s", time.Since(start))
	}

	gs.Script(testenv.GraphReply{Status: 400, Code: "ErrorInvalidRecipients", Message: "At least one recipient is not valid., Recipient 'nobody@example.test' is not resolved."})
	if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "dbmail@corp.example", To: []string{"nobody@example.test"}, Data: testenv.RFC5322("invalid", testenv.Body(200))}); err != nil {
		t.Fatal(err)
	}
	big, err := testenv.Send(relay.Addr(), testenv.Mail{From: "dbmail@corp.example", To: []string{"ops@example.test"}, Data: testenv.RFC5322("big", testenv.Body(3500<<10))})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return len(deadLetters(t, relay)) == 2 }, "not dead-lettered")
	for _, d := range deadLetters(t, relay) {
		last := d.LastReply.String()
		switch {
		case d.Job.QueueID == big.QueueID:
			if !strings.Contains(last, "552 5.3.4") || !strings.Contains(last, "too large for a Microsoft Graph MIME send") {
				t.Errorf("over-size: %s", last)
			}
		case !strings.Contains(last, "ErrorInvalidRecipients") || !strings.Contains(last, "is not resolved") || d.Reason != "rejected":
			t.Errorf("invalid recipient: %s (%s)", last, d.Reason)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return len(gs.Messages()) == 3 }, "not the throttled message and the two bounces")
	bounces := 0
	for _, m := range gs.Messages() {
		if strings.Contains(string(m.MIME), "report-type=delivery-status") {
			bounces++
			if !slices.Contains(m.Recipients(), "dbmail@corp.example") {
				t.Errorf("a bounce to %v", m.Recipients())
			}
		}
	}
	if bounces != 2 {
		t.Fatalf("%d bounces among the messages Graph accepted, want 2 (nothing of the refused ones went out)", bounces)
	}
}
