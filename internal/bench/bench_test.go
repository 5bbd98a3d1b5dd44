package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRecipients(t *testing.T) {
	for _, tc := range []struct{ n, d, wantDomains int }{
		{1, 1, 1}, {10, 2, 2}, {10, 3, 3}, {3, 5, 3}, {0, 0, 1}, {100, 7, 7},
	} {
		r := Recipients(tc.n, tc.d)
		n := max(tc.n, 1)
		if len(r) != n {
			t.Fatalf("Recipients(%d, %d): %d recipients", tc.n, tc.d, len(r))
		}
		per := map[string]int{}
		uniq := map[string]bool{}
		for _, a := range r {
			_, dom, ok := strings.Cut(a, "@")
			if !ok {
				t.Fatalf("bad address %q", a)
			}
			per[dom]++
			uniq[a] = true
		}
		if len(uniq) != n {
			t.Errorf("Recipients(%d, %d): duplicates in %v", tc.n, tc.d, r)
		}
		if len(per) != tc.wantDomains {
			t.Errorf("Recipients(%d, %d): %d domains, want %d", tc.n, tc.d, len(per), tc.wantDomains)
		}
		lo, hi := n, 0
		for _, c := range per {
			lo, hi = min(lo, c), max(hi, c)
		}
		if hi-lo > 1 {
			t.Errorf("Recipients(%d, %d): uneven spread %v", tc.n, tc.d, per)
		}
	}
	if got := Recipients(4, 2); got[0] != "u0@d0.bench.example" || got[3] != "u3@d1.bench.example" {
		t.Errorf("got %v", got)
	}
}

func TestMessage(t *testing.T) {
	rcpts := Recipients(3, 2)
	for _, size := range []int{1, 100, 400, 1024, 1025, 1026, 4096, 100 << 10, 1<<20 + 7} {
		m := NewMessage("abcd1234", "s@x.example", rcpts, size)
		whole := append(append([]byte{}, m.Header...), m.Body...)
		if !bytes.HasSuffix(whole, []byte("\r\n.\r\n")) {
			t.Fatalf("size %d: no end of data", size)
		}
		if want := max(size, len(m.Header)+2); m.Size != want || len(whole)-3 != m.Size {
			t.Errorf("size %d: Size %d, wire %d, want %d", size, m.Size, len(whole)-3, want)
		}
		lines := bytes.Split(whole[:len(whole)-3], []byte("\r\n"))
		for i, l := range lines[:len(lines)-1] {
			if len(l) > 998 || bytes.ContainsAny(l, "\r\n") {
				t.Fatalf("size %d: bad line %d %q", size, i, l)
			}
			if len(l) > 0 && l[0] == '.' {
				t.Fatalf("size %d: line %d starts with a dot", size, i)
			}
		}
		hdr := m.CloneHeader()
		m.SetSeq(hdr, 4711)
		if !bytes.Contains(hdr, []byte("X-Bench-Id: abcd1234-0000004711\r\n")) || !bytes.Contains(hdr, []byte("Message-ID: <0000004711.abcd1234@bench.example>")) {
			t.Fatalf("SetSeq: %s", hdr)
		}
		if bytes.Contains(m.Header, []byte("4711")) {
			t.Fatal("SetSeq changed the template")
		}
	}
}

func TestParseID(t *testing.T) {
	run, seq, err := ParseID([]byte("ab-cd-0000000042"))
	if err != nil || string(run) != "ab-cd" || seq != 42 {
		t.Errorf("got %q %d %v", run, seq, err)
	}
	for _, bad := range []string{"", "abc", "-12", "abc-", "abc-1x", "abc-99999999999999"} {
		if _, _, err := ParseID([]byte(bad)); err == nil {
			t.Errorf("ParseID(%q): no error", bad)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {90, 90}, {99, 99}, {100, 100}, {1, 1}, {0.5, 1}, {0, 1}, {99.9, 100}} {
		if got := Percentile(d, tc.p); got != tc.want*time.Millisecond {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want*time.Millisecond)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("empty")
	}
	one := []time.Duration{7}
	if Percentile(one, 50) != 7 || Percentile(one, 99) != 7 {
		t.Error("one value")
	}
	small := []time.Duration{1, 2, 3, 4}
	if Percentile(small, 50) != 2 || Percentile(small, 75) != 3 || Percentile(small, 76) != 4 {
		t.Errorf("nearest rank on 4 values")
	}
	l := Summarize([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond})
	if l.Count != 3 || l.Min != 1 || l.Max != 3 || l.Mean != 2 || l.P50 != 2 || l.P99 != 3 {
		t.Errorf("Summarize: %+v", l)
	}
	if m := Median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median %v", m)
	}
	if m := Median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median %v", m)
	}
}

// dialSink opens a session to a sink and reads the greeting.
func dialSink(t *testing.T, s *Sink) (*textproto.Conn, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := textproto.NewConn(c)
	if _, _, err := tc.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	return tc, c
}

type observed struct {
	mu    sync.Mutex
	ids   []string
	rcpts []int
}

func (o *observed) observe(id []byte, rcpts int, _ time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ids = append(o.ids, string(id))
	o.rcpts = append(o.rcpts, rcpts)
	return id != nil
}

func TestSinkDialogue(t *testing.T) {
	var obs observed
	s, err := ListenSink("127.0.0.1:0", SinkOptions{Observe: obs.observe, Hostname: "sink.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tc, c := dialSink(t, s)
	id, err := tc.Cmd("EHLO client.test")
	if err != nil {
		t.Fatal(err)
	}
	tc.StartResponse(id)
	_, msg, err := tc.ReadResponse(250)
	tc.EndResponse(id)
	if err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{"sink.test", "PIPELINING", "8BITMIME", "SIZE", "ENHANCEDSTATUSCODES"} {
		if !strings.Contains(msg, ext) {
			t.Errorf("EHLO lacks %s: %q", ext, msg)
		}
	}

	// Commands in one write are answered; DATA without recipients fails.
	expect := func(code int) {
		t.Helper()
		if _, msg, err := tc.ReadResponse(code); err != nil {
			t.Fatalf("want %d: %v %q", code, err, msg)
		}
	}
	fmt.Fprintf(c, "NOOP\r\nDATA\r\nRCPT TO:<a@b>\r\nmail from:<s@x> SIZE=10 BODY=8BITMIME\r\nrcpt to:<a@b>\r\nRCPT TO:<c@d> NOTIFY=NEVER\r\nDATA\r\n")
	expect(250)
	expect(554)
	expect(503)
	expect(250)
	expect(250)
	expect(250)
	expect(354)
	// A dot-stuffed line, a line longer than the sink's buffer, a line
	// that looks like the end but is not, the header far down.
	long := strings.Repeat("y", 100<<10)
	fmt.Fprintf(c, "Subject: x\r\nx-bench-id:  run1-0000000007 \r\n\r\n..\r\n.x\r\n%s\r\n.\r\n", long)
	expect(250)
	// A second transaction without RSET, then RSET and an aborted one.
	fmt.Fprintf(c, "MAIL FROM:<>\r\nRCPT TO:<e@f>\r\nDATA\r\n")
	expect(250)
	expect(250)
	expect(354)
	fmt.Fprintf(c, "Subject: no id\r\n\r\nX-Bench-Id: not-a-header-0000000001\r\n.\r\n")
	expect(250)
	fmt.Fprintf(c, "MAIL FROM:<>\r\nRCPT TO:<e@f>\r\nRSET\r\nDATA\r\nHELO x\r\nVRFY x\r\nSTARTTLS\r\nQUIT\r\n")
	expect(250)
	expect(250)
	expect(250)
	expect(554)
	expect(250)
	expect(252)
	expect(502)
	expect(221)

	st := s.Stats()
	if st.Messages != 2 || st.Recipients != 3 || st.Connections != 1 || st.Foreign != 1 {
		t.Errorf("stats %+v", st)
	}
	if wantBytes := int64(len("Subject: x\r\nx-bench-id:  run1-0000000007 \r\n\r\n..\r\n.x\r\n")+len(long)+2) + int64(len("Subject: no id\r\n\r\nX-Bench-Id: not-a-header-0000000001\r\n")); st.Bytes != wantBytes {
		t.Errorf("bytes %d, want %d", st.Bytes, wantBytes)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.ids) != 2 || obs.ids[0] != "run1-0000000007" || obs.ids[1] != "" || obs.rcpts[0] != 2 || obs.rcpts[1] != 1 {
		t.Errorf("observed %q %v", obs.ids, obs.rcpts)
	}
}

func TestSinkReadDataSplitEnd(t *testing.T) {
	// The end-of-data line split over reads and a body that is one huge
	// line: readData must find the end exactly.
	pr, pw := net.Pipe()
	defer pr.Close()
	go func() {
		defer pw.Close()
		pw.Write([]byte("X-Bench-Id: r-1\r\n\r\n"))
		pw.Write(bytes.Repeat([]byte("z"), 200<<10))
		pw.Write([]byte("\r"))
		pw.Write([]byte("\n."))
		pw.Write([]byte("\r"))
		pw.Write([]byte("\nNEXT\r\n"))
	}()
	r := bufio.NewReaderSize(pr, 64<<10)
	var id []byte
	n, err := readData(r, &id)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len("X-Bench-Id: r-1\r\n\r\n")+200<<10+2) || string(id) != "r-1" {
		t.Errorf("n %d id %q", n, id)
	}
	rest, _ := r.ReadString('\n')
	if rest != "NEXT\r\n" {
		t.Errorf("after the end: %q", rest)
	}
}

func TestSinkClose(t *testing.T) {
	s, err := ListenSink("127.0.0.1:0", SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, c := dialSink(t, s)
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs with an open session")
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("session still open")
	}
}

// runSelf runs the bench with its sink as the target: the client and the
// sink against each other.
func runSelf(t *testing.T, cfg Config) *Result {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.sinkListener = ln
	cfg.Target = ln.Addr().String()
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Minute
	}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%v\n%+v", err, res)
	}
	return res
}

func TestRunClientAgainstSink(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"new session per message", Config{N: 200, Size: 1024, Concurrency: 8, PerConn: 1}},
		{"reuse", Config{N: 300, Size: 1024, Concurrency: 4, PerConn: 0}},
		{"three per session, lock step", Config{N: 100, Size: 2000, Concurrency: 5, PerConn: 3, NoPipelining: true}},
		{"many recipients and domains", Config{N: 50, Size: 4096, Rcpts: 10, Domains: 3, Concurrency: 3, PerConn: 7}},
		{"large", Config{N: 6, Size: 3 << 20, Concurrency: 2, PerConn: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runSelf(t, tc.cfg)
			c := tc.cfg
			rc := max(c.Rcpts, 1)
			if !res.OK || res.Accepted != int64(c.N) || res.Failed != 0 || len(res.Errors) != 0 {
				t.Fatalf("result %+v", res)
			}
			if res.DeliveredMsgs != int64(c.N) || res.DeliveredRcpts != int64(c.N*rc) || res.MissingRcpts != 0 || res.DuplicateRcpts != 0 {
				t.Errorf("delivered %d msgs %d rcpts, missing %d dup %d", res.DeliveredMsgs, res.DeliveredRcpts, res.MissingRcpts, res.DuplicateRcpts)
			}
			st := res.SinkStats
			if st.Messages != int64(c.N) || st.Recipients != int64(c.N*rc) || st.Foreign != 0 || st.Bytes != int64(c.N*c.Size) {
				t.Errorf("sink %+v", st)
			}
			sessions := int64(c.Concurrency)
			if c.PerConn > 0 {
				sessions = int64(c.N / c.PerConn)
			}
			if res.Sessions < sessions || st.Connections != res.Sessions {
				t.Errorf("sessions %d (sink %d), want at least %d", res.Sessions, st.Connections, sessions)
			}
			if res.LatencyMs.Count != c.N || res.SubmitMs.Count != c.N || res.AcceptedPerSec <= 0 || res.DeliveredPerSec <= 0 {
				t.Errorf("figures %+v %+v", res.LatencyMs, res.SubmitMs)
			}
		})
	}
}

// flakyServer is an SMTP server that rejects recipients whose address
// contains "u1@" (550), refuses every third message at the final dot
// (451) and drops the session at the tenth.
func flakyServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	count := 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := textproto.NewConn(c)
				tc.PrintfLine("220 flaky")
				for {
					l, err := tc.ReadLine()
					if err != nil {
						return
					}
					switch v := strings.ToUpper(l[:4]); v {
					case "EHLO":
						tc.PrintfLine("250-flaky\r\n250 PIPELINING")
					case "RCPT":
						if strings.Contains(l, "u1@") {
							tc.PrintfLine("550 5.1.1 no such user")
						} else {
							tc.PrintfLine("250 ok")
						}
					case "DATA":
						tc.PrintfLine("354 go")
						if _, err := tc.ReadDotBytes(); err != nil {
							return
						}
						mu.Lock()
						count++
						n := count
						mu.Unlock()
						switch {
						case n == 10:
							return
						case n%3 == 0:
							tc.PrintfLine("451 4.3.0 try later")
						default:
							tc.PrintfLine("250 queued")
						}
					case "QUIT":
						tc.PrintfLine("221 bye")
						return
					default:
						tc.PrintfLine("250 ok")
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestLoadErrors(t *testing.T) {
	target := flakyServer(t)
	rcpts := Recipients(3, 1)
	msg := NewMessage("r", "s@x", rcpts, 500)
	ls := newLoadStats(30, time.Now())
	runLoad(context.Background(), LoadOptions{Target: target, Rcpts: rcpts, From: "s@x", Message: msg, N: 30, Concurrency: 1, PerConn: 0}, ls)
	// 30 messages: the 10th dropped, of the other 29 those the server
	// counted as 3rd, 6th, 9th, 12th... got 451.
	if got := ls.accepted.Load() + ls.failed.Load(); got != 30 {
		t.Errorf("accepted+failed = %d", got)
	}
	if ls.errs["RCPT 550"] != 30 {
		t.Errorf("RCPT 550: %d", ls.errs["RCPT 550"])
	}
	if ls.errs["EOM 451"] != 10 || ls.errs["IO"] != 1 {
		t.Errorf("errors %v", ls.errs)
	}
	if ls.accepted.Load() != 19 || ls.failed.Load() != 11 || ls.sessions.Load() != 2 {
		t.Errorf("accepted %d failed %d sessions %d", ls.accepted.Load(), ls.failed.Load(), ls.sessions.Load())
	}
	if ls.samples["RCPT 550"] != "5.1.1 no such user" {
		t.Errorf("sample %q", ls.samples["RCPT 550"])
	}
	for i, a := range ls.acceptedAt {
		if a != 0 && ls.expect[i] != 2 {
			t.Errorf("message %d: %d recipients accepted, want 2", i, ls.expect[i])
		}
	}
}

func TestLoadConnectFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rcpts := Recipients(1, 1)
	ls := newLoadStats(100, time.Now())
	runLoad(context.Background(), LoadOptions{Target: addr, Rcpts: rcpts, From: "s@x", Message: NewMessage("r", "s@x", rcpts, 100), N: 100, Concurrency: 2, MaxConnectFailures: 3}, ls)
	if ls.accepted.Load() != 0 || ls.failed.Load() != 6 || ls.errs["CONNECT"] != 8 {
		t.Errorf("accepted %d failed %d errors %v", ls.accepted.Load(), ls.failed.Load(), ls.errs)
	}
}

func TestRunTimeoutWhenNothingArrives(t *testing.T) {
	// The target accepts everything but delivers nowhere: the run must
	// fail at its timeout, with the figures so far.
	other, err := ListenSink("127.0.0.1:0", SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := Run(context.Background(), Config{Target: other.Addr(), sinkListener: ln, N: 5, Timeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "timeout") || res.OK || res.Accepted != 5 || res.MissingRcpts != 5 {
		t.Errorf("err %v, result %+v", err, res)
	}
	if time.Since(start) > 10*time.Second {
		t.Error("the timeout did not bound the run")
	}
}

func TestRunSinkOnlyAndNoSink(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	type out struct {
		res *Result
		err error
	}
	ch := make(chan out, 1)
	go func() {
		res, err := Run(context.Background(), Config{SinkOnly: true, sinkListener: ln, N: 20, Rcpts: 2, Timeout: time.Minute})
		ch <- out{res, err}
	}()
	res, err := Run(context.Background(), Config{NoSink: true, Target: addr, N: 20, Rcpts: 2, Domains: 2, Concurrency: 3, Timeout: time.Minute})
	if err != nil || !res.OK || res.Mode != "load-only" || res.Accepted != 20 || res.DeliveredMsgs != 0 {
		t.Fatalf("load: %v %+v", err, res)
	}
	o := <-ch
	if o.err != nil || !o.res.OK || o.res.Mode != "sink-only" || o.res.SinkStats.Messages != 20 || o.res.SinkStats.Recipients != 40 {
		t.Fatalf("sink: %v %+v", o.err, o.res)
	}
}

func TestReport(t *testing.T) {
	mk := func(label string, acc, del, cpu float64) *Result {
		return &Result{Label: label, Case: "1KiB-1rcpt", Mode: "full", OK: true, Accepted: 1000, AcceptedPerSec: acc, DeliveredPerSec: del,
			Process: &ProcResult{CPUSeconds: cpu, RSSPeakMiB: 50}}
	}
	var buf bytes.Buffer
	for _, r := range []*Result{mk("jetrelay", 100, 90, 4), mk("postfix", 400, 300, 2), mk("jetrelay", 120, 110, 5), mk("postfix", 500, 200, 3), mk("jetrelay", 80, 100, 6)} {
		if err := WriteJSON(&buf, r); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := ReadResults(&buf)
	if err != nil || len(rs) != 5 {
		t.Fatal(len(rs), err)
	}
	var md bytes.Buffer
	Report(&md, rs, "postfix")
	s := md.String()
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[2], "| 1KiB-1rcpt | postfix | 2 | 450 |") {
		t.Fatalf("report:\n%s", s)
	}
	if !strings.Contains(lines[3], "| jetrelay | 3 | 100 (0.22×) | 100 (0.40×) |") || !strings.Contains(lines[3], "| 5.00 (2.00×) |") {
		t.Errorf("jetrelay row: %s", lines[3])
	}
	// Traced runs give the flush table and stay out of the speed medians.
	traced := mk("jetrelay", 1, 1, 99)
	traced.Flushes = &Flushes{Calls: map[string]int64{"fsync": 2100}, Total: 2100, PerMessage: 2.1}
	pfTraced := mk("postfix", 1, 1, 99)
	pfTraced.Flushes = &Flushes{Calls: map[string]int64{"fsync": 3000}, Total: 3000, PerMessage: 3}
	md.Reset()
	Report(&md, append(rs, traced, pfTraced), "postfix")
	lines = strings.Split(strings.TrimSpace(md.String()), "\n")
	if len(lines) != 8 || !strings.Contains(lines[3], "| jetrelay | 3 | 100 (0.22×)") {
		t.Fatalf("report with traced runs:\n%s", md.String())
	}
	if lines[5] != "| disk flushes per message (strace) | postfix | jetrelay |" || lines[7] != "| 1KiB-1rcpt | 3.00 | 2.10 |" {
		t.Errorf("flush table:\n%s", md.String())
	}
	var tb bytes.Buffer
	WriteTable(&tb, rs[0])
	if !strings.Contains(tb.String(), "result") {
		t.Errorf("table:\n%s", tb.String())
	}
}
