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
//   - Connection control before relay control. A client in
//     ingress.connection_deny, or outside a non-empty
//     ingress.connection_allow, gets 554 5.7.1 instead of the banner and
//     is disconnected (conn.go's listener), before any session exists.
//   - Never an open relay. RCPT is accepted only from clients in
//     ingress.relay_networks or authenticated users; everyone else gets
//     554 5.7.1 and nothing is published.
//   - No smuggling. A bare CR or LF in DATA is rejected with 550 5.5.2 (or
//     rewritten to CRLF when ingress.bare_line_endings is "normalize"), so a
//     body can never end a transaction early at the next hop.
//   - One reply funnel. Every error a session method returns goes through
//     reply, which maps it to an *smtp.SMTPError; go-smtp would turn any
//     other error from Data into a permanent 554. 4xx is temporary, 5xx
//     permanent, each with its RFC 3463 enhanced code (TestReplyFunnel).
//   - One error budget. go-smtp hands every command answered with an
//     error to Server.commandError: unknown commands (500 5.5.2), syntax
//     errors (501), commands out of sequence (503 5.5.1: go-smtp answers
//     them as RFC 5321 says, a nested MAIL leaves the transaction as it
//     was) and the session's refusals all count against
//     ingress.max_errors, except 452 4.5.3 (too many recipients, which the
//     client sends again later), the relay's own temporary failures (4.3.x:
//     broker unavailable, out of storage) and 421. The error that uses the budget up
//     is answered, then 421 4.7.0 ends the session.
//   - Slow clients are bounded. A command line must arrive whole within
//     ingress.command_deadline, a message at ingress.min_data_rate on
//     average (go-smtp's ReadTimeout and MinDataRate), and no read may
//     stall longer than ingress.read_timeout (conn.Read combines them):
//     421 4.4.2 otherwise. A failed TLS handshake after STARTTLS closes
//     the connection; STARTTLS with arguments is 501 5.5.4.
//   - AUTH only over TLS, unless ingress.allow_insecure_auth and the
//     client is in ingress.insecure_auth_networks (loopback by default);
//     the refusals (538 5.7.11, and 554 5.7.1 for a client not offered
//     AUTH) name the keys to change. Failed AUTH locks the client address
//     (421 4.7.0) and the user (454 4.7.0) out, on every ingress: the
//     counts are in the broker (Options.Lockouts), each lockout is logged
//     once, and `jetrelay user unlock` lifts one.
//   - Lines of message content may be of any length, as in Postfix; the
//     2000-byte line limit applies to command lines only, and the message
//     size limit bounds the rest. That limit is exact: a message of
//     max_message_bytes (as SIZE advertises it) is accepted by DATA and
//     BDAT, one byte more is refused with 552 5.3.4.
//   - Only go-smtp's public API. What it could not do (the exact size
//     limit and long content lines above, un-stuffing DATA a line at a
//     time rather than a byte at a time — a quarter of the relay's CPU
//     for a 10 MiB message —, the replies to commands out of sequence,
//     STARTTLS, the error budget and the data rate) is a small patch to
//     jetrelay's copy of go-smtp, third_party/go-smtp, used through a
//     replace directive in go.mod (third_party/README.md).
//   - The body is streamed: a message above the inline limit goes to the
//     object store while it is read, and is never held whole in memory.
//
// Every log line about a message carries the queue ID (msg_id) and the
// session ID; passwords and AUTH payloads are never logged.
package ingress
