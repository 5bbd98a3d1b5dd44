// Package ingress is jetrelay's SMTP front door: a go-smtp server that
// accepts mail from permitted clients and publishes every accepted message
// to the broker as a job.
//
// Invariants this package keeps:
//
//   - No 250 before durability. DATA/BDAT is answered "250 2.0.0 queued as
//     <id>" only after the broker acknowledged the job (and, for a large
//     body, the body object before it). Every failure on the way is a
//     451 4.3.0: temporary, so the client keeps the message and retries.
//   - Never an open relay. RCPT is accepted only from clients in
//     ingress.relay_networks or authenticated users; everyone else gets
//     554 5.7.1 and nothing is published.
//   - No smuggling. A bare CR or LF in DATA is rejected with 550 5.5.2 (or
//     rewritten to CRLF when ingress.bare_line_endings is "normalize"), so a
//     body can never end a transaction early at the next hop.
//   - One reply funnel. Every error a session method returns goes through
//     reply, which maps it to an *smtp.SMTPError; go-smtp would turn any
//     other error from Data into a permanent 554.
//   - Lines of message content may be of any length, as in Postfix; the
//     2000-byte line limit applies to command lines only, and the message
//     size limit bounds the rest. That limit is exact: a message of
//     max_message_bytes (as SIZE advertises it) is accepted by DATA and
//     BDAT, one byte more is refused with 552 5.3.4.
//   - Only go-smtp's public API. The three things it could not do (the
//     two above, and un-stuffing DATA a line at a time rather than a byte
//     at a time, a quarter of the relay's CPU for a 10 MiB message) are a
//     small patch to jetrelay's copy of go-smtp, third_party/go-smtp, used
//     through a replace directive in go.mod (third_party/README.md).
//   - The body is streamed: a message above the inline limit goes to the
//     object store while it is read, and is never held whole in memory.
//
// Every log line about a message carries the queue ID (msg_id) and the
// session ID; passwords and AUTH payloads are never logged.
package ingress
