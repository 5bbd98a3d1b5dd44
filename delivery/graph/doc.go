// Package graph is jetrelay's Microsoft Graph transport: a
// delivery.Transport that hands each message, as MIME, to Exchange Online
// through Graph's sendMail (POST {BaseURL}/users/{mailbox}/sendMail, the
// body the standard base64 of the message, Content-Type text/plain, an
// app-only bearer token from an oauth.Source). It is the way out for
// applications that only speak plain SMTP once Exchange Online no longer
// accepts basic SMTP AUTH: they keep relaying to jetrelay, and jetrelay
// sends as a mailbox through Graph.
//
// # What Graph does with the message
//
// Graph has no envelope. It sends to the recipients of the message's
// To, Cc and Bcc fields, and only to them, as the mailbox in the URL
// (Options.Sender, else the job's envelope sender). Hence:
//
//   - Envelope recipients that no recipient field names (the client Bcc'd
//     them and removed the Bcc field, as clients do) are added to the
//     message's Bcc field before it is sent: appended to an existing Bcc
//     field, else in a new one at the end of the header section, one
//     address per folded line (RFC 5322). Nothing else in the message is
//     changed, the body never. Exchange removes the Bcc field before the
//     message reaches anyone.
//   - Header recipients that are not recipients of the delivery also get
//     a copy, because Graph cannot be told otherwise. That happens when a
//     message's recipients are split between destinations (some through
//     this Graph route, some through SMTP or another route) or when the
//     header names addresses the client did not give as RCPT. The
//     transport does not hide it and does not rewrite the visible header:
//     it logs a warning with msg_id and the addresses, and says it in the
//     202 reply recorded for each recipient ("…; also sent to 2 header
//     recipient(s) outside this delivery: …"). Operators should route all
//     the recipients of a message through the same Graph route (typically
//     the smart host), or expect those copies (a recipient that also has
//     its own route gets the message twice).
//   - Graph/Exchange re-encodes the message and adds its own header fields
//     on the way out: a DKIM signature made before (by the application or
//     by jetrelay) does not survive; have Exchange Online sign for the
//     From domain instead. The mailbox must be allowed to send as the
//     message's From address, and Exchange normally keeps a copy in its
//     Sent Items.
//
// # Answers and what they become
//
// Every recipient of a request gets the same Result (Graph is
// all-or-nothing per request), with Stage "graph" unless said otherwise,
// and the delivery funnel decides from it:
//
//	202                          250 2.0.0 "accepted by Microsoft Graph (202) request-id …"  → delivered
//	429; 503/504 + Retry-After   RetryAfterError{At, ReplyError{451 4.7.0 "… (throttled)"}}   → deferred until At, throttled
//	429 without Retry-After      451 4.7.0 "… (throttled)"                                    → deferred, throttled
//	other 5xx                    451 4.3.0 "Microsoft Graph 500 <code>: <message>"            → deferred (at Retry-After if given)
//	401, after one retry         AuthError (Stage "auth")                                      → deferred, destination auth failing
//	403                          AuthError (Stage "auth")                                      → deferred, destination auth failing
//	413, ErrorMessageSizeExceeded,
//	  or over MaxRequestBytes    552 5.3.4 "message of N bytes is too large …"                 → failed (dead letter, bounce)
//	404 with Options.Sender      451 4.3.5 "… (the configured sender mailbox)"                → deferred
//	other 4xx                    550 5.1.1 (a code about recipients), 554 5.6.0 (MIME,
//	                             base64), 550 5.1.8 (404: the envelope sender's mailbox),
//	                             550 5.0.0 otherwise; text "Microsoft Graph 400 <code>: <message>" → failed
//	1xx, 3xx, other 2xx          451 4.3.0 "unexpected answer: …"                             → deferred
//	token error                  the *oauth.Error itself (Stage "auth")                       → deferred
//	network error, timeout       the error itself                                             → deferred
//	no mailbox, no token source  451 4.3.5                                                    → deferred
//	body not readable            the error, wrapped (Stage "body")                            → deferred
//
// 401 and 403 are configuration problems (a refused token after a fresh
// one, no Mail.Send application permission, an application access policy
// that leaves the mailbox out): the message waits in the queue for an
// operator instead of bouncing, and the destination's authentication is
// reported as failing. Replies carry Graph's error code, message and
// request-id, so dead letters and DSNs say what Graph said.
//
// # Invariants
//
//   - A 202 is the only delivery. The only window for a duplicate is
//     between Graph's 202 and the job's acknowledgement (the caller's), as
//     with SMTP's 250, or a request whose answer was lost (a timeout or a
//     cut connection after it was sent), as with SMTP's final dot. The
//     transport never repeats a POST on its own, except once after a 401,
//     which Graph answers without sending anything.
//   - A message is never truncated: one whose base64 form exceeds
//     MaxRequestBytes fails before any request with 552 5.3.4 (route such
//     messages through SMTP with XOAUTH2), and reading stops as soon as
//     the limit is passed. A body that cannot be read completely, or does
//     not match its size, is never sent.
//   - At most MaxConcurrentPerMailbox requests per mailbox are in flight
//     in a Transport (Exchange's limit); waiting for a turn honours the
//     context. One Transport per Graph tenant, shared by its routes, keeps
//     the limit.
//   - Every log line about a message carries msg_id (the queue ID).
package graph
