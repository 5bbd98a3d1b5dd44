package pickup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"unicode/utf8"
)

// ErrMalformed wraps every reason a file cannot be queued as a message:
// such a file goes to the badmail folder.
var ErrMalformed = errors.New("not a message that can be queued")

// envelope is a message's sender and recipients.
type envelope struct {
	from  string   // "" is the null sender
	rcpts []string // unique, in order
	iis   bool     // from X-Sender / X-Receiver
}

// addrParser decodes display names in any charset without failing: only
// the addresses matter here.
var addrParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// field is one header field, as it is in the file: its name and its lines
// (continuations included), CRLF-terminated.
type field struct {
	name  string // lower case
	start int    // offset in the file
	raw   []byte
}

// value is the field's unfolded value.
func (f field) value() string {
	v := f.raw[bytes.IndexByte(f.raw, ':')+1:]
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	return strings.TrimSpace(string(v))
}

// parse reads a pickup file (its line endings already CRLF) into an
// envelope and the message to queue: the X-Sender/X-Receiver fields and
// Bcc removed, the rest as it is.
func parse(data []byte) (envelope, []byte, error) {
	var env envelope
	if len(bytes.TrimSpace(data)) == 0 {
		return env, nil, fmt.Errorf("%w: the file is empty", ErrMalformed)
	}
	var fields []field
	pos, line := 0, 0
	body := []byte(nil) // from the empty line that ends the header section on
	for pos < len(data) {
		if bytes.HasPrefix(data[pos:], []byte("\r\n")) {
			body = data[pos:]
			break
		}
		line++
		next := len(data)
		l := data[pos:]
		if end := bytes.Index(l, []byte("\r\n")); end >= 0 {
			l, next = l[:end], pos+end+2
		}
		if l[0] == ' ' || l[0] == '\t' {
			if len(fields) == 0 {
				return env, nil, fmt.Errorf("%w: line 1 is a continuation, not a header field", ErrMalformed)
			}
			fields[len(fields)-1].raw = data[fields[len(fields)-1].start:next]
			pos = next
			continue
		}
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 || !fieldName(l[:colon]) {
			return env, nil, fmt.Errorf("%w: line %d is not a header field (%q): the file must start with the message's header section", ErrMalformed, line, clip(l))
		}
		fields = append(fields, field{name: strings.ToLower(string(l[:colon])), start: pos, raw: data[pos:next]})
		pos = next
	}

	// The IIS envelope: X-Sender and X-Receiver fields at the top.
	n := 0
	sawSender := false
	for ; n < len(fields); n++ {
		f := fields[n]
		switch f.name {
		case "x-sender":
			a, err := envAddr(f.value(), true)
			if err != nil {
				return env, nil, fmt.Errorf("%w: X-Sender: %v", ErrMalformed, err)
			}
			env.from, sawSender = a, true
			continue
		case "x-receiver":
			a, err := envAddr(f.value(), false)
			if err != nil {
				return env, nil, fmt.Errorf("%w: X-Receiver: %v", ErrMalformed, err)
			}
			env.rcpts = appendUnique(env.rcpts, a)
			env.iis = true
			continue
		}
		break
	}
	fields = fields[n:]

	var out bytes.Buffer
	out.Grow(len(data))
	var from, sender string
	for _, f := range fields {
		switch f.name {
		case "to", "cc", "bcc":
			if !env.iis {
				as, err := headerAddrs(f.value())
				if err != nil {
					return env, nil, fmt.Errorf("%w: %s: %v", ErrMalformed, f.raw[:bytes.IndexByte(f.raw, ':')], err)
				}
				for _, a := range as {
					env.rcpts = appendUnique(env.rcpts, a)
				}
			}
			if f.name == "bcc" {
				continue // never in the message
			}
		case "from", "sender":
			if !env.iis && !sawSender {
				as, err := headerAddrs(f.value())
				if err != nil {
					return env, nil, fmt.Errorf("%w: %s: %v", ErrMalformed, f.raw[:bytes.IndexByte(f.raw, ':')], err)
				}
				switch {
				case len(as) == 0:
				case f.name == "sender" && sender == "":
					sender = as[0]
				case f.name == "from" && from == "":
					from = as[0]
				}
			}
		}
		out.Write(f.raw)
		if !bytes.HasSuffix(f.raw, []byte("\r\n")) {
			out.WriteString("\r\n") // the file's last line, without a line ending
		}
	}
	if !env.iis && !sawSender {
		env.from = from
		if sender != "" {
			env.from = sender
		}
	}
	if len(env.rcpts) == 0 {
		if env.iis {
			return env, nil, fmt.Errorf("%w: no recipients", ErrMalformed)
		}
		return env, nil, fmt.Errorf("%w: no recipients (no X-Receiver:, and no address in To:, Cc: or Bcc:)", ErrMalformed)
	}
	if out.Len() == 0 {
		return env, nil, fmt.Errorf("%w: the message has no header fields besides the envelope (X-Sender, X-Receiver, Bcc)", ErrMalformed)
	}
	if len(body) == 0 {
		out.WriteString("\r\n")
	}
	out.Write(body)
	return env, out.Bytes(), nil
}

// fieldName reports whether b is a header field name (RFC 5322 §3.6.8).
func fieldName(b []byte) bool {
	for _, c := range b {
		if c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return len(b) > 0
}

// envAddr reads an X-Sender or X-Receiver value: an address, with or
// without angle brackets; "" or <> for the sender is the null sender.
func envAddr(v string, sender bool) (string, error) {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "<") && strings.HasSuffix(v, ">") {
		v = strings.TrimSpace(v[1 : len(v)-1])
	}
	if v == "" {
		if sender {
			return "", nil
		}
		return "", errors.New("empty")
	}
	if err := checkAddr(v); err != nil {
		return "", err
	}
	return v, nil
}

// headerAddrs reads the addresses of a To, Cc, Bcc, From or Sender value
// (display names, groups, comments); an empty value has none.
func headerAddrs(v string) ([]string, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	list, err := addrParser.ParseList(v)
	if err != nil {
		return nil, fmt.Errorf("%q: %v", clip([]byte(v)), err)
	}
	out := make([]string, 0, len(list))
	for _, a := range list {
		if err := checkAddr(a.Address); err != nil {
			return nil, err
		}
		out = append(out, a.Address)
	}
	return out, nil
}

// checkAddr accepts local@domain without spaces or controls, in UTF-8.
func checkAddr(a string) error {
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 || len(a) > 320 || !utf8.ValidString(a) {
		return fmt.Errorf("%q is not an address (local@domain)", clip([]byte(a)))
	}
	for _, r := range a {
		if r <= ' ' || r == 0x7f || r == '<' || r == '>' {
			return fmt.Errorf("%q is not an address (local@domain)", clip([]byte(a)))
		}
	}
	return nil
}

func appendUnique(list []string, a string) []string {
	for _, x := range list {
		if strings.EqualFold(x, a) {
			return list
		}
	}
	return append(list, a)
}

func clip(b []byte) string {
	if len(b) > 80 {
		b = b[:80]
	}
	return strings.ToValidUTF8(string(b), "?")
}

// crlf returns data with every line ending CRLF: a bare LF (a file
// written on Linux) or a bare CR becomes CRLF.
func crlf(data []byte) []byte {
	bare := false
	for i, c := range data {
		if c == '\n' && (i == 0 || data[i-1] != '\r') || c == '\r' && (i+1 == len(data) || data[i+1] != '\n') {
			bare = true
			break
		}
	}
	if !bare {
		return data
	}
	out := make([]byte, 0, len(data)+len(data)/32+2)
	for i := 0; i < len(data); i++ {
		switch c := data[i]; {
		case c == '\r' && i+1 < len(data) && data[i+1] == '\n':
			out = append(out, '\r', '\n')
			i++
		case c == '\r', c == '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}

// has8bit reports whether b has an octet above 127.
func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}
