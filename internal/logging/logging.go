// Package logging sets up zerolog for every jetrelay process and fixes the
// field names that all stages use, so that one grep follows a message from
// the SMTP session through every delivery attempt to its dead letter:
//
//	jq 'select(.msg_id=="0KQ3H5XZ7M2P9RTA")' jetrelay.log
//
// Invariants: a log line about a message carries FieldMsgID (the queue ID);
// secrets (passwords, AUTH payloads) are never logged; the console format
// is coloured only on a terminal, and never when NO_COLOR is set
// (https://no-color.org), so a log file holds no escape sequences.
package logging

import (
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"
)

// Field names shared by every stage.
const (
	FieldMsgID     = "msg_id"    // queue ID
	FieldJobID     = "job_id"    // queue ID plus part, when a message was split
	FieldSession   = "session"   // SMTP session ID at the ingress
	FieldRemote    = "remote"    // peer address (client at ingress, next hop at delivery)
	FieldFrom      = "from"      // envelope sender
	FieldRcpt      = "rcpt"      // one recipient
	FieldRcpts     = "rcpts"     // recipient count or list
	FieldDomain    = "domain"    // recipient domain
	FieldAttempt   = "attempt"   // delivery attempt number, from 1
	FieldSMTPCode  = "smtp_code" // reply code
	FieldSMTPEnh   = "smtp_enh"  // enhanced status code
	FieldHost      = "host"      // next-hop host name
	FieldIP        = "ip"        // next-hop address connected to
	FieldTLS       = "tls"       // TLS version and cipher, "" for none
	FieldSize      = "size"      // message size in bytes
	FieldResult    = "result"    // delivered, deferred, failed, mixed
	FieldReason    = "reason"    // why something was refused or dead-lettered
	FieldComponent = "component" // ingress, delivery, broker, deadletter, nats
	FieldDuration  = "duration"  // how long something took
	FieldNext      = "next_attempt"
	FieldUser      = "user" // SASL user name (never the password)
)

// New returns the process logger writing to w in the given level and format
// ("json" or "console"). The console format is coloured only when w is a
// terminal and NO_COLOR is not set.
func New(w io.Writer, level, format string) zerolog.Logger {
	if w == nil {
		w = os.Stderr
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !Colour(w)}
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// Colour reports whether text written to w may carry colour: w is a
// terminal and the NO_COLOR environment variable is not set (to anything).
func Colour(w io.Writer) bool {
	if os.Getenv("NO_COLOR") != "" {
		return false
	}
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

func init() {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	zerolog.DurationFieldUnit = time.Millisecond
	zerolog.DurationFieldInteger = false
}
