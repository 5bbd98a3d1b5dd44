package contracts

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

var t0 = time.Date(2026, 11, 22, 18, 30, 0, 0, time.UTC)

func sampleJob() *Job {
	return &Job{
		QueueID:    "0KQ3H5XZ7M2P9RTA",
		ReceivedAt: t0,
		FirstSeen:  t0,
		Client:     Client{Addr: "127.0.0.1:50123", HELO: "sqlserver.corp.example", AuthUser: "dbmail", TLS: "TLSv1.3 TLS_AES_128_GCM_SHA256", Proto: "ESMTPSA"},
		From:       "alerts@corp.example",
		Params:     MailParams{Body: "8BITMIME", Ret: "HDRS", EnvID: "bam-42", Size: 2048},
		Rcpts: []Recipient{
			{Addr: "ops@example.com", Notify: []string{"FAILURE", "DELAY"}, ORcpt: "rfc822;ops@example.com"},
			{Addr: "oncall@example.net"},
		},
		Attempt:   2,
		LastError: &Reply{Code: 451, Enhanced: "4.3.0", Text: "try again later", Host: "mx1.example.com"},
		History: []AttemptRecord{{
			Attempt: 1, At: t0.Add(time.Minute), Duration: 1500 * time.Millisecond,
			Host: "mx1.example.com", IP: "192.0.2.10", Result: ResultDeferred,
			Reply: &Reply{Code: 451, Enhanced: "4.3.0", Text: "try again later"}, Rcpts: 2,
		}},
	}
}

var sampleBody = []byte("Received: from sqlserver ([127.0.0.1])\r\n\tby relay.example.com (jetrelay) with ESMTPSA id 0KQ3H5XZ7M2P9RTA;\r\n\tSun, 22 Nov 2026 18:30:00 +0000\r\nSubject: BAM alert\r\n\r\nQueue depth over threshold.\r\n")

func golden(t *testing.T, name string, got []byte) []byte {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create): %v", err)
	}
	return want
}

func TestJobGolden(t *testing.T) {
	got, err := EncodeJob(sampleJob(), sampleBody)
	if err != nil {
		t.Fatal(err)
	}
	want := golden(t, "job_v2.golden", got)
	if !bytes.Equal(got, want) {
		t.Errorf("encoding changed; a change to the wire format needs a new SchemaVersion.\n got: %s\nwant: %s", got, want)
	}
	// Every golden file must stay readable by every later build: version
	// 1 carries the body's SHA-256 (still checked), version 2 does not.
	for _, tc := range []struct {
		file    string
		version int
		digest  string
	}{
		{"job_v1.golden", 1, Digest(sampleBody)},
		{"job_v2.golden", 2, ""},
	} {
		data, err := os.ReadFile(filepath.Join("testdata", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		j, body, err := DecodeJob(data)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		exp := sampleJob()
		exp.Version = tc.version
		exp.Body = Body{Size: int64(len(sampleBody)), SHA256: tc.digest}
		if !reflect.DeepEqual(j, exp) {
			t.Errorf("%s: decoded job differs:\n got %+v\nwant %+v", tc.file, j, exp)
		}
		if !bytes.Equal(body, sampleBody) {
			t.Errorf("%s: body differs", tc.file)
		}
	}
	// A version 1 job whose body was altered still fails its digest.
	v1, _ := os.ReadFile(filepath.Join("testdata", "job_v1.golden"))
	v1[len(v1)-3] ^= 1
	if _, _, err := DecodeJob(v1); !errors.Is(err, ErrBodyMismatch) {
		t.Errorf("altered v1 body: %v, want ErrBodyMismatch", err)
	}
}

func TestDeadLetterGolden(t *testing.T) {
	j := sampleJob()
	j.Body = Body{Object: "0KQ3H5XZ7M2P9RTA", Size: 30 << 20, SHA256: strings.Repeat("ab", 32)}
	d := &DeadLetter{
		ID:         DeadLetterID(j.JobID(), 2),
		Reason:     ReasonRejected,
		Detail:     "550 5.1.1 user unknown",
		DeadAt:     t0.Add(time.Hour),
		LastReply:  &Reply{Code: 550, Enhanced: "5.1.1", Text: "user unknown", Host: "mx1.example.com"},
		HostsTried: []string{"mx1.example.com:25"},
		Job:        *j,
	}
	got, err := EncodeDeadLetter(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := golden(t, "deadletter_v2.golden", got)
	if !bytes.Equal(got, want) {
		t.Errorf("encoding changed.\n got: %s\nwant: %s", got, want)
	}
	back, body, err := DecodeDeadLetter(want)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		t.Errorf("object body decoded with %d inline bytes", len(body))
	}
	if back.ID != d.ID || back.Job.Body.Object != j.Body.Object || back.LastReply.Code != 550 {
		t.Errorf("round trip lost fields: %+v", back)
	}
}

func TestDecodeJobErrors(t *testing.T) {
	good, err := EncodeJob(sampleJob(), sampleBody)
	if err != nil {
		t.Fatal(err)
	}
	nl := bytes.IndexByte(good, '\n')
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"no newline", []byte(`{"v":1}`), ErrMalformed},
		{"not json", []byte("hello\nbody"), ErrMalformed},
		{"bad json", []byte("{\"v\":\n"), ErrMalformed},
		{"no version", []byte(`{"queue_id":"A","rcpts":[{"addr":"a@b"}]}` + "\n"), ErrMalformed},
		{"future version", []byte(`{"v":99,"queue_id":"A","rcpts":[{"addr":"a@b"}]}` + "\n"), ErrUnsupportedVersion},
		{"no queue id", []byte(`{"v":1,"rcpts":[{"addr":"a@b"}],"body":{"size":0,"sha256":"` + Digest(nil) + `"}}` + "\n"), ErrMalformed},
		{"no recipients", []byte(`{"v":1,"queue_id":"A","body":{"size":0,"sha256":"` + Digest(nil) + `"}}` + "\n"), ErrMalformed},
		{"truncated body", good[:len(good)-1], ErrBodyMismatch},
		{"extra body", append(append([]byte{}, good...), 'X'), ErrBodyMismatch},
		{"object with inline bytes", []byte(`{"v":1,"queue_id":"A","rcpts":[{"addr":"a@b"}],"body":{"size":5,"sha256":"x","object":"A"}}` + "\nhello"), ErrBodyMismatch},
		{"envelope only", good[:nl+1], ErrBodyMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodeJob(tc.data)
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeJob = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestEncodeRejectsObjectWithBytes(t *testing.T) {
	j := sampleJob()
	j.Body.Object = "X"
	if _, err := EncodeJob(j, []byte("x")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v", err)
	}
}

func TestAppendJobParts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		dst   []byte
		parts [][]byte
	}{
		{"nil dst, one part", nil, [][]byte{sampleBody}},
		{"split body", nil, [][]byte{sampleBody[:7], sampleBody[7:]}},
		{"empty parts around", nil, [][]byte{nil, sampleBody, {}}},
		{"after existing bytes", []byte("keep me"), [][]byte{sampleBody[:1], sampleBody[1:]}},
		{"reused buffer with room", make([]byte, 0, 1<<16), [][]byte{sampleBody}},
		{"no body", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			joined := bytes.Join(tc.parts, nil)
			want, err := EncodeJob(sampleJob(), joined)
			if err != nil {
				t.Fatal(err)
			}
			prefix := append([]byte(nil), tc.dst...)
			got, err := AppendJob(tc.dst, sampleJob(), tc.parts...)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(got, prefix) || !bytes.Equal(got[len(prefix):], want) {
				t.Fatalf("AppendJob differs from EncodeJob of the joined body:\n%q\n%q", got, want)
			}
			j, back, err := DecodeJob(got[len(prefix):])
			if err != nil || !bytes.Equal(back, joined) || j.Body.Size != int64(len(joined)) {
				t.Fatalf("round trip: %v (%d bytes back)", err, len(back))
			}
		})
	}
	j := sampleJob()
	j.Body.Object = "X"
	if _, err := AppendJob(nil, j, nil, []byte("x")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("object and inline parts: got %v", err)
	}
}

func TestBodyNotInflated(t *testing.T) {
	body := bytes.Repeat([]byte{0xff, 0x00, '\n', 'a'}, 256<<10) // 1 MiB of binary-ish bytes
	data, err := EncodeJob(sampleJob(), body)
	if err != nil {
		t.Fatal(err)
	}
	if overhead := len(data) - len(body); overhead > 2048 {
		t.Fatalf("framing adds %d bytes to a 1 MiB body; want < 2048", overhead)
	}
	_, back, err := DecodeJob(data)
	if err != nil || !bytes.Equal(back, body) {
		t.Fatalf("round trip: %v", err)
	}
}

func TestDestToken(t *testing.T) {
	tests := []struct{ in, want string }{
		{"example.com", "example_com"},
		{"Example.COM.", "example_com"},
		{"mx-1.sub.example.org", "mx-1_sub_example_org"},
		{"bücher.de", "b~c3~bccher_de"},
		{"[192.0.2.1]", "~5b192_0_2_1~5d"},
		{"a*b>c d", "a~2ab~3ec~20d"},
		{"", "~"},
	}
	for _, tc := range tests {
		got := DestToken(tc.in)
		if got != tc.want {
			t.Errorf("DestToken(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if tc.in != "" {
			if back := DomainFromToken(got); back != strings.ToLower(strings.TrimSuffix(tc.in, ".")) {
				t.Errorf("DomainFromToken(%q) = %q", got, back)
			}
		}
	}
	if DomainFromToken(MultiDest) != "" {
		t.Error("MultiDest decoded to a domain")
	}
}

func TestJobDestAndID(t *testing.T) {
	j := sampleJob()
	if got := j.Dest(); got != MultiDest {
		t.Errorf("two domains: Dest = %q", got)
	}
	j.Rcpts = j.Rcpts[:1]
	if got := j.Dest(); got != "example_com" {
		t.Errorf("one domain: Dest = %q", got)
	}
	if j.JobID() != j.QueueID {
		t.Errorf("JobID without part = %q", j.JobID())
	}
	j.Part = PartOf(j.QueueID, 1, j.Rcpts)
	if j.JobID() != j.QueueID+"-"+j.Part || len(j.Part) != 10 {
		t.Errorf("JobID with part = %q", j.JobID())
	}
	if PartOf(j.QueueID, 1, j.Rcpts) != j.Part {
		t.Error("PartOf not deterministic")
	}
	if PartOf(j.QueueID, 2, j.Rcpts) == j.Part {
		t.Error("PartOf ignores the attempt")
	}
	qs, ok := ParseQueueSubject(JobSubject(3, j.Dest(), j.QueueID, j.Part))
	if !ok || qs.Shard != 3 || qs.Kind != "job" || qs.Dest != "example_com" || qs.QueueID != j.QueueID || qs.Part != j.Part || qs.JobID() != j.JobID() {
		t.Errorf("ParseQueueSubject = %+v %v", qs, ok)
	}
	if qs, ok := ParseQueueSubject(ScheduleSubject(0, "d", j.QueueID, "")); !ok || qs.Kind != "sched" || qs.Part != "" || qs.JobID() != j.QueueID {
		t.Errorf("schedule subject: %+v %v", qs, ok)
	}
	// The layout before the queue ID had a token of its own.
	if qs, ok := ParseQueueSubject("mailq.1.sched.example_com." + j.JobID()); !ok || qs.QueueID != j.QueueID || qs.Part != j.Part {
		t.Errorf("old layout: %+v %v", qs, ok)
	}
	if qs, ok := ParseQueueSubject("mailq.0.job.d." + j.QueueID); !ok || qs.QueueID != j.QueueID || qs.Part != "" {
		t.Errorf("old layout without part: %+v %v", qs, ok)
	}
	for _, bad := range []string{"mailq.job.x.y", "mailq.x.job.d.i", "mailq.1.other.d.i", "maildlq.x", "mailq.1.job.d.q.p.x"} {
		if _, ok := ParseQueueSubject(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
	// shards spread queue IDs and are stable
	count := make([]int, 4)
	for i := 0; i < 4000; i++ {
		count[ShardOf(NewQueueID(time.Now()), 4)]++
	}
	for s, n := range count {
		if n < 800 || n > 1200 {
			t.Errorf("shard %d got %d of 4000 IDs", s, n)
		}
	}
	if ShardOf("0KQ3H5XZ7M2P9RTA", 4) != ShardOf("0KQ3H5XZ7M2P9RTA", 4) || ShardOf("X", 1) != 0 {
		t.Error("ShardOf unstable")
	}
}

func TestQueueIDOf(t *testing.T) {
	const q = "0KQ3H5XZ7M2P9RTA"
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{q, true}, {q + "-3f2a1b9c0d", true}, {q + "-3f2a1b9c0d-d4", true}, {q + "-r1", true}, {q + "-x2", true},
		{q + "x", false}, {"0KQ3H5XZ7M2P9RT", false}, {"0kq3h5xz7m2p9rta-d1", false}, {"", false}, {"SEQ5-s5-d0", false},
	} {
		got, ok := QueueIDOf(tc.id)
		if ok != tc.ok || (ok && got != q) {
			t.Errorf("QueueIDOf(%q) = %q, %v", tc.id, got, ok)
		}
	}
	// Subjects find a message's jobs and dead letters by its queue ID.
	if s := DeadLetterSubject(DeadLetterID(q+"-ab", 3)); s != "maildlq."+q+"."+q+"-ab-d3" {
		t.Errorf("DeadLetterSubject = %q", s)
	}
	if s := DeadLetterSubject("SEQ5-s5-d0"); s != "maildlq._.SEQ5-s5-d0" {
		t.Errorf("DeadLetterSubject of a malformed job = %q", s)
	}
	if DeadLettersOf(q) != "maildlq."+q+".*" || JobsOf(2, q) != "mailq.2.*.*."+q+".*" {
		t.Error("lookup filters")
	}
}

func TestDerivedJobs(t *testing.T) {
	j := sampleJob()
	ok := &Reply{Code: 250, Text: "ok", Host: "mx1"}
	tmp := &Reply{Code: 451, Enhanced: "4.3.0", Text: "later", Host: "mx2"}
	rec := AttemptRecord{Attempt: 2, Result: ResultMixed}
	delivered := []Recipient{{Addr: "ops@example.com", LastReply: ok}}
	retry := j.Retry([]Recipient{{Addr: "oncall@example.net", LastReply: tmp}}, rec, delivered)
	if retry.QueueID != j.QueueID || retry.Attempt != 3 || retry.LastError != tmp || len(retry.History) != 2 ||
		retry.History[1] != rec || len(retry.Done) != 1 || retry.Done[0].Addr != "ops@example.com" || len(retry.Rcpts) != 1 {
		t.Fatalf("retry %+v", retry)
	}
	if retry.Part != PartOf(j.JobID(), 2, retry.Rcpts) || j.Retry(retry.Rcpts, rec, delivered).JobID() != retry.JobID() {
		t.Fatal("retry part not deterministic")
	}
	if len(j.History) != 1 || len(j.Done) != 0 {
		t.Fatal("Retry changed its parent")
	}
	now := t0.Add(time.Hour)
	d := retry.DeadLetter(ReasonExpired, "too long", retry.Rcpts, tmp, []string{"mx2"}, []AttemptRecord{{Attempt: 3}}, nil, now)
	if d.ID != retry.JobID()+"-d3" || d.Job.QueueID != j.QueueID || len(d.Job.History) != 3 || len(d.Job.Done) != 1 || !d.DeadAt.Equal(now) {
		t.Fatalf("dead letter %+v", d)
	}
	if q, ok := QueueIDOf(d.ID); !ok || q != j.QueueID {
		t.Fatal("dead-letter ID does not lead to its message")
	}
	if x := retry.Deleted("by op", now); x.ID != retry.JobID()+"-x3" || x.Reason != ReasonDeleted || x.LastReply != tmp {
		t.Fatalf("deleted %+v", x)
	}
	r := d.Replay(now, "10.0.0.5:25")
	if r.Attempt != 1 || !r.FirstSeen.Equal(now) || r.LastError != nil || r.ReplayCount != 1 || r.ReplayOf != d.ID ||
		r.Route != "10.0.0.5:25" || r.Rcpts[0].LastReply != nil || len(r.History) != 3 || r.JobID() != retry.JobID()+"r1" || r.QueueID != j.QueueID {
		t.Fatalf("replay %+v", r)
	}
	if d.Job.Rcpts[0].LastReply == nil || d.Job.Attempt != 3 {
		t.Fatal("Replay changed the dead letter")
	}
	w := retry.Postpone(retry.Rcpts, "rate limit", delivered)
	if w.Attempt != retry.Attempt || w.Waiting != "rate limit" || len(w.History) != len(retry.History) || !strings.HasSuffix(w.Part, "w") ||
		w.JobID() == retry.JobID() || retry.Postpone(retry.Rcpts, "rate limit", delivered).JobID() != w.JobID() {
		t.Fatalf("postponed %+v", w)
	}
	if again := w.Retry(w.Rcpts, rec, nil); again.Waiting != "" || again.Attempt != retry.Attempt+1 {
		t.Fatalf("a retry of a postponed job still waits: %+v", again)
	}
	var many []Recipient
	for i := 0; i < MaxDone+10; i++ {
		many = append(many, Recipient{Addr: fmt.Sprintf("r%d@x", i)})
	}
	if got := j.Retry(retry.Rcpts, rec, many).Done; len(got) != MaxDone || got[MaxDone-1].Addr != many[len(many)-1].Addr {
		t.Fatalf("Done not capped: %d", len(got))
	}
}

func TestHistoryCapped(t *testing.T) {
	j := sampleJob()
	j.History = nil
	for i := 1; i <= MaxHistory+5; i++ {
		j.AddHistory(AttemptRecord{Attempt: i})
	}
	if len(j.History) != MaxHistory || j.History[0].Attempt != 6 || j.History[MaxHistory-1].Attempt != MaxHistory+5 {
		t.Fatalf("history = %d records, first %d", len(j.History), j.History[0].Attempt)
	}
}

func TestQueueID(t *testing.T) {
	now := time.Now()
	seen := map[string]bool{}
	prev := ""
	for i := 0; i < 1000; i++ {
		id := NewQueueID(now.Add(time.Duration(i) * time.Millisecond))
		if !ValidQueueID(id) {
			t.Fatalf("invalid id %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
		if id[:8] < prev {
			t.Fatalf("ids not time-ordered: %q after %q", id, prev)
		}
		prev = id[:8]
	}
	id := NewQueueID(now)
	ts, ok := QueueIDTime(id)
	if !ok || ts.Sub(now).Abs() > time.Millisecond {
		t.Fatalf("QueueIDTime = %v, want %v", ts, now)
	}
	for _, bad := range []string{"", "0KQ3H5XZ7M2P9RT", "0KQ3H5XZ7M2P9RTI", "0kq3h5xz7m2p9rta", "0KQ3H5XZ7M2P9RT."} {
		if ValidQueueID(bad) {
			t.Errorf("ValidQueueID(%q) = true", bad)
		}
	}
}

func TestReply(t *testing.T) {
	tests := []struct {
		r    *Reply
		temp bool
		s    string
	}{
		{&Reply{Code: 450, Enhanced: "4.2.1", Text: "busy"}, true, "450 4.2.1 busy"},
		{&Reply{Code: 550, Enhanced: "5.1.1", Text: "unknown"}, false, "550 5.1.1 unknown"},
		{&Reply{Text: "connection refused"}, true, "connection refused"},
		{nil, false, ""},
	}
	for _, tc := range tests {
		if tc.r.Temporary() != tc.temp || tc.r.String() != tc.s {
			t.Errorf("%+v: Temporary=%v String=%q", tc.r, tc.r.Temporary(), tc.r.String())
		}
	}
}

func FuzzDecodeJob(f *testing.F) {
	good, _ := EncodeJob(sampleJob(), sampleBody)
	f.Add(good)
	f.Add([]byte("{\"v\":1}\n"))
	f.Add([]byte("{}\n\x00\xff"))
	if g, err := os.ReadFile("testdata/job_v1.golden"); err == nil {
		f.Add(g)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		j, body, err := DecodeJob(data)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode and decode to the same job.
		again, err := EncodeJob(j, body)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		j2, body2, err := DecodeJob(again)
		if err != nil {
			t.Fatalf("decode of re-encoded job: %v", err)
		}
		if !bytes.Equal(body, body2) || j2.QueueID != j.QueueID || len(j2.Rcpts) != len(j.Rcpts) {
			t.Fatalf("round trip changed the job")
		}
	})
}

func FuzzDecodeDeadLetter(f *testing.F) {
	j := sampleJob()
	good, _ := EncodeDeadLetter(&DeadLetter{ID: "x-d1", Reason: ReasonExpired, Job: *j}, sampleBody)
	f.Add(good)
	f.Add([]byte("{\"v\":1,\"id\":\"a\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, body, err := DecodeDeadLetter(data)
		if err != nil {
			return
		}
		again, err := EncodeDeadLetter(d, body)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, _, err := DecodeDeadLetter(again); err != nil {
			t.Fatalf("decode of re-encoded dead letter: %v", err)
		}
	})
}

func FuzzDestToken(f *testing.F) {
	for _, s := range []string{"example.com", "bücher.de", "[::1]", "a_b", "~", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, domain string) {
		tok := DestToken(domain)
		if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Fatalf("DestToken(%q) = %q is not one subject token", domain, tok)
		}
		norm := strings.ToLower(strings.TrimSuffix(domain, "."))
		if norm != "" && !strings.Contains(norm, "_") {
			if back := DomainFromToken(tok); back != norm {
				t.Fatalf("DomainFromToken(DestToken(%q)) = %q", domain, back)
			}
		}
	})
}

func BenchmarkEncodeJob1KiB(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1024)
	j := sampleJob()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := EncodeJob(j, body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

func BenchmarkDecodeJob1KiB(b *testing.B) {
	data, _ := EncodeJob(sampleJob(), bytes.Repeat([]byte("x"), 1024))
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := DecodeJob(data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}
