// Package delivery is jetrelay's outbound stage: workers that take jobs
// from the queue's shared consumer (broker.ConsumeJobs) and relay them to
// the next hop — a route, the smart host, or the recipient domain's MX
// hosts (RFC 5321 §5: null MX, implicit MX, preference order with
// shuffling) — in one transaction per destination with all its
// recipients.
//
// A job's life in a worker has four steps, each in its own file:
//
//   - worker.go: the consumer loop, shutdown with a grace period, and
//     handle, which runs the other three and settles the lease;
//   - attempt.go: group the recipients by destination and hand each group
//     to its Transport (transport.go; SMTP is smtptransport.go with the
//     client in smtp.go), concurrently;
//   - classify.go: the one funnel that turns every transport result (a
//     reply of any code, a dial error, a TLS failure, a timeout, a missing
//     body, a routing failure, a "retry after") into a Verdict: delivered,
//     deferred (with the time the next hop asked for), or failed with a
//     dead-letter reason;
//   - plan.go: the verdicts become the Outcome the broker records: retries
//     per destination on the schedule, unless past the queue lifetime
//     (expired); one dead letter; DSNs (dsn.go).
//
// The SMTP transport applies the destination's TLS policy (none,
// opportunistic, required with certificate verification, implicit),
// authenticates to smart hosts (AUTH PLAIN or LOGIN), reuses connections,
// and skips a destination that just failed for a while (pool.go).
//
// Invariants:
//
//   - A job is settled only with an outcome for every recipient; the
//     broker stores its follow-ups before it acknowledges the job, so a
//     crash at any point runs the job again without losing or doubling
//     what follows from it.
//   - Every accepted recipient ends delivered (a 2xx from the next hop),
//     scheduled for another try, or dead-lettered: never dropped. Only the
//     recipients that failed temporarily are tried again. An error the
//     funnel does not know is temporary, never a bounce.
//   - A delivery can be repeated only between the next hop's 250 and the
//     acknowledgement; once the body has been sent to a host, the attempt
//     does not move on to the next host.
//   - A DSN is never sent to the null sender or about a DSN, and honours
//     NOTIFY, RET, ENVID and ORCPT. The NDR copy (Route.NDRCopyTo, IIS's
//     "Send copy of Non-Delivery Report to") reports every dead recipient
//     whatever its NOTIFY, also for a null sender, never about a DSN.
//   - A masquerade domain (Route.Masquerade) changes the envelope sender
//     on the wire only: the job, its records and its bounces keep the
//     sender as received.
//   - A body that does not match its size (and chunk count) is never delivered:
//     an inline one is refused before the transaction, and a mismatch
//     found at the end of a streamed one aborts the transaction before the
//     final dot.
//   - Route and TLS-policy types are this package's own; the configuration
//     maps into them (delivery imports no configuration).
//
// Every log line about a job carries the queue ID (msg_id), its part when
// it has one, and the attempt.
package delivery
