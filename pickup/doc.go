// Package pickup is jetrelay's pickup directory, the IIS SMTP service's
// other way in: .NET's SmtpClient (DeliveryMethod SpecifiedPickupDirectory
// or PickupDirectoryFromIis), SQL Server jobs and scripts write each
// message as an .eml file into a folder, and the relay queues it.
//
// A Watcher polls the folder (ingress.pickup.dir) and queues every file
// that is ready through the broker like the ingress does (broker.Enqueue,
// a queue ID, the Received, Message-ID and Date fields of
// internal/mailhdr), then deletes it.
//
// The envelope: leading X-Sender: and X-Receiver: fields (the IIS and
// .NET format) give the sender and the recipients, and are removed from
// the message; without X-Receiver the recipients are those of To:, Cc:
// and Bcc: (Bcc: is removed) and the sender is that of Sender: or From:
// (or X-Sender: when given alone; the null sender when there is none).
//
// When a file is ready (the rule, for writers):
//
//   - its name ends in .eml (any case) and does not start with a dot, so
//     a writer that writes under another name and then renames the file
//     into place (the safe way everywhere, and what IIS itself expects
//     of the tools that feed it) is never seen half-written;
//   - its size and modification time have not changed for
//     ingress.pickup.stable_for, across at least two looks;
//   - it can be opened exclusively: on Windows with no sharing at all, so
//     a file that .NET (or anything else) still has open is left alone;
//     on Linux and the BSDs no other process holds an flock(2) lock on it
//     (advisory: only writers that lock are seen this way, which is why
//     the first two rules matter there).
//
// Invariants:
//
//   - A file is deleted only after the broker acknowledged its job; any
//     failure before leaves it where it is, for the next look.
//   - Exactly once, also across SIGKILL: the queue ID is derived from the
//     file (name, size, modification time and the SHA-256 of its
//     content), and so is every byte added to the message (the Received
//     and Date fields take the file's modification time). A file queued
//     whose delete a crash prevented is queued again after the restart
//     with the same job ID, which JetStream drops as a duplicate
//     (broker.dedupe_window, at least 1h). A large body is stored again
//     under the same name; if its first job was already delivered, that
//     copy is left to the body bucket's expiry.
//   - A file that cannot be queued as a message (not a header section,
//     no recipients, an address that does not parse, larger than
//     ingress.max_message_bytes, a mail loop) is never deleted: it moves
//     to the badmail folder (ingress.pickup.badmail_dir) with a .reason
//     file beside it, as IIS's Badmail directory does.
//   - Every log line about a file carries the file name (file) and its
//     queue ID (msg_id).
package pickup
