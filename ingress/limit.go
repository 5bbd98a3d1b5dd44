package ingress

import (
	"bytes"
	"io"
	"reflect"
	"unsafe"

	"github.com/emersion/go-smtp"
)

// go-smtp's DATA reader refuses a message of exactly MaxMessageBytes: it
// checks its budget before reading the bytes of the terminating dot, so
// the read that would find the end of the message fails. The ingress
// therefore switches that reader's own check off and counts the size
// itself (sizeLimit), so that SIZE as advertised, MAIL FROM SIZE=, DATA
// and BDAT all agree: up to max_message_bytes is accepted, one byte more
// is not.
//
// liftDataLimit reports whether it could. It relies on the unexported
// field "limited" of go-smtp v0.25's dataReader; TestLiftDataLimit fails
// if an upgrade changes that, and without it the ingress still enforces
// the limit (one byte short of it for DATA).
func liftDataLimit(r io.Reader) bool {
	if !isDataReader(r) {
		return false
	}
	f := reflect.ValueOf(r).Elem().FieldByName("limited")
	if !f.IsValid() || f.Kind() != reflect.Bool {
		return false
	}
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().SetBool(false)
	return true
}

// sizeLimit fails a read once more than max bytes came through.
type sizeLimit struct {
	r   io.Reader
	max int64
	n   int64
}

func (s *sizeLimit) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if s.n > s.max {
		return n, ErrTooLarge
	}
	return n, err
}

// go-smtp applies its command line limit (MaxLineLength) to message
// content too, counted by a loop over every byte received (lineLimitReader,
// between the connection and the command reader). Two things go wrong:
//
//   - A line in a message longer than the limit (HTML on one line, as
//     report generators and SQL Server Database Mail write it) breaks the
//     session, and the final dot got a temporary error, so the client
//     retried forever. BDAT is exempt in go-smtp only in principle: the
//     read of the BDAT command line also takes in the start of the chunk
//     that follows it, and a long line there ends the session.
//   - The byte loop was a fifth of the ingress's CPU on large messages.
//
// Postfix accepts long lines in message content; so does jetrelay. The
// session puts commandLines under go-smtp's lineLimitReader, so that while
// the limit is on (commands) each read returns at most one line and no
// message content is read together with a command; and it lifts the limit
// for the DATA in progress (the message size limit still bounds it),
// putting it back for the commands after it. go-smtp lifts it for BDAT
// chunks itself.
//
// It relies on the unexported field lineLimitReader of go-smtp v0.25's
// Conn and that reader's fields R and LineLimit; TestLongLines fails if an
// upgrade changes them, and without them the ingress behaves as go-smtp
// does.

// lineLimitOf finds go-smtp's line limit of c and puts commandLines under
// it. It returns the limit's address, or nil where go-smtp differs. Call
// it on the connection's goroutine (NewSession): go-smtp makes a new
// lineLimitReader after STARTTLS, and a new session with it.
func lineLimitOf(c *smtp.Conn) *int {
	if c == nil {
		return nil
	}
	llr := reflect.ValueOf(c).Elem().FieldByName("lineLimitReader")
	if !llr.IsValid() || llr.Kind() != reflect.Pointer || llr.IsNil() || llr.Elem().Kind() != reflect.Struct {
		return nil
	}
	lf, rf := llr.Elem().FieldByName("LineLimit"), llr.Elem().FieldByName("R")
	if !lf.IsValid() || lf.Type() != reflect.TypeOf(0) || !rf.IsValid() || rf.Type() != reflect.TypeOf((*io.Reader)(nil)).Elem() {
		return nil
	}
	limit := (*int)(unsafe.Pointer(lf.UnsafeAddr()))
	r := (*io.Reader)(unsafe.Pointer(rf.UnsafeAddr()))
	if *r == nil {
		return nil
	}
	if _, done := (*r).(*commandLines); !done {
		*r = &commandLines{r: *r, limit: limit}
	}
	return limit
}

// commandLines reads from the connection for go-smtp's lineLimitReader:
// while the line limit is on, each Read returns at most one line and keeps
// the rest for the next; while it is off (DATA, BDAT), reads pass through.
type commandLines struct {
	r     io.Reader
	limit *int
	rest  []byte // read from r, not yet returned
	err   error  // r's error, returned once rest is empty
}

func (l *commandLines) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	if len(l.rest) > 0 {
		n = copy(p, l.rest)
		l.rest = l.rest[n:]
	} else {
		if l.err != nil {
			return 0, l.err
		}
		var err error
		n, err = l.r.Read(p)
		if err != nil {
			if n == 0 {
				return 0, err
			}
			l.err = err
		}
	}
	if *l.limit > 0 {
		if i := bytes.IndexByte(p[:n], '\n'); i >= 0 && i+1 < n {
			// Give back what follows the line: it goes before anything
			// still kept.
			l.rest = append(append([]byte(nil), p[i+1:n]...), l.rest...)
			n = i + 1
		}
	}
	return n, nil
}

// liftLineLimit lifts the line limit for the DATA in progress when r is
// go-smtp's DATA reader (read on the connection's goroutine, unlike a BDAT
// pipe) and returns what restores it, or nil.
func liftLineLimit(limit *int, r io.Reader) (restore func()) {
	if limit == nil || !isDataReader(r) {
		return nil
	}
	old := *limit
	*limit = 0
	return func() { *limit = old }
}

// isDataReader reports whether r is go-smtp's DATA reader.
func isDataReader(r io.Reader) bool {
	v := reflect.ValueOf(r)
	return v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().Kind() == reflect.Struct && v.Elem().Type().Name() == "dataReader"
}
