package pickup

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestParse: the envelope from X-Sender/X-Receiver (removed from the
// message) or from the header fields (Bcc removed); what is not a message
// is ErrMalformed with a reason in words.
func TestParse(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		from   string
		rcpts  []string
		msg    string // "" : the file without the lines named in drop
		errHas string
	}{
		{name: "IIS envelope (.NET SmtpClient)",
			file: "X-Sender: app@corp.example\r\nX-Receiver: ops@example.com\r\nX-Receiver: <dba@example.com>\r\nMIME-Version: 1.0\r\nFrom: app@corp.example\r\nTo: ops@example.com\r\nBcc: dba@example.com\r\nSubject: disk\r\n\r\nbody\r\n",
			from: "app@corp.example", rcpts: []string{"ops@example.com", "dba@example.com"},
			msg: "MIME-Version: 1.0\r\nFrom: app@corp.example\r\nTo: ops@example.com\r\nSubject: disk\r\n\r\nbody\r\n"},
		{name: "IIS envelope, null sender",
			file: "X-Sender: <>\r\nX-Receiver: ops@example.com\r\nSubject: x\r\n\r\nb\r\n", from: "", rcpts: []string{"ops@example.com"},
			msg: "Subject: x\r\n\r\nb\r\n"},
		{name: "headers: To, Cc, Bcc and groups; Bcc removed",
			file: "From: \"App\" <app@corp.example>\r\nTo: Ops <ops@example.com>,\r\n dba@example.com\r\nCc: undisclosed:;\r\nBcc: audit@corp.example, OPS@example.com\r\nSubject: x\r\n\r\nBcc: stays in the body\r\n",
			from: "app@corp.example", rcpts: []string{"ops@example.com", "dba@example.com", "audit@corp.example"},
			msg: "From: \"App\" <app@corp.example>\r\nTo: Ops <ops@example.com>,\r\n dba@example.com\r\nCc: undisclosed:;\r\nSubject: x\r\n\r\nBcc: stays in the body\r\n"},
		{name: "Sender before From",
			file: "From: boss@corp.example\r\nSender: app@corp.example\r\nTo: ops@example.com\r\n\r\n", from: "app@corp.example", rcpts: []string{"ops@example.com"}},
		{name: "X-Sender alone, recipients from the header",
			file: "X-Sender: bounce@corp.example\r\nFrom: app@corp.example\r\nTo: ops@example.com\r\n\r\nb\r\n", from: "bounce@corp.example", rcpts: []string{"ops@example.com"},
			msg: "From: app@corp.example\r\nTo: ops@example.com\r\n\r\nb\r\n"},
		{name: "no From: the null sender",
			file: "To: ops@example.com\r\nSubject: x\r\n\r\nb\r\n", from: "", rcpts: []string{"ops@example.com"}},
		{name: "encoded display name in any charset",
			file: "From: =?windows-1252?Q?J=F6rg?= <j@corp.example>\r\nTo: ops@example.com\r\n\r\nb\r\n", from: "j@corp.example", rcpts: []string{"ops@example.com"}},
		{name: "headers only, no body, no final line ending",
			file: "To: ops@example.com\r\nSubject: x", from: "", rcpts: []string{"ops@example.com"}, msg: "To: ops@example.com\r\nSubject: x\r\n\r\n"},
		{name: "X-Receiver later in the header is just a field",
			file: "From: a@corp.example\r\nTo: ops@example.com\r\nX-Receiver: other@example.com\r\n\r\n", from: "a@corp.example", rcpts: []string{"ops@example.com"}},
		{name: "empty", file: "\r\n\r\n", errHas: "empty"},
		{name: "not a header", file: "Hello ops,\r\nthe disk is full\r\n", errHas: "line 1 is not a header field"},
		{name: "binary", file: "\x00\x01\x02PK\x03\x04", errHas: "line 1 is not a header field"},
		{name: "no recipients", file: "From: a@corp.example\r\nSubject: x\r\n\r\nb\r\n", errHas: "no recipients"},
		{name: "bad address", file: "To: ops at example\r\n\r\nb\r\n", errHas: "To:"},
		{name: "bad X-Receiver", file: "X-Receiver: not an address\r\nSubject: x\r\n\r\n", errHas: "X-Receiver"},
		{name: "envelope only", file: "X-Sender: a@corp.example\r\nX-Receiver: b@example.com\r\n\r\nbody\r\n", errHas: "no header fields"},
		{name: "continuation first", file: " folded\r\nTo: a@b.example\r\n\r\n", errHas: "continuation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, msg, err := parse([]byte(tc.file))
			if tc.errHas != "" {
				if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err %v, want ErrMalformed with %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if env.from != tc.from || strings.Join(env.rcpts, ",") != strings.Join(tc.rcpts, ",") {
				t.Fatalf("envelope <%s> %v, want <%s> %v", env.from, env.rcpts, tc.from, tc.rcpts)
			}
			want := tc.msg
			if want == "" {
				want = tc.file
			}
			if string(msg) != want {
				t.Fatalf("message\n%q\nwant\n%q", msg, want)
			}
		})
	}
}

func TestCRLF(t *testing.T) {
	for in, want := range map[string]string{
		"a\nb\n":       "a\r\nb\r\n",
		"a\r\nb\r\n":   "a\r\nb\r\n",
		"a\rb\r\n\n":   "a\r\nb\r\n\r\n",
		"a\r":          "a\r\n",
		"":             "",
		"x\r\r\ny\n\r": "x\r\n\r\ny\r\n\r\n",
	} {
		if got := string(crlf([]byte(in))); got != want {
			t.Errorf("crlf(%q) = %q, want %q", in, got, want)
		}
	}
}

// The queue ID is a pure function of the file: the same file, the same
// ID (a re-queue after a crash is a duplicate); any change, another ID.
func TestFileQueueID(t *testing.T) {
	mt := time.Date(2026, 3, 4, 5, 6, 7, 8, time.UTC)
	a := fileQueueID("a.eml", 10, mt, []byte{1, 2})
	if a != fileQueueID("a.eml", 10, mt, []byte{1, 2}) {
		t.Fatal("not deterministic")
	}
	for _, b := range []string{
		fileQueueID("b.eml", 10, mt, []byte{1, 2}),
		fileQueueID("a.eml", 11, mt, []byte{1, 2}),
		fileQueueID("a.eml", 10, mt.Add(time.Nanosecond), []byte{1, 2}),
		fileQueueID("a.eml", 10, mt, []byte{1, 3}),
	} {
		if b == a {
			t.Fatalf("same ID %s for another file", a)
		}
	}
	if old := fileQueueID("a.eml", 10, time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC), nil); len(old) != 16 || old[:8] != "00000000" {
		t.Fatalf("a file from 1999: %s", old)
	}
}

// FuzzParse: parse never panics; what it accepts has recipients, CRLF
// line endings only, no Bcc or leading X-Receiver field, and an empty line
// after the header section.
func FuzzParse(f *testing.F) {
	f.Add([]byte("X-Sender: a@b.example\r\nX-Receiver: c@d.example\r\nSubject: x\r\n\r\nbody\r\n"))
	f.Add([]byte("From: a@b.example\nTo: c@d.example, e@f.example\nBcc: g@h.example\n\nbody"))
	f.Add([]byte("To: x\r\n \r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		data := crlf(raw)
		env, msg, err := parse(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if len(env.rcpts) == 0 {
			t.Fatal("accepted without recipients")
		}
		if !bytes.Contains(msg, []byte("\r\n\r\n")) {
			t.Fatalf("no end of the header section in %q", msg)
		}
		if bytes.Count(msg, []byte("\n")) != bytes.Count(msg, []byte("\r\n")) || bytes.Count(msg, []byte("\r")) != bytes.Count(msg, []byte("\r\n")) {
			t.Fatalf("bare line ending in %q", msg)
		}
		head := msg[:bytes.Index(msg, []byte("\r\n\r\n"))+2]
		for _, l := range bytes.Split(head, []byte("\r\n")) {
			if bytes.HasPrefix(bytes.ToLower(l), []byte("bcc:")) {
				t.Fatalf("Bcc left in %q", msg)
			}
		}
		if bytes.HasPrefix(bytes.ToLower(msg), []byte("x-receiver:")) {
			t.Fatalf("X-Receiver left in %q", msg)
		}
	})
}
