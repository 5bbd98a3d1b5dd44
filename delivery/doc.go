// Package delivery is jetrelay's outbound stage: workers that take jobs
// from the queue's shared consumer and relay them to the next hop, a
// configured route, the smart host, or the recipient domain's MX hosts
// (RFC 5321 §5: null MX, implicit MX, preference order with shuffling),
// in one SMTP transaction per destination with all its recipients.
//
// It applies the TLS policy of the destination (none, opportunistic,
// required with certificate verification, implicit), authenticates to
// smart hosts (AUTH PLAIN or LOGIN), reuses connections, and skips a
// destination that just failed for a while. Temporary failures are
// retried as scheduled messages on the broker, with jitter, until
// delivery.retry.max_age; permanent failures and expired jobs become dead
// letters, with an RFC 3464 DSN to the sender.
//
// Invariants:
//
//   - A job is acknowledged only after everything it leads to is stored
//     on the broker: the retry of the recipients that failed temporarily,
//     the dead letter of those that failed permanently, the DSN. Each of
//     those publishes has a deterministic ID, so a crash at any point runs
//     the job again without losing or doubling what follows from it.
//   - Every accepted recipient ends delivered (a 2xx from the next hop),
//     scheduled for another try, or dead-lettered: never dropped. Only the
//     recipients that failed temporarily are tried again.
//   - A delivery can be repeated only between the next hop's 250 and the
//     acknowledgement; once the body has been sent to a host, the attempt
//     does not move on to the next host.
//   - A DSN is never sent to the null sender, and honours NOTIFY, RET,
//     ENVID and ORCPT.
//   - A body that does not match its size and SHA-256 is never delivered:
//     an inline one is refused before the transaction, and a mismatch
//     found at the end of a streamed one aborts the transaction before the
//     final dot.
//
// Every log line about a job carries the queue ID (msg_id), the job ID and
// the attempt.
package delivery
