package broker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

func startTest(t testing.TB, dir string) *Embedded {
	t.Helper()
	e, err := StartEmbedded(EmbeddedOptions{DataDir: dir, Listen: "127.0.0.1:0", SyncAlways: true}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

func connectTest(t testing.TB, e *Embedded) *Client {
	t.Helper()
	cr := e.Credentials()
	c, err := Connect(context.Background(), ConnectOptions{Name: "test", URLs: []string{cr.URL}, User: cr.User, Password: cr.Password}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestEmbeddedRequiresCredentials(t *testing.T) {
	dir := t.TempDir()
	var logbuf lockedBuffer
	e, err := StartEmbedded(EmbeddedOptions{DataDir: dir, Listen: "127.0.0.1:0", SyncAlways: true}, zerolog.New(&logbuf))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	cr := e.Credentials()
	if cr.User == "" || len(cr.Password) < 24 || !strings.HasPrefix(cr.URL, "nats://127.0.0.1:") {
		t.Fatalf("credentials %+v", cr)
	}
	st, err := os.Stat(CredentialsFile(dir))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", err, st)
	}
	if nc, err := nats.Connect(cr.URL, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected without credentials")
	}
	if nc, err := nats.Connect(cr.URL, nats.UserInfo(cr.User, "wrong"), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected with a wrong password")
	}
	nc, err := nats.Connect(cr.URL, nats.UserInfo(cr.User, cr.Password))
	if err != nil {
		t.Fatalf("right credentials refused: %v", err)
	}
	nc.Close()
	// The server keeps a hash, not the password.
	if strings.Contains(logbuf.String(), "Plaintext passwords") {
		t.Fatalf("the server holds a plaintext password:\n%s", logbuf.String())
	}
	read, err := ReadCredentials(dir)
	if err != nil || read != cr {
		t.Fatalf("ReadCredentials = %+v, %v", read, err)
	}
	// A restart keeps the same credentials.
	e.Shutdown()
	e2 := startTest(t, dir)
	if e2.Credentials().Password != cr.Password {
		t.Fatal("credentials changed across restarts")
	}
	if _, err := ReadCredentials(t.TempDir()); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("empty data dir: %v", err)
	}
}

// A configured password too long for bcrypt still works (kept as it is).
func TestEmbeddedLongPassword(t *testing.T) {
	long := strings.Repeat("p", 100)
	e, err := StartEmbedded(EmbeddedOptions{DataDir: t.TempDir(), Listen: "127.0.0.1:0", User: "u", Password: long}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := nats.Connect(e.Credentials().URL, nats.UserInfo("u", long))
	if err != nil {
		t.Fatalf("long password refused: %v", err)
	}
	nc.Close()
	if nc, err := nats.Connect(e.Credentials().URL, nats.UserInfo("u", long[:72]), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a prefix of the password was accepted")
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestProvisionIsIdempotentAndConcurrent(t *testing.T) {
	e := startTest(t, t.TempDir())
	s := Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, QueueShards: 4}
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := connectTest(t, e)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errs <- c.Provision(ctx, s)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent provisioning: %v", err)
		}
	}
	c := connectTest(t, e)
	if err := c.Provision(context.Background(), s); err != nil {
		t.Fatalf("second provisioning: %v", err)
	}
	// A changed setting is applied on the next start.
	s.DeadLetterRetention = 48 * time.Hour
	if err := c.Provision(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	info, err := c.dlq.Info(context.Background())
	if err != nil || info.Config.MaxAge != 48*time.Hour {
		t.Fatalf("retention not updated: %v %v", info.Config.MaxAge, err)
	}
	if c.InlineLimit() <= 0 || c.InlineLimit() > 1<<20 {
		t.Fatalf("inline limit %d", c.InlineLimit())
	}
	// Bind (the CLI) attaches without creating.
	c2 := connectTest(t, e)
	if err := c2.Bind(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	fresh := startTest(t, t.TempDir())
	c3 := connectTest(t, fresh)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c3.Bind(ctx, s); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Bind on an empty broker: %v", err)
	}
}

func provisioned(t testing.TB) *Client {
	t.Helper()
	e := startTest(t, t.TempDir())
	c := connectTest(t, e)
	if err := c.Provision(context.Background(), Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, QueueShards: 3}); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPublishIsIdempotentAndRetractable(t *testing.T) {
	c := provisioned(t)
	ctx := context.Background()
	j := &contracts.Job{QueueID: contracts.NewQueueID(time.Now()), Rcpts: []contracts.Recipient{{Addr: "a@example.com"}}, Attempt: 1}
	for i := 0; i < 3; i++ {
		if err := c.publishJob(ctx, j, []byte("body\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	if n := storedJobs(t, c); n != 1 {
		t.Fatalf("three publishes of one job stored %d messages", n)
	}
	queueSettles(t, c, "the job is not ready", func(st QueueState) bool { return st.Ready == 1 })
	if err := c.retract(ctx, j); err != nil {
		t.Fatal(err)
	}
	if n := storedJobs(t, c); n != 0 {
		t.Fatalf("retracted job still stored (%d messages)", n)
	}
	queueSettles(t, c, "retracted job still counted", QueueState.Empty)
}

func TestBodyRefs(t *testing.T) {
	c := provisioned(t)
	ctx := context.Background()
	body := bytes.Repeat([]byte("0123456789abcdef"), 100000)
	size, err := c.PutBody(ctx, "Q1", bytes.NewReader(body))
	if err != nil || size != int64(len(body)) {
		t.Fatalf("PutBody: %d %v", size, err)
	}
	if err := c.holdBody(ctx, "Q1", "Q1"); err != nil {
		t.Fatal(err)
	}
	left, held, err := c.updateBodyRefs(ctx, "Q1", []string{"Q1"}, []string{"Q1-a", "Q1-b"})
	if err != nil || left != 2 || !held {
		t.Fatalf("split: %d %v %v", left, held, err)
	}
	// Concurrent releases: exactly one sees zero holders.
	var wg sync.WaitGroup
	zero := make(chan string, 2)
	for _, h := range []string{"Q1-a", "Q1-b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			left, _, err := c.updateBodyRefs(ctx, "Q1", []string{h}, nil)
			if err != nil {
				t.Error(err)
			}
			if left == 0 {
				zero <- h
			}
		}()
	}
	wg.Wait()
	close(zero)
	if n := len(zero); n != 1 {
		t.Fatalf("%d holders saw the last release", n)
	}
	rc, err := c.OpenBody(ctx, "Q1")
	if err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(iotest.OneByteReader(rc))
	rc.Close()
	if err != nil || !bytes.Equal(back, body) {
		t.Fatalf("body read back: %d bytes, %v", len(back), err)
	}
	// The bucket is laid out as a JetStream object store: nats.go lists
	// and describes its objects (it refuses to Get them: they carry no
	// digest to check).
	obs, _ := c.js.ObjectStore(ctx, contracts.BucketBodies)
	if info, err := obs.GetInfo(ctx, "Q1"); err != nil || info.Size != uint64(len(body)) || info.Chunks != 2 {
		t.Fatalf("object store GetInfo: %+v, %v", info, err)
	}
	if err := c.releaseBody(ctx, "Q1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenBody(ctx, "Q1"); !errors.Is(err, ErrBodyNotFound) {
		t.Fatalf("released body still there: %v", err)
	}
	if h, err := c.bodyHolders(ctx, "Q1"); err != nil || len(h) != 0 {
		t.Fatalf("holders after release: %v %v", h, err)
	}
	// A repeated removal after release is harmless and says "not held".
	left, held, err = c.updateBodyRefs(ctx, "Q1", []string{"Q1-a"}, nil)
	if err != nil || left != 0 || held {
		t.Fatalf("removal after release: %d %v %v", left, held, err)
	}
}

// TestBodyStreamBlocks: the body stream is cut into 4 MiB blocks, not the
// server's default 8 MiB, and a bucket made by nats.go's CreateObjectStore
// (what earlier versions did) takes the new configuration on Provision.
func TestBodyStreamBlocks(t *testing.T) {
	dir := t.TempDir()
	e := startTest(t, dir)
	c := connectTest(t, e)
	ctx := context.Background()
	if _, err := c.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: contracts.BucketBodies, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	s := Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, QueueShards: 1}
	if err := c.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	st, err := c.js.Stream(ctx, bodyStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxMsgsPerSubject; got != s.BodyStreamConfig().MaxMsgsPerSubject {
		t.Fatalf("existing bucket not updated: max_msgs_per_subject %d", got)
	}
	// The block size is chosen when the server loads the stream: restart.
	c.Close()
	e.Shutdown()
	e = startTest(t, dir)
	c = connectTest(t, e)
	if err := c.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), 10<<16) // 10 MiB
	if _, err := c.PutBody(ctx, "big", bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	blocks, err := filepath.Glob(filepath.Join(dir, "nats", "jetstream", "*", "streams", bodyStream, "msgs", "*.blk"))
	if err != nil || len(blocks) == 0 {
		t.Fatalf("no block files found: %v", err)
	}
	var largest int64
	for _, b := range blocks {
		if fi, err := os.Stat(b); err == nil && fi.Size() > largest {
			largest = fi.Size()
		}
	}
	if largest > 4<<20 || len(blocks) < 3 {
		t.Fatalf("%d blocks, largest %d bytes: want blocks of at most 4 MiB", len(blocks), largest)
	}
	rc, err := c.OpenBody(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(back, body) {
		t.Fatalf("body read back: %d bytes, %v", len(back), err)
	}
}

func TestScanQueueAndDeadLetters(t *testing.T) {
	c := provisioned(t)
	ctx := context.Background()
	var ids []string
	for i := 0; i < 600; i++ {
		j := &contracts.Job{QueueID: contracts.NewQueueID(time.Now()), Rcpts: []contracts.Recipient{{Addr: "a@example.com"}}, Attempt: 1}
		var err error
		if i%3 == 0 {
			j.Attempt = 2
			err = c.schedule(ctx, j, []byte("b\r\n"), time.Now().Add(time.Hour))
		} else {
			err = c.publishJob(ctx, j, []byte("b\r\n"))
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.QueueID)
	}
	seen := map[string]bool{}
	sched := 0
	var last uint64
	shards := map[int]int{}
	err := c.ScanQueue(ctx, 0, func(q *QueuedJob) bool {
		if q.Err != nil || q.Cursor <= last {
			t.Fatalf("scan: %v, cursor %d after %d", q.Err, q.Cursor, last)
		}
		last = q.Cursor
		shards[q.Shard]++
		seen[q.Job.QueueID] = true
		if q.Scheduled {
			sched++
			if time.Until(q.NextAt) < 50*time.Minute {
				t.Fatalf("scheduled job due at %v", q.NextAt)
			}
		}
		return true
	})
	if err != nil || len(seen) != 600 || sched != 200 || len(shards) != 3 {
		t.Fatalf("scan: %v, %d jobs, %d scheduled, shards %v", err, len(seen), sched, shards)
	}
	queueSettles(t, c, "ready and scheduled counts", func(st QueueState) bool { return st.Ready == 400 && st.Scheduled == 200 })
	// Stopping early and resuming from a cursor (paging), across shards.
	for _, stop := range []int{10, shards[0] + 5} {
		n := 0
		var cursor uint64
		_ = c.ScanQueue(ctx, 0, func(q *QueuedJob) bool { n++; cursor = q.Cursor; return n < stop })
		m := 0
		_ = c.ScanQueue(ctx, cursor, func(q *QueuedJob) bool { m++; return true })
		if n != stop || m != 600-stop {
			t.Fatalf("paging after %d: %d then %d", stop, n, m)
		}
	}
	d := &contracts.DeadLetter{ID: "X-d1", Reason: contracts.ReasonRejected, Job: contracts.Job{QueueID: "X", Rcpts: []contracts.Recipient{{Addr: "a@b"}}}}
	if err := c.publishDeadLetter(ctx, d, []byte("hello\r\n")); err != nil {
		t.Fatal(err)
	}
	var dls []*StoredDeadLetter
	if err := c.ScanDeadLetters(ctx, 0, func(s *StoredDeadLetter) bool { dls = append(dls, s); return true }); err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].DL.ID != "X-d1" || string(dls[0].Inline) != "hello\r\n" {
		t.Fatalf("dead letters: %+v", dls)
	}
}

// A publish whose acknowledgement is lost (the reply dropped on its way
// back, as when the node the client talks to goes away) is sent again
// with the same ID: the caller gets success, and the stream holds one
// copy, not an error for a message that was in fact queued.
func TestPublishSurvivesALostAcknowledgement(t *testing.T) {
	e := startTest(t, t.TempDir())
	cr := e.Credentials()
	proxy := dropFirstReply(t, strings.TrimPrefix(cr.URL, "nats://"), []byte(`"stream":"MAILQ_`))
	c, err := Connect(context.Background(), ConnectOptions{Name: "test", URLs: []string{"nats://" + proxy.addr}, User: cr.User, Password: cr.Password}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx := context.Background()
	if err := c.Provision(ctx, Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, PublishTimeout: 3 * time.Second, QueueShards: 1}); err != nil {
		t.Fatal(err)
	}
	j := &contracts.Job{QueueID: contracts.NewQueueID(time.Now()), Rcpts: []contracts.Recipient{{Addr: "a@example.com"}}, Attempt: 1}
	if err := c.publishJob(ctx, j, []byte("body\r\n")); err != nil {
		t.Fatalf("publish with its first acknowledgement lost: %v", err)
	}
	if proxy.dropped.Load() != 1 {
		t.Fatalf("the proxy dropped %d replies, want 1", proxy.dropped.Load())
	}
	if n := storedJobs(t, c); n != 1 {
		t.Fatalf("queue after the retried publish: %d messages stored", n)
	}
}

type replyDropper struct {
	addr    string
	dropped atomic.Int32
}

// dropFirstReply is a TCP proxy to a NATS server that passes everything
// but the first message from the server whose payload contains match.
func dropFirstReply(t *testing.T, server string, match []byte) *replyDropper {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := &replyDropper{addr: l.Addr().String()}
	go func() {
		for {
			cc, err := l.Accept()
			if err != nil {
				return
			}
			sc, err := net.Dial("tcp", server)
			if err != nil {
				cc.Close()
				continue
			}
			t.Cleanup(func() { cc.Close(); sc.Close() })
			go func() { _, _ = io.Copy(sc, cc); sc.Close() }()
			go func() {
				defer cc.Close()
				r := bufio.NewReader(sc)
				for {
					line, err := r.ReadBytes('\n')
					if err != nil {
						return
					}
					var payload []byte
					if bytes.HasPrefix(line, []byte("MSG ")) || bytes.HasPrefix(line, []byte("HMSG ")) {
						f := bytes.Fields(line)
						n, err := strconv.Atoi(string(f[len(f)-1]))
						if err != nil {
							return
						}
						payload = make([]byte, n+2)
						if _, err := io.ReadFull(r, payload); err != nil {
							return
						}
						if bytes.Contains(payload, match) && p.dropped.CompareAndSwap(0, 1) {
							continue
						}
					}
					if _, err := cc.Write(append(line, payload...)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// A process whose broker.queue_shards differs from the queue's layout on
// the broker must not start (it would publish to streams no worker reads,
// or never read some that hold mail), empty queue or not. Only Reshard
// changes the layout, and only with the queue empty and no worker
// attached. The CLI follows whatever is on the broker.
func TestQueueShardsMustMatchTheBroker(t *testing.T) {
	e := startTest(t, t.TempDir())
	ctx := context.Background()
	set := func(n int) Settings {
		return Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, QueueShards: n}
	}
	c := connectTest(t, e)
	if err := c.Provision(ctx, set(3)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2, 4} {
		err := connectTest(t, e).Provision(ctx, set(n))
		if !errors.Is(err, ErrShardMismatch) || !strings.Contains(err.Error(), "has 3 shards") {
			t.Fatalf("queue_shards %d against an empty queue of 3 shards: %v", n, err)
		}
	}
	j := &contracts.Job{QueueID: contracts.NewQueueID(time.Now()), Rcpts: []contracts.Recipient{{Addr: "a@example.com"}}, Attempt: 1}
	if err := c.publishJob(ctx, j, []byte("body\r\n")); err != nil {
		t.Fatal(err)
	}
	cli := connectTest(t, e)
	if err := cli.Bind(ctx, set(1)); err != nil || cli.Shards() != 3 {
		t.Fatalf("Bind: %v, %d shards", err, cli.Shards())
	}
	queueSettles(t, cli, "the CLI does not see the job", func(st QueueState) bool { return st.Ready == 1 })
	if err := connectTest(t, e).Reshard(ctx, set(2)); !errors.Is(err, ErrQueueBusy) || !strings.Contains(err.Error(), "1 jobs") {
		t.Fatalf("reshard with a job queued: %v", err)
	}
	if err := c.retract(ctx, j); err != nil {
		t.Fatal(err)
	}
	// a worker attached: its waiting fetch shows on the broker
	wctx, stopWorker := context.WithCancel(ctx)
	worker := connectTest(t, e)
	if err := worker.Provision(ctx, set(3)); err != nil {
		t.Fatal(err)
	}
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		_ = worker.ConsumeJobs(wctx, 3, func(_ context.Context, l *Lease) { _ = l.Return(0) })
	}()
	// Wait until the worker's fetches wait on the broker: a Reshard before
	// that would find the queue idle and go ahead.
	eventually(t, 10*time.Second, func() bool {
		for shard := range 3 {
			if _, waiting, err := worker.shardUse(ctx, shard); err != nil || waiting == 0 {
				return false
			}
		}
		return true
	}, "the worker's fetches do not show on the broker")
	if err := connectTest(t, e).Reshard(ctx, set(2)); !errors.Is(err, ErrQueueBusy) || !strings.Contains(err.Error(), "workers are attached") {
		t.Fatalf("Reshard did not notice the attached worker: %v", err)
	}
	stopWorker()
	<-workerDone
	worker.Close() // its fetches end with its connection
	c2 := connectTest(t, e)
	eventually(t, 10*time.Second, func() bool { return c2.Reshard(ctx, set(2)) == nil }, "Reshard of an empty, idle queue failed")
	if n, err := c2.shardsOnBroker(ctx); err != nil || n != 2 {
		t.Fatalf("shards on the broker after the change: %d %v", n, err)
	}
	if err := connectTest(t, e).Provision(ctx, set(2)); err != nil {
		t.Fatalf("a process with the new count: %v", err)
	}
	if err := connectTest(t, e).Provision(ctx, set(3)); !errors.Is(err, ErrShardMismatch) {
		t.Fatalf("a process with the old count: %v", err)
	}
	// growing works the same way
	if err := connectTest(t, e).Reshard(ctx, set(5)); err != nil {
		t.Fatal(err)
	}
	if n, err := connectTest(t, e).layoutOnBroker(ctx); err != nil || n != 5 {
		t.Fatalf("layout after growing: %d %v", n, err)
	}
	j2 := &contracts.Job{QueueID: contracts.NewQueueID(time.Now()), Rcpts: []contracts.Recipient{{Addr: "a@example.com"}}, Attempt: 1}
	c5 := connectTest(t, e)
	if err := c5.Provision(ctx, set(5)); err != nil {
		t.Fatal(err)
	}
	if err := c5.publishJob(ctx, j2, []byte("body\r\n")); err != nil {
		t.Fatal(err)
	}
	queueSettles(t, c5, "the job published after the change is not in the queue", func(st QueueState) bool { return st.Ready == 1 })
}

// queueSettles polls QueueState until want holds. The counts come from the
// queue's consumers, which count a message a moment after the stream
// acknowledged (or removed) it.
func queueSettles(t *testing.T, c *Client, msg string, want func(QueueState) bool) {
	t.Helper()
	var st QueueState
	eventually(t, 5*time.Second, func() bool {
		var err error
		st, err = c.QueueState(context.Background())
		return err == nil && want(st)
	}, "%s: %+v", msg, &st)
}

// storedJobs is the number of messages in the queue's streams, which is
// exact as soon as a publish or delete was acknowledged.
func storedJobs(t *testing.T, c *Client) uint64 {
	t.Helper()
	var n uint64
	for _, st := range c.queues {
		info, err := st.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n += info.State.Msgs
	}
	return n
}

// eventually polls cond until it holds or timeout passes; the failure
// message is formatted then, so args may point at what cond last saw.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(format, args...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ConsumeJobs never handles more jobs at once than its concurrency, also
// below the number of shards, and serves every shard.
func TestConsumeJobsConcurrency(t *testing.T) {
	for _, conc := range []int{1, 2, 5} {
		t.Run(strconv.Itoa(conc), func(t *testing.T) {
			c := provisioned(t) // 3 shards
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			const jobs = 12
			shards := map[int]bool{}
			for i := 0; i < jobs; i++ {
				j := &contracts.Job{QueueID: contracts.NewQueueID(time.Now()), Rcpts: []contracts.Recipient{{Addr: "a@example.com"}}, Attempt: 1}
				shards[c.shardOf(j)] = true
				if err := c.publishJob(ctx, j, []byte("body\r\n")); err != nil {
					t.Fatal(err)
				}
			}
			var mu sync.Mutex
			busy, most, done := 0, 0, 0
			finished := make(chan struct{})
			go func() {
				defer close(finished)
				_ = c.ConsumeJobs(ctx, conc, func(_ context.Context, l *Lease) {
					mu.Lock()
					busy++
					most = max(most, busy)
					mu.Unlock()
					time.Sleep(20 * time.Millisecond) // an attempt under way
					if err := l.Settle(context.Background(), Outcome{}); err != nil {
						t.Error(err)
					}
					mu.Lock()
					busy--
					done++
					if done == jobs {
						cancel()
					}
					mu.Unlock()
				})
			}()
			select {
			case <-finished:
			case <-time.After(30 * time.Second):
				t.Fatalf("only %d of %d jobs (in %d shards) handled", done, jobs, len(shards))
			}
			if most > conc {
				t.Fatalf("%d jobs handled at once with concurrency %d", most, conc)
			}
		})
	}
}

// The puller behind ConsumeJobs: one request in flight, a quiet queue
// ends a wait without a job, a request that got no answer in time is left
// behind with its subscription, and a request the broker ends with an
// error (the consumer deleted) is reported.
func TestPuller(t *testing.T) {
	c := provisioned(t) // 3 shards
	ctx := context.Background()
	stream := contracts.QueueStream(0)
	p, err := newPuller(c.nc, c.reconnected, stream, contracts.ConsumerDelivery)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	publishTo := func(shard int) *contracts.Job {
		t.Helper()
		for {
			j := &contracts.Job{QueueID: contracts.NewQueueID(time.Now()), Rcpts: []contracts.Recipient{{Addr: "a@example.com"}}, Attempt: 1}
			if c.shardOf(j) != shard {
				continue
			}
			if err := c.publishJob(ctx, j, []byte("body\r\n")); err != nil {
				t.Fatal(err)
			}
			return j
		}
	}
	receive := func(j *contracts.Job, delivered uint64) {
		t.Helper()
		m, err := p.next(ctx, 5*time.Second)
		if err != nil || m == nil {
			t.Fatalf("job %s: %v %v", j.QueueID, m, err)
		}
		l := c.lease(m, nil)
		if got := l.QueueID(); got != j.QueueID || l.Job == nil || l.Deliveries() != delivered || l.StreamSeq() == 0 {
			t.Fatalf("job %q delivered %d seq %d; want %s delivered %d", got, l.Deliveries(), l.StreamSeq(), j.QueueID, delivered)
		}
		if err := l.ack(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// An empty queue: the broker ends the request, and next returns
	// nothing well before the wait is over on the client's side.
	start := time.Now()
	m, err := p.next(ctx, 500*time.Millisecond)
	if err != nil || m != nil {
		t.Fatalf("empty queue: %v %v", m, err)
	}
	if p.waiting {
		t.Fatal("the expired request is still counted as in flight")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("next on an empty queue took %v", d)
	}
	receive(publishTo(0), 1)

	// A request that got no answer by the time the loop stopped waiting
	// (lost in a broker restart, say): the puller leaves its subscription
	// behind, so a late answer to it cannot end the next request.
	old := p.sub.Subject
	p.waiting, p.until = true, time.Now().Add(-time.Millisecond)
	if m, err := p.next(ctx, 300*time.Millisecond); err != nil || m != nil {
		t.Fatalf("empty queue after a lost request: %v %v", m, err)
	}
	if p.sub.Subject == old {
		t.Fatal("the puller kept the subscription of the request it gave up on")
	}
	late := nats.NewMsg(old)
	late.Header.Set("Status", "408")
	if err := c.nc.PublishMsg(late); err != nil {
		t.Fatal(err)
	}
	receive(publishTo(0), 1)

	// An answer that arrived after the loop stopped listening is taken by
	// the next call, even when the request's time is up: leaving it
	// behind would leave the job to its AckWait.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.next(gone, 5*time.Second); !errors.Is(err, context.Canceled) || !p.waiting {
		t.Fatalf("cancelled next: %v, request in flight %v", err, p.waiting)
	}
	j := publishTo(0)
	eventually(t, 5*time.Second, func() bool { return len(p.msgs) > 0 }, "the job did not arrive")
	p.until = time.Now().Add(-time.Millisecond)
	receive(j, 1)

	// The consumer goes away while a request waits: an error, not a
	// silent wait for the full period.
	errc := make(chan error, 1)
	go func() {
		_, err := p.next(ctx, 20*time.Second)
		errc <- err
	}()
	eventually(t, 5*time.Second, func() bool {
		_, waiting, err := c.shardUse(ctx, 0)
		return err == nil && waiting > 0
	}, "the request does not wait on the broker")
	if err := c.js.DeleteConsumer(ctx, stream, contracts.ConsumerDelivery); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("consumer deleted: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("next did not return when the consumer was deleted")
	}
}

// A broker that dies takes the request a puller has in flight with it,
// without a word (a server that shuts down cleanly ends its requests with
// a 409 first). Once the connection is back, the puller asks again at once
// instead of waiting out the lost request (up to 30 s in a fetch loop).
func TestPullerAfterBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	e := startTest(t, dir)
	addr := strings.TrimPrefix(e.Credentials().URL, "nats://")
	proxy := newCutProxy(t, addr)
	cr := e.Credentials()
	c, err := Connect(context.Background(), ConnectOptions{Name: "test", URLs: []string{"nats://" + proxy.addr}, User: cr.User, Password: cr.Password}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx := context.Background()
	if err := c.Provision(ctx, Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, QueueShards: 1}); err != nil {
		t.Fatal(err)
	}
	p, err := newPuller(c.nc, c.reconnected, contracts.QueueStream(0), contracts.ConsumerDelivery)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	type result struct {
		m   *nats.Msg
		err error
		at  time.Time
	}
	res := make(chan result, 1)
	go func() {
		m, err := p.next(ctx, 30*time.Second)
		res <- result{m, err, time.Now()}
	}()
	eventually(t, 5*time.Second, func() bool {
		_, waiting, err := c.shardUse(ctx, 0)
		return err == nil && waiting > 0
	}, "the request does not wait on the broker")

	// The broker "dies": the client loses it before the server can say
	// anything, and a new server starts on the same store and port.
	proxy.cut()
	e.Shutdown()
	e2, err := StartEmbedded(EmbeddedOptions{DataDir: dir, Listen: addr, SyncAlways: true}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e2.Shutdown)
	proxy.restore()
	eventually(t, 10*time.Second, c.nc.IsConnected, "the client did not reconnect")

	j := &contracts.Job{QueueID: contracts.NewQueueID(time.Now()), Rcpts: []contracts.Recipient{{Addr: "a@example.com"}}, Attempt: 1}
	var published time.Time
	eventually(t, 10*time.Second, func() bool {
		published = time.Now()
		return c.publishJob(ctx, j, []byte("body\r\n")) == nil
	}, "no publish after the restart")
	var r result
	select {
	case r = <-res:
	case <-time.After(20 * time.Second):
		t.Fatal("the puller still waits on the request the broker took with it")
	}
	if r.m == nil {
		// The puller gave up on the lost request before the job was
		// there (or found the new server not ready yet): its loop asks
		// again, as this does.
		m, err := p.next(ctx, 5*time.Second)
		if err != nil || m == nil {
			t.Fatalf("after the restart: %v, then %v %v", r.err, m, err)
		}
		r = result{m, nil, time.Now()}
	}
	if got := r.m.Header.Get(contracts.HeaderQueueID); got != j.QueueID {
		t.Fatalf("got job %q, want %s", got, j.QueueID)
	}
	if d := r.at.Sub(published); d > 10*time.Second {
		t.Fatalf("the job published after the restart took %v to reach the puller", d)
	}
}

// cutProxy is a TCP proxy to a NATS server whose connections can be cut
// before the server notices, as when the server's machine goes away.
type cutProxy struct {
	addr  string
	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

func newCutProxy(t *testing.T, server string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: l.Addr().String()}
	t.Cleanup(func() { l.Close(); p.cut() })
	go func() {
		for {
			cc, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			down := p.down
			p.mu.Unlock()
			if down {
				cc.Close()
				continue
			}
			sc, err := net.Dial("tcp", server)
			if err != nil {
				cc.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, cc, sc)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(sc, cc); sc.Close() }()
			go func() { _, _ = io.Copy(cc, sc); cc.Close() }()
		}
	}()
	return p
}

// cut closes every proxied connection and refuses new ones until restore.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// An ack that a restarted broker will never answer (it lost its record of
// handing out the job) is reported as ErrAckUnanswered, so the worker
// stops retrying it; every other failed ack stays ErrUnavailable.
func TestAckUnansweredAfterRestart(t *testing.T) {
	c := provisioned(t) // 3 shards
	ctx := context.Background()
	stream := contracts.QueueStream(0)
	fetch := func() *Lease {
		t.Helper()
		for {
			j := &contracts.Job{QueueID: contracts.NewQueueID(time.Now()), Rcpts: []contracts.Recipient{{Addr: "a@example.com"}}, Attempt: 1}
			if c.shardOf(j) != 0 {
				continue
			}
			if err := c.publishJob(ctx, j, []byte("body\r\n")); err != nil {
				t.Fatal(err)
			}
			break
		}
		p, err := newPuller(c.nc, c.reconnected, stream, contracts.ConsumerDelivery)
		if err != nil {
			t.Fatal(err)
		}
		defer p.close()
		m, err := p.next(ctx, 5*time.Second)
		if err != nil || m == nil {
			t.Fatalf("no job: %v", err)
		}
		return c.lease(m, p.sentOn)
	}
	reconnected := make(chan struct{})
	close(reconnected)
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 300*time.Millisecond) }

	// The consumer starts over without a record of the deliveries made so
	// far, as a single server that died within 100 ms of them does.
	forget := func() {
		t.Helper()
		if err := c.js.DeleteConsumer(ctx, stream, contracts.ConsumerDelivery); err != nil {
			t.Fatal(err)
		}
		if err := c.Provision(ctx, Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, QueueShards: 3}); err != nil {
			t.Fatal(err)
		}
	}

	m := fetch()
	forget()
	actx, cancel := short()
	err := m.ackOnce(actx) // no reconnect seen: the broker may still answer a retry
	cancel()
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrAckUnanswered) {
		t.Fatalf("unanswered ack without a reconnect: %v", err)
	}
	m.reconnected = reconnected
	actx, cancel = short()
	err = m.ackOnce(actx)
	cancel()
	if !errors.Is(err, ErrAckUnanswered) {
		t.Fatalf("unanswered ack after a reconnect: %v", err)
	}

	// A delivery the broker knows is acknowledged, reconnect or not.
	m = fetch()
	m.reconnected = reconnected
	actx, cancel = short()
	err = m.ackOnce(actx)
	cancel()
	if err != nil {
		t.Fatalf("ack of a known delivery after a reconnect: %v", err)
	}
}

// A body comes back byte for byte at every size around the chunk
// boundary and at the largest message size, read in odd-sized pieces; a
// body whose info no longer matches its chunks fails at its end, and one
// that lost a chunk fails when it is reached.
func TestBodyRoundTripSizes(t *testing.T) {
	c := provisioned(t)
	ctx := context.Background()
	chunk := c.chunkSize()
	rnd := make([]byte, 25<<20)
	for i := range rnd { // cheap, deterministic, not repetitive within a chunk
		rnd[i] = byte(i*7 + i>>11 + i>>19)
	}
	for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 2*chunk + 17, 25 << 20} {
		name := "size-" + strconv.Itoa(size)
		want := rnd[:size]
		n, err := c.PutBody(ctx, name, iotest.HalfReader(bytes.NewReader(want)))
		if err != nil || n != int64(size) {
			t.Fatalf("%s: PutBody = %d, %v", name, n, err)
		}
		rc, err := c.OpenBody(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := io.ReadAll(iotest.HalfReader(rc))
		rc.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes (want %d), equal %v, err %v", name, len(got), size, bytes.Equal(got, want), err)
		}
	}

	// The info says one byte more than the chunks hold: ErrBodyCorrupt.
	info, err := c.bodies.GetInfo(ctx, "size-"+strconv.Itoa(chunk+1))
	if err != nil {
		t.Fatal(err)
	}
	info.Size++
	rewriteInfo(t, c, info)
	rc, err := c.OpenBody(ctx, info.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); !errors.Is(err, ErrBodyCorrupt) {
		t.Fatalf("size mismatch read: %v, want ErrBodyCorrupt", err)
	}
	rc.Close()

	// The last chunk is gone: ErrBodyNotFound when it is reached.
	name := "size-" + strconv.Itoa(2*chunk+17)
	info, err = c.bodies.GetInfo(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.js.Stream(ctx, bodyStream)
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.GetLastMsgForSubject(ctx, chunkSubject(info.NUID))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, last.Sequence); err != nil {
		t.Fatal(err)
	}
	rc, err = c.OpenBody(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, ErrBodyNotFound) || len(got) != 2*chunk {
		t.Fatalf("read of a body without its last chunk: %d bytes, %v", len(got), err)
	}
}

// rewriteInfo replaces a body's info record, as a damaged store might.
func rewriteInfo(t *testing.T, c *Client, info *jetstream.ObjectInfo) {
	t.Helper()
	data, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(metaSubject(info.Name))
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	m.Data = data
	if _, err := c.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// queue_shards 0 (the default) adopts the layout on the broker, and for a
// new queue takes AutoQueueShards; the layout it chose is recorded, so
// every later process, automatic or explicit, agrees with it.
func TestQueueShardsAuto(t *testing.T) {
	ctx := context.Background()
	set := func(n int) Settings {
		return Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, QueueShards: n}
	}
	fresh := startTest(t, t.TempDir())
	c := connectTest(t, fresh)
	if err := c.Provision(ctx, set(0)); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Shards(), AutoQueueShards(); got != want || want < 4 || want > 16 {
		t.Fatalf("new queue: %d shards, want AutoQueueShards() = %d (4 to 16)", got, want)
	}
	if err := connectTest(t, fresh).Provision(ctx, set(c.Shards())); err != nil {
		t.Fatalf("explicit count equal to the automatic layout: %v", err)
	}
	if err := connectTest(t, fresh).Provision(ctx, set(c.Shards()+1)); !errors.Is(err, ErrShardMismatch) {
		t.Fatalf("explicit count different from the automatic layout: %v", err)
	}

	existing := startTest(t, t.TempDir())
	if err := connectTest(t, existing).Provision(ctx, set(3)); err != nil {
		t.Fatal(err)
	}
	auto := connectTest(t, existing)
	if err := auto.Provision(ctx, set(0)); err != nil || auto.Shards() != 3 {
		t.Fatalf("automatic against a queue of 3 shards: %v, %d shards", err, auto.Shards())
	}
}
