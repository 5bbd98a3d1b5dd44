package delivery

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
)

func dotStuff(t *testing.T, in string, chunk int) string {
	t.Helper()
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	dw := &dotWriter{w: bw, bol: true}
	for i := 0; i < len(in); i += chunk {
		end := i + chunk
		if end > len(in) {
			end = len(in)
		}
		if _, err := dw.Write([]byte(in[i:end])); err != nil {
			t.Fatal(err)
		}
	}
	if err := dw.finish(); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
	return out.String()
}

func TestDotWriter(t *testing.T) {
	tests := []struct{ in, want string }{
		{"hello\r\n", "hello\r\n.\r\n"},
		{"hello", "hello\r\n.\r\n"},
		{"", ".\r\n"},
		{".start\r\n", "..start\r\n.\r\n"},
		{"a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
		{"a\r\n..\r\n", "a\r\n...\r\n.\r\n"},
		// bare line endings are completed, so no smuggling survives
		{"a\n.\nMAIL FROM:<x>\n", "a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"},
		{"a\r.\r\nX\r\n", "a\r\n..\r\nX\r\n.\r\n"},
		{"a\r", "a\r\n.\r\n"},
		{"x.y\r\n", "x.y\r\n.\r\n"},
	}
	for _, tc := range tests {
		for _, chunk := range []int{1, 2, 3, 1 << 20} {
			if got := dotStuff(t, tc.in, chunk); got != tc.want {
				t.Errorf("dotWriter(%q, chunk %d) = %q, want %q", tc.in, chunk, got, tc.want)
			}
		}
	}
}

func FuzzDotWriter(f *testing.F) {
	for _, s := range []string{"a\r\n.\r\n", "\n.\n", "\r.\r", ".", "..\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out := dotStuff(t, string(in), 7)
		// The only end-of-data sequence is the very last one.
		if i := strings.Index(out, "\r\n.\r\n"); i >= 0 && i != len(out)-5 {
			t.Fatalf("early end of data at %d in %q", i, out)
		}
		if strings.HasPrefix(out, ".\r\n") && len(out) != 3 {
			t.Fatalf("early end of data at 0 in %q", out)
		}
		// No bare CR or LF on the wire.
		for i := 0; i < len(out); i++ {
			if out[i] == '\r' && (i+1 == len(out) || out[i+1] != '\n') || out[i] == '\n' && (i == 0 || out[i-1] != '\r') {
				t.Fatalf("bare line ending at %d in %q", i, out)
			}
		}
	})
}

func TestSplitEnhanced(t *testing.T) {
	tests := []struct {
		msg  string
		code int
		enh  string
		rest string
		ok   bool
	}{
		{"4.2.1 mailbox busy", 450, "4.2.1", "mailbox busy", true},
		{"5.1.1 <x@y>: user unknown", 550, "5.1.1", "<x@y>: user unknown", true},
		{"2.0.0", 250, "2.0.0", "", true},
		{"5.1.1 mismatch class", 450, "", "5.1.1 mismatch class", false},
		{"mailbox busy", 450, "", "mailbox busy", false},
		{"4.2 short", 450, "", "4.2 short", false},
		{"4.a.1 letters", 450, "", "4.a.1 letters", false},
	}
	for _, tc := range tests {
		enh, rest, ok := splitEnhanced(tc.msg, tc.code)
		if enh != tc.enh || rest != tc.rest || ok != tc.ok {
			t.Errorf("splitEnhanced(%q) = %q %q %v", tc.msg, enh, rest, ok)
		}
	}
}

func TestXtext(t *testing.T) {
	if got := xtext("a+b=c d\x01é"); got != "a+2Bb+3Dc+20d+01+C3+A9" {
		t.Fatalf("xtext = %q", got)
	}
}

func TestNextAttempt(t *testing.T) {
	w := &Worker{opts: Options{Schedule: []time.Duration{time.Minute, 5 * time.Minute, time.Hour}}}
	now := time.Unix(0, 0)
	for attempt, want := range map[int]time.Duration{1: time.Minute, 2: 5 * time.Minute, 3: time.Hour, 4: time.Hour, 30: time.Hour} {
		if got := w.nextAttempt(attempt, now).Sub(now); got != want {
			t.Errorf("attempt %d: wait %s, want %s", attempt, got, want)
		}
	}
	w.opts.Jitter = 0.1
	for i := 0; i < 100; i++ {
		d := w.nextAttempt(3, now).Sub(now)
		if d < 54*time.Minute || d > 66*time.Minute {
			t.Fatalf("jittered wait %s outside ±10%% of 1h", d)
		}
	}
}

func TestNotifies(t *testing.T) {
	r := func(n ...string) contracts.Recipient { return contracts.Recipient{Addr: "a@b", Notify: n} }
	tests := []struct {
		rcpt   contracts.Recipient
		action string
		want   bool
	}{
		{r(), actionFailed, true},
		{r(), actionDelayed, true},
		{r(), actionRelayed, false},
		{r("NEVER"), actionFailed, false},
		{r("SUCCESS"), actionFailed, false},
		{r("SUCCESS"), actionRelayed, true},
		{r("FAILURE", "DELAY"), actionDelayed, true},
		{r("failure"), actionFailed, true},
	}
	for _, tc := range tests {
		if got := notifies(tc.rcpt, tc.action); got != tc.want {
			t.Errorf("notifies(%v, %s) = %v", tc.rcpt.Notify, tc.action, got)
		}
	}
	if mayBounce(&contracts.Job{From: ""}) || mayBounce(&contracts.Job{From: "a@b", Kind: contracts.KindDSN}) || !mayBounce(&contracts.Job{From: "a@b"}) {
		t.Error("mayBounce")
	}
}

func TestBuildDSN(t *testing.T) {
	job := &contracts.Job{
		QueueID: "0KQ3H5XZ7M2P9RTA", From: "alerts@corp.example", ReceivedAt: time.Unix(1700000000, 0),
		FirstSeen: time.Unix(1700000000, 0), Params: contracts.MailParams{EnvID: "bam-1"},
	}
	orig := original{data: []byte("Subject: BAM\r\n\r\nbody\r\n")}
	rcpts := []dsnRcpt{{
		rcpt:  contracts.Recipient{Addr: "c@example.com", ORcpt: "rfc822;c@example.com"},
		reply: &contracts.Reply{Code: 550, Enhanced: "5.1.1", Text: "user unknown", Host: "mx.example.com"},
		host:  "mx.example.com",
	}}
	out := buildDSN("relay.test", job, actionFailed, rcpts, orig, "DSNID0000000000A", time.Unix(1700003600, 0), time.Unix(1700432000, 0))
	msg, err := mail.ReadMessage(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get("To") != "<alerts@corp.example>" || !strings.Contains(msg.Header.Get("From"), "MAILER-DAEMON@relay.test") ||
		msg.Header.Get("Auto-Submitted") != "auto-replied" {
		t.Fatalf("headers: %v", msg.Header)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("content type %q %v", mt, err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var types []string
	var status string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, p.Header.Get("Content-Type"))
		b, _ := io.ReadAll(p)
		if p.Header.Get("Content-Type") == "message/delivery-status" {
			status = string(b)
		}
	}
	if len(types) != 3 || types[1] != "message/delivery-status" || types[2] != "message/rfc822" {
		t.Fatalf("parts: %v", types)
	}
	for _, want := range []string{"Reporting-MTA: dns; relay.test", "Original-Envelope-Id: bam-1", "Final-Recipient: rfc822; c@example.com",
		"Original-Recipient: rfc822; c@example.com", "Action: failed", "Status: 5.1.1", "Remote-MTA: dns; mx.example.com",
		"Diagnostic-Code: smtp; 550 5.1.1 user unknown"} {
		if !strings.Contains(status, want) {
			t.Errorf("delivery-status lacks %q:\n%s", want, status)
		}
	}
	// An expired temporary failure is reported as a permanent status.
	if s := dsnStatus(actionFailed, &contracts.Reply{Code: 451, Enhanced: "4.4.1"}); s != "5.4.1" {
		t.Errorf("expired status %q", s)
	}
}

// scriptedServer answers each line it reads with the next scripted reply
// and records what it read.
func scriptedServer(t *testing.T, greeting string, replies map[string]string) (addr string, lines chan string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	lines = make(chan string, 1000)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		io.WriteString(c, greeting+"\r\n")
		inData := false
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			lines <- line
			if inData {
				if line == "." {
					inData = false
					io.WriteString(c, replies["."]+"\r\n")
				}
				continue
			}
			verb := strings.ToUpper(strings.Fields(line + " x")[0])
			if strings.HasPrefix(strings.ToUpper(line), "RCPT TO:") {
				verb = line[:strings.IndexByte(line, '>')+1]
			}
			r, ok := replies[verb]
			if !ok {
				r = replies[strings.ToUpper(strings.Fields(line)[0])]
			}
			io.WriteString(c, r+"\r\n")
			if strings.HasPrefix(r, "354") {
				inData = true
			}
			if verb == "QUIT" {
				return
			}
		}
	}()
	return l.Addr().String(), lines
}

func TestSendPipelinedPerRecipient(t *testing.T) {
	addr, lines := scriptedServer(t, "220 mx.test ESMTP", map[string]string{
		"EHLO":                "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES",
		"MAIL":                "250 2.1.0 ok",
		"RCPT TO:<a@example>": "250 2.1.5 ok",
		"RCPT TO:<b@example>": "450 4.2.1 busy",
		"RCPT TO:<c@example>": "550 5.1.1 unknown",
		"RCPT TO:<d@example>": "552 5.5.3 too many recipients",
		"DATA":                "354 go",
		".":                   "250 2.0.0 queued",
		"QUIT":                "221 bye",
	})
	ctx := context.Background()
	c, err := dialSMTP(ctx, &net.Dialer{}, "mx.test", addr, false, nil, DefaultTimeouts())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.hello(ctx, "relay.test"); err != nil {
		t.Fatal(err)
	}
	body := []byte("Subject: x\r\n\r\n.dot\r\n")
	env := &envelope{
		from: "s@x", size: int64(len(body)),
		params: contracts.MailParams{Ret: "HDRS", EnvID: "e 1"},
		rcpts:  []contracts.Recipient{{Addr: "a@example", Notify: []string{"FAILURE"}}, {Addr: "b@example"}, {Addr: "c@example"}, {Addr: "d@example"}},
		body:   func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
	}
	res, err := c.send(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	codes := []int{}
	for _, r := range res.rcpt {
		codes = append(codes, r.Code)
	}
	if codes[0] != 250 || codes[1] != 450 || codes[2] != 550 || codes[3] != 552 || !res.sentOK {
		t.Fatalf("per-recipient codes %v", codes)
	}
	if res.rcpt[1].Enhanced != "4.2.1" || res.rcpt[1].Text != "busy" {
		t.Fatalf("reply parse: %+v", res.rcpt[1])
	}
	c.quit()
	var got []string
	for l := range lines {
		got = append(got, l)
		if l == "QUIT" {
			break
		}
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{"EHLO relay.test", "MAIL FROM:<s@x> SIZE=20 RET=HDRS ENVID=e+201", "RCPT TO:<a@example> NOTIFY=FAILURE", "..dot", "\n.\nQUIT"} {
		if !strings.Contains(all, want) {
			t.Errorf("server did not see %q in:\n%s", want, all)
		}
	}
}

func TestSendSizeAndNoRecipients(t *testing.T) {
	addr, _ := scriptedServer(t, "220 mx.test ESMTP", map[string]string{
		"EHLO": "250-mx.test\r\n250 SIZE 10",
		"MAIL": "250 ok", "RCPT": "550 no", "RSET": "250 ok", "QUIT": "221 bye",
	})
	ctx := context.Background()
	c, err := dialSMTP(ctx, &net.Dialer{}, "mx.test", addr, false, nil, DefaultTimeouts())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.hello(ctx, "relay.test"); err != nil {
		t.Fatal(err)
	}
	opened := false
	env := &envelope{from: "s@x", size: 11, rcpts: []contracts.Recipient{{Addr: "a@example"}},
		body: func() (io.ReadCloser, error) { opened = true; return io.NopCloser(strings.NewReader("x")), nil }}
	res, err := c.send(ctx, env)
	if err != nil || res.rcpt[0].Code != 552 || res.rcpt[0].Enhanced != "5.3.4" {
		t.Fatalf("oversize for the next hop: %+v %v", res.rcpt[0], err)
	}
	env.size = 5
	res, err = c.send(ctx, env)
	if err != nil || res.rcpt[0].Code != 550 || res.final != nil || opened {
		t.Fatalf("no accepted recipient: DATA must not be sent: %+v %v opened=%v", res, err, opened)
	}
}
