package contracts

import "bytes"

// MaxWireLine is the longest line SMTP allows, without its CRLF
// (RFC 5321 §4.5.3.1.6, RFC 5322 §2.1.1).
const MaxWireLine = 998

// LineMeter measures a message as it streams through Write: the length of
// the longest line of its body (after the header section's empty line),
// without the line ending. The ingress records it in [Body.MaxLine] so
// that delivery knows, before it sends a byte, whether lines must be
// folded.
type LineMeter struct {
	inBody bool
	lastCR bool // the last byte seen was a CR
	cur    int  // length of the line so far, a trailing CR included
	max    int
}

// Write observes p; it never fails.
func (m *LineMeter) Write(p []byte) (int, error) {
	b := p
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			m.cur += len(b)
			m.lastCR = b[len(b)-1] == '\r'
			break
		}
		n := m.cur + i
		if i > 0 && b[i-1] == '\r' || i == 0 && m.lastCR {
			n-- // the CR of the CRLF
		}
		switch {
		case m.inBody:
			m.max = max(m.max, n)
		case n == 0:
			m.inBody = true
		}
		m.cur, m.lastCR = 0, false
		b = b[i+1:]
	}
	return len(p), nil
}

// Max is the longest body line seen, an unfinished last line included; 0
// when the message has no body (no empty line after its header section).
func (m *LineMeter) Max() int {
	if !m.inBody {
		return 0
	}
	return max(m.max, m.cur)
}

// MeasureLines is [LineMeter] over a whole message.
func MeasureLines(msg []byte) int {
	var m LineMeter
	m.Write(msg)
	return m.Max()
}
