// Package broker is jetrelay's only door to NATS JetStream, and the owner
// of the job lifecycle. It connects (URLs, user/password, token, NKey,
// .creds, TLS; or in process to the embedded server), runs the embedded
// server for `serve` and `broker`, provisions the layout, and gives the
// stages and the operator tools the operations that change a message's
// state — and nothing lower:
//
//   - Enqueue: a new job (from the ingress, a DSN, a replay), its body
//     held first when it lives in the body store;
//   - ConsumeJobs and Lease: a job handed to a delivery worker, kept alive
//     while the worker holds it, ended by Settle (an Outcome: delivered
//     recipients, retries at a time, a dead letter, notifications), Return
//     or DeadLetterRaw;
//   - RetryNow, DeleteJob, Replay, RemoveDeadLetter, ReleaseExpiredBodies
//     for the operator.
//
// Reading needs no lifecycle: ScanQueue and ScanDeadLetters read the
// streams in order, MessageJobs, MessageDeadLetters and MessageDelivered
// find a message's records by its queue ID, OpenJobBody opens a message. No other package
// of the relay imports nats.go (tests aside), publishes, or touches a body
// object's holders.
//
// The layout it creates (names in contracts):
//
//   - the live queue, spread over broker.queue_shards streams (MAILQ_0…),
//     limits retention with a bulk purge below the consumers' ack floor,
//     message schedules for retries, one shared durable pull consumer per
//     shard; subjects carry the queue ID as a token of its own;
//   - MAILDLQ, the dead letters, kept for deadletter.retention;
//   - MAILBODY, an Object Store bucket for bodies above the inline limit,
//     written and read one chunk in flight at a time, on a stream cut into
//     4 MiB blocks (BodyStreamConfig);
//   - MAILREFS, a key-value bucket that records which jobs and dead
//     letters still hold each body, and which dead letters were replayed;
//   - MAILRATE, the routes' rate-limit counters and concurrency slots;
//   - MAILDONE, the outcome record (outcomes.go): for an hour, in memory,
//     bounded, which host accepted each delivered recipient with which
//     reply; optional (a broker that refuses it costs only the record)
//     and never waited for.
//
// Invariants:
//
//   - A publish returns only after the broker's acknowledgement (with
//     sync_interval: always, after the fsync); any failure to get it is
//     ErrUnavailable, which the stages treat as temporary.
//   - Every publish carries a deterministic de-duplication ID (derived in
//     one place each: msgID for jobs and retries, the dead letter's ID).
//     A publish whose acknowledgement was lost is sent again with the same
//     ID until an answer comes, so a stream stores it at most once.
//   - A job is acknowledged only after everything its outcome leads to is
//     stored, in an order that a crash at any point repeats harmlessly:
//     the body's new holders, the retries, the dead letter, the
//     notifications, then the job's own hold on the body, then the ack.
//   - A body is held before the record that needs it is published, and
//     released only when its last holder lets go of it (letGoBody).
//   - A job handed to a worker is reported alive every AckWait/4 while the
//     worker holds it: a long delivery is never handed to a second worker,
//     and a dead worker's jobs go out again one AckWait after its last
//     report (seconds, with the default ack_wait of 10s).
//   - Nothing is buffered while disconnected: a publish, fetch or ack fails
//     at once and its caller retries, so no copy is sent behind a caller's
//     back after it has given up.
//   - A delivery loop that has a request for a job in flight when the
//     connection comes back after losing its server asks again at once:
//     a server that died took the request with it. An ack that such a
//     server will never answer (it came back without its record of
//     handing out the job) fails with ErrAckUnanswered instead of being
//     retried for an AckWait.
//   - Provisioning is idempotent and safe when several processes start at
//     once; Bind (the CLI) attaches without creating or changing anything.
//   - The embedded server listens on a free loopback port unless
//     broker.listen says otherwise, requires the credentials it generates
//     into data_dir/broker.json (0600), and keeps only a bcrypt hash of the
//     password.
//
// Every log line about a message carries its queue ID (msg_id).
package broker
