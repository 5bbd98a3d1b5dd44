package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

func stsPolicy(mode string, mx ...string) string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\nmode: " + mode + "\r\n")
	for _, m := range mx {
		b.WriteString("mx: " + m + "\r\n")
	}
	b.WriteString("max_age: 86400\r\n")
	return b.String()
}

// MTA-STS end to end, against a local DNS server and a local HTTPS policy
// server with a test CA: an enforce policy delivers over verified TLS to
// an allowed MX only, and defers (4.7.5, "MTA-STS" in `queue show`) when
// the MX is not allowed, offers no STARTTLS or has a certificate for
// another name or from a CA it does not trust; a testing policy delivers and counts; the policy is
// fetched once per TXT id, shared through the broker across a restart,
// and fetched again when the id changes.
func TestMTASTS(t *testing.T) {
	pki := testenv.NewPKI(t, "mx.enforce.test", "mx.testing.test")
	// An MX host whose certificate names it but comes from a CA that
	// jetrelay is not told to trust.
	otherCA := testenv.NewPKI(t, "mx.untrusted.test")
	port := testenv.FreePort(t, "127.0.0.1", "127.0.0.2", "127.0.0.3")
	tlsSink := testenv.NewSink(t, testenv.SinkOptions{TLS: pki.ServerConfig(), Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	plainSink := testenv.NewSink(t, testenv.SinkOptions{Addr: fmt.Sprintf("127.0.0.2:%d", port)})
	untrustedSink := testenv.NewSink(t, testenv.SinkOptions{TLS: otherCA.ServerConfig(), Addr: fmt.Sprintf("127.0.0.3:%d", port)})
	dns := testenv.NewDNS(t)
	sts := testenv.NewSTSServer(t, dns, pki, "enforce.test", "badmx.test", "notls.test", "wrongname.test", "untrusted.test", "testing.test")
	mx := func(domain, host, ip string) {
		dns.SetMX(domain, testenv.MXRecord{Pref: 10, Host: host})
		dns.SetAddr(host, ip)
	}
	mx("enforce.test", "mx.enforce.test", "127.0.0.1")
	sts.Publish("enforce.test", "v1", stsPolicy("enforce", "mx.enforce.test"))
	mx("badmx.test", "mx.elsewhere.test", "127.0.0.1")
	sts.Publish("badmx.test", "v1", stsPolicy("enforce", "*.badmx.test"))
	mx("notls.test", "mx.notls.test", "127.0.0.2")
	sts.Publish("notls.test", "v1", stsPolicy("enforce", "mx.notls.test"))
	mx("wrongname.test", "mx.wrongname.test", "127.0.0.1")
	sts.Publish("wrongname.test", "v1", stsPolicy("enforce", "mx.wrongname.test"))
	mx("untrusted.test", "mx.untrusted.test", "127.0.0.3")
	sts.Publish("untrusted.test", "v1", stsPolicy("enforce", "mx.untrusted.test"))
	mx("testing.test", "mx.testing.test", "127.0.0.2")
	sts.Publish("testing.test", "v1", stsPolicy("testing", "mx.testing.test"))

	cfg := mxConfig(t, dns, port)
	cfg.Delivery.MXTLS = "opportunistic"
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Delivery.MTASTS.CAFile = pki.CAFile(t)
	cfg.Delivery.MTASTS.HTTPSPort = sts.Port
	relay := testenv.StartRelay(t, cfg, app.Options{})
	send := func(to string) string {
		t.Helper()
		res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{to}, Data: testenv.RFC5322(to, testenv.Body(100))})
		if err != nil {
			t.Fatal(err)
		}
		return res.QueueID
	}
	metric := func(mode, domain, result string) string {
		return fmt.Sprintf(`jetrelay_tlsrpt_sessions_total{mode=%q,policy_domain=%q,result=%q}`, mode, domain, result)
	}
	waitMetric := func(name string, n int) {
		t.Helper()
		var got string
		testenv.Eventually(t, 30*time.Second, func() bool {
			got = relay.Metric(name)
			return got == fmt.Sprintf("%s %d", name, n)
		}, "metric %s: %q", name, &got)
	}

	// enforce, allowed MX with a valid certificate: delivered over TLS;
	// the second message uses the cached policy.
	send("a@enforce.test")
	if m := tlsSink.WaitFor(t, 1, 30*time.Second)[0]; !m.TLS {
		t.Fatal("delivered without TLS under an enforce policy")
	}
	send("b@enforce.test")
	tlsSink.WaitFor(t, 2, 30*time.Second)
	if n := sts.Requests("enforce.test"); n != 1 {
		t.Fatalf("policy fetched %d times for two messages, want once", n)
	}
	// One session met the policy (two if the connection was not reused).
	testenv.Eventually(t, 30*time.Second, func() bool {
		v := relay.Metric(metric("enforce", "enforce.test", "success"))
		return strings.HasSuffix(v, " 1") || strings.HasSuffix(v, " 2")
	}, "no successful session counted for enforce.test")

	// enforce, violated four ways: deferred with the reason.
	violations := map[string]string{
		send("c@badmx.test"):     "no MX host (mx.elsewhere.test) matches the policy's mx patterns (*.badmx.test) (validation-failure)",
		send("d@notls.test"):     "mx.notls.test does not offer STARTTLS (starttls-not-supported)",
		send("e@wrongname.test"): "(certificate-host-mismatch)",
		send("u@untrusted.test"): "(certificate-not-trusted)",
	}
	// testing: delivered without TLS, and counted.
	send("f@testing.test")
	if m := plainSink.WaitFor(t, 1, 30*time.Second)[0]; m.Rcpts[0] != "f@testing.test" || m.TLS {
		t.Fatalf("testing policy: %+v", m)
	}
	waitMetric(metric("testing", "testing.test", "starttls-not-supported"), 1)

	// waitDeferred waits for qid's first attempt to have failed and checks
	// that it failed with 451 4.7.5 and the reason.
	waitDeferred := func(qid, reason string) {
		t.Helper()
		var q *broker.QueuedJob
		testenv.Eventually(t, 30*time.Second, func() bool {
			for _, j := range queued(t, relay) {
				if j.Job.QueueID == qid && j.Job.LastError != nil && j.Job.Attempt >= 2 {
					q = j
					return true
				}
			}
			return false
		}, "%s not retried", qid)
		le := q.Job.LastError
		if le.Code != 451 || le.Enhanced != "4.7.5" || !strings.Contains(le.Text, "MTA-STS policy of") || !strings.Contains(le.Text, reason) {
			t.Errorf("%s: last error %s; want 451 4.7.5 MTA-STS … %s", qid, le, reason)
		}
		if show := mustJR(t, relay, "queue", "show", qid); !strings.Contains(show, "MTA-STS policy of") {
			t.Errorf("queue show %s does not say MTA-STS:\n%s", qid, show)
		}
	}
	for qid, reason := range violations {
		waitDeferred(qid, reason)
	}
	if len(deadLetters(t, relay)) != 0 {
		t.Fatal("an MTA-STS violation was dead-lettered; it must wait")
	}
	for _, m := range append(append(tlsSink.Messages(), plainSink.Messages()...), untrustedSink.Messages()...) {
		if r := m.Rcpts[0]; r != "a@enforce.test" && r != "b@enforce.test" && r != "f@testing.test" {
			t.Fatalf("%s was delivered despite its enforce policy", r)
		}
	}
	for d, r := range map[string]string{"badmx.test": "validation-failure", "notls.test": "starttls-not-supported",
		"wrongname.test": "certificate-host-mismatch", "untrusted.test": "certificate-not-trusted"} {
		if relay.Metric(metric("enforce", d, r)) == "" {
			t.Errorf("no %s counted for %s", r, d)
		}
	}
	for _, d := range []string{"badmx.test", "notls.test", "wrongname.test", "untrusted.test", "testing.test"} {
		if n := sts.Requests(d); n != 1 {
			t.Errorf("%s: policy fetched %d times, want once (cached for its retries)", d, n)
		}
	}

	// The domain withdraws enforcement (a new id, testing): the waiting
	// message is fetched the new policy for and delivered.
	sts.Publish("notls.test", "v2", stsPolicy("testing", "mx.notls.test"))
	testenv.Eventually(t, 30*time.Second, func() bool {
		for _, m := range plainSink.Messages() {
			if m.Rcpts[0] == "d@notls.test" {
				return true
			}
		}
		return false
	}, "the deferred message was not delivered once the policy changed")

	// A new id for enforce.test: fetched again, once.
	sts.Publish("enforce.test", "v2", stsPolicy("enforce", "*.enforce.test"))
	send("g@enforce.test")
	tlsSink.WaitFor(t, 3, 30*time.Second)
	if n := sts.Requests("enforce.test"); n != 2 {
		t.Fatalf("policy fetched %d times after the id changed, want 2", n)
	}
	// The cache is in the broker: a restarted worker does not fetch.
	relay.Restart()
	send("h@enforce.test")
	if m := tlsSink.WaitFor(t, 4, 30*time.Second)[3]; !m.TLS || m.Rcpts[0] != "h@enforce.test" {
		t.Fatalf("after restart: %+v", m)
	}
	if n := sts.Requests("enforce.test"); n != 2 {
		t.Fatalf("policy fetched again after a restart (%d requests): the cache did not survive", n)
	}
	// A new policy that no longer allows the host: the connection the old
	// one allowed (still cached for reuse) is not used.
	sts.Publish("enforce.test", "v3", stsPolicy("enforce", "mx2.enforce.test"))
	waitDeferred(send("i@enforce.test"), "no MX host (mx.enforce.test) matches the policy's mx patterns (mx2.enforce.test)")
	for _, m := range tlsSink.Messages() {
		if m.Rcpts[0] == "i@enforce.test" {
			t.Fatal("delivered over a connection that the new policy does not allow")
		}
	}
}
