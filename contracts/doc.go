// Package contracts is the wire contract between jetrelay's stages.
//
// Ingress, delivery and the dead-letter tools never import each other; they
// agree only on what is written here: the job envelope ([Job]), the
// dead-letter record ([DeadLetter]), the names of streams, subjects, buckets
// and headers, the queue-ID format, and the framing that [EncodeJob] and
// [DecodeJob] put on the wire.
//
// # Framing
//
// A job or dead letter travels as one NATS message whose payload is
//
//	<one line of JSON, the envelope> '\n' <body bytes, only when inline>
//
// The envelope is compact JSON, which never contains a raw newline, so the
// first '\n' ends it. The body follows byte for byte: it is never base64
// encoded, so a 1 KiB message costs about 1 KiB plus its envelope on the wire
// and on disk. Bodies larger than the inline limit live in the body bucket
// (JetStream Object Store) and the envelope names them in [Body.Object].
//
// # Versioning
//
// Every envelope carries "v". Decoders accept every version up to
// [SchemaVersion] and refuse newer ones with [ErrUnsupportedVersion], so an
// old worker never half-understands a job written by a newer ingress. Adding
// an optional field does not change the version; changing the meaning of a
// field does.
//
// # Invariants
//
//   - An inline body's length matches the envelope's [Body] (and its SHA-256,
//     in version 1 envelopes that carry one); decode checks it, so a
//     truncated body is detected before delivery. The broker's own record
//     checksums stand for the digest since version 2.
//   - A job whose body is in the bucket carries no inline bytes.
//   - Every name a subject is built from is a single NATS token: domains are
//     encoded by [DestToken], queue IDs use a subject-safe alphabet.
//
// This package imports only the standard library.
package contracts
