package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/ioutil"
	"strings"
	"testing"
)

// refDataReader is dataReader.Read as released in go-smtp v0.26.0: it
// undoes dot-stuffing a byte at a time. dataReader must give the same
// results, read for read, except that a message of exactly MaxMessageBytes
// is accepted.
type refDataReader struct {
	r     *bufio.Reader
	state int

	limited bool
	n       int64 // Maximum bytes remaining
}

func (r *refDataReader) Read(b []byte) (n int, err error) {
	if r.limited {
		if r.n <= 0 {
			return 0, ErrDataTooLarge
		}
		if int64(len(b)) > r.n {
			b = b[0:r.n]
		}
	}

	for n < len(b) && r.state != stateEOF {
		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		switch r.state {
		case stateBeginLine:
			if c == '.' {
				r.state = stateDot
				continue
			}
			if c == '\r' {
				r.state = stateCR
				break
			}
			r.state = stateData
		case stateDot:
			if c == '\r' {
				r.state = stateDotCR
				continue
			}
			r.state = stateData
		case stateDotCR:
			if c == '\n' {
				r.state = stateEOF
				continue
			}
			r.state = stateData
		case stateCR:
			if c == '\n' {
				r.state = stateBeginLine
				break
			}
			r.state = stateData
		case stateData:
			if c == '\r' {
				r.state = stateCR
			}
		}
		b[n] = c
		n++
	}
	if err == nil && r.state == stateEOF {
		err = io.EOF
	}

	if r.limited {
		r.n -= int64(n)
	}
	return
}

var errBroken = errors.New("connection broken")

// pieces is a connection: it returns data in pieces of the given sizes,
// then err (with the last piece if withData).
type pieces struct {
	data     []byte
	sizes    []byte
	i        int
	err      error
	withData bool
}

func (p *pieces) Read(b []byte) (int, error) {
	if len(p.data) == 0 {
		return 0, p.err
	}
	size := len(p.data)
	if len(p.sizes) > 0 {
		size = 1 + int(p.sizes[p.i%len(p.sizes)])
		p.i++
	}
	if size > len(p.data) {
		size = len(p.data)
	}
	n := copy(b, p.data[:size])
	p.data = p.data[n:]
	if len(p.data) == 0 && p.withData {
		return n, p.err
	}
	return n, nil
}

// dataCase is one input for compareData.
type dataCase struct {
	in       []byte // what the client sends after DATA
	sizes    []byte // sizes of the connection's reads (1+size), cycled; none: all at once
	reads    []byte // sizes of the backend's reads (size%100), cycled; none: 4096
	stop     int    // the backend returns after this many reads (0: when done)
	fail     bool   // the connection breaks after in (else: EOF)
	withData bool   // its error comes with the last piece
	bufSize  int    // of the bufio.Reader
}

func (dc dataCase) conn() *bufio.Reader {
	p := &pieces{data: dc.in, sizes: dc.sizes, err: io.EOF, withData: dc.withData}
	if dc.fail {
		p.err = errBroken
	}
	return bufio.NewReaderSize(p, dc.bufSize)
}

func (dc dataCase) readSize(i int) int {
	if len(dc.reads) == 0 {
		return 4096
	}
	return int(dc.reads[i%len(dc.reads)]) % 100
}

// drain reads r to its end, as go-smtp does after Data returns.
func drain(r io.Reader) ([]byte, error) {
	var out []byte
	buf := make([]byte, 4096)
	for i := 0; ; i++ {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
		if i > 1<<20 {
			panic("drain: no end")
		}
	}
}

// unstuffed is what the whole message reads as without a limit: the
// content and the error that ends it (io.EOF for a complete message).
func (dc dataCase) unstuffed() ([]byte, error) {
	return drain(&refDataReader{r: dc.conn()})
}

// compareData runs dataReader and the released reader side by side, with
// the same connection and the same reads, and fails t where they differ:
// the bytes and error of every Read, the state, what a drain after the
// backend's last read returns, and what is left on the connection.
//
// With a limit (MaxMessageBytes) the released reader refuses a message of
// exactly the limit; dataReader reads the End-of-Data line instead and
// accepts it. Everything else, and the drain after a refusal, must be the
// same.
func compareData(t *testing.T, dc dataCase, limit int64) {
	t.Helper()
	full, fullErr := dc.unstuffed()
	ref := &refDataReader{r: dc.conn(), limited: limit > 0, n: limit}
	got := &dataReader{r: dc.conn(), limited: limit > 0, n: limit}
	fail := func(format string, args ...interface{}) {
		t.Helper()
		t.Fatalf("input %q (limit %d, case %+v): "+format, append([]interface{}{dc.in, limit, dc}, args...)...)
	}

	var out []byte
	var gerr error
	for i := 0; dc.stop == 0 || i < dc.stop; i++ {
		size := dc.readSize(i)
		if i > 4*len(dc.in)+64 {
			size = 4096 // reads of 0 bytes make no progress
		}
		rb, gb := make([]byte, size), make([]byte, size)
		rn, rerr := ref.Read(rb)
		var gn int
		gn, gerr = got.Read(gb)
		out = append(out, gb[:gn]...)
		if rn == 0 && rerr == ErrDataTooLarge && ref.limited && ref.n <= 0 {
			// The released reader's budget is spent before it reads on.
			var want error
			switch {
			case int64(len(full)) > limit:
				want = ErrDataTooLarge
			default:
				want = fullErr // io.EOF: exactly the limit, accepted
			}
			if gn != 0 || gerr != want {
				fail("read %d: %d bytes, %v; want 0 bytes, %v (message of %d bytes, %v)", i, gn, gerr, want, len(full), fullErr)
			}
			break
		}
		if rn != gn || !bytes.Equal(rb[:rn], gb[:gn]) || rerr != gerr {
			fail("read %d of %d bytes:\nreleased %q, %v\npatched  %q, %v", i, size, rb[:rn], rerr, gb[:gn], gerr)
		}
		if ref.state != got.state || ref.n != got.n {
			fail("read %d: state %d, budget %d; released: %d, %d", i, got.state, got.n, ref.state, ref.n)
		}
		if rerr != nil {
			break
		}
	}

	// What the backend read is the start of the message; with a limit,
	// the message up to the limit, then ErrDataTooLarge.
	if !bytes.HasPrefix(full, out) {
		fail("read %q, not a prefix of the message %q", out, full)
	}
	if limit > 0 && gerr != nil && gerr != ErrDataTooLarge && int64(len(full)) > limit {
		fail("a message of %d bytes with a limit of %d ended with %v", len(full), limit, gerr)
	}
	if gerr == ErrDataTooLarge && int64(len(out)) != limit {
		fail("ErrDataTooLarge after %d bytes with a limit of %d", len(out), limit)
	}

	// go-smtp drains the message after Data returns, without the limit.
	ref.limited, got.limited = false, false
	rrest, rerr := drain(ref)
	grest, gerr2 := drain(got)
	if !bytes.Equal(rrest, grest) || rerr != gerr2 || ref.state != got.state {
		fail("drain:\nreleased %q, %v, state %d\npatched  %q, %v, state %d", rrest, rerr, ref.state, grest, gerr2, got.state)
	}
	if !bytes.Equal(append(out, grest...), full) || gerr2 != fullErr {
		fail("read %q then drained %q, %v; the message is %q, %v", out, grest, gerr2, full, fullErr)
	}

	// The connection is left at the same byte, in the same state.
	ra, rae := ioutil.ReadAll(ref.r)
	ga, gae := ioutil.ReadAll(got.r)
	if !bytes.Equal(ra, ga) || rae != gae {
		fail("left on the connection:\nreleased %q, %v\npatched  %q, %v", ra, rae, ga, gae)
	}
}

// compareAllLimits runs compareData without a limit, and with limits
// around the size of the message (every limit for a short one) and limit,
// if above 0.
func compareAllLimits(t *testing.T, dc dataCase, limit int64) {
	t.Helper()
	full, _ := dc.unstuffed()
	limits := []int64{0, int64(len(full)) - 1, int64(len(full)), int64(len(full)) + 1, 1}
	if len(full) <= 32 {
		for l := int64(2); l < int64(len(full))-1; l++ {
			limits = append(limits, l)
		}
	}
	if limit > 0 {
		limits = append(limits, limit)
	}
	for _, l := range limits {
		if l >= 0 {
			compareData(t, dc, l)
		}
	}
}

var dataInputs = []string{
	"hello\r\n.\r\nMAIL FROM:<x>\r\n",
	"..dot\r\n.\r\n",
	".\r\n",
	"a\r\n.b\r\n..\r\n.\r\nrest",
	"hello\n.\r\nsmuggled\r\n.\r\n",
	"hello\r.\r\nsmuggled\r\n.\r\n",
	"hello\n.\nsmuggled\r\n.\r\n",
	"x\r\n.\rX\r\n.\r\n",
	"x\r\n.\r\r\n.\r\n",
	"no end",
	"line\r\n.",
	"line\r\n.\r",
	strings.Repeat("long line without end ", 10) + "\r\n.\r\n",
	strings.Repeat("0123456789", 50) + "\r\n" + strings.Repeat("x", 300) + "\r\n.\r\nNOOP\r\n",
	"\r\r\n.\r\n",
	"\r\n\r\n.\r\n",
	"",
}

func TestDataReader(t *testing.T) {
	for _, in := range dataInputs {
		for _, bufSize := range []int{16, 4096} {
			for _, sizes := range [][]byte{nil, {0}, {2, 0, 30}} {
				for _, reads := range [][]byte{nil, {1}, {3, 0, 17, 64}} {
					for _, fail := range []bool{false, true} {
						for _, stop := range []int{0, 1, 2} {
							dc := dataCase{in: []byte(in), sizes: sizes, reads: reads, stop: stop, fail: fail, withData: fail && stop == 1, bufSize: bufSize}
							compareAllLimits(t, dc, 0)
						}
					}
				}
			}
		}
	}
}

// A message of exactly the limit is accepted, one byte more is not; the
// limit counts the message as the backend reads it (dot-stuffing undone).
func TestDataReaderLimit(t *testing.T) {
	for _, tc := range []struct {
		in    string
		limit int64
		want  string
		err   error
	}{
		{"abc\r\n.\r\n", 5, "abc\r\n", io.EOF},
		{"abc\r\n.\r\n", 4, "abc\r", ErrDataTooLarge},
		{"abc\r\n.\r\n", 6, "abc\r\n", io.EOF},
		{"..abc\r\n.\r\n", 6, ".abc\r\n", io.EOF},
		{"..abc\r\n.\r\n", 5, ".abc\r", ErrDataTooLarge},
		{"abc\r\n.x\r\n.\r\n", 5, "abc\r\n", ErrDataTooLarge},
		{"abc\r\n..\r\n.\r\n", 5, "abc\r\n", ErrDataTooLarge},
		{"abc\r\n.\rx\r\n.\r\n", 5, "abc\r\n", ErrDataTooLarge},
		{"abc\r\n.\r", 5, "abc\r\n", io.ErrUnexpectedEOF},
		{".\r\n", 1, "", io.EOF},
	} {
		r := &dataReader{r: bufio.NewReader(strings.NewReader(tc.in)), limited: true, n: tc.limit}
		got, err := drain(r)
		if string(got) != tc.want || err != tc.err {
			t.Errorf("%q with a limit of %d: %q, %v; want %q, %v", tc.in, tc.limit, got, err, tc.want, tc.err)
		}
	}
}

func FuzzDataReader(f *testing.F) {
	for _, in := range dataInputs {
		f.Add([]byte(in), []byte{2, 0, 30}, []byte{3, 0, 17, 64}, uint16(0), uint8(0), false, false, false)
	}
	f.Add([]byte("a\r\n.\r\n"), []byte(nil), []byte(nil), uint16(3), uint8(0), false, false, true)
	f.Add([]byte("\n.\r\n"), []byte{0}, []byte{1}, uint16(1), uint8(1), true, true, false)
	f.Add([]byte("..\r\n.\r\n"), []byte{5}, []byte{2}, uint16(2), uint8(0), true, false, true)
	f.Fuzz(func(t *testing.T, in, sizes, reads []byte, limit uint16, stop uint8, fail, withData, small bool) {
		if len(in) > 1<<14 {
			return
		}
		bufSize := 4096
		if small {
			bufSize = 16
		}
		dc := dataCase{in: in, sizes: sizes, reads: reads, stop: int(stop % 8), fail: fail, withData: withData, bufSize: bufSize}
		compareAllLimits(t, dc, int64(limit))
	})
}

// BenchmarkDataReader reads a 10 MiB message of 78-byte lines (every
// tenth starting with a dot) with the released reader and with dataReader.
func BenchmarkDataReader(b *testing.B) {
	var msg []byte
	for i := 0; len(msg) < 10<<20; i++ {
		if i%10 == 0 {
			msg = append(msg, "..dot-stuffed "...)
		}
		msg = append(msg, strings.Repeat("x", 76)...)
		msg = append(msg, "\r\n"...)
	}
	msg = append(msg, ".\r\n"...)
	for _, tc := range []struct {
		name string
		new  func(*bufio.Reader) io.Reader
	}{
		{"released", func(br *bufio.Reader) io.Reader { return &refDataReader{r: br} }},
		{"patched", func(br *bufio.Reader) io.Reader { return &dataReader{r: br} }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			buf := make([]byte, 32<<10)
			for i := 0; i < b.N; i++ {
				r := tc.new(bufio.NewReader(bytes.NewReader(msg)))
				for {
					if _, err := r.Read(buf); err != nil {
						if err != io.EOF {
							b.Fatal(err)
						}
						break
					}
				}
			}
		})
	}
}
