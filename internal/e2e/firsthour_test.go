package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/internal/cli"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// A stage whose credentials the broker refuses says which broker refused
// which credentials and which configuration keys set them, instead of
// "broker connection closed"; so does an operator command.
func TestFirstHourBrokerRefusesCredentials(t *testing.T) {
	brk := testenv.StartStages(t, testenv.TestConfig(t), app.Stages{Broker: true}, app.Options{})
	creds, err := broker.ReadCredentials(brk.Cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.TestConfig(t)
	cfg.Broker.URL = config.StringList{creds.URL}
	cfg.Broker.User = "jetrelay"
	cfg.Broker.Password = "not-the-password"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := app.Start(ctx, cfg, testenv.TestLogger(t), app.Stages{Ingress: true}, app.Options{})
	if a != nil {
		defer a.Stop()
	}
	if err == nil {
		t.Fatal("the ingress started with credentials the broker refuses")
	}
	for _, want := range []string{"the broker at " + creds.URL, `refused user "jetrelay" with a password`, "Authorization Violation",
		"broker.user and broker.password"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in: %v", want, err)
		}
	}
	if !errors.Is(err, broker.ErrRefused) || strings.Contains(err.Error(), "not-the-password") {
		t.Errorf("error: %v", err)
	}

	// An operator command with the same settings.
	file := testenv.WriteConfig(t, "broker:\n  url: "+creds.URL+"\n  user: jetrelay\n  password: not-the-password\n")
	out, errs, code := jrFile(t, file, "queue", "list")
	if code != 1 || !strings.Contains(errs, `refused user "jetrelay" with a password`) || !strings.Contains(errs, "broker.user and broker.password") {
		t.Fatalf("queue list: exit %d\n%s%s", code, out, errs)
	}
}

// A page cut by --limit says how much there is ("2 of 5"), in deadletter
// list and queue list; replay and retry over many print one JSON summary
// with --json (and no progress bar into captured output).
func TestDeadLetterListOfNAndSummaries(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	var refuse atomic.Int32 // 5: reject, 4: defer, 0: accept
	refuse.Store(5)
	sink.OnRcpt(func(string) *smtp.SMTPError {
		switch refuse.Load() {
		case 5:
			return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "no such mailbox")
		case 4:
			return smtpErr(451, smtp.EnhancedCode{4, 3, 2}, "busy")
		}
		return nil
	})
	cfg := smarthostConfig(t, sink)
	cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Hour)}
	relay := testenv.StartRelay(t, cfg, app.Options{})
	send := func(n int) {
		for i := 0; i < n; i++ {
			if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "", To: []string{fmt.Sprintf("u%d@example.test", i)}, Data: testenv.RFC5322("x", testenv.Body(100))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(5)
	testenv.Eventually(t, 30*time.Second, func() bool { return len(deadLetters(t, relay)) == 5 }, "not dead-lettered")

	out := mustJR(t, relay, "deadletter", "list", "--limit", "2")
	if !strings.Contains(out, "2 of 5 dead letter(s)\n") || strings.Count(out, "rejected") != 2 || !strings.Contains(out, "more dead letters: --after ") {
		t.Fatalf("deadletter list --limit 2:\n%s", out)
	}
	after := strings.TrimSpace(out[strings.LastIndex(out, "--after ")+len("--after "):])
	out = mustJR(t, relay, "deadletter", "list", "--limit", "2", "--after", after)
	if !strings.Contains(out, "2 of 3 dead letter(s) after --after "+after) || strings.Count(out, "rejected") != 2 {
		t.Fatalf("second page:\n%s", out)
	}
	if out := mustJR(t, relay, "deadletter", "list"); !strings.Contains(out, "\n5 dead letter(s)\n") {
		t.Fatalf("whole list:\n%s", out)
	}
	// JSON pages are unchanged: the page, then "more".
	if got := jsonLines[cli.DeadLetterJSON](t, mustJR(t, relay, "deadletter", "list", "--json", "--limit", "2"), "deadletter"); len(got) != 2 {
		t.Fatalf("JSON page: %d", len(got))
	}

	// Replay them all into a deferral: one JSON line, nothing else on stdout.
	refuse.Store(4)
	out, errs, code := jr(t, relay, "deadletter", "replay", "--all", "--json")
	if code != 0 || strings.Count(strings.TrimSpace(out), "\n") != 0 || strings.Contains(errs, "\x1b") {
		t.Fatalf("replay --json: exit %d\n%s%s", code, out, errs)
	}
	var rs struct {
		Type                      string
		Replayed, Already, Failed int
		DryRun                    bool `json:"dry_run"`
	}
	if err := json.Unmarshal([]byte(out), &rs); err != nil || rs.Type != "summary" || rs.Replayed != 5 || rs.Failed != 0 || rs.DryRun {
		t.Fatalf("replay summary %+v (%v): %s", rs, err, out)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return relay.State().Scheduled == 5 }, "replayed jobs not deferred")

	out = mustJR(t, relay, "queue", "list", "--limit", "2")
	if !strings.Contains(out, "2 of 5 job(s) shown; 5 job(s), 0 ready/in flight, 5 scheduled") || !strings.Contains(out, "more jobs: --after ") {
		t.Fatalf("queue list --limit 2:\n%s", out)
	}

	refuse.Store(0)
	out, errs, code = jr(t, relay, "queue", "retry", "--all", "--json")
	var qs struct {
		Type   string
		DueNow int `json:"due_now"`
		Ready  int
	}
	if code != 0 || json.Unmarshal([]byte(out), &qs) != nil || qs.Type != "summary" || qs.DueNow != 5 || strings.Contains(errs, "\x1b") {
		t.Fatalf("queue retry --json: exit %d %+v\n%s%s", code, qs, out, errs)
	}
	sink.WaitFor(t, 5, 30*time.Second)
}

// sendWait runs `jetrelay send --wait` against the relay, as the README's
// first test does, and returns the output, the queue ID and the exit code.
func sendWait(t *testing.T, relay *testenv.Relay, wait string, to ...string) (string, string, int) {
	t.Helper()
	args := []string{"send", "--server", relay.Addr(), "--from", "app@client.test", "--wait=" + wait}
	for _, r := range to {
		args = append(args, "--to", r)
	}
	// The configuration of the relay, as the README's user has it.
	cfg := fmt.Sprintf("data_dir: %s\n", relay.Cfg.DataDir)
	if len(relay.Cfg.Delivery.Smarthost) > 0 {
		cfg += fmt.Sprintf("delivery:\n  smarthost: %q\n", relay.Cfg.Delivery.Smarthost[0])
	}
	out, errs, code := jrFile(t, testenv.WriteConfig(t, cfg), args...)
	qid := ""
	if i := strings.Index(out, "queued as "); i >= 0 && len(out) >= i+10+16 {
		qid = out[i+10 : i+10+16]
	}
	t.Logf("jetrelay %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	return out + errs, qid, code
}

func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("missing %q in:\n%s", w, out)
		}
	}
}

// send --wait follows a message to its delivery: which host, which reply,
// exit 0.
func TestSendWaitDelivered(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	relay := testenv.StartRelay(t, smarthostConfig(t, sink), app.Options{})
	out, qid, code := sendWait(t, relay, "30s", "you@corp.test")
	if code != 0 || qid == "" {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	host, _, _ := strings.Cut(sink.Addr, ":")
	wantLines(t, out, "following "+qid+" until it has an outcome (at most 30s)",
		"<you@corp.test>: delivered to "+host+": 250 ")
	if len(sink.Messages()) != 1 {
		t.Fatalf("%d messages delivered", len(sink.Messages()))
	}
}

// A first attempt that fails temporarily: the reply, the next attempt's
// time, how to look and retry; exit 75.
func TestSendWaitDeferred(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	sink.OnRcpt(func(string) *smtp.SMTPError { return smtpErr(451, smtp.EnhancedCode{4, 3, 2}, "system busy") })
	cfg := smarthostConfig(t, sink)
	cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Hour)}
	relay := testenv.StartRelay(t, cfg, app.Options{})
	out, qid, code := sendWait(t, relay, "30s", "you@corp.test")
	if code != 75 {
		t.Fatalf("exit %d, want 75:\n%s", code, out)
	}
	wantLines(t, out, "<you@corp.test>: deferred: 451 4.3.2 system busy", "attempt 2 at ", "(in ",
		"See it with: jetrelay queue show "+qid, "Try again now with: jetrelay queue retry "+qid)
}

// Some recipients delivered, one refused: each with its outcome, the
// dead letter's reason and how to replay it; exit 1.
func TestSendWaitDeadLettered(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	sink.OnRcpt(func(r string) *smtp.SMTPError {
		if strings.HasPrefix(r, "gone@") {
			return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "no such mailbox")
		}
		return nil
	})
	relay := testenv.StartRelay(t, smarthostConfig(t, sink), app.Options{})
	out, qid, code := sendWait(t, relay, "30s", "you@corp.test", "gone@corp.test")
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	wantLines(t, out, "<you@corp.test>: delivered to ", "<gone@corp.test>: dead-lettered (rejected): 550 5.1.1 no such mailbox",
		"The sender <app@client.test> gets a bounce", "jetrelay deadletter show "+qid, "send it again with: jetrelay deadletter replay "+qid)
}

// No smart host: the message goes to the recipient domain's MX hosts, so
// a newcomer on a machine without DNS or internet sees the lookup fail,
// in words, with the resolver it asked, when it tries again, and what to
// do about it (exit 75); a resolver that says the domain does not exist
// dead-letters it (exit 1). This is the README's first test.
func TestSendWaitWithoutSmarthost(t *testing.T) {
	for _, tc := range []struct {
		name     string
		servfail bool
		code     int
		want     []string
	}{
		{"resolver fails", true, 75, []string{"<you@example.com>: deferred: 451 4.4.3 MX lookup for example.com failed at resolver ", ": server misbehaving",
			"attempt 2 at ", "example.com is reserved for examples and tests (RFC 2606): no MX host takes mail for it", "without a smart host (delivery.smarthost), jetrelay delivers to each recipient domain's MX hosts itself"}},
		{"no such domain", false, 1, []string{"<you@example.com>: dead-lettered (rejected): 550 5.1.2 domain example.com not found: resolver ",
			"answered that it does not exist", "without a smart host (delivery.smarthost)", "jetrelay deadletter replay "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dns := testenv.NewDNS(t)
			dns.SetServFail("example.com", tc.servfail)
			cfg := testenv.TestConfig(t)
			cfg.Delivery.DNSServer = dns.Addr
			cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Minute)}
			relay := testenv.StartRelay(t, cfg, app.Options{})
			out, _, code := sendWait(t, relay, "30s", "you@example.com")
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			wantLines(t, out, append(tc.want, dns.Addr)...)
		})
	}
}

// Without a delivery process nothing happens to the message: send --wait
// says so when its wait is over, exit 75.
func TestSendWaitTimesOut(t *testing.T) {
	relay := testenv.StartStages(t, testenv.TestConfig(t), app.Stages{Broker: true, Ingress: true}, app.Options{})
	start := time.Now()
	out, _, code := sendWait(t, relay, "1s", "you@corp.test")
	if code != 75 || time.Since(start) > 20*time.Second {
		t.Fatalf("exit %d after %s:\n%s", code, time.Since(start), out)
	}
	wantLines(t, out, "<you@corp.test>: still queued after 1s: the first attempt has not finished (is a delivery process running?")
}

// A recipient the relay refuses at RCPT fails the command, and the ones it
// took are still followed to their outcome.
func TestSendWaitSomeRecipientsRefused(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	cfg := smarthostConfig(t, sink)
	cfg.Ingress.MaxRecipients = 1
	relay := testenv.StartRelay(t, cfg, app.Options{})
	out, _, code := sendWait(t, relay, "30s", "you@corp.test", "other@corp.test")
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	wantLines(t, out, "<you@corp.test>: delivered to ", "some recipients were refused: server said 452")
	if strings.Contains(out, "<other@corp.test>:") {
		t.Errorf("a refused recipient followed:\n%s", out)
	}
}
