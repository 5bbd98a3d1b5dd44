package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

func smtpErr(code int, enh smtp.EnhancedCode, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: msg}
}

func deadLetters(t *testing.T, r *testenv.Relay) []*contracts.DeadLetter {
	t.Helper()
	var out []*contracts.DeadLetter
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.App.Broker().ScanDeadLetters(ctx, 0, func(s *broker.StoredDeadLetter) bool {
		if s.Err != nil {
			t.Fatalf("dead letter does not decode: %v", s.Err)
		}
		out = append(out, s.DL)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func queued(t *testing.T, r *testenv.Relay) []*broker.QueuedJob {
	t.Helper()
	var out []*broker.QueuedJob
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.App.Broker().ScanQueue(ctx, 0, func(q *broker.QueuedJob) bool { out = append(out, q); return true }); err != nil {
		t.Fatal(err)
	}
	return out
}

// countingRcpt answers the first `fail` RCPTs for an address with reply,
// then accepts.
type countingRcpt struct {
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingRcpt) n(rcpt string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[rcpt]++
	return c.calls[rcpt]
}

// 4xx then 2xx: delivered once, and the retry job carried the history.
func TestTemporaryThenDelivered(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	cr := &countingRcpt{calls: map[string]int{}}
	gate := make(chan struct{})
	sink.OnRcpt(func(r string) *smtp.SMTPError {
		if cr.n(r) == 1 {
			return smtpErr(450, smtp.EnhancedCode{4, 2, 1}, "mailbox busy")
		}
		<-gate
		return nil
	})
	cfg := smarthostConfig(t, sink)
	cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(2 * time.Second)}
	relay := testenv.StartRelay(t, cfg, app.Options{})
	res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"ops@example.test"}, Data: testenv.RFC5322("retry", testenv.Body(100))})
	if err != nil {
		t.Fatal(err)
	}
	// The deferred job waits as a scheduled retry with its history.
	var q *broker.QueuedJob
	testenv.Eventually(t, 20*time.Second, func() bool {
		for _, j := range queued(t, relay) {
			if j.Scheduled {
				q = j
				return true
			}
		}
		return false
	}, "no scheduled retry")
	close(gate)
	if q.Job.QueueID != res.QueueID || q.Job.Attempt != 2 || len(q.Job.History) != 1 ||
		q.Job.History[0].Reply.Code != 450 || q.Job.LastError.Code != 450 || q.NextAt.IsZero() {
		t.Fatalf("retry job: %+v history %+v", q.Job, q.Job.History)
	}
	sink.WaitFor(t, 1, 30*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	if n := len(sink.Messages()); n != 1 {
		t.Fatalf("delivered %d times", n)
	}
}

// One message, three recipients: A accepted, B deferred once, C refused.
// A and B arrive once each, C is dead-lettered and bounced to the sender;
// a null sender gets no bounce.
func TestMixedRecipientOutcomes(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	cr := &countingRcpt{calls: map[string]int{}}
	sink.OnRcpt(func(r string) *smtp.SMTPError {
		switch r {
		case "b@example.test":
			if cr.n(r) == 1 {
				return smtpErr(450, smtp.EnhancedCode{4, 2, 1}, "try later")
			}
		case "c@example.test":
			return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
		}
		return nil
	})
	relay := testenv.StartRelay(t, smarthostConfig(t, sink), app.Options{})
	res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"a@example.test", "b@example.test", "c@example.test"},
		Data: testenv.RFC5322("mixed", testenv.Body(300))})
	if err != nil {
		t.Fatal(err)
	}
	nullRes, err := testenv.Send(relay.Addr(), testenv.Mail{From: "", To: []string{"c@example.test"}, Data: testenv.RFC5322("from null", testenv.Body(50))})
	if err != nil {
		t.Fatal(err)
	}
	// A, B (on retry) and the DSN to app@client.test.
	sink.WaitRecipients(t, 3, 30*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	count := map[string]int{}
	var dsn *testenv.Message
	for _, m := range sink.Messages() {
		for _, r := range m.Rcpts {
			count[r]++
		}
		if m.From == "" {
			dsn = m
		}
	}
	if count["a@example.test"] != 1 || count["b@example.test"] != 1 || count["c@example.test"] != 0 || count["app@client.test"] != 1 || len(count) != 3 {
		t.Fatalf("deliveries per recipient: %v", count)
	}
	body := string(dsn.Data)
	for _, want := range []string{"multipart/report", "message/delivery-status", "Final-Recipient: rfc822; c@example.test",
		"Action: failed", "Status: 5.1.1", "550 5.1.1 no such user", "X-Jetrelay-Queue-ID: " + res.QueueID} {
		if !strings.Contains(body, want) {
			t.Errorf("DSN lacks %q", want)
		}
	}
	if strings.Contains(body, "Final-Recipient: rfc822; a@example.test") || strings.Contains(body, "Final-Recipient: rfc822; b@example.test") {
		t.Error("DSN names recipients that were delivered")
	}
	dls := deadLetters(t, relay)
	if len(dls) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dls))
	}
	for _, d := range dls {
		if d.Reason != contracts.ReasonRejected || len(d.Job.Rcpts) != 1 || d.Job.Rcpts[0].Addr != "c@example.test" ||
			d.LastReply == nil || d.LastReply.Code != 550 {
			t.Errorf("dead letter %+v", d)
		}
		if d.Job.QueueID != res.QueueID && d.Job.QueueID != nullRes.QueueID {
			t.Errorf("dead letter for unknown message %s", d.Job.QueueID)
		}
	}
}

// Past max_age a message is dead-lettered as expired and bounced with
// "expired" wording; before that, a delay warning goes out once.
func TestExpiryAndDelayWarning(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	sink.OnRcpt(func(r string) *smtp.SMTPError {
		if r == "slow@example.test" {
			return smtpErr(451, smtp.EnhancedCode{4, 4, 1}, "greylisted")
		}
		return nil
	})
	cfg := smarthostConfig(t, sink)
	cfg.Delivery.Retry.MaxAge = config.Duration(6 * time.Second)
	cfg.Delivery.DelayWarning = config.Duration(2 * time.Second)
	relay := testenv.StartRelay(t, cfg, app.Options{})
	res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"slow@example.test"}, Data: testenv.RFC5322("expire", testenv.Body(100))})
	if err != nil {
		t.Fatal(err)
	}
	msgs := sink.WaitFor(t, 2, 60*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	msgs = sink.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d DSNs, want a delay warning and a failure", len(msgs))
	}
	delay, fail := string(msgs[0].Data), string(msgs[1].Data)
	if !strings.Contains(delay, "Action: delayed") || !strings.Contains(delay, "Delayed Mail") || !strings.Contains(delay, "Will-Retry-Until:") {
		t.Errorf("first DSN is not a delay warning:\n%s", delay)
	}
	if !strings.Contains(fail, "Action: failed") || !strings.Contains(fail, "delivery time expired") || !strings.Contains(fail, "Status: 5.4.1") {
		t.Errorf("second DSN is not an expiry bounce:\n%s", fail)
	}
	dls := deadLetters(t, relay)
	if len(dls) != 1 || dls[0].Reason != contracts.ReasonExpired || dls[0].Job.QueueID != res.QueueID || dls[0].Job.Attempt < 3 {
		t.Fatalf("dead letters: %+v", dls)
	}
}

// The DSN extension: NOTIFY=NEVER suppresses the bounce, NOTIFY=SUCCESS
// to a next hop without DSN gets a "relayed" report, RET=HDRS returns only
// the headers, ENVID and ORCPT come back.
func TestDSNExtension(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	sink.OnRcpt(func(r string) *smtp.SMTPError {
		if strings.HasPrefix(r, "bad") {
			return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "unknown")
		}
		return nil
	})
	relay := testenv.StartRelay(t, smarthostConfig(t, sink), app.Options{})
	c, _ := testenv.DialRaw(t, relay.Addr(), "")
	c.Expect(250, "EHLO c")
	c.Expect(250, "MAIL FROM:<app@client.test> RET=HDRS ENVID=alert+2D42")
	c.Expect(250, "RCPT TO:<bad1@example.test> NOTIFY=NEVER")
	c.Expect(250, "RCPT TO:<bad2@example.test> NOTIFY=FAILURE ORCPT=rfc822;orig@example.test")
	c.Expect(354, "DATA")
	c.Expect(250, "%s.", testenv.RFC5322("dsn", []byte("SECRET-BODY-TEXT\r\n")))
	sink.WaitFor(t, 1, 30*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	msgs := sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want one DSN", len(msgs))
	}
	d := string(msgs[0].Data)
	for _, want := range []string{"Original-Envelope-Id: alert-42", "Final-Recipient: rfc822; bad2@example.test",
		"Original-Recipient: rfc822; orig@example.test", "text/rfc822-headers"} {
		if !strings.Contains(d, want) {
			t.Errorf("DSN lacks %q", want)
		}
	}
	if strings.Contains(d, "bad1@example.test") || strings.Contains(d, "SECRET-BODY-TEXT") {
		t.Errorf("DSN names a NOTIFY=NEVER recipient or returns the body despite RET=HDRS:\n%s", d)
	}
}

// MX routing per RFC 5321 §5 against a local DNS server.
func TestMXRouting(t *testing.T) {
	// One port for the sinks on 127.0.0.2 and ::1 (and the MX down on
	// 127.0.0.3), since delivery.port applies to every MX.
	port := testenv.FreePort(t, "127.0.0.2", "::1", "127.0.0.3")
	sink := testenv.NewSink(t, testenv.SinkOptions{Addr: fmt.Sprintf("127.0.0.2:%d", port)})
	dns := testenv.NewDNS(t)
	// two MX hosts, the preferred one down (nothing listens on 127.0.0.3)
	dns.SetMX("twomx.test", testenv.MXRecord{Pref: 10, Host: "mx1.twomx.test"}, testenv.MXRecord{Pref: 20, Host: "mx2.twomx.test"})
	dns.SetAddr("mx1.twomx.test", "127.0.0.3")
	dns.SetAddr("mx2.twomx.test", "127.0.0.2")
	// no MX: the domain's own address (implicit MX)
	dns.SetAddr("implicit.test", "127.0.0.2")
	// null MX
	dns.SetNullMX("nullmx.test")
	// an IPv6-only MX
	dns.SetMX("v6.test", testenv.MXRecord{Pref: 10, Host: "mx.v6.test"})
	dns.SetAddr("mx.v6.test", "::1")
	// SERVFAIL, then recovered
	dns.SetMX("flaky.test", testenv.MXRecord{Pref: 10, Host: "mx.flaky.test"})
	dns.SetAddr("mx.flaky.test", "127.0.0.2")
	dns.SetServFail("flaky.test", true)
	v6sink := testenv.NewSink(t, testenv.SinkOptions{Addr: fmt.Sprintf("[::1]:%d", sink.Port())})

	relay := testenv.StartRelay(t, mxConfig(t, dns, sink.Port()), app.Options{})
	send := func(to string) string {
		t.Helper()
		res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "", To: []string{to}, Data: testenv.RFC5322(to, testenv.Body(100))})
		if err != nil {
			t.Fatal(err)
		}
		return res.QueueID
	}
	send("a@twomx.test")
	send("b@implicit.test")
	nullID := send("c@nullmx.test")
	nxID := send("d@nxdomain.test")
	send("e@v6.test")
	send("f@flaky.test")

	v6sink.WaitFor(t, 1, 30*time.Second)
	testenv.Eventually(t, 30*time.Second, func() bool { return len(deadLetters(t, relay)) == 2 }, "null MX and NXDOMAIN not dead-lettered")
	for _, d := range deadLetters(t, relay) {
		r := d.Job.Rcpts[0].LastReply
		switch d.Job.QueueID {
		case nullID:
			if r.Code != 556 || r.Enhanced != "5.1.10" {
				t.Errorf("null MX: %s", r)
			}
		case nxID:
			if r.Code != 550 || r.Enhanced != "5.1.2" {
				t.Errorf("NXDOMAIN: %s", r)
			}
		default:
			t.Errorf("unexpected dead letter %+v", d)
		}
	}
	// SERVFAIL is temporary: the message waits, and goes once DNS recovers.
	testenv.Eventually(t, 30*time.Second, func() bool {
		for _, q := range queued(t, relay) {
			if q.Scheduled && q.Job.Rcpts[0].Addr == "f@flaky.test" && q.Job.LastError.Enhanced == "4.4.3" {
				return true
			}
		}
		return false
	}, "SERVFAIL not deferred")
	dns.SetServFail("flaky.test", false)
	sink.WaitFor(t, 3, 30*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	got := map[string]bool{}
	for _, m := range sink.Messages() {
		got[m.Rcpts[0]] = true
	}
	for _, r := range []string{"a@twomx.test", "b@implicit.test", "f@flaky.test"} {
		if !got[r] {
			t.Errorf("%s not delivered", r)
		}
	}
}

// Outbound TLS policies and AUTH to a smart host.
func TestSmarthostTLSAndAuth(t *testing.T) {
	pki := testenv.NewPKI(t)
	users := map[string]string{"relayuser": "relaypass"}
	cases := []struct {
		name     string
		sink     testenv.SinkOptions
		policy   string
		wantTLS  bool
		wantUser string
	}{
		{"opportunistic uses TLS when offered", testenv.SinkOptions{TLS: pki.ServerConfig()}, "opportunistic", true, ""},
		{"opportunistic without STARTTLS sends in clear", testenv.SinkOptions{}, "opportunistic", false, ""},
		{"none never starts TLS", testenv.SinkOptions{TLS: pki.ServerConfig()}, "none", false, ""},
		{"AUTH LOGIN over STARTTLS", testenv.SinkOptions{TLS: pki.ServerConfig(), Users: users, AuthMechs: []string{"LOGIN"}}, "required", true, "relayuser"},
		{"AUTH PLAIN over STARTTLS", testenv.SinkOptions{TLS: pki.ServerConfig(), Users: users, AuthMechs: []string{"PLAIN"}}, "required", true, "relayuser"},
		{"AUTH LOGIN over implicit TLS", testenv.SinkOptions{TLS: pki.ServerConfig(), ImplicitTLS: true, Users: users, AuthMechs: []string{"LOGIN"}}, "implicit", true, "relayuser"},
		{"AUTH PLAIN over implicit TLS", testenv.SinkOptions{TLS: pki.ServerConfig(), ImplicitTLS: true, Users: users, AuthMechs: []string{"PLAIN"}}, "implicit", true, "relayuser"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sink := testenv.NewSink(t, tc.sink)
			cfg := smarthostConfig(t, sink)
			cfg.Delivery.SmarthostTLS = tc.policy
			if tc.wantUser != "" {
				cfg.Delivery.SmarthostUsername = tc.wantUser
				cfg.Delivery.SmarthostPassword = users[tc.wantUser]
			}
			relay := testenv.StartRelay(t, cfg, app.Options{RootCAs: pki.Pool})
			if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"ops@example.test"}, Data: testenv.RFC5322(tc.name, testenv.Body(100))}); err != nil {
				t.Fatal(err)
			}
			m := sink.WaitFor(t, 1, 30*time.Second)[0]
			if m.TLS != tc.wantTLS || m.User != tc.wantUser {
				t.Fatalf("delivered with TLS=%v user=%q; want TLS=%v user=%q", m.TLS, m.User, tc.wantTLS, tc.wantUser)
			}
			if m.Helo != "relay.test" {
				t.Fatalf("EHLO name %q, want the configured hostname", m.Helo)
			}
		})
	}
	// required against a host without STARTTLS: deferred, never sent in clear.
	t.Run("required without STARTTLS is deferred", func(t *testing.T) {
		sink := testenv.NewSink(t, testenv.SinkOptions{})
		cfg := smarthostConfig(t, sink)
		cfg.Delivery.SmarthostTLS = "required"
		relay := testenv.StartRelay(t, cfg, app.Options{RootCAs: pki.Pool})
		if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"ops@example.test"}, Data: testenv.RFC5322("no tls", testenv.Body(100))}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, func() bool {
			for _, q := range queued(t, relay) {
				if q.Scheduled && q.Job.Attempt >= 3 && q.Job.LastError.Enhanced == "4.7.5" {
					return true
				}
			}
			return false
		}, "not deferred with 4.7.5 through two retries")
		if n := len(sink.Messages()); n != 0 {
			t.Fatalf("sent in clear despite tls: required (%d messages)", n)
		}
	})
	// a certificate the relay cannot verify fails "required"
	t.Run("required with an untrusted certificate is deferred", func(t *testing.T) {
		sink := testenv.NewSink(t, testenv.SinkOptions{TLS: pki.ServerConfig()})
		cfg := smarthostConfig(t, sink)
		cfg.Delivery.SmarthostTLS = "required"
		relay := testenv.StartRelay(t, cfg, app.Options{}) // system roots: the test CA is unknown
		if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"ops@example.test"}, Data: testenv.RFC5322("bad cert", testenv.Body(100))}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, func() bool {
			for _, q := range queued(t, relay) {
				if q.Scheduled && q.Job.LastError.Enhanced == "4.7.5" {
					return true
				}
			}
			return false
		}, "not deferred for the certificate")
		if n := len(sink.Messages()); n != 0 {
			t.Fatalf("delivered to an unverified host (%d messages)", n)
		}
	})
}

// Jobs for one next hop share connections: 100 messages go over at most
// max_per_destination connections.
func TestConnectionReuse(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	cfg := smarthostConfig(t, sink)
	cfg.Delivery.MaxPerDestination = 4
	cfg.Delivery.Concurrency = 32
	relay := testenv.StartRelay(t, cfg, app.Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for k := 0; k < 10; k++ {
				_, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{fmt.Sprintf("u%d@example.test", i*10+k)}, Data: testenv.RFC5322("reuse", testenv.Body(200))})
				if err != nil {
					errs <- err
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	sink.WaitFor(t, 100, 60*time.Second)
	if c, p := sink.Connections(), sink.PeakConnections(); c > 4 || p > 4 {
		t.Fatalf("100 messages used %d connections (peak %d), want at most 4", c, p)
	}
}

// A smart-host list fails over on a refused connection and on a 4xx
// greeting; a per-domain route (with its own failover list) wins over the
// smart host.
func TestSmarthostFailoverAndRoutes(t *testing.T) {
	busy := testenv.NewSink(t, testenv.SinkOptions{})
	busy.Greet(smtpErr(421, smtp.EnhancedCode{4, 3, 2}, "too busy"))
	good := testenv.NewSink(t, testenv.SinkOptions{})
	corp := testenv.NewSink(t, testenv.SinkOptions{})
	down := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := testenv.TestConfig(t)
	cfg.Delivery.Smarthost = config.StringList{down, busy.Addr, good.Addr}
	cfg.Delivery.SmarthostTLS = "none"
	cfg.Delivery.Routes = map[string]config.Route{
		"corp.test": {Hosts: config.StringList{down, corp.Addr}, TLS: "none"},
	}
	relay := testenv.StartRelay(t, cfg, app.Options{})
	for _, to := range []string{"a@example.test", "b@corp.test"} {
		if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{to}, Data: testenv.RFC5322(to, testenv.Body(100))}); err != nil {
			t.Fatal(err)
		}
	}
	if m := good.WaitFor(t, 1, 30*time.Second)[0]; m.Rcpts[0] != "a@example.test" {
		t.Fatalf("smart host got %v", m.Rcpts)
	}
	if m := corp.WaitFor(t, 1, 30*time.Second)[0]; m.Rcpts[0] != "b@corp.test" {
		t.Fatalf("route got %v", m.Rcpts)
	}
	if busy.Connections() == 0 {
		t.Fatal("the 421-greeting host was never tried (failover order)")
	}
	if len(busy.Messages())+len(good.Messages())+len(corp.Messages()) != 2 {
		t.Fatal("a message went to two hosts")
	}
}

// A destination that answers 421 is backed off as a whole: the jobs behind
// it are deferred without a connection each.
func TestDestinationBackoff(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	sink.Greet(smtpErr(421, smtp.EnhancedCode{4, 7, 0}, "rate limited, slow down"))
	cfg := smarthostConfig(t, sink)
	cfg.Delivery.DestinationBackoff = config.Duration(time.Hour)
	cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Hour)}
	// One attempt at a time: attempts already under way when the first
	// 421 arrives each have their own connection (as with Postfix's
	// initial destination concurrency); this test is about what follows.
	cfg.Delivery.Concurrency = 1
	cfg.Broker.QueueShards = 1
	relay := testenv.StartRelay(t, cfg, app.Options{})
	for i := 0; i < 10; i++ {
		if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{fmt.Sprintf("u%d@example.test", i)}, Data: testenv.RFC5322("b", testenv.Body(100))}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return relay.State().Scheduled == 10 }, "jobs not all deferred")
	if n := sink.Connections(); n != 1 {
		t.Fatalf("%d connections to a destination that said 421; want 1, then back-off", n)
	}
	backedOff := 0
	for _, q := range queued(t, relay) {
		if strings.Contains(q.Job.LastError.Text, "backed off") {
			backedOff++
		}
	}
	if backedOff != 9 {
		t.Fatalf("%d jobs deferred by the back-off, want 9", backedOff)
	}
}

// A delivery that takes longer than the AckWait is kept alive and is not
// handed to another worker (no duplicate).
func TestLongDeliveryKeptAlive(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	sink.OnData(func(*testenv.Message) *smtp.SMTPError {
		// A slow server: the reply to the final dot takes more than twice
		// the AckWait. A redelivered job would open a second connection.
		time.Sleep(12 * time.Second)
		return nil
	})
	cfg := smarthostConfig(t, sink)
	cfg.Broker.AckWait = config.Duration(5 * time.Second)
	relay := testenv.StartRelay(t, cfg, app.Options{})
	if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"x@example.test"}, Data: testenv.RFC5322("slow", testenv.Body(100))}); err != nil {
		t.Fatal(err)
	}
	sink.WaitFor(t, 1, 60*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	if n, c := len(sink.Messages()), sink.Connections(); n != 1 || c != 1 {
		t.Fatalf("%d deliveries over %d connections; the job was handed out again", n, c)
	}
}

// A cached connection that the next hop closed in the meantime is noticed
// and replaced: the message goes out at once on a new connection, without
// a retry and without backing the destination off.
func TestStaleCachedConnection(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{IdleTimeout: 200 * time.Millisecond})
	cfg := smarthostConfig(t, sink)
	cfg.Delivery.DestinationBackoff = config.Duration(time.Hour)
	relay := testenv.StartRelay(t, cfg, app.Options{})
	send := func(s string) {
		if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"x@example.test"}, Data: testenv.RFC5322(s, testenv.Body(100))}); err != nil {
			t.Fatal(err)
		}
	}
	send("first")
	sink.WaitFor(t, 1, 30*time.Second)
	// The sink times the cached connection out (421 and close).
	testenv.Eventually(t, 10*time.Second, func() bool { return sink.LiveConnections() == 0 }, "sink kept the connection")
	send("second")
	sink.WaitFor(t, 2, 10*time.Second)
	if st := relay.State(); st.Scheduled != 0 {
		t.Fatalf("the second message was deferred: %+v", st)
	}
	if n := sink.Connections(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

// A smart host whose certificate comes from a private CA is reachable
// with the route's CA file and refused, with a clear TLS error, without
// it; the certificate's name can be set apart from the host dialled; and
// a smart host that wants a client certificate (mutual TLS) gets the
// route's.
func TestSmarthostTrustSettings(t *testing.T) {
	pki := testenv.NewPKI(t, "mail.corp.test")
	clientCert, clientKey, _ := pki.Issue(t, "relay-client")
	mtls := pki.ServerConfig()
	mtls.ClientAuth = tls.RequireAndVerifyClientCert
	mtls.ClientCAs = pki.Pool
	cases := []struct {
		name       string
		sinkTLS    *tls.Config
		ca         bool
		serverName string
		clientCert bool
		wantErr    string // "" delivered; else the deferral's text contains this
	}{
		{"private CA from the route's CA file", pki.ServerConfig(), true, "", false, ""},
		{"private CA unknown without it", pki.ServerConfig(), false, "", false, "certificate signed by unknown authority"},
		{"server name set apart", pki.ServerConfig(), true, "mail.corp.test", false, ""},
		{"server name the certificate does not carry", pki.ServerConfig(), true, "wrong.example", false, "wrong.example"},
		{"mutual TLS", mtls, true, "", true, ""},
		{"mutual TLS without a client certificate", mtls, true, "", false, "TLS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sink := testenv.NewSink(t, testenv.SinkOptions{TLS: tc.sinkTLS})
			cfg := smarthostConfig(t, sink)
			cfg.Delivery.SmarthostTLS = "required"
			if tc.ca {
				cfg.Delivery.SmarthostTLSCAFile = pki.CAFile(t)
			}
			cfg.Delivery.SmarthostTLSServerName = tc.serverName
			if tc.clientCert {
				cfg.Delivery.SmarthostTLSCertFile, cfg.Delivery.SmarthostTLSKeyFile = clientCert, clientKey
			}
			relay := testenv.StartRelay(t, cfg, app.Options{}) // trust only what the route says
			if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"ops@example.test"}, Data: testenv.RFC5322(tc.name, testenv.Body(100))}); err != nil {
				t.Fatal(err)
			}
			if tc.wantErr == "" {
				if m := sink.WaitFor(t, 1, 30*time.Second)[0]; !m.TLS {
					t.Fatal("delivered without TLS")
				}
				return
			}
			var last string
			testenv.Eventually(t, 30*time.Second, func() bool {
				for _, q := range queued(t, relay) {
					if q.Scheduled && q.Job.LastError != nil {
						last = q.Job.LastError.String()
						return q.Job.LastError.Enhanced == "4.7.5" && strings.Contains(last, tc.wantErr)
					}
				}
				return false
			}, "not deferred with a TLS error naming %q (last error %q)", tc.wantErr, &last)
			if n := len(sink.Messages()); n != 0 {
				t.Fatalf("delivered %d messages without the trust it needs", n)
			}
		})
	}
}
