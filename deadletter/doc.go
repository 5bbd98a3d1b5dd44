// Package deadletter is the operator's side of the dead letters (the
// MAILDLQ stream), jetrelay's Queue folder: messages that could not be
// delivered wait there to be inspected, replayed or purged. It finds dead
// letters (by queue ID without reading the others, or by filters over
// all of them), plans and runs replays and purges (selection, a rate, a
// dry run, a report per dead letter), and runs the sweeper that releases
// the bodies of dead letters the stream's retention removed.
//
// It changes nothing itself: every state change is one of the broker's
// lifecycle operations (broker.Client.Replay, RemoveDeadLetter,
// ReleaseExpiredBodies), which keep the invariants:
//
//   - A dead letter is written before the job it comes from is
//     acknowledged, with a deterministic ID, so a crash in between repeats
//     the write and the broker drops the copy.
//   - A dead letter keeps its body for exactly as long as the record
//     exists: inline bodies travel in the record; a body in the object
//     store is held by the record and released when the record is
//     replayed, purged or expires.
//   - A replay stores the new job before the dead letter is removed, so a
//     replay that is interrupted loses nothing and can simply be run
//     again; it never queues a message twice.
//   - A replayed message keeps its queue ID (with a replay generation in
//     its part), so one ID follows it through every attempt and replay.
package deadletter
