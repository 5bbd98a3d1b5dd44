package contracts

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Decode errors. Each is wrapped with detail; test with errors.Is.
var (
	ErrMalformed          = errors.New("contracts: malformed envelope")
	ErrUnsupportedVersion = errors.New("contracts: unsupported envelope version")
	ErrBodyMismatch       = errors.New("contracts: inline body does not match its size or digest")
)

// maxEnvelope bounds the JSON part so that a corrupt payload cannot make a
// decoder allocate without limit. A job with 1000 recipients and a full
// history stays far below it.
const maxEnvelope = 4 << 20

// EncodeJob frames a job and its inline body (nil when the body is in the
// bucket) into one payload. It fills in Version, and for an inline body it
// sets Body.Size from the bytes. It writes no digest (Body.SHA256 stays
// as the caller left it, normally empty): the broker checksums every
// stored record itself, so a second hash of every body on both sides
// bought nothing but CPU (BENCHMARKS.md).
func EncodeJob(j *Job, body []byte) ([]byte, error) {
	return AppendJob(nil, j, body)
}

// AppendJob is EncodeJob appending the payload to dst, for an inline body
// held in parts (taken in order, as if joined): a caller can frame a
// message into a reused buffer without first copying it into one slice.
func AppendJob(dst []byte, j *Job, body ...[]byte) ([]byte, error) {
	if j.Version == 0 {
		j.Version = SchemaVersion
	}
	n := 0
	for _, p := range body {
		n += len(p)
	}
	if j.Body.Inline() {
		j.Body.Size = int64(n)
	} else if n != 0 {
		return nil, fmt.Errorf("%w: job %s has a body object and inline bytes", ErrMalformed, j.JobID())
	}
	return appendFrame(dst, j, body...)
}

// DecodeJob parses a payload written by EncodeJob. The returned body aliases
// data; it is nil when the body is in the bucket.
func DecodeJob(data []byte) (*Job, []byte, error) {
	var j Job
	body, err := unframe(data, &j, &j.Version)
	if err != nil {
		return nil, nil, err
	}
	if j.QueueID == "" {
		return nil, nil, fmt.Errorf("%w: no queue_id", ErrMalformed)
	}
	if len(j.Rcpts) == 0 {
		return nil, nil, fmt.Errorf("%w: job %s has no recipients", ErrMalformed, j.JobID())
	}
	if err := checkBody(j.Body, body); err != nil {
		return nil, nil, fmt.Errorf("job %s: %w", j.JobID(), err)
	}
	return &j, body, nil
}

// EncodeDeadLetter frames a dead letter and its inline body.
func EncodeDeadLetter(d *DeadLetter, body []byte) ([]byte, error) {
	if d.Version == 0 {
		d.Version = SchemaVersion
	}
	if d.Job.Version == 0 {
		d.Job.Version = SchemaVersion
	}
	if d.Job.Body.Inline() {
		d.Job.Body.Size = int64(len(body))
	} else if len(body) != 0 {
		return nil, fmt.Errorf("%w: dead letter %s has a body object and inline bytes", ErrMalformed, d.ID)
	}
	return frame(d, body)
}

// DecodeDeadLetter parses a payload written by EncodeDeadLetter.
func DecodeDeadLetter(data []byte) (*DeadLetter, []byte, error) {
	var d DeadLetter
	body, err := unframe(data, &d, &d.Version)
	if err != nil {
		return nil, nil, err
	}
	if d.ID == "" || d.Job.QueueID == "" {
		return nil, nil, fmt.Errorf("%w: dead letter without id or queue_id", ErrMalformed)
	}
	if d.Job.Version > SchemaVersion {
		return nil, nil, fmt.Errorf("%w: job version %d", ErrUnsupportedVersion, d.Job.Version)
	}
	if err := checkBody(d.Job.Body, body); err != nil {
		return nil, nil, fmt.Errorf("dead letter %s: %w", d.ID, err)
	}
	return &d, body, nil
}

// Digest is the hex SHA-256 of b (its parts taken in order, as if
// joined), as jobs written before 2026-12 carry it in Body.SHA256.
func Digest(b ...[]byte) string {
	var sum [sha256.Size]byte
	if len(b) == 1 {
		sum = sha256.Sum256(b[0])
	} else {
		h := sha256.New()
		for _, p := range b {
			h.Write(p)
		}
		h.Sum(sum[:0])
	}
	return hex.EncodeToString(sum[:])
}

func frame(v any, body []byte) ([]byte, error) { return appendFrame(nil, v, body) }

func appendFrame(dst []byte, v any, body ...[]byte) ([]byte, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("contracts: encode: %w", err)
	}
	n := len(js) + 1
	for _, p := range body {
		n += len(p)
	}
	dst = slices.Grow(dst, n)
	dst = append(dst, js...)
	dst = append(dst, '\n')
	for _, p := range body {
		dst = append(dst, p...)
	}
	return dst, nil
}

func unframe(data []byte, v any, version *int) ([]byte, error) {
	i := bytes.IndexByte(data, '\n')
	if i < 0 {
		if len(data) > maxEnvelope {
			return nil, fmt.Errorf("%w: envelope longer than %d bytes", ErrMalformed, maxEnvelope)
		}
		return nil, fmt.Errorf("%w: no end of envelope", ErrMalformed)
	}
	if i > maxEnvelope {
		return nil, fmt.Errorf("%w: envelope longer than %d bytes", ErrMalformed, maxEnvelope)
	}
	if i == 0 || data[0] != '{' {
		return nil, fmt.Errorf("%w: envelope is not a JSON object", ErrMalformed)
	}
	if err := json.Unmarshal(data[:i], v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if *version < 1 {
		return nil, fmt.Errorf("%w: missing version", ErrMalformed)
	}
	if *version > SchemaVersion {
		return nil, fmt.Errorf("%w: %d (this build reads up to %d)", ErrUnsupportedVersion, *version, SchemaVersion)
	}
	body := data[i+1:]
	if len(body) == 0 {
		body = nil
	}
	return body, nil
}

func checkBody(b Body, inline []byte) error {
	if !b.Inline() {
		if len(inline) != 0 {
			return fmt.Errorf("%w: body object %q and %d inline bytes", ErrBodyMismatch, b.Object, len(inline))
		}
		if b.Size < 0 {
			return fmt.Errorf("%w: negative size", ErrBodyMismatch)
		}
		return nil
	}
	if int64(len(inline)) != b.Size {
		return fmt.Errorf("%w: %d bytes, envelope says %d", ErrBodyMismatch, len(inline), b.Size)
	}
	// Jobs written by earlier builds carry a digest; it is still checked.
	if b.SHA256 != "" && Digest(inline) != b.SHA256 {
		return fmt.Errorf("%w: digest differs", ErrBodyMismatch)
	}
	return nil
}
