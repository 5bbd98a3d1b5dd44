package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/cli"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// jr runs a jetrelay command in-process against the relay's data_dir, the
// way an operator on the same machine would, and returns its output.
func jr(t *testing.T, relay *testenv.Relay, args ...string) (string, string, int) {
	t.Helper()
	return jrFile(t, testenv.WriteConfig(t, fmt.Sprintf("data_dir: %s\n", relay.Cfg.DataDir)), args...)
}

// jrFile runs a jetrelay command in-process with a configuration file.
func jrFile(t *testing.T, cfgFile string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Main(append(args, "--config", cfgFile), strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

func mustJR(t *testing.T, relay *testenv.Relay, args ...string) string {
	t.Helper()
	out, errs, code := jr(t, relay, args...)
	if code != 0 {
		t.Fatalf("jetrelay %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func jsonLines[T any](t *testing.T, out, typ string) []T {
	t.Helper()
	var items []T
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var head struct{ Type string }
		if err := json.Unmarshal(sc.Bytes(), &head); err != nil {
			t.Fatalf("not JSON: %q: %v", sc.Text(), err)
		}
		if head.Type != typ {
			continue
		}
		var item T
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&item); err != nil {
			t.Fatalf("line does not match the documented schema: %v\n%s", err, sc.Text())
		}
		// round trip: the documented struct reproduces the line
		again, _ := json.Marshal(item)
		var a, b any
		_ = json.Unmarshal(sc.Bytes(), &a)
		_ = json.Unmarshal(again, &b)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("JSON does not round-trip:\n%s\n%s", sc.Text(), again)
		}
		items = append(items, item)
	}
	return items
}

// A refused message shows in deadletter list with the right filters, show
// --raw prints it as sent, and after the destination is fixed a replay
// delivers it exactly once and removes the dead letter.
func TestDeadLetterListShowReplay(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	var refuse atomic.Bool
	refuse.Store(true)
	sink.OnRcpt(func(r string) *smtp.SMTPError {
		if refuse.Load() {
			return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "mailbox unavailable")
		}
		return nil
	})
	relay := testenv.StartRelay(t, smarthostConfig(t, sink), app.Options{})
	big := testenv.RFC5322("big alert", testenv.Body(1<<20)) // body in the object store
	small := testenv.RFC5322("small alert", testenv.Body(300))
	var ids []string
	for _, m := range [][]byte{small, big} {
		res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "", To: []string{"ops@alerts.test"}, Data: m})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.QueueID)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return len(deadLetters(t, relay)) == 2 }, "not dead-lettered")

	all := jsonLines[cli.DeadLetterJSON](t, mustJR(t, relay, "deadletter", "list", "--json"), "deadletter")
	if len(all) != 2 || all[0].QueueID != ids[0] || all[0].Reason != "rejected" || all[0].Rcpts[0].Addr != "ops@alerts.test" ||
		!strings.Contains(all[0].LastReply, "550 5.1.1") || all[1].Size < 1<<20 {
		t.Fatalf("dead letters: %+v", all)
	}
	for _, f := range []struct {
		args []string
		want int
	}{
		{[]string{"--rcpt", "ops@alerts"}, 2}, {[]string{"--rcpt", "nobody"}, 0},
		{[]string{"--domain", "alerts.test"}, 2}, {[]string{"--domain", "other.test"}, 0},
		{[]string{"--reason-contains", "mailbox unavailable"}, 2}, {[]string{"--reason-contains", "expired"}, 0},
		{[]string{"--since", "1h"}, 2}, {[]string{"--until", "1h"}, 0}, {[]string{"--older-than", "1h"}, 0},
		{[]string{ids[1]}, 1},
	} {
		got := jsonLines[cli.DeadLetterJSON](t, mustJR(t, relay, append([]string{"deadletter", "list", "--json"}, f.args...)...), "deadletter")
		if len(got) != f.want {
			t.Errorf("deadletter list %v: %d, want %d", f.args, len(got), f.want)
		}
	}
	// paging: one at a time
	page := mustJR(t, relay, "deadletter", "list", "--json", "--limit", "1")
	first := jsonLines[cli.DeadLetterJSON](t, page, "deadletter")
	var more struct{ After uint64 }
	for _, l := range strings.Split(strings.TrimSpace(page), "\n") {
		if strings.Contains(l, `"more"`) {
			_ = json.Unmarshal([]byte(l), &more)
		}
	}
	second := jsonLines[cli.DeadLetterJSON](t, mustJR(t, relay, "deadletter", "list", "--json", "--limit", "1", "--after", fmt.Sprint(more.After)), "deadletter")
	if len(first) != 1 || len(second) != 1 || first[0].ID == second[0].ID {
		t.Fatalf("paging: %v then %v (cursor %d)", first, second, more.After)
	}
	// the human table
	if table := mustJR(t, relay, "deadletter", "list"); !strings.Contains(table, all[0].QueueID) || !strings.Contains(table, "2 dead letter(s)") {
		t.Fatalf("table:\n%s", table)
	}
	for i, want := range [][]byte{small, big} {
		raw := mustJR(t, relay, "deadletter", "show", "--raw", all[i].ID)
		m := testenv.Message{Data: []byte(raw)}
		if !bytes.Equal(m.AfterReceived(), want) {
			t.Fatalf("show --raw of %s is not the message as sent", all[i].ID)
		}
	}
	if show := mustJR(t, relay, "deadletter", "show", ids[0]); !strings.Contains(show, "dead-lettered") || !strings.Contains(show, "(rejected)") ||
		!strings.Contains(show, "Queue ID:    "+ids[0]) || !strings.Contains(show, "jetrelay deadletter replay "+ids[0]) {
		t.Fatalf("show:\n%s", show)
	}
	baseline := relay.State().BodyBytes

	refuse.Store(false)
	out := mustJR(t, relay, "deadletter", "replay", "--all")
	if strings.Count(out, "replayed ") != 2 {
		t.Fatalf("replay:\n%s", out)
	}
	sink.WaitFor(t, 2, 30*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	if got := sink.ByQueueID(); len(got[ids[0]]) != 1 || len(got[ids[1]]) != 1 || len(sink.Messages()) != 2 {
		t.Fatalf("after replay: %d messages", len(sink.Messages()))
	}
	if !bytes.Equal(sink.ByQueueID()[ids[1]][0].AfterReceived(), big) {
		t.Fatal("replayed message differs")
	}
	if n := len(deadLetters(t, relay)); n != 0 {
		t.Fatalf("%d dead letters left after replay", n)
	}
	if st := relay.State(); st.BodyBytes >= baseline || st.BodyBytes > 4096 {
		t.Fatalf("body store holds %d bytes after the replayed message was delivered (was %d)", st.BodyBytes, baseline)
	}
}

// A replay interrupted after the new job was stored, and run again, queues
// the message once.
func TestReplayInterruptedAndRunAgain(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	var refuse atomic.Bool
	refuse.Store(true)
	sink.OnRcpt(func(string) *smtp.SMTPError {
		if refuse.Load() {
			return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "no")
		}
		return nil
	})
	relay := testenv.StartRelay(t, smarthostConfig(t, sink), app.Options{})
	var ids []string
	for i := 0; i < 2; i++ {
		res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "", To: []string{fmt.Sprintf("r%d@example.test", i)}, Data: testenv.RFC5322("x", testenv.Body(100))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.QueueID)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return len(deadLetters(t, relay)) == 2 }, "not dead-lettered")
	refuse.Store(false)
	ctx := context.Background()
	bc := relay.App.Broker()
	// Crash windows: (1) after the new job is stored and recorded, before
	// the dead letter is removed; (2) after the job is stored, before even
	// the replay record is written.
	for i, id := range ids {
		var e *broker.StoredDeadLetter
		if err := bc.MessageDeadLetters(ctx, id, func(s *broker.StoredDeadLetter) bool { e = s; return false }); err != nil || e == nil {
			t.Fatalf("dead letter of %s: %v", id, err)
		}
		e.Seq = 1 << 40 // the removal finds nothing to remove: as if the process died first
		if job, _, err := bc.Replay(ctx, e, ""); job == nil {
			t.Fatalf("replay did not get as far as publishing: %v", err)
		}
		if i == 1 {
			kv, err := bc.JetStream().KeyValue(ctx, contracts.BucketBodyRefs)
			if err != nil {
				t.Fatal(err)
			}
			if err := kv.Purge(ctx, "replay."+e.DL.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := len(deadLetters(t, relay)); n != 2 {
		t.Fatalf("simulation: %d dead letters left, want 2", n)
	}
	mustJR(t, relay, "deadletter", "replay", "--all")
	sink.WaitFor(t, 2, 30*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	if n := len(deadLetters(t, relay)); n != 0 {
		t.Fatalf("%d dead letters left", n)
	}
	for _, id := range ids {
		if n := len(sink.ByQueueID()[id]); n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
}

// A deferred message shows in queue list with its attempt and next
// attempt; queue retry sends it now; queue delete moves a job to the dead
// letters; --purge drops one.
func TestQueueListRetryDelete(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	var defer_ atomic.Bool
	defer_.Store(true)
	sink.OnRcpt(func(r string) *smtp.SMTPError {
		if defer_.Load() {
			return smtpErr(451, smtp.EnhancedCode{4, 3, 2}, "system busy")
		}
		return nil
	})
	cfg := smarthostConfig(t, sink)
	cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Hour)}
	relay := testenv.StartRelay(t, cfg, app.Options{})
	var ids []string
	for _, to := range []string{"a@one.test", "b@two.test", "c@two.test"} {
		res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{to}, Data: testenv.RFC5322(to, testenv.Body(100))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.QueueID)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return relay.State().Scheduled == 3 }, "not deferred")
	jobs := jsonLines[cli.JobJSON](t, mustJR(t, relay, "queue", "list", "--json"), "job")
	if len(jobs) != 3 {
		t.Fatalf("queue list: %+v", jobs)
	}
	for _, j := range jobs {
		if j.State != "scheduled" || j.Attempt != 2 || j.NextAttempt == nil || time.Until(*j.NextAttempt) < 50*time.Minute ||
			!strings.Contains(j.LastError, "451 4.3.2 system busy") {
			t.Fatalf("job %+v", j)
		}
	}
	out := mustJR(t, relay, "queue", "list", "--domain", "two.test")
	if strings.Count(out, "  scheduled  ") != 2 || !strings.Contains(out, "two.test=2") {
		t.Fatalf("queue list --domain:\n%s", out)
	}
	if out := mustJR(t, relay, "queue", "list"); !strings.Contains(out, "3 job(s)") || !strings.Contains(out, "two.test=2") || !strings.Contains(out, "one.test=1") {
		t.Fatalf("summary:\n%s", out)
	}
	if show := mustJR(t, relay, "queue", "show", ids[0]); !strings.Contains(show, "attempt 1 at") || !strings.Contains(show, "deferred") {
		t.Fatalf("queue show:\n%s", show)
	}

	// retry now
	defer_.Store(false)
	mustJR(t, relay, "queue", "retry", ids[0])
	m := sink.WaitFor(t, 1, 30*time.Second)[0]
	if m.QueueID() != ids[0] {
		t.Fatalf("retried %s, got %s", ids[0], m.QueueID())
	}
	// delete → dead letter
	mustJR(t, relay, "queue", "delete", ids[1])
	dls := deadLetters(t, relay)
	if len(dls) != 1 || dls[0].Reason != contracts.ReasonDeleted || dls[0].Job.QueueID != ids[1] {
		t.Fatalf("after delete: %+v", dls)
	}
	// purge → gone
	mustJR(t, relay, "queue", "delete", "--purge", ids[2])
	relay.WaitQueueEmpty(10 * time.Second)
	if n := len(deadLetters(t, relay)); n != 1 {
		t.Fatalf("purge wrote a dead letter: %d", n)
	}
	if _, _, code := jr(t, relay, "queue", "show", ids[2]); code != 1 {
		t.Fatal("purged job still shown")
	}
	if n := len(sink.Messages()); n != 1 {
		t.Fatalf("deleted jobs were delivered: %d messages", n)
	}
}

// queue reshard refuses while the relay serves (its worker is attached);
// the broker tests cover the change itself.
func TestQueueReshardRefusedWhileServing(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	relay := testenv.StartRelay(t, smarthostConfig(t, sink), app.Options{})
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, errs, code := jr(t, relay, "queue", "reshard", "2")
		return code == 1 && strings.Contains(errs, "delivery workers are attached")
	}, "reshard did not refuse a serving relay")
	if _, errs, code := jr(t, relay, "queue", "reshard", "0"); code == 0 || !strings.Contains(errs, "from 1 to 32") {
		t.Fatalf("reshard 0: exit %d, %s", code, errs)
	}
	if st := relay.State(); !st.Empty() {
		t.Fatalf("queue state %+v", st)
	}
	if out := mustJR(t, relay, "queue", "list"); !strings.Contains(out, "queue is empty") {
		t.Fatalf("queue list after a refused reshard:\n%s", out)
	}
}

// purge by age, and retention: expired dead letters and their bodies go
// away, and the body store returns to its baseline.
func TestDeadLetterPurgeAndRetention(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	sink.OnRcpt(func(string) *smtp.SMTPError { return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "no") })
	cfg := smarthostConfig(t, sink)
	relay := testenv.StartRelay(t, cfg, app.Options{})
	base := relay.State().BodyBytes
	send := func(n int) {
		for i := 0; i < n; i++ {
			if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "", To: []string{"x@example.test"}, Data: testenv.RFC5322("p", testenv.Body(600<<10))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(2)
	testenv.Eventually(t, 30*time.Second, func() bool { return len(deadLetters(t, relay)) == 2 }, "not dead-lettered")
	if relay.State().BodyBytes < base+1<<20 {
		t.Fatal("bodies not held by the dead letters")
	}
	if out, _, _ := jr(t, relay, "deadletter", "purge", "--older-than", "1h"); strings.Contains(out, "x") {
		t.Fatalf("unexpected output %q", out)
	}
	if n := len(deadLetters(t, relay)); n != 2 {
		t.Fatalf("--older-than 1h purged young dead letters: %d left", n)
	}
	_, errs, code := jr(t, relay, "deadletter", "purge", "--older-than", "0s", "--all")
	if code != 0 || !strings.Contains(errs, "2 dead letter(s) purged") {
		t.Fatalf("purge: %d %s", code, errs)
	}
	if st := relay.State(); st.DeadLetters != 0 || st.BodyBytes > base+4096 {
		t.Fatalf("after purge: %+v (baseline %d)", st, base)
	}

	// Retention: restart with a short one; the sweeper releases bodies.
	// Long enough that both new bodies are seen stored before the first
	// expires, also on a loaded machine under -race.
	relay.Stop()
	relay.Cfg.DeadLetter.Retention = config.Duration(5 * time.Second)
	relay.Cfg.DeadLetter.SweepInterval = config.Duration(200 * time.Millisecond)
	relay.Restart()
	send(2)
	testenv.Eventually(t, 30*time.Second, func() bool { return relay.State().BodyBytes > base+1<<20 }, "bodies not stored")
	var st broker.QueueState
	testenv.Eventually(t, 30*time.Second, func() bool {
		st = relay.State()
		return st.DeadLetters == 0 && st.BodyBytes <= base+4096
	}, "expired dead letters or their bodies remain: %+v", &st)
}
