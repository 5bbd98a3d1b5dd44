package fault

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// stack is a set of jetrelay processes sharing a sink.
type stack struct {
	t        *testing.T
	dir      string
	sink     *testenv.Sink
	brokers  []*node
	ingress  []*node
	workers  []*node
	common   string // YAML shared by every process
	cluster  bool
	brokerPW string
}

type node struct {
	name, cfg, addr string // addr: SMTP address (ingress) or client URL (broker)
	http            string // brokers: the /readyz address
	args            []string
	proc            *testenv.Proc
}

func newStack(t *testing.T, brokers int) *stack {
	if testing.Short() {
		t.Skip("multi-process fault test")
	}
	s := &stack{t: t, dir: t.TempDir(), sink: testenv.NewSink(t, testenv.SinkOptions{}), cluster: brokers > 1, brokerPW: "fault-test-password"}
	var urls, routes []string
	type ports struct{ client, route int }
	ps := make([]ports, brokers)
	for i := range ps {
		ps[i] = ports{testenv.FreePort(t), testenv.FreePort(t)}
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ps[i].client))
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ps[i].route))
	}
	replicas := 1
	if s.cluster {
		replicas = 3
	}
	s.common = fmt.Sprintf(`hostname: relay.test
http: {listen: "off"}
log: {level: info}
broker:
  url: [%s]
  user: relay
  password: %s
  replicas: %d
  ack_wait: 15s
  publish_timeout: 5s
delivery:
  smarthost: %q
  smarthost_tls: none
  concurrency: 8
  retry: {schedule: [1s], jitter: 0}
  destination_backoff: 0s
  shutdown_grace: 10s
ingress:
  shutdown_grace: 10s
`, strings.Join(urls, ", "), s.brokerPW, replicas, s.sink.Addr)
	for i := range ps {
		b := &node{name: fmt.Sprintf("broker-%d", i+1), addr: fmt.Sprintf("127.0.0.1:%d", ps[i].client), http: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}
		yaml := s.common + fmt.Sprintf("data_dir: %s\n", filepath.Join(s.dir, b.name))
		yaml = strings.Replace(yaml, `http: {listen: "off"}`, fmt.Sprintf("http: {listen: %q}", b.http), 1)
		yaml = strings.Replace(yaml, "broker:\n", fmt.Sprintf("broker:\n  listen: %s\n  server_name: n%d\n", b.addr, i+1), 1)
		if s.cluster {
			yaml = strings.Replace(yaml, "broker:\n", fmt.Sprintf("broker:\n  cluster:\n    name: fault\n    listen: 127.0.0.1:%d\n    routes: [%s]\n", ps[i].route, strings.Join(routes, ", ")), 1)
		}
		b.cfg = s.writeCfg(b.name, yaml)
		b.args = []string{"broker", "--config", b.cfg}
		s.brokers = append(s.brokers, b)
	}
	return s
}

func (s *stack) writeCfg(name, yaml string) string {
	p := filepath.Join(s.dir, name+".yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

func (s *stack) addIngress(n int) {
	for i := 0; i < n; i++ {
		in := &node{name: fmt.Sprintf("ingress-%d", len(s.ingress)+1), addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(s.t))}
		in.cfg = s.writeCfg(in.name, s.common+fmt.Sprintf("data_dir: %s\n", filepath.Join(s.dir, in.name)))
		in.args = []string{"ingress", "--config", in.cfg, "--listen", in.addr}
		s.ingress = append(s.ingress, in)
	}
}

func (s *stack) addWorkers(n int) {
	for i := 0; i < n; i++ {
		w := &node{name: fmt.Sprintf("delivery-%d", len(s.workers)+1)}
		w.cfg = s.writeCfg(w.name, s.common+fmt.Sprintf("data_dir: %s\n", filepath.Join(s.dir, w.name)))
		w.args = []string{"delivery", "--config", w.cfg}
		s.workers = append(s.workers, w)
	}
}

func (s *stack) start(n *node) {
	n.proc = testenv.StartProc(s.t, n.name, n.args...)
	if n.addr != "" {
		testenv.WaitListening(s.t, n.addr, 60*time.Second, n.proc)
	}
}

// waitReady waits until the node's /readyz says ready: for a broker node,
// until every replica on it has caught up, which a rolling restart must
// wait for before it stops the next node.
func (s *stack) waitReady(n *node) {
	s.t.Helper()
	testenv.Eventually(s.t, 2*time.Minute, func() bool {
		resp, err := http.Get("http://" + n.http + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, n.name+" never became ready")
}

func (s *stack) startAll() {
	for _, b := range s.brokers {
		n := b
		n.proc = testenv.StartProc(s.t, n.name, n.args...)
	}
	for _, b := range s.brokers {
		testenv.WaitListening(s.t, b.addr, 60*time.Second, b.proc)
	}
	for _, n := range append(append([]*node{}, s.ingress...), s.workers...) {
		s.start(n)
	}
}

func (s *stack) ingressAddrs() []string {
	var out []string
	for _, n := range s.ingress {
		out = append(out, n.addr)
	}
	return out
}

// check waits for every accepted message and asserts the promises.
func (s *stack) check(l *testenv.Load, maxDup int) testenv.Verdict {
	s.t.Helper()
	v := l.WaitDelivered(s.t, s.sink, 2*time.Minute)
	// nothing more is on its way: a sentinel sent last arrives after
	// every retry that was due before it
	s.t.Logf("result: %s", v.Summary())
	logDuplicates(s.t, s.sink, v)
	if len(v.Unexpected) > 0 {
		s.t.Errorf("delivered although the client was refused: %v", v.Unexpected)
	}
	if v.Duplicates > maxDup {
		s.t.Errorf("%d duplicates, more than the kill windows explain (%d)", v.Duplicates, maxDup)
	}
	if len(v.Corrupt) > 0 {
		s.t.Errorf("bodies changed on the way: %v", v.Corrupt)
	}
	if v.Accepted == 0 {
		s.t.Error("no message was accepted at all")
	}
	return v
}

// Kill a delivery worker again and again under load while two others run;
// every third message is deferred once, so retries are in flight across
// the kills too.
func TestFaultKillDeliveryWorker(t *testing.T) {
	s := newStack(t, 1)
	var mu sync.Mutex
	deferred := map[string]bool{}
	s.sink.OnData(func(m *testenv.Message) *smtp.SMTPError {
		id := testenv.LoadID(m)
		n, _ := strconv.Atoi(id)
		mu.Lock()
		defer mu.Unlock()
		if n%3 == 0 && !deferred[id] {
			deferred[id] = true
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again"}
		}
		return nil
	})
	s.addIngress(1)
	s.addWorkers(3)
	s.startAll()
	l := testenv.StartLoad(testenv.LoadOptions{Addrs: s.ingressAddrs(), N: 2000, Conc: 20})
	victim := s.workers[0]
	kills := 0
	for i := 0; i < 6; i++ {
		target := int64(300 * (i + 1))
		testenv.Eventually(t, 2*time.Minute, func() bool { return l.Accepted() >= target || !stillLoading(l) }, "load stalled")
		victim.proc.Kill()
		kills++
		s.start(victim)
	}
	l.Wait()
	// Each kill can duplicate at most the jobs the victim had in flight.
	v := s.check(l, kills*8)
	if v.Accepted != 2000 || len(v.Lost) != 0 {
		t.Fatalf("%s", v)
	}
}

// Kill an ingress repeatedly, mid-DATA and between DATA and the reply;
// clients retry on the other ingress.
func TestFaultKillIngress(t *testing.T) {
	s := newStack(t, 1)
	s.addIngress(2)
	s.addWorkers(1)
	s.startAll()
	// mixed sizes so that kills land inside DATA transfers too
	l := testenv.StartLoad(testenv.LoadOptions{Addrs: s.ingressAddrs(), N: 2000, Conc: 20,
		Size: func(i int) int { return []int{1 << 10, 64 << 10, 600 << 10}[i%3] }})
	for i := 0; i < 5; i++ {
		target := int64(300 * (i + 1))
		testenv.Eventually(t, 2*time.Minute, func() bool { return l.Accepted() >= target || !stillLoading(l) }, "load stalled")
		victim := s.ingress[i%2]
		victim.proc.Kill()
		s.start(victim)
	}
	l.Wait()
	v := s.check(l, 2000)
	if len(v.Lost) != 0 {
		t.Fatal(v)
	}
	// A duplicate here can only come from a client that lost its
	// connection after the dot and sent again.
	if v.Duplicates > v.Unknown {
		t.Errorf("%d duplicates but only %d messages in doubt at the client", v.Duplicates, v.Unknown)
	}
}

// SIGKILL each stage in turn while multi-megabyte bodies are on their way
// in (chunks already in the body store, the job not yet published) and out
// (the worker streaming chunks to the next hop): every accepted message
// arrives byte for byte, and only the kill windows explain a second copy.
func TestFaultKillMidBody(t *testing.T) {
	s := newStack(t, 1)
	s.addIngress(1)
	s.addWorkers(2)
	s.startAll()
	const n = 160
	l := testenv.StartLoad(testenv.LoadOptions{Addrs: s.ingressAddrs(), N: n, Conc: 12,
		Size: func(i int) int { return []int{3 << 20, 1 << 10, 700 << 10, 5<<20 + 17}[i%4] }})
	start := time.Now()
	victims := []*node{s.workers[0], s.ingress[0], s.workers[1], s.brokers[0], s.workers[0]}
	for i, victim := range victims {
		target := int64(25 * (i + 1))
		testenv.Eventually(t, 3*time.Minute, func() bool { return l.Accepted() >= target || !stillLoading(l) }, "load stalled")
		victim.proc.Kill()
		s.start(victim)
	}
	l.Wait()
	rate := float64(l.Accepted()) / time.Since(start).Seconds()
	v := s.check(l, 4*8+killWindows(2, rate))
	if v.Accepted != n || len(v.Lost) != 0 {
		t.Fatal(v)
	}
}

// SIGKILL one of three broker nodes under load, then restart it.
func TestFaultKillBrokerNode(t *testing.T) {
	s := newStack(t, 3)
	s.addIngress(1)
	s.addWorkers(2)
	s.startAll()
	l := testenv.StartLoad(testenv.LoadOptions{Addrs: s.ingressAddrs(), N: 2000, Conc: 20})
	testenv.Eventually(t, 2*time.Minute, func() bool { return l.Accepted() >= 500 }, "load stalled")
	victim := s.brokers[1]
	victim.proc.Kill()
	testenv.Eventually(t, 2*time.Minute, func() bool { return l.Accepted() >= 1200 || !stillLoading(l) }, "load stalled without the node")
	s.start(victim)
	l.Wait()
	v := s.check(l, 2*8+20)
	if v.Accepted != 2000 {
		t.Fatal(v)
	}
}

// SIGKILL everything at once under load, then restart everything.
func TestFaultKillEverything(t *testing.T) {
	s := newStack(t, 1)
	s.addIngress(1)
	s.addWorkers(2)
	s.startAll()
	l, rate := s.loadUntil(800)
	all := append(append(append([]*node{}, s.brokers...), s.ingress...), s.workers...)
	for _, n := range all {
		n.proc.Kill()
	}
	s.startAll()
	l.Wait()
	v := s.check(l, killWindows(2, rate))
	if v.Accepted != 2000 {
		t.Fatal(v)
	}
}

// loadUntil starts 2,000 messages over 20 sessions and returns once n of
// them were accepted, with the rate of acceptance so far.
func (s *stack) loadUntil(n int64) (*testenv.Load, float64) {
	s.t.Helper()
	l := testenv.StartLoad(testenv.LoadOptions{Addrs: s.ingressAddrs(), N: 2000, Conc: 20})
	start := time.Now()
	testenv.Eventually(s.t, 2*time.Minute, func() bool { return l.Accepted() >= n }, "load stalled")
	return l, float64(l.Accepted()) / time.Since(start).Seconds()
}

// killWindows is how many duplicates a SIGKILL of the single broker may
// explain: the jobs in flight at the workers (8 each), the clients that
// lost their connection after the dot (in doubt), and the acknowledgements
// of the last 100 ms, which a single broker persists with its consumer
// state at most every 100 ms (NATS's flush interval).
func killWindows(workers int, rate float64) int { return workers*8 + 20 + int(rate*0.15) }

// SIGKILL the only broker under load while the ingress and the worker keep
// running, then start it again: both reconnect, the worker asks the new
// server for jobs at once (the requests it had in flight died with the old
// one), and every message that got a 250 arrives.
func TestFaultKillBroker(t *testing.T) {
	s := newStack(t, 1)
	s.addIngress(1)
	s.addWorkers(1)
	s.startAll()
	l, rate := s.loadUntil(600)
	b := s.brokers[0]
	b.proc.Kill()
	s.start(b)
	restarted, before := time.Now(), len(s.sink.Messages())
	testenv.Eventually(t, time.Minute, func() bool { return len(s.sink.Messages()) > before+20 }, "no deliveries after the broker came back")
	// Under a second here; 15 s (the worker waiting out requests that
	// died with the old server) before the pullers learnt of reconnects.
	if d := time.Since(restarted); d > 10*time.Second {
		t.Errorf("deliveries resumed only %s after the broker restarted", d.Round(time.Millisecond))
	} else {
		t.Logf("deliveries resumed %s after the broker restarted", d.Round(time.Millisecond))
	}
	l.Wait()
	v := s.check(l, killWindows(1, rate))
	if v.Accepted != 2000 {
		t.Fatal(v)
	}
}

// A rolling restart with SIGTERM, one process at a time, under load:
// nothing lost, nothing duplicated.
func TestRollingRestart(t *testing.T) {
	s := newStack(t, 3)
	s.addIngress(2)
	s.addWorkers(2)
	s.startAll()
	l := testenv.StartLoad(testenv.LoadOptions{Addrs: s.ingressAddrs(), N: 2000, Conc: 10})
	all := append(append(append([]*node{}, s.brokers...), s.ingress...), s.workers...)
	for i, n := range all {
		target := int64(150 * (i + 1))
		testenv.Eventually(t, 2*time.Minute, func() bool { return l.Accepted() >= target || !stillLoading(l) }, "load stalled")
		if err := n.proc.Stop(60 * time.Second); err != nil {
			t.Errorf("%s exited with %v after SIGTERM", n.name, err)
		}
		s.start(n)
		if n.http != "" {
			s.waitReady(n)
		}
	}
	l.Wait()
	// A publish can stay in doubt past broker.publish_timeout while a
	// stream leader moves: the client gets 451 and sends again, and the
	// ingress logs that it could not confirm the first copy is gone. Those
	// logged cases are the only duplicates a rolling restart may cause.
	inDoubt := 0
	for _, n := range s.ingress {
		inDoubt += strings.Count(n.proc.Output(), "could not confirm that the failed publish left nothing behind")
	}
	v := s.check(l, inDoubt)
	if v.Accepted != 2000 || v.Unknown != 0 {
		t.Fatalf("rolling restart: %s", v)
	}
	// The cluster still knows its queue layout: a process configured with
	// another shard count refuses to start.
	bad := testenv.StartProc(t, "ingress-wrong-shards", "ingress", "--config", s.ingress[0].cfg,
		"--listen", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "--set", "broker.queue_shards=2")
	testenv.Eventually(t, time.Minute, func() bool { return !bad.Running() }, "an ingress with the wrong queue_shards kept running")
	if out := bad.Output(); !strings.Contains(out, "does not match the queue on the broker") {
		t.Fatalf("wrong queue_shards: %s", out)
	}
}

// logDuplicates names, for each duplicated message, its queue ID and when
// each copy arrived, so the stage logs explain it: a copy ack_wait after
// the first points at a lost ack, one at once at a consumer handing the
// job out twice.
func logDuplicates(t *testing.T, sink *testenv.Sink, v testenv.Verdict) {
	dup := map[string]bool{}
	for _, tok := range v.DupTokens {
		dup[tok] = true
	}
	for _, m := range sink.Messages() {
		if tok := testenv.LoadID(m); dup[tok] {
			t.Logf("duplicate %s: msg_id %s arrived %s on connection %d", tok, m.QueueID(), m.At.Format("15:04:05.000"), m.Conn)
		}
	}
}

func stillLoading(l *testenv.Load) bool { return !l.Done() }

// /readyz turns false within seconds of the broker dying and true again
// after it is back; /healthz stays true (the process is alive).
func TestReadyzFollowsBroker(t *testing.T) {
	s := newStack(t, 1)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	s.addWorkers(1)
	w := s.workers[0]
	w.args = append(w.args, "--set", "http.listen="+httpAddr)
	s.startAll()
	get := func(path string) int {
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return get("/readyz") == 200 }, "never ready")
	b := s.brokers[0]
	b.proc.Kill()
	start := time.Now()
	testenv.Eventually(t, 15*time.Second, func() bool { return get("/readyz") == 503 }, "/readyz still 200 with the broker dead")
	t.Logf("/readyz turned false %s after the broker died", time.Since(start).Round(time.Millisecond))
	if get("/healthz") != 200 {
		t.Fatal("/healthz failed while the process is alive")
	}
	s.start(b)
	testenv.Eventually(t, 30*time.Second, func() bool { return get("/readyz") == 200 }, "/readyz not ready after the broker came back")
	if code := get("/metrics"); code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
}
