package contracts

import (
	"crypto/rand"
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
	ms := uint64(now.Sub(queueIDEpoch).Milliseconds())
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		// crypto/rand does not fail on supported platforms (Go 1.24+).
		panic(err)
	}
	r := binary.BigEndian.Uint64(rnd[:])
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
