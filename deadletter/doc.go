// Package deadletter owns the dead-letter stream (MAILDLQ): the Queue
// folder of jetrelay, where messages that could not be delivered wait for
// an operator to inspect, replay or purge them.
//
// Invariants:
//
//   - A dead letter is written before the job it comes from is
//     acknowledged, with a deterministic ID, so a crash in between repeats
//     the write and the broker drops the copy.
//   - A dead letter keeps its body available for exactly as long as the
//     record exists: inline bodies travel in the record; a body in the
//     object store is held by the record (holder "dl:<id>") and released
//     when the record is replayed, purged or expires.
//   - Replay publishes the new job and waits for the broker's
//     acknowledgement before the dead letter is removed, so a replay that
//     is interrupted loses nothing and can simply be run again.
package deadletter
