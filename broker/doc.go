// Package broker is jetrelay's only door to NATS JetStream: it connects
// (URLs, user/password, token, NKey, .creds, TLS; or in process to the
// embedded server), runs the embedded server for `serve` and `broker`,
// provisions the layout, and gives the stages the few operations they
// need: publish a job, schedule a retry, consume jobs, store and read a
// body, record a dead letter. No other package of the relay imports
// nats.go (tests aside).
//
// The layout it creates (names in contracts):
//
//   - the live queue, spread over broker.queue_shards streams (MAILQ_0…),
//     limits retention with a bulk purge below the consumers' ack floor,
//     message schedules for retries, one shared durable pull consumer per
//     shard;
//   - MAILDLQ, the dead letters, kept for deadletter.retention;
//   - MAILBODY, an Object Store bucket for bodies above the inline limit,
//     written and read one chunk in flight at a time, on a stream cut into
//     4 MiB blocks (BodyStreamConfig);
//   - MAILREFS, a key-value bucket that counts which jobs and dead letters
//     still hold each body.
//
// Invariants:
//
//   - A publish returns only after the broker's acknowledgement (with
//     sync_interval: always, after the fsync); any failure to get it is
//     ErrUnavailable, which the stages treat as temporary.
//   - Every job message carries a deterministic de-duplication ID (MsgID).
//     A publish whose acknowledgement was lost is sent again with the same
//     ID until an answer comes, so the queue stores it at most once.
//   - Nothing is buffered while disconnected: a publish, fetch or ack fails
//     at once and its caller retries, so no copy is sent behind a caller's
//     back after it has given up.
//   - A delivery loop that has a request for a job in flight when the
//     connection comes back after losing its server asks again at once:
//     a server that died took the request with it, and waiting it out
//     would stall delivery for up to 30 s. An ack that such a server will
//     never answer (it came back without its record of handing out the
//     job) fails with ErrAckUnanswered instead of being retried for an
//     AckWait.
//   - Provisioning is idempotent and safe when several processes start at
//     once; Bind (the CLI) attaches without creating or changing anything.
//   - A body is released only when its last holder lets go of it.
//   - The embedded server listens on a free loopback port unless
//     broker.listen says otherwise, requires the credentials it generates
//     into data_dir/broker.json (0600), and keeps only a bcrypt hash of the
//     password.
package broker
