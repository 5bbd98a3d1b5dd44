package ingress

import (
	"bytes"
	"io"

	"github.com/jetrelay/jetrelay/contracts"
)

// lineEndings checks or repairs the line endings of DATA as it streams
// through. In reject mode the first bare CR or LF fails the read with
// ErrBareLineEnding (the rest of the message is then drained by go-smtp
// and the client gets 550 5.5.2 once it has finished sending). In
// normalize mode every bare CR and bare LF becomes CRLF, so a body that
// would end a transaction early at a lenient next hop cannot exist after
// the ingress.
type lineEndings struct {
	r         io.Reader
	normalize bool
	lines     contracts.LineMeter // measures the lines handed out
	prevCR    bool                // the last byte handed out was a CR whose LF is still due
	pending   []byte              // normalized bytes not yet handed out
	buf       []byte
	err       error
}

func newLineEndings(r io.Reader, normalize bool) *lineEndings {
	return &lineEndings{r: r, normalize: normalize}
}

func (l *lineEndings) Read(p []byte) (int, error) {
	n, err := l.read(p)
	l.lines.Write(p[:n])
	return n, err
}

func (l *lineEndings) read(p []byte) (int, error) {
	if len(l.pending) > 0 {
		n := copy(p, l.pending)
		l.pending = l.pending[n:]
		return n, nil
	}
	if l.err != nil {
		return 0, l.err
	}
	if !l.normalize {
		n, err := l.r.Read(p)
		if bad := bareLineEnding(p[:n], l.prevCR); bad >= 0 {
			l.err = ErrBareLineEnding
			return bad, l.err
		}
		if n > 0 {
			l.prevCR = p[n-1] == '\r'
		}
		if err == io.EOF && l.prevCR {
			l.err = ErrBareLineEnding
			return n, l.err
		}
		if err != nil {
			l.err = err
		}
		return n, err
	}
	// Normalize: read at most half of p so that the expansion fits.
	want := len(p) / 2
	if want == 0 {
		want = 1
	}
	if cap(l.buf) < want {
		l.buf = make([]byte, want)
	}
	n, err := l.r.Read(l.buf[:want])
	out := p[:0]
	var spill []byte
	emit := func(b ...byte) {
		for _, c := range b {
			if len(out) < cap(out) && len(out) < len(p) {
				out = append(out, c)
			} else {
				spill = append(spill, c)
			}
		}
	}
	for _, c := range l.buf[:n] {
		switch {
		case l.prevCR && c == '\n':
			emit('\n')
			l.prevCR = false
		case l.prevCR && c == '\r':
			emit('\n', '\r') // bare CR before another CR
		case l.prevCR:
			emit('\n', c)
			l.prevCR = false
		case c == '\r':
			emit('\r')
			l.prevCR = true
		case c == '\n':
			emit('\r', '\n')
		default:
			emit(c)
		}
	}
	if err == io.EOF && l.prevCR {
		emit('\n')
		l.prevCR = false
	}
	l.pending = spill
	if err != nil {
		l.err = err
		if len(out) > 0 || len(spill) > 0 {
			err = nil // hand out the data first
		}
	}
	return len(out), err
}

// bareLineEnding returns the offset of the first bare CR or bare LF in b
// (prevCR: the byte before b was a CR), or -1. A CR as the last byte is
// not decided yet: the next read tells.
func bareLineEnding(b []byte, prevCR bool) int {
	if len(b) == 0 {
		return -1
	}
	if prevCR && b[0] != '\n' {
		return 0
	}
	bad := -1
	// every LF must follow a CR
	for i := 0; ; {
		k := bytes.IndexByte(b[i:], '\n')
		if k < 0 {
			break
		}
		k += i
		if k == 0 && !prevCR || k > 0 && b[k-1] != '\r' {
			bad = k
			break
		}
		i = k + 1
	}
	// every CR must be followed by an LF (only before a bare LF matters)
	end := len(b) - 1
	if bad >= 0 {
		end = bad
	}
	for i := 0; ; {
		k := bytes.IndexByte(b[i:end], '\r')
		if k < 0 {
			break
		}
		k += i
		if b[k+1] != '\n' {
			return k
		}
		i = k + 1
	}
	return bad
}
