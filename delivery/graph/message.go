package graph

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"sort"
	"strings"
)

// errTooLarge: the message, base64-encoded, exceeds the request limit.
type errTooLarge struct {
	size  int64 // the message's size in bytes (at least)
	limit int64 // the request limit, encoded bytes
}

func (e *errTooLarge) Error() string {
	return fmt.Sprintf("message of %d bytes is too large for a Microsoft Graph MIME send (limit %d bytes encoded); route it through SMTP with XOAUTH2 instead",
		e.size, e.limit)
}

// encodedLen is the size of n bytes in standard base64.
func encodedLen(n int64) int64 { return (n + 2) / 3 * 4 }

// maxRaw is the largest message that encodes within limit bytes.
func maxRaw(limit int64) int64 { return limit / 4 * 3 }

// readMessage reads the whole message, but never more than what encodes
// within limit (and one byte to know it is over): a larger message is an
// *errTooLarge, never a truncated one. hint is the size the job declares,
// used to size the buffer. Any read error (including a body that does
// not match its size, reported at its end) is returned as it is.
func readMessage(r io.Reader, hint, limit int64) ([]byte, error) {
	most := maxRaw(limit)
	var buf bytes.Buffer
	if hint > 0 && hint <= most {
		buf.Grow(int(hint) + bytes.MinRead) // no growing at the end
	}
	n, err := buf.ReadFrom(io.LimitReader(r, most+1))
	if err != nil {
		return nil, err
	}
	if n > most {
		return nil, &errTooLarge{size: max(n, hint), limit: limit}
	}
	return buf.Bytes(), nil
}

// header is what jetrelay needs to know of a message's header section.
type header struct {
	end    int    // offset of the empty line that ends it (len(raw) if none)
	nl     string // the line ending it uses ("\r\n" or "\n")
	bcc    [2]int // the existing Bcc field [start, end) including its line ending, or {-1, -1}
	bccNil bool   // the existing Bcc field has no addresses ("Bcc:" alone)
	// rcpts are the addresses of To, Cc and Bcc (lower case, de-duplicated).
	rcpts map[string]bool
	// bad names the recipient fields that could not be parsed.
	bad []string
}

// addrParser lets addresses be read whatever the charset of the display
// names (which jetrelay does not need).
var addrParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, in io.Reader) (io.Reader, error) { return in, nil },
}}

// parseHeader finds the header section of raw and reads its recipient
// fields. It never fails: fields it cannot read are named in bad.
func parseHeader(raw []byte) *header {
	h := &header{end: len(raw), nl: "\r\n", bcc: [2]int{-1, -1}, rcpts: map[string]bool{}}
	if i := bytes.IndexByte(raw, '\n'); i >= 0 && (i == 0 || raw[i-1] != '\r') {
		h.nl = "\n"
	}
	// Fields: [start, end) of each, with continuation lines.
	type field struct {
		name       string
		start, end int
	}
	var fields []field
	for i := 0; i < len(raw); {
		j := bytes.IndexByte(raw[i:], '\n')
		next := len(raw)
		if j >= 0 {
			next = i + j + 1
		}
		line := raw[i:next]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			h.end = i
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1].end = next
		} else {
			// A line without a colon is no field (not one named by its
			// text: "BCC" alone is not a Bcc field).
			name, _, ok := bytes.Cut(line, []byte(":"))
			if !ok {
				name = nil
			}
			fields = append(fields, field{name: strings.TrimSpace(string(name)), start: i, end: next})
		}
		i = next
	}
	for _, f := range fields {
		name := strings.ToLower(f.name)
		if name != "to" && name != "cc" && name != "bcc" {
			continue
		}
		_, value, _ := bytes.Cut(raw[f.start:f.end], []byte(":"))
		v := unfold(value)
		if name == "bcc" && h.bcc[0] < 0 {
			h.bcc = [2]int{f.start, f.end}
			h.bccNil = strings.TrimSpace(v) == ""
		}
		if strings.TrimSpace(v) == "" {
			continue
		}
		list, err := addrParser.ParseList(v)
		if err != nil {
			h.bad = append(h.bad, f.name)
			continue
		}
		for _, a := range list {
			h.rcpts[strings.ToLower(a.Address)] = true
		}
	}
	return h
}

func unfold(v []byte) string {
	s := strings.ReplaceAll(string(v), "\r\n", "")
	return strings.ReplaceAll(s, "\n", "")
}

// recipients compares the envelope with the header: missing are the
// envelope recipients no recipient field names (in envelope order, as
// written), extra the header recipients outside the envelope (lower
// case, sorted).
func (h *header) recipients(envelope []string) (missing, extra []string) {
	env := map[string]bool{}
	for _, a := range envelope {
		k := strings.ToLower(a)
		if !h.rcpts[k] && !env[k] {
			missing = append(missing, a)
		}
		env[k] = true
	}
	for a := range h.rcpts {
		if !env[a] {
			extra = append(extra, a)
		}
	}
	sort.Strings(extra)
	return missing, extra
}

// bccInsert returns where to insert and what, so that the addresses are
// in the message's Bcc field: appended to the existing one, or a new
// field at the end of the header section, one address per line (folded,
// RFC 5322 §2.2.3). The body is never touched.
func (h *header) bccInsert(raw []byte, addrs []string) (at int, text []byte) {
	if len(addrs) == 0 {
		return 0, nil
	}
	list := make([]string, len(addrs))
	for i, a := range addrs {
		list[i] = (&mail.Address{Address: a}).String()
	}
	sep := "," + h.nl + " "
	var b strings.Builder
	if h.bcc[0] >= 0 {
		// Before the field's own line ending.
		at = h.bcc[1]
		for at > h.bcc[0] && (raw[at-1] == '\n' || raw[at-1] == '\r') {
			at--
		}
		if h.bccNil {
			b.WriteString(" ")
		} else {
			b.WriteString(sep)
		}
		b.WriteString(strings.Join(list, sep))
		return at, []byte(b.String())
	}
	at = h.end
	if at > 0 && raw[at-1] != '\n' {
		b.WriteString(h.nl) // a last header line without its line ending
	}
	b.WriteString("Bcc: ")
	b.WriteString(strings.Join(list, sep))
	b.WriteString(h.nl)
	return at, []byte(b.String())
}

// encode returns the standard base64 of raw with text inserted at at,
// without building the modified message first.
func encode(raw []byte, at int, text []byte) []byte {
	n := int64(len(raw) + len(text))
	out := bytes.NewBuffer(make([]byte, 0, encodedLen(n)))
	w := base64.NewEncoder(base64.StdEncoding, out)
	_, _ = w.Write(raw[:at])
	_, _ = w.Write(text)
	_, _ = w.Write(raw[at:])
	_ = w.Close()
	return out.Bytes()
}
