// Package mailhdr is the header work every way into the queue shares: the
// SMTP ingress and the pickup directory. It looks at a message's header
// section (how many Received fields, whether Message-ID and Date are
// there), renders jetrelay's Received trace field, and the Message-ID and
// Date a message without them gets.
//
// Invariants: nothing a client or a file supplies can break a rendered
// field (Sanitize); the output is a pure function of the arguments, so a
// message queued again after a crash gets the same bytes.
package mailhdr

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// Facts is what the relay needs to know about a header section.
type Facts struct {
	Received  int  // Received fields
	MessageID bool // a Message-ID field
	Date      bool // a Date field
	Complete  bool // the end of the header section was seen
}

// Scan looks at the header section at the start of b (up to the first
// empty line; b may hold only the start of a message).
func Scan(b []byte) Facts {
	var f Facts
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		var line []byte
		if i < 0 {
			line, b = b, nil
		} else {
			line, b = b[:i], b[i+1:]
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			f.Complete = true
			return f
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // folded continuation
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		switch strings.ToLower(string(bytes.TrimRight(line[:colon], " \t"))) {
		case "received":
			f.Received++
		case "message-id":
			f.MessageID = true
		case "date":
			f.Date = true
		}
	}
	return f
}

// Received renders the trace field of a message received over SMTP (RFC
// 5321 §4.4), folded like Postfix's:
//
//	Received: from helo ([192.0.2.1])
//		by relay.example.com (jetrelay) with ESMTPS id 0KQ3H5XZ7M2P9RTA
//		(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)
//		for <rcpt@example.com>; Sun, 22 Nov 2026 18:30:00 +0000
//
// "for" names the recipient only when there is exactly one, so that a
// message to many does not disclose the others.
func Received(helo, ip, hostname, proto, qid, tlsDesc string, rcpts []string, now time.Time) []byte {
	var b bytes.Buffer
	if helo == "" {
		helo = "unknown"
	}
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n\tby %s (jetrelay) with %s id %s", Sanitize(helo), ip, hostname, proto, qid)
	if tlsDesc != "" {
		fmt.Fprintf(&b, "\r\n\t(using %s)", tlsDesc)
	}
	return finish(&b, rcpts, now)
}

// ReceivedLocal renders the trace field of a message that did not come
// over the network (a file from the pickup directory), as Postfix does for
// local submissions:
//
//	Received: by relay.example.com (jetrelay, from pickup file 1f2e.eml)
//		with local id 0KQ3H5XZ7M2P9RTA
//		for <rcpt@example.com>; Sun, 22 Nov 2026 18:30:00 +0000
//
// kind ("pickup file") is the caller's own text, written as it is; name
// (the file name) is sanitized.
func ReceivedLocal(kind, name, hostname, qid string, rcpts []string, at time.Time) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Received: by %s (jetrelay, from %s %s)\r\n\twith local id %s", hostname, kind, Sanitize(name), qid)
	return finish(&b, rcpts, at)
}

func finish(b *bytes.Buffer, rcpts []string, now time.Time) []byte {
	if len(rcpts) == 1 {
		fmt.Fprintf(b, "\r\n\tfor <%s>", Sanitize(rcpts[0]))
	}
	fmt.Fprintf(b, "; %s\r\n", now.Format(time.RFC1123Z))
	return b.Bytes()
}

// AppendMissing appends to prefix the Message-ID (<qid@hostname>) and the
// Date (at) a message lacks, per f; nothing when f.Complete is false (the
// header section was not seen whole, so it cannot be known to lack them).
func AppendMissing(prefix []byte, f Facts, qid, hostname string, at time.Time) []byte {
	if !f.Complete {
		return prefix
	}
	if !f.MessageID {
		prefix = fmt.Appendf(prefix, "Message-ID: <%s@%s>\r\n", qid, hostname)
	}
	if !f.Date {
		prefix = fmt.Appendf(prefix, "Date: %s\r\n", at.Format(time.RFC1123Z))
	}
	return prefix
}

// Sanitize keeps client- or file-supplied text from breaking a trace
// field: at most 255 octets, no controls, spaces, parentheses or
// semicolons.
func Sanitize(s string) string {
	if len(s) > 255 {
		s = s[:255]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x21 || r == 0x7f || r == '(' || r == ')' || r == ';' {
			return '_'
		}
		return r
	}, s)
}
