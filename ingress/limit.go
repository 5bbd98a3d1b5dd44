package ingress

import (
	"io"
	"reflect"
	"unsafe"
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

// isDataReader reports whether r is go-smtp's DATA reader.
func isDataReader(r io.Reader) bool {
	v := reflect.ValueOf(r)
	return v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().Kind() == reflect.Struct && v.Elem().Type().Name() == "dataReader"
}
