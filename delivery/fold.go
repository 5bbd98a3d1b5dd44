package delivery

import (
	"bytes"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"

	"github.com/jetrelay/jetrelay/contracts"
)

// What the folder did to a message, for the log and
// jetrelay_messages_folded_total{how}.
const (
	foldedHeaders = "headers"          // header lines folded at whitespace, body untouched
	foldedBroken  = "broken"           // body lines broken with CRLF (headers perhaps folded too)
	foldedQP      = "quoted_printable" // a single-part text body re-encoded as quoted-printable
)

// lineFolder keeps every line of a message within 998 octets on the wire
// (RFC 5321 §4.5.3.1.6, RFC 5322 §2.1.1), as Postfix does with
// smtp_line_length_limit, so that a next hop never answers "500 Line too
// long" to a message our ingress accepted. It sits in front of the
// dotWriter and counts the dot that the dotWriter will add to a line that
// starts with '.', so a line that is stuffed is still short enough.
//
//   - Header lines longer than the limit are folded with CRLF before a
//     space or tab (RFC 5322 §2.2.3), never leaving a line of whitespace
//     only; a line without any is folded by inserting CRLF SP.
//   - A body with lines longer than the limit (the ingress measured its
//     longest line, [contracts.Body.MaxLine]) that is a single text/* part with no
//     Content-Transfer-Encoding (or 7bit / 8bit) is re-encoded as
//     quoted-printable: the recipient reads exactly the text that was
//     sent. The Content-Transfer-Encoding field then moves to the end of
//     the header section (MIME-Version is added when missing).
//   - Any other body (multipart, base64 that was badly wrapped, no header
//     section, length unknown) has its long lines broken with CRLF, which
//     is what Postfix does. The body is always scanned, whatever the
//     measure said: lines that fit are passed on in runs, untouched.
//
// Line endings: a CR or LF ends a line, as the dotWriter completes each
// bare one to CRLF.
type lineFolder struct {
	w       io.Writer
	maxBody int // the ingress's measure: 0 unknown
	inBody  bool
	err     error

	// The header section.
	line        []byte // the physical line being collected
	field       []byte // the current field, folded, not yet written (a continuation may follow)
	heldCTE     []byte // Content-Transfer-Encoding, held while the body may be re-encoded
	named       bool   // field is a real header field
	ctype, cte  string
	mimeVersion bool
	folded      bool // a header line was folded

	// The body.
	mode   int // bodyBreak, bodyQP
	n      int // bodyBreak: octets on the current wire line
	broken bool
	qp     *quotedprintable.Writer
}

const (
	bodyBreak = iota
	bodyQP
)

func newLineFolder(w io.Writer, maxBody int) *lineFolder {
	return &lineFolder{w: w, maxBody: maxBody}
}

// Write folds p and passes it on; it reports len(p) unless the next
// writer failed.
func (f *lineFolder) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n := len(p)
	for !f.inBody && len(p) > 0 && f.err == nil {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			f.line = append(f.line, p...)
			return n, nil
		}
		f.line = append(f.line, p[:i+1]...)
		p = p[i+1:]
		f.headerLine(f.line)
		f.line = f.line[:0]
	}
	if len(p) > 0 && f.err == nil {
		f.body(p)
	}
	if f.err != nil {
		return 0, f.err
	}
	return n, nil
}

// Close ends the message: a header section without a body is completed,
// the quoted-printable encoder flushed. The dotWriter's finish follows.
func (f *lineFolder) Close() error {
	if !f.inBody {
		if len(f.line) > 0 {
			f.headerLine(f.line)
		}
		if !f.inBody {
			f.flushField()
			f.endHeaders(false)
		}
	}
	if f.qp != nil && f.err == nil {
		f.err = f.qp.Close()
	}
	return f.err
}

// how reports what was done, "" when the message went out as it was.
func (f *lineFolder) how() string {
	switch {
	case f.mode == bodyQP:
		return foldedQP
	case f.broken:
		return foldedBroken
	case f.folded:
		return foldedHeaders
	}
	return ""
}

func (f *lineFolder) write(b []byte) {
	if f.err == nil {
		_, f.err = f.w.Write(b)
	}
}

// headerLine takes one physical line of the header section, its line
// ending included (absent only at the very end of the message).
func (f *lineFolder) headerLine(line []byte) {
	content := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	switch {
	case len(content) == 0 && len(line) > 0:
		// The empty line: the body follows.
		f.flushField()
		f.endHeaders(true)
		f.write([]byte("\r\n"))
	case content[0] == ' ' || content[0] == '\t':
		f.field = f.foldLine(f.field, content)
	case fieldName(content) != "":
		f.flushField()
		f.field = f.foldLine(f.field[:0], content)
		f.named = true
	default:
		// Not a header field: the body starts here, without the empty
		// line (a malformed message; it is passed on as it is).
		f.flushField()
		f.endHeaders(false)
		f.body(line)
	}
}

// flushField writes the current field, noting the ones that decide how
// the body may be treated.
func (f *lineFolder) flushField() {
	if len(f.field) == 0 {
		return
	}
	if f.named {
		name, value, _ := bytes.Cut(f.field, []byte(":"))
		switch strings.ToLower(strings.TrimSpace(string(name))) {
		case "content-type":
			f.ctype = unfold(value)
		case "mime-version":
			f.mimeVersion = true
		case "content-transfer-encoding":
			f.cte = strings.ToLower(unfold(value))
			if f.maxBody > contracts.MaxWireLine {
				f.heldCTE = append(f.heldCTE[:0], f.field...)
				f.field, f.named = f.field[:0], false
				return
			}
		}
	}
	f.write(f.field)
	f.field, f.named = f.field[:0], false
}

// endHeaders chooses the body's treatment once the header section is
// known; blank says it ended with the empty line.
func (f *lineFolder) endHeaders(blank bool) {
	f.inBody = true
	switch {
	case f.maxBody > contracts.MaxWireLine && blank && f.textBody():
		f.mode = bodyQP
		f.write([]byte("Content-Transfer-Encoding: quoted-printable\r\n"))
		if !f.mimeVersion {
			f.write([]byte("MIME-Version: 1.0\r\n"))
		}
		f.heldCTE = nil
		f.qp = quotedprintable.NewWriter(f.w)
	default:
		// Short lines, or exactly 998 (fine unless it starts with a dot),
		// or length unknown, or long lines that cannot be re-encoded:
		// scan, break only what is too long.
		f.mode = bodyBreak
	}
	if len(f.heldCTE) > 0 {
		f.write(f.heldCTE)
		f.heldCTE = nil
	}
}

// textBody reports whether the body is one text/* part in an identity
// encoding, which quoted-printable can carry without loss.
func (f *lineFolder) textBody() bool {
	switch f.cte {
	case "", "7bit", "8bit":
	default:
		return false
	}
	if f.ctype == "" {
		return true // text/plain by default (RFC 2045 §5.2)
	}
	mt, _, err := mime.ParseMediaType(f.ctype)
	return err == nil && strings.HasPrefix(mt, "text/")
}

// foldLine appends one header line, folded, with CRLF.
func (f *lineFolder) foldLine(dst, content []byte) []byte {
	lead := 0 // octets already on the wire line (an inserted space)
	for {
		limit := contracts.MaxWireLine - lead
		if lead == 0 && len(content) > 0 && content[0] == '.' {
			limit-- // the dotWriter will stuff it
		}
		if len(content) <= limit {
			dst = append(dst, content...)
			return append(dst, '\r', '\n')
		}
		f.folded = true
		// Fold before the last whitespace within the limit that leaves
		// more than whitespace on this line.
		first := bytes.IndexFunc(content[:limit+1], func(r rune) bool { return r != ' ' && r != '\t' })
		at := -1
		for k := limit; first >= 0 && k > first; k-- {
			if content[k] == ' ' || content[k] == '\t' {
				at = k
				break
			}
		}
		if at > 0 {
			dst = append(dst, content[:at]...)
			dst = append(dst, '\r', '\n')
			content, lead = content[at:], 0
			continue
		}
		dst = append(dst, content[:limit]...)
		dst = append(dst, '\r', '\n', ' ')
		content, lead = content[limit:], 1
	}
}

// body passes body bytes on in the chosen mode.
func (f *lineFolder) body(p []byte) {
	switch f.mode {
	case bodyQP:
		if f.err == nil {
			_, f.err = f.qp.Write(p)
		}
	default:
		f.breakLines(p)
	}
}

// breakLines writes p with a CRLF inserted wherever a line would pass the
// limit. Whole lines that fit are written in runs as they are.
func (f *lineFolder) breakLines(p []byte) {
	start, i := 0, 0 // p[start:i] fits and is not written yet
	for i < len(p) && f.err == nil {
		nl := bytes.IndexByte(p[i:], '\n')
		if nl >= 0 {
			text := p[i : i+nl]
			if len(text) > 0 && text[len(text)-1] == '\r' {
				text = text[:len(text)-1]
			}
			dot := 0
			if f.n == 0 && len(text) > 0 && text[0] == '.' {
				dot = 1
			}
			if f.n+dot+len(text) <= contracts.MaxWireLine && bytes.IndexByte(text, '\r') < 0 {
				i += nl + 1
				f.n = 0
				continue
			}
		}
		end := len(p)
		if nl >= 0 {
			end = i + nl + 1
		}
		f.write(p[start:i])
		f.breakSlow(p[i:end])
		start, i = end, end
	}
	f.write(p[start:i])
}

// breakSlow is breakLines for a line that may not fit: it counts the dot
// that stuffing adds to a line starting with '.', and a CR or LF ends a
// line (the dotWriter completes bare ones).
func (f *lineFolder) breakSlow(p []byte) {
	for len(p) > 0 && f.err == nil {
		end := bytes.IndexAny(p, "\r\n")
		text := p
		if end >= 0 {
			text = p[:end]
		}
		for len(text) > 0 && f.err == nil {
			if f.n == 0 && text[0] == '.' {
				f.n = 1 // the stuffed dot
			}
			room := contracts.MaxWireLine - f.n
			if room <= 0 {
				f.write([]byte("\r\n"))
				f.n, f.broken = 0, true
				continue
			}
			k := min(room, len(text))
			f.write(text[:k])
			f.n += k
			text = text[k:]
		}
		if end < 0 {
			return
		}
		f.write(p[end : end+1])
		f.n = 0
		p = p[end+1:]
	}
}

// fieldName returns the name of a header field line, "" when the line is
// not one (RFC 5322 §3.6.8: printable ASCII but ':', then ':').
func fieldName(line []byte) string {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return ""
	}
	for _, c := range line[:i] {
		if c <= ' ' || c > '~' {
			return ""
		}
	}
	return string(line[:i])
}

// unfold joins a folded field value into one trimmed line.
func unfold(v []byte) string {
	s := strings.NewReplacer("\r\n", "", "\n", "").Replace(string(v))
	return strings.TrimSpace(s)
}
