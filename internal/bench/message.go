package bench

import (
	"bytes"
	"errors"
	"fmt"
	"time"
)

// HeaderName is the header that carries a message's bench ID,
// "<run>-<seq>", from the load client to the sink.
const HeaderName = "X-Bench-Id"

// seqDigits is the fixed width of the sequence number in a message, so
// that one pre-generated message is patched in place for every send.
const seqDigits = 10

// Recipients spreads n recipients over d domains, round robin: recipient
// i is u<i>@d<i mod d>.bench.example. Every domain gets n/d recipients,
// the first n mod d domains one more.
func Recipients(n, d int) []string {
	if n < 1 {
		n = 1
	}
	if d < 1 {
		d = 1
	}
	if d > n {
		d = n
	}
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("u%d@d%d.bench.example", i, i%d)
	}
	return out
}

// Message is one pre-generated message: a small per-sender header part
// with slots for the sequence number, and a body shared by all senders
// that already ends with the end-of-data mark, so that a send is a
// digit patch and one writev.
type Message struct {
	// Header is the template header; Clone it for each sender.
	Header []byte
	// Body is the rest of the message in wire form (dot-stuffed, CRLF,
	// terminated by ".\r\n"); read only, shared.
	Body []byte
	// Size is the message size (header and body without the final ".\r\n").
	Size int
	// slots are the offsets in Header of the seqDigits-wide sequence
	// number fields.
	slots []int
}

// NewMessage generates a message of exactly size bytes (at least the size
// of its header) from from to rcpts, for the run runID. Its lines are 76
// characters of pseudo-random letters and digits (not very compressible,
// never starting with a dot).
func NewMessage(runID, from string, rcpts []string, size int) *Message {
	var h bytes.Buffer
	var slots []int
	slot := func() {
		slots = append(slots, h.Len())
		h.WriteString("0000000000")
	}
	fmt.Fprintf(&h, "From: <%s>\r\n", from)
	h.WriteString("To: ")
	for i, r := range rcpts {
		if i > 0 {
			h.WriteString(",\r\n ")
		}
		fmt.Fprintf(&h, "<%s>", r)
	}
	h.WriteString("\r\n")
	h.WriteString("Subject: jetrelay bench message\r\n")
	fmt.Fprintf(&h, "Date: %s\r\n", time.Now().UTC().Format(time.RFC1123Z))
	h.WriteString("Message-ID: <")
	slot()
	fmt.Fprintf(&h, ".%s@bench.example>\r\n", runID)
	fmt.Fprintf(&h, "%s: %s-", HeaderName, runID)
	slot()
	h.WriteString("\r\n")
	h.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")

	m := &Message{Header: h.Bytes(), slots: slots}
	left := size - h.Len()
	if left < 2 {
		left = 2
	}
	m.Body = make([]byte, 0, left+3)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	x := uint32(2463534242)
	for left > 0 {
		n := 76
		if left-2 < n {
			n = left - 2
		}
		for i := 0; i < n; i++ {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			m.Body = append(m.Body, alphabet[x&63])
		}
		m.Body = append(m.Body, '\r', '\n')
		left -= n + 2
		// A remainder of one byte cannot be a line: fold it into this one.
		if left == 1 {
			m.Body = append(m.Body[:len(m.Body)-2], 'x', '\r', '\n')
			left = 0
		}
	}
	m.Size = len(m.Header) + len(m.Body)
	m.Body = append(m.Body, ".\r\n"...)
	return m
}

// CloneHeader returns a private copy of the header for one sender.
func (m *Message) CloneHeader() []byte { return bytes.Clone(m.Header) }

// SetSeq writes seq into every slot of hdr (a CloneHeader copy).
func (m *Message) SetSeq(hdr []byte, seq int) {
	for _, off := range m.slots {
		v := seq
		for i := off + seqDigits - 1; i >= off; i-- {
			hdr[i] = byte('0' + v%10)
			v /= 10
		}
	}
}

// ParseID splits a bench ID "<run>-<seq>" as found in the header.
func ParseID(id []byte) (run []byte, seq int, err error) {
	i := bytes.LastIndexByte(id, '-')
	if i <= 0 || i == len(id)-1 {
		return nil, 0, errors.New("bench id: want <run>-<seq>")
	}
	n := 0
	for _, c := range id[i+1:] {
		if c < '0' || c > '9' || n > (1<<31)/10 {
			return nil, 0, fmt.Errorf("bench id: bad sequence %q", id[i+1:])
		}
		n = n*10 + int(c-'0')
	}
	return id[:i], n, nil
}
