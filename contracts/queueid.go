package contracts

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// QueueIDLen is the length of every queue ID.
const QueueIDLen = 16

// crockford is Crockford's base32 alphabet: no I, L, O or U, so an ID read
// aloud or copied by hand survives.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// queueIDEpoch keeps the time part short: 40 bits of milliseconds since
// 2024-01-01 last until the year 2058.
var queueIDEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// NewQueueID returns a new queue ID: 8 characters of milliseconds since
// 2024 followed by 8 characters (40 bits) of randomness, in Crockford
// base32. IDs sort by creation time, are safe as NATS subject tokens and in
// file names, and collide with negligible probability across any number of
// ingress processes (2^40 values per millisecond).
func NewQueueID(now time.Time) string {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		// crypto/rand does not fail on supported platforms (Go 1.24+).
		panic(err)
	}
	return encodeQueueID(now, binary.BigEndian.Uint64(rnd[:]))
}

func encodeQueueID(t time.Time, r uint64) string {
	ms := uint64(t.Sub(queueIDEpoch).Milliseconds())
	var b [QueueIDLen]byte
	for i := 7; i >= 0; i-- {
		b[i] = crockford[ms&31]
		ms >>= 5
	}
	for i := 15; i >= 8; i-- {
		b[i] = crockford[r&31]
		r >>= 5
	}
	return string(b[:])
}

// ValidQueueID reports whether s has the form NewQueueID produces.
func ValidQueueID(s string) bool {
	if len(s) != QueueIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isCrockford(s[i]) {
			return false
		}
	}
	return true
}

// QueueIDOf returns the queue ID an ID of jetrelay's starts with: a queue
// ID itself, or the ID of a job ("<queue id>-<part>") or of a dead letter
// ("<job id>-d<attempt>"). Every ID jetrelay prints names its message this
// way, so an ID copied from any log line or listing finds the message.
func QueueIDOf(id string) (string, bool) {
	if len(id) < QueueIDLen || (len(id) > QueueIDLen && id[QueueIDLen] != '-') || !ValidQueueID(id[:QueueIDLen]) {
		return "", false
	}
	return id[:QueueIDLen], true
}

// QueueIDTime returns the creation time encoded in a queue ID.
func QueueIDTime(s string) (time.Time, bool) {
	if !ValidQueueID(s) {
		return time.Time{}, false
	}
	var ms uint64
	for i := 0; i < 8; i++ {
		ms = ms<<5 | uint64(indexCrockford(s[i]))
	}
	return queueIDEpoch.Add(time.Duration(ms) * time.Millisecond), true
}

func isCrockford(c byte) bool { return indexCrockford(c) >= 0 }

func indexCrockford(c byte) int {
	for i := 0; i < len(crockford); i++ {
		if crockford[i] == c {
			return i
		}
	}
	return -1
}

// DerivedQueueID returns a queue ID that is a pure function of its inputs:
// the time part from t, the rest from a hash of seed. jetrelay uses it for
// messages it generates itself (DSNs) so that regenerating one after a
// crash yields the same ID and the broker drops the duplicate.
func DerivedQueueID(t time.Time, seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return encodeQueueID(t, binary.BigEndian.Uint64(sum[:8]))
}
