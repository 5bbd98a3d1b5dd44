package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/cli"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// A crash costs seconds: messages whose DATA a stalled next hop is
// sitting on when `jetrelay serve` is killed (SIGKILL) go out again soon
// after it is back, with the default broker.ack_wait, and each arrives
// exactly once.
func TestCrashInFlightResumesWithinSeconds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	const n = 3
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	var stalled atomic.Bool
	stalled.Store(true)
	var inData atomic.Int32
	release := make(chan struct{})
	sink.OnData(func(*testenv.Message) *smtp.SMTPError {
		if stalled.Load() {
			inData.Add(1)
			<-release // the next hop sits on the message: no reply
			return smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "stalled")
		}
		return nil
	})
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	dataDir := t.TempDir()
	cfg := testenv.WriteConfig(t, fmt.Sprintf(`
hostname: relay.test
data_dir: %s
ingress: {listen: [%q]}
delivery:
  smarthost: %q
  smarthost_tls: none
  destination_backoff: 0s
http: {listen: "off"}
`, dataDir, smtpAddr, sink.Addr))
	serve := testenv.StartProc(t, "serve", "serve", "--config", cfg)
	testenv.WaitListening(t, smtpAddr, 60*time.Second, serve)
	var ids []string
	for i := 0; i < n; i++ {
		res, err := testenv.Send(smtpAddr, testenv.Mail{From: "app@client.test", To: []string{fmt.Sprintf("ops%d@example.test", i)}, Data: testenv.RFC5322("alert", testenv.Body(2000))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.QueueID)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return inData.Load() == n }, "the messages did not all reach the stalled next hop")

	serve.Kill()
	stalled.Store(false)
	close(release) // the stalled sessions end, their connections already gone
	serve = testenv.StartProc(t, "serve", "serve", "--config", cfg)
	testenv.WaitListening(t, smtpAddr, 60*time.Second, serve)
	back := time.Now()
	msgs := sink.WaitFor(t, n, 60*time.Second)
	first := msgs[0].At
	for _, m := range msgs {
		if m.At.Before(first) {
			first = m.At
		}
	}
	t.Logf("after the restart, the first message arrived in %s, the last in %s", first.Sub(back).Round(time.Millisecond), msgs[len(msgs)-1].At.Sub(back).Round(time.Millisecond))
	if d := first.Sub(back); d > 15*time.Second {
		t.Fatalf("the first message in flight at the crash arrived %s after the restart, want within 15 s", d)
	}
	// Exactly once: the queue drains, and nothing more arrives.
	relayCfg := testenv.WriteConfig(t, fmt.Sprintf("data_dir: %s\n", dataDir))
	testenv.Eventually(t, 60*time.Second, func() bool {
		var out, errb bytes.Buffer
		return cli.Main([]string{"queue", "list", "--config", relayCfg}, strings.NewReader(""), &out, &errb) == 0 && strings.Contains(out.String(), "queue is empty")
	}, "the queue did not drain")
	byID := sink.ByQueueID()
	for _, id := range ids {
		if got := len(byID[id]); got != 1 {
			t.Errorf("%s arrived %d times", id, got)
		}
	}
	if got := len(sink.Messages()); got != n {
		t.Fatalf("%d messages arrived, want %d", got, n)
	}
}

// A delivery that takes longer than AckWait (a slow next hop) is
// delivered once: the worker reports progress while it waits, so the
// broker never hands the job to another worker loop meanwhile.
func TestSlowDeliveryLongerThanAckWait(t *testing.T) {
	const ackWait = 2 * time.Second
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	var attempts atomic.Int32
	sink.OnData(func(*testenv.Message) *smtp.SMTPError {
		attempts.Add(1)
		<-time.After(3 * ackWait) // the slow next hop takes its time with the final reply
		return nil
	})
	cfg := smarthostConfig(t, sink)
	cfg.Broker.AckWait = config.Duration(ackWait)
	cfg.Broker.QueueShards = 1
	cfg.Delivery.Concurrency = 4 // idle loops on the job's shard that would take it if it were handed out again
	var logs syncBuffer
	relay := testenv.StartRelay(t, cfg, app.Options{}, testenv.WithLogs(&logs))
	big := testenv.RFC5322("large", testenv.Body(2<<20)) // streamed from the body store
	res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"ops@example.test"}, Data: big})
	if err != nil {
		t.Fatal(err)
	}
	sink.WaitFor(t, 1, 60*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	if got := len(sink.ByQueueID()[res.QueueID]); got != 1 || attempts.Load() != 1 {
		t.Fatalf("delivered %d times, %d attempts reached the next hop", got, attempts.Load())
	}
	if n := len(logLines(t, logs.String(), res.QueueID, "delivery attempt")); n != 1 {
		t.Fatalf("%d delivery attempts logged for %s, want 1", n, res.QueueID)
	}
}

// One ID for a message's whole life: a message to three recipients meets
// a 4xx for all, a 4xx for some, a permanent failure for one (a dead
// letter) and a replay. At every step the queue ID from the 250 reply
// finds it in queue show, deadletter show, their --json, the lists and
// every log line; an ID of an earlier attempt's job still leads to it.
func TestOneIDForAMessagesLife(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{})
	var mu sync.Mutex
	seen := map[string]int{}
	script := map[string][]int{ // per recipient, the RCPT reply of each attempt
		"a@one.test": {451, 250},
		"b@two.test": {451, 451, 550, 250},
		"c@two.test": {451, 451, 250},
	}
	sink.OnRcpt(func(r string) *smtp.SMTPError {
		mu.Lock()
		defer mu.Unlock()
		i := seen[r]
		seen[r]++
		if len(script[r]) == 0 {
			return nil // the bounce to the sender
		}
		switch code := script[r][min(i, len(script[r])-1)]; code {
		case 451:
			return smtpErr(451, smtp.EnhancedCode{4, 3, 2}, "try later")
		case 550:
			return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
		}
		return nil
	})
	cfg := smarthostConfig(t, sink)
	cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Hour)} // each next attempt is asked for
	var logs syncBuffer
	relay := testenv.StartRelay(t, cfg, app.Options{}, testenv.WithLogs(&logs))
	res, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"a@one.test", "b@two.test", "c@two.test"},
		Data: testenv.RFC5322("one id", testenv.Body(500))})
	if err != nil {
		t.Fatal(err)
	}
	qid := res.QueueID
	showJobs := func() []cli.JobJSON {
		return jsonLines[cli.JobJSON](t, mustJR(t, relay, "queue", "show", "--json", qid), "job")
	}
	states := func(show string) map[string]string {
		out := map[string]string{}
		for _, l := range strings.Split(show, "\n") {
			f := strings.Fields(l)
			if len(f) > 1 && strings.HasPrefix(f[0], "<") {
				out[strings.Trim(f[0], "<>")] = f[1]
			}
		}
		return out
	}
	checkShow := func(cmd string, want map[string]string) string {
		t.Helper()
		out := mustJR(t, relay, cmd, "show", qid)
		if !strings.Contains(out, "Queue ID:    "+qid) {
			t.Fatalf("%s show:\n%s", cmd, out)
		}
		if got := states(out); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s show: recipients %v, want %v\n%s", cmd, got, want, out)
		}
		return out
	}

	// Attempt 1: 4xx for everyone.
	var jobs []cli.JobJSON
	testenv.Eventually(t, 30*time.Second, func() bool { jobs = showJobs(); return len(jobs) == 1 && jobs[0].Attempt == 2 }, "first attempt not recorded")
	if jobs[0].QueueID != qid || len(jobs[0].Rcpts) != 3 || !strings.Contains(jobs[0].Rcpts[0].Reply, "451 4.3.2") {
		t.Fatalf("after attempt 1: %+v", jobs[0])
	}
	earlier := qid + "-" + jobs[0].Part // an ID of this attempt's job, gone after the next
	checkShow("queue", map[string]string{"a@one.test": "scheduled,", "b@two.test": "scheduled,", "c@two.test": "scheduled,"})

	// Attempt 2: a delivered, b and c 4xx.
	mustJR(t, relay, "queue", "retry", qid)
	sink.WaitFor(t, 1, 30*time.Second)
	testenv.Eventually(t, 30*time.Second, func() bool { jobs = showJobs(); return len(jobs) == 1 && jobs[0].Attempt == 3 }, "second attempt not recorded")
	if len(jobs[0].Rcpts) != 2 || len(jobs[0].Done) != 1 || jobs[0].Done[0].Addr != "a@one.test" || len(jobs[0].History) != 2 {
		t.Fatalf("after attempt 2: %+v", jobs[0])
	}
	want := map[string]string{"a@one.test": "delivered", "b@two.test": "scheduled,", "c@two.test": "scheduled,"}
	checkShow("queue", want)
	if out := mustJR(t, relay, "queue", "show", earlier); !strings.Contains(out, "Queue ID:    "+qid) || fmt.Sprint(states(out)) != fmt.Sprint(want) {
		t.Fatalf("queue show of an earlier job's ID did not lead to the message:\n%s", out)
	}
	if list := jsonLines[cli.JobJSON](t, mustJR(t, relay, "queue", "list", "--json"), "job"); len(list) != 1 || list[0].QueueID != qid {
		t.Fatalf("queue list: %+v", list)
	}

	// Attempt 3: c delivered, b refused for good: a dead letter.
	mustJR(t, relay, "queue", "retry", earlier) // the old ID still works
	testenv.Eventually(t, 30*time.Second, func() bool { return len(deadLetters(t, relay)) == 1 }, "no dead letter")
	relay.WaitQueueEmpty(30 * time.Second)
	want = map[string]string{"b@two.test": "dead-lettered", "a@one.test": "delivered", "c@two.test": "delivered"}
	show := checkShow("deadletter", want)
	if !strings.Contains(show, "(rejected)") || !strings.Contains(show, "550 5.1.1 no such user") {
		t.Fatalf("deadletter show:\n%s", show)
	}
	checkShow("queue", want) // the same view from the queue side
	dls := jsonLines[cli.DeadLetterJSON](t, mustJR(t, relay, "deadletter", "show", "--json", qid), "deadletter")
	if len(dls) != 1 || dls[0].QueueID != qid || dls[0].Rcpts[0].Addr != "b@two.test" || len(dls[0].Done) != 2 || len(dls[0].History) != 3 {
		t.Fatalf("deadletter show --json: %+v", dls)
	}
	if list := jsonLines[cli.DeadLetterJSON](t, mustJR(t, relay, "deadletter", "list", "--json", earlier), "deadletter"); len(list) != 0 {
		t.Fatalf("deadletter list of a job ID names that job's dead letters only: %+v", list)
	}
	if list := jsonLines[cli.DeadLetterJSON](t, mustJR(t, relay, "deadletter", "list", "--json", qid), "deadletter"); len(list) != 1 || list[0].QueueID != qid {
		t.Fatalf("deadletter list by queue ID: %+v", list)
	}

	// The replay keeps the queue ID.
	if out := mustJR(t, relay, "deadletter", "replay", qid); !strings.Contains(out, "replayed "+qid) {
		t.Fatalf("replay:\n%s", out)
	}
	sink.WaitRecipients(t, 4, 30*time.Second) // a, c, the bounce for b, and b
	relay.WaitQueueEmpty(30 * time.Second)
	var got []string
	for _, m := range sink.ByQueueID()[qid] {
		if m.From != "" { // not the bounce, which quotes the message
			got = append(got, m.Rcpts...)
		}
	}
	if fmt.Sprint(got) != "[a@one.test c@two.test b@two.test]" || sink.Recipients() != 4 {
		t.Fatalf("at the next hop under %s: %v (%d recipients in all)", qid, got, sink.Recipients())
	}
	if _, errs, code := jr(t, relay, "queue", "show", qid); code != 1 || !strings.Contains(errs, qid) {
		t.Fatalf("queue show of a finished message: exit %d, %s", code, errs)
	}

	// Every log line about the message carries its queue ID, and no other.
	lines := logLines(t, logs.String(), qid, "")
	if len(lines) == 0 {
		t.Fatal("no log line mentions the message")
	}
	for _, l := range lines {
		if l["msg_id"] != qid {
			t.Errorf("log line without msg_id %s: %v", qid, l)
		}
		if _, ok := l["job_id"]; ok {
			t.Errorf("log line with a second ID: %v", l)
		}
	}
	if n := len(logLines(t, logs.String(), qid, "delivery attempt")); n != 4 { // attempts 1, 2, 3 and the replay
		t.Errorf("%d delivery attempts logged, want 4", n)
	}
	for _, msg := range []string{"mail", "queued", "dead-lettered"} {
		if len(logLines(t, logs.String(), qid, msg)) == 0 {
			t.Errorf("no %q log line with msg_id %s", msg, qid)
		}
	}
}

// logLines returns the JSON log lines that mention qid anywhere (with
// message msg, when given).
func logLines(t *testing.T, logs, qid, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), qid) {
			continue
		}
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line is not JSON: %s", sc.Text())
		}
		if msg == "" || l["message"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// syncBuffer is a bytes.Buffer for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
