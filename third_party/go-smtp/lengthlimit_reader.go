package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

var ErrTooLongLine = errors.New("smtp: too long a line in input stream")

// lineLimitReader reads from the underlying Reader but restricts
// line length of lines in input stream to a certain length.
//
// If line length exceeds the limit - Read returns ErrTooLongLine
type lineLimitReader struct {
	R         io.Reader
	LineLimit int

	curLineLength int
}

func (r *lineLimitReader) Read(b []byte) (int, error) {
	if r.curLineLength > r.LineLimit && r.LineLimit > 0 {
		return 0, ErrTooLongLine
	}

	n, err := r.R.Read(b)
	if err != nil {
		return n, err
	}

	if r.LineLimit == 0 {
		return n, nil
	}

	for _, chr := range b[:n] {
		if chr == '\n' {
			r.curLineLength = 0
		}
		r.curLineLength++

		if r.curLineLength > r.LineLimit {
			return 0, ErrTooLongLine
		}
	}

	return n, nil
}

// readLimitedLine reads a line like textproto.Reader.ReadLine, but fails
// with ErrTooLongLine as soon as it has more than limit bytes, its line
// ending included (0: no limit). The server reads its command lines with
// it. Message content (DATA, BDAT), which its readers take from the same
// bufio.Reader, is not counted, and neither is anything buffered after a
// line. A line cut short by an error other than io.EOF (a timeout) is not
// returned: textproto would return it as a line of its own.
func readLimitedLine(r *bufio.Reader, limit int) (string, error) {
	var line []byte
	for {
		if r.Buffered() == 0 {
			if _, err := r.Peek(1); err != nil {
				if len(line) > 0 && err == io.EOF {
					// As in textproto: the last line may lack its end.
					return string(line), nil
				}
				// A line cut short by a timeout is not a command.
				return "", err
			}
		}
		buf, _ := r.Peek(r.Buffered())
		end := bytes.IndexByte(buf, '\n')
		if end >= 0 {
			buf = buf[:end+1]
		}
		if n := len(line) + len(buf); limit > 0 && (n > limit || end < 0 && n >= limit) {
			return "", ErrTooLongLine
		}
		if end >= 0 && line == nil {
			s := string(trimEOL(buf))
			r.Discard(len(buf))
			return s, nil
		}
		line = append(line, buf...)
		r.Discard(len(buf))
		if end >= 0 {
			return string(trimEOL(line)), nil
		}
	}
}

// trimEOL removes the \n or \r\n that ends line.
func trimEOL(line []byte) []byte {
	line = line[:len(line)-1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line
}
