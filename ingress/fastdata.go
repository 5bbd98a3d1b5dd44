package ingress

import (
	"bufio"
	"bytes"
	"io"
	"reflect"
	"unsafe"
)

// go-smtp's DATA reader undoes dot-stuffing one byte at a time through
// bufio.Reader.ReadByte; for a large message that is most of the ingress's
// CPU. fastData reads the same bytes from the same buffered reader a line
// at a time (bytes.IndexByte instead of a byte loop) with exactly the same
// state machine, and hands its state back to go-smtp's reader whenever it
// stops, so that go-smtp's own draining after Data returns continues where
// fastData left off: at the end of the message, or in the middle of it
// after an error.
//
// It relies on the unexported fields r (*bufio.Reader) and state (int) of
// go-smtp v0.25's dataReader, and on its state numbering; TestFastData and
// FuzzFastData compare it with a copy of go-smtp's state machine, and
// TestFastDataTakesOver pins the fields. Where the fields are not found the
// ingress uses go-smtp's reader as it is.

// The states of go-smtp's dataReader (data.go).
const (
	dsBeginLine = iota // beginning of a line
	dsDot              // read '.' at the beginning of a line
	dsDotCR            // read ".\r" at the beginning of a line
	dsCR               // read '\r' (possibly at the end of a line)
	dsData             // in the middle of a line
	dsEOF              // read ".\r\n": end of data
)

// fastData is a drop-in for go-smtp's dataReader.
type fastData struct {
	br    *bufio.Reader
	state int
	sync  func(state int) // writes the state back into go-smtp's reader
	err   error
}

// takeOverData returns a fastData reading for go-smtp's DATA reader r, or
// r itself when r is not one (BDAT chunks arrive through a pipe).
func takeOverData(r io.Reader) io.Reader {
	if !isDataReader(r) {
		return r
	}
	e := reflect.ValueOf(r).Elem()
	rf, sf := e.FieldByName("r"), e.FieldByName("state")
	if !rf.IsValid() || !sf.IsValid() || sf.Kind() != reflect.Int || rf.Type() != reflect.TypeOf((*bufio.Reader)(nil)) {
		return r
	}
	br := reflect.NewAt(rf.Type(), unsafe.Pointer(rf.UnsafeAddr())).Elem().Interface().(*bufio.Reader)
	state := reflect.NewAt(sf.Type(), unsafe.Pointer(sf.UnsafeAddr())).Elem()
	if br == nil {
		return r
	}
	return &fastData{br: br, state: int(state.Int()), sync: func(s int) { state.SetInt(int64(s)) }}
}

func (f *fastData) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n := 0
	for n < len(p) && f.state != dsEOF {
		if f.state == dsData {
			// Middle of a line: copy everything up to the next CR in one go.
			buf, perr := f.peek()
			if len(buf) == 0 {
				f.fail(perr)
				break
			}
			k := bytes.IndexByte(buf, '\r')
			take := len(buf)
			if k >= 0 {
				take = k + 1
			}
			take = min(take, len(p)-n)
			copy(p[n:], buf[:take])
			_, _ = f.br.Discard(take)
			n += take
			if p[n-1] == '\r' {
				f.state = dsCR
			}
			continue
		}
		c, err := f.br.ReadByte()
		if err != nil {
			f.fail(err)
			break
		}
		switch f.state {
		case dsBeginLine:
			if c == '.' {
				f.state = dsDot
				continue
			}
			if c == '\r' {
				f.state = dsCR
			} else {
				f.state = dsData
			}
		case dsDot:
			if c == '\r' {
				f.state = dsDotCR
				continue
			}
			f.state = dsData
		case dsDotCR:
			if c == '\n' {
				f.state = dsEOF
				continue
			}
			f.state = dsData
		case dsCR:
			if c == '\n' {
				f.state = dsBeginLine
			} else {
				f.state = dsData
			}
		}
		p[n] = c
		n++
	}
	f.sync(f.state)
	if f.err == nil && f.state == dsEOF {
		f.err = io.EOF
	}
	if n > 0 {
		return n, nil
	}
	return 0, f.err
}

// peek returns the buffered bytes, filling the buffer when it is empty.
func (f *fastData) peek() ([]byte, error) {
	if f.br.Buffered() == 0 {
		if _, err := f.br.Peek(1); err != nil {
			return nil, err
		}
	}
	return f.br.Peek(f.br.Buffered())
}

func (f *fastData) fail(err error) {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	f.err = err
}
