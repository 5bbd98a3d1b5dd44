package delivery

import (
	"bufio"
	"bytes"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/contracts"
)

// foldWire runs msg through the lineFolder and the dotWriter, written in
// chunks of the given size, and returns the DATA as it goes on the wire
// (without the final dot) and what the folder did.
func foldWire(t testing.TB, msg []byte, maxLine, chunk int) ([]byte, string) {
	t.Helper()
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	dw := &dotWriter{w: bw, bol: true}
	f := newLineFolder(dw, maxLine)
	for p := msg; len(p) > 0; {
		n := min(chunk, len(p))
		if _, err := f.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dw.finish(); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
	wire := out.Bytes()
	if len(msg) == 0 && string(wire) == ".\r\n" {
		return nil, f.how()
	}
	if !bytes.HasSuffix(wire, []byte("\r\n.\r\n")) {
		t.Fatalf("DATA does not end with CRLF.CRLF: %q", tail(wire))
	}
	return wire[:len(wire)-3], f.how()
}

func tail(b []byte) []byte { return b[max(0, len(b)-40):] }

// wireLines checks that every line is within 998 octets and ends in CRLF,
// and returns the lines with dot-stuffing undone.
func wireLines(t testing.TB, wire []byte) [][]byte {
	t.Helper()
	if len(wire) == 0 {
		return nil
	}
	if !bytes.HasSuffix(wire, []byte("\r\n")) {
		t.Fatalf("wire does not end with CRLF: %q", tail(wire))
	}
	lines := bytes.Split(wire[:len(wire)-2], []byte("\r\n"))
	for i, l := range lines {
		if len(l) > contracts.MaxWireLine {
			t.Fatalf("line %d is %d octets on the wire: %q…", i+1, len(l), l[:40])
		}
		if bytes.ContainsAny(l, "\r\n") {
			t.Fatalf("line %d has a bare CR or LF: %q", i+1, l)
		}
		if len(l) > 0 && l[0] == '.' {
			if len(l) < 2 || l[1] != '.' {
				t.Fatalf("line %d starts with an unstuffed dot: %q", i+1, l)
			}
			lines[i] = l[1:]
		}
	}
	return lines
}

// squeeze drops line endings and folding whitespace: what is left must
// survive folding and breaking unchanged.
func squeeze(b []byte) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
			out = append(out, c)
		}
	}
	return string(out)
}

func TestLineFolder(t *testing.T) {
	long := func(n int, fill string) string { return strings.Repeat(fill, n/len(fill)+1)[:n] }
	words := func(n int) string { return long(n, "lorem ipsum dolor ") }
	type check int
	const (
		same     check = iota // the wire carries the message unchanged
		unfolded              // removing CRLF before whitespace restores the headers
		rejoined              // removing the inserted line breaks restores the text
		decoded               // the body is quoted-printable and decodes to the original
	)
	cases := []struct {
		name   string
		msg    string
		how    string
		check  check
		inBody bool // measure the body's longest line as the ingress does
	}{
		{"short lines pass", "Subject: hi\r\n\r\nhello\r\n.dot\r\n", "", same, true},
		{"length unknown, short lines", "Subject: hi\r\n\r\nhello\r\n", "", same, false},
		{"998 exactly", "Subject: hi\r\n\r\n" + long(998, "x") + "\r\n", "", same, true},
		{"998 starting with a dot is broken", "Subject: hi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n." + long(997, "x") + "\r\n", foldedBroken, rejoined, true},
		{"header folded at whitespace", "Subject: " + words(3000) + "\r\nTo: a@b\r\n\r\nbody\r\n", foldedHeaders, unfolded, true},
		{"header continuation folded", "Subject: x\r\n " + words(2500) + "\r\n\r\nbody\r\n", foldedHeaders, unfolded, true},
		{"header without whitespace", "X-Blob: " + long(3014, "A") + "\r\n\r\nbody\r\n", foldedHeaders, rejoined, true},
		{"header of whitespace then a word", "X-Pad:" + long(1200, " ") + long(1200, "B") + "\r\n\r\nbody\r\n", foldedHeaders, rejoined, true},
		{"text body re-encoded", "Subject: hi\r\n\r\n" + long(100000, "text. ") + "\r\nshort\r\n", foldedQP, decoded, true},
		{"8bit text/html re-encoded", "MIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + long(5000, "<p>héllo=</p> ") + "\r\n", foldedQP, decoded, true},
		{"multipart broken", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n" + long(8193, "y") + "\r\n--b--\r\n", foldedBroken, rejoined, true},
		{"base64 unwrapped broken", "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n" + long(4000, "QUJD") + "\r\n", foldedBroken, rejoined, true},
		{"no header section", "Subject: x\r\n" + long(2000, "z") + "\r\n", foldedBroken, rejoined, true},
		{"length unknown, long", "Subject: x\r\n\r\n" + long(2000, "z") + "\r\n", foldedBroken, rejoined, false},
		{"no final line ending", "Subject: x\r\n\r\n" + long(1999, "z"), foldedBroken, rejoined, false},
	}
	// Lines of 989…8192 octets ending in '.', so that breaks fall on and
	// around dots, with and without a leading dot.
	var dots strings.Builder
	dots.WriteString("Content-Type: multipart/alternative; boundary=x\r\n\r\n")
	for n := 989; n <= 8192; n += 61 {
		dots.WriteString(long(n-1, "a.") + ".\r\n")
		dots.WriteString("." + long(n-2, ".b") + ".\r\n")
	}
	cases = append(cases, struct {
		name   string
		msg    string
		how    string
		check  check
		inBody bool
	}{"lines of dots", dots.String(), foldedBroken, rejoined, true})

	for _, tc := range cases {
		for _, chunk := range []int{1, 7, 997, 1 << 20} {
			msg := []byte(tc.msg)
			maxLine := 0
			if tc.inBody {
				maxLine = contracts.MeasureLines(msg)
			}
			wire, how := foldWire(t, msg, maxLine, chunk)
			if how != tc.how {
				t.Errorf("%s (chunks of %d): folder did %q, want %q", tc.name, chunk, how, tc.how)
			}
			lines := wireLines(t, wire)
			text := bytes.Join(lines, []byte("\r\n"))
			if !bytes.HasSuffix(msg, []byte("\r\n")) {
				msg = append(msg, "\r\n"...)
			}
			text = append(text, "\r\n"...)
			switch tc.check {
			case same:
				if !bytes.Equal(text, msg) {
					t.Errorf("%s: changed on the wire", tc.name)
				}
			case unfolded:
				unfold := strings.NewReplacer("\r\n ", " ", "\r\n\t", "\t").Replace
				if unfold(string(text)) != unfold(string(msg)) {
					t.Errorf("%s: unfolding does not restore the message", tc.name)
				}
			case rejoined:
				if squeeze(text) != squeeze(msg) {
					t.Errorf("%s: the text did not survive", tc.name)
				}
			case decoded:
				hdr, body, _ := bytes.Cut(text, []byte("\r\n\r\n"))
				hdr = append(hdr, "\r\n"...)
				if !bytes.Contains(hdr, []byte("Content-Transfer-Encoding: quoted-printable\r\n")) || !bytes.Contains(hdr, []byte("MIME-Version: 1.0")) {
					t.Fatalf("%s: headers %q", tc.name, hdr)
				}
				if bytes.Count(hdr, []byte("Content-Transfer-Encoding")) != 1 {
					t.Errorf("%s: the old Content-Transfer-Encoding is still there: %q", tc.name, hdr)
				}
				got, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
				_, want, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s: decoded body differs (%v): %d octets, want %d", tc.name, err, len(got), len(want))
				}
			}
		}
	}
}

// The SIZE parameter is an estimate: it is left out when re-encoding may
// make the message larger.
func TestMailSizeWithLongLines(t *testing.T) {
	c := &smtpConn{ext: map[string]string{"SIZE": "0"}}
	if got := c.mailCommand(&envelope{from: "a@b", size: 5000, maxLine: 100}); got != "MAIL FROM:<a@b> SIZE=5000" {
		t.Errorf("short lines: %q", got)
	}
	if got := c.mailCommand(&envelope{from: "a@b", size: 5000, maxLine: 4000}); got != "MAIL FROM:<a@b>" {
		t.Errorf("long lines: %q", got)
	}
}

func FuzzLineFolder(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\nhello\r\n"), 0, 3)
	f.Add([]byte("Subject: "+strings.Repeat("ab ", 700)+"\r\n\r\n"+strings.Repeat(".", 3000)+"\r\n"), 3000, 100)
	f.Add([]byte("X: y\r\n\r\n"+strings.Repeat("é", 900)+"\r\n"), 1800, 1)
	f.Add([]byte("\r\n\r\n\n\r.\r"), 0, 1)
	f.Fuzz(func(t *testing.T, msg []byte, maxLine, chunk int) {
		if chunk <= 0 || chunk > 1<<16 || len(msg) > 1<<18 {
			t.Skip()
		}
		// The folder trusts the ingress's measure only to choose how to
		// treat the body; whatever it is told, no line may pass 998.
		if maxLine < 0 {
			maxLine = contracts.MeasureLines(msg)
		}
		wire, how := foldWire(t, msg, maxLine, chunk)
		lines := wireLines(t, wire)
		if how != foldedQP && squeeze(bytes.Join(lines, nil)) != squeeze(msg) {
			t.Fatalf("the text did not survive (%s)", how)
		}
	})
}

// BenchmarkLineFolder measures the folder in front of the dotWriter on
// messages whose lines fit (the common case: scanned, passed in runs) and
// on one that must be re-encoded.
func BenchmarkLineFolder(b *testing.B) {
	text := strings.Repeat(strings.Repeat("x", 76)+"\r\n", 1<<20/78)
	long := strings.Repeat("y", 1<<20)
	hdr := "From: <a@b>\r\nTo: <c@d>\r\nSubject: bench\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\n"
	for _, bc := range []struct {
		name string
		msg  []byte
		fold bool
	}{
		{"1KiB/dotwriter-only", []byte(hdr + text[:1024]), false},
		{"1KiB/folder", []byte(hdr + text[:1024]), true},
		{"1MiB/dotwriter-only", []byte(hdr + text), false},
		{"1MiB/folder", []byte(hdr + text), true},
		{"1MiB-one-line/quoted-printable", []byte(hdr + long), true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			maxLine := contracts.MeasureLines(bc.msg)
			bw := bufio.NewWriterSize(io.Discard, 32<<10)
			b.SetBytes(int64(len(bc.msg)))
			for b.Loop() {
				dw := &dotWriter{w: bw, bol: true}
				var w io.Writer = dw
				f := newLineFolder(dw, maxLine)
				if bc.fold {
					w = f
				}
				for p := bc.msg; len(p) > 0; {
					n := min(32<<10, len(p))
					w.Write(p[:n])
					p = p[n:]
				}
				if bc.fold {
					f.Close()
				}
				dw.finish()
			}
		})
	}
}
