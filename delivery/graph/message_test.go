package graph

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"net/mail"
	"slices"
	"strings"
	"testing"
)

// TestBccInsert: envelope recipients no recipient field names end up in
// the Bcc field, folded, in the header section; nothing else changes.
func TestBccInsert(t *testing.T) {
	tests := []struct {
		name     string
		msg      string
		envelope []string
		want     string // the message after the insertion
		missing  []string
		extra    []string
		bad      []string
	}{
		{
			name:     "all in the header",
			msg:      "From: app@corp.example\r\nTo: a@x.example\r\nCc: B@X.example\r\n\r\nbody\r\n",
			envelope: []string{"a@x.example", "b@x.example"},
			want:     "From: app@corp.example\r\nTo: a@x.example\r\nCc: B@X.example\r\n\r\nbody\r\n",
		},
		{
			name:     "one hidden recipient",
			msg:      "From: app@corp.example\r\nTo: a@x.example\r\nSubject: hi\r\n\r\nBcc: not a field\r\n",
			envelope: []string{"a@x.example", "c@y.example"},
			want:     "From: app@corp.example\r\nTo: a@x.example\r\nSubject: hi\r\nBcc: <c@y.example>\r\n\r\nBcc: not a field\r\n",
			missing:  []string{"c@y.example"},
		},
		{
			name:     "several hidden, folded one per line, de-duplicated case-insensitively",
			msg:      "To: \"A, Person\" <a@x.example>\r\n\r\nbody",
			envelope: []string{"A@X.example", "c@y.example", "d@y.example", "C@Y.example"},
			want:     "To: \"A, Person\" <a@x.example>\r\nBcc: <c@y.example>,\r\n <d@y.example>\r\n\r\nbody",
			missing:  []string{"c@y.example", "d@y.example"},
		},
		{
			name:     "appended to an existing Bcc field",
			msg:      "To: a@x.example\r\nBcc: e@y.example,\r\n\tf@y.example\r\nSubject: s\r\n\r\nbody\r\n",
			envelope: []string{"a@x.example", "e@y.example", "f@y.example", "g@y.example"},
			want:     "To: a@x.example\r\nBcc: e@y.example,\r\n\tf@y.example,\r\n <g@y.example>\r\nSubject: s\r\n\r\nbody\r\n",
			missing:  []string{"g@y.example"},
		},
		{
			name:     "an empty Bcc field gets the addresses",
			msg:      "To: a@x.example\r\nBcc:\r\n\r\nbody\r\n",
			envelope: []string{"a@x.example", "g@y.example"},
			want:     "To: a@x.example\r\nBcc: <g@y.example>\r\n\r\nbody\r\n",
			missing:  []string{"g@y.example"},
		},
		{
			name:     "folded To, group syntax, unknown charset in a display name",
			msg:      "To: undisclosed-recipients:;\r\nCc: =?windows-1252?Q?Caf=E9?= <a@x.example>,\r\n  b@x.example\r\n\r\nbody\r\n",
			envelope: []string{"a@x.example", "b@x.example", "c@x.example"},
			want:     "To: undisclosed-recipients:;\r\nCc: =?windows-1252?Q?Caf=E9?= <a@x.example>,\r\n  b@x.example\r\nBcc: <c@x.example>\r\n\r\nbody\r\n",
			missing:  []string{"c@x.example"},
		},
		{
			name:     "LF line endings",
			msg:      "To: a@x.example\nSubject: s\n\nbody\n",
			envelope: []string{"a@x.example", "c@y.example", "d@y.example"},
			want:     "To: a@x.example\nSubject: s\nBcc: <c@y.example>,\n <d@y.example>\n\nbody\n",
			missing:  []string{"c@y.example", "d@y.example"},
		},
		{
			name:     "a header without a body or a final line ending",
			msg:      "To: a@x.example",
			envelope: []string{"a@x.example", "c@y.example"},
			want:     "To: a@x.example\r\nBcc: <c@y.example>\r\n",
			missing:  []string{"c@y.example"},
		},
		{
			name:     "header recipients outside the envelope are reported, not removed",
			msg:      "To: a@x.example, Z@other.example\r\nCc: y@other.example\r\n\r\nbody\r\n",
			envelope: []string{"a@x.example"},
			want:     "To: a@x.example, Z@other.example\r\nCc: y@other.example\r\n\r\nbody\r\n",
			extra:    []string{"y@other.example", "z@other.example"},
		},
		{
			name:     "an unreadable field: its addresses are unknown",
			msg:      "To: a@x.example\r\nCc: <<broken\r\n\r\nbody\r\n",
			envelope: []string{"a@x.example", "b@x.example"},
			want:     "To: a@x.example\r\nCc: <<broken\r\nBcc: <b@x.example>\r\n\r\nbody\r\n",
			missing:  []string{"b@x.example"},
			bad:      []string{"Cc"},
		},
		{
			name:     "quoted local part",
			msg:      "To: a@x.example\r\n\r\n",
			envelope: []string{"a@x.example", "john doe@x.example"},
			want:     "To: a@x.example\r\nBcc: <\"john doe\"@x.example>\r\n\r\n",
			missing:  []string{"john doe@x.example"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := []byte(tc.msg)
			h := parseHeader(raw)
			missing, extra := h.recipients(tc.envelope)
			if !slices.Equal(missing, tc.missing) || !slices.Equal(extra, tc.extra) || !slices.Equal(h.bad, tc.bad) {
				t.Fatalf("missing %q extra %q bad %q, want %q %q %q", missing, extra, h.bad, tc.missing, tc.extra, tc.bad)
			}
			at, ins := h.bccInsert(raw, missing)
			got, err := base64.StdEncoding.DecodeString(string(encode(raw, at, ins)))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("message\n%q\nwant\n%q", got, tc.want)
			}
			if string(raw) != tc.msg {
				t.Fatal("the original was modified")
			}
		})
	}
}

// countingReader counts what was read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestReadMessageBounded: reading stops one byte past what encodes within
// the limit; a larger message is an error, never a truncated message; a
// read error (a digest mismatch at the end) is returned.
func TestReadMessageBounded(t *testing.T) {
	const limit = 400 // 300 bytes encode to exactly 400
	for _, n := range []int{0, 1, 299, 300} {
		raw, err := readMessage(strings.NewReader(strings.Repeat("x", n)), int64(n), limit)
		if err != nil || len(raw) != n {
			t.Fatalf("%d bytes: %d, %v", n, len(raw), err)
		}
		if encodedLen(int64(n)) > limit {
			t.Fatalf("%d bytes encode to %d", n, encodedLen(int64(n)))
		}
	}
	cr := &countingReader{r: strings.NewReader(strings.Repeat("x", 10000))}
	_, err := readMessage(cr, 0, limit)
	var tl *errTooLarge
	if !errors.As(err, &tl) || cr.n != 301 {
		t.Fatalf("err %v after reading %d bytes", err, cr.n)
	}
	if !strings.Contains(err.Error(), "limit 400 bytes encoded") || !strings.Contains(err.Error(), "XOAUTH2") {
		t.Fatalf("error %q", err)
	}
	bad := errors.New("body object corrupt")
	_, err = readMessage(io.MultiReader(strings.NewReader("To: a@x\r\n\r\nhi"), &errReader{bad}), 0, limit)
	if !errors.Is(err, bad) {
		t.Fatalf("err %v, want the read error", err)
	}
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

func TestEncodeMatchesStdlib(t *testing.T) {
	raw := bytes.Repeat([]byte("abcdefg\r\n"), 100)
	for at := 0; at < 10; at++ {
		for _, ins := range []string{"", "B", "Bc", "Bcc: x\r\n"} {
			want := base64.StdEncoding.EncodeToString(slices.Concat(raw[:at], []byte(ins), raw[at:]))
			if got := string(encode(raw, at, []byte(ins))); got != want {
				t.Fatalf("at %d ins %q: differs", at, ins)
			}
		}
	}
}

// FuzzBccInsert: whatever the message, the insertion never touches the
// body or anything before the insertion point, and a well-formed
// envelope recipient is found in the header afterwards.
func FuzzBccInsert(f *testing.F) {
	f.Add("To: a@x.example\r\nSubject: s\r\n\r\nbody\r\n", "c@y.example")
	f.Add("To: a@x.example\r\nBcc: b@x.example,\r\n c@x.example\r\n\r\n", "d@y.example")
	f.Add("Bcc:\r\n\r\n", "d@y.example")
	f.Add("To: undisclosed-recipients:;\nBcc: (none)\n\nx", "d@y.example")
	f.Add("To: a@x.example", "\"q x\"@y.example")
	f.Add("", "a@b")
	f.Fuzz(func(t *testing.T, msg, rcpt string) {
		raw := []byte(msg)
		h := parseHeader(raw)
		missing, _ := h.recipients([]string{rcpt})
		at, ins := h.bccInsert(raw, missing)
		out, err := base64.StdEncoding.DecodeString(string(encode(raw, at, ins)))
		if err != nil {
			t.Fatal(err)
		}
		if at > h.end || !bytes.Equal(out[:at], raw[:at]) || !bytes.Equal(out[at+len(ins):], raw[at:]) {
			t.Fatalf("insertion %q at %d (header ends at %d) changed the message:\n%q", ins, at, h.end, out)
		}
		// A recipient the parser reads back as itself must be found (in
		// a header whose fields all parse, without the bare CRs the
		// ingress never stores).
		a, err := mail.ParseAddress((&mail.Address{Address: rcpt}).String())
		if err != nil || a.Address != rcpt || len(h.bad) > 0 || strings.Count(msg, "\r") != strings.Count(msg, "\r\n") {
			return
		}
		if m, _ := parseHeader(out).recipients([]string{rcpt}); len(m) != 0 {
			t.Fatalf("%q not found after the insertion:\n%q", rcpt, out)
		}
	})
}
