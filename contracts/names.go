package contracts

import (
	"hash/fnv"
	"strconv"
	"strings"
)

// Streams, buckets and consumers that make up the pipeline on the broker.
const (
	// StreamQueuePrefix names the live queue's shards: MAILQ_0, MAILQ_1, …
	// Each holds the jobs of some messages (by queue ID) that are ready for
	// delivery and their scheduled retries; delivered jobs are purged
	// shortly after. Several shards let the broker write (and fsync) in
	// parallel.
	StreamQueuePrefix = "MAILQ_"
	// StreamDeadLetter holds one record per dead job (Limits retention,
	// MaxAge = deadletter.retention).
	StreamDeadLetter = "MAILDLQ"
	// BucketBodies is the Object Store bucket for bodies above the inline
	// limit. Object names are job body names (see [BodyObjectName]).
	BucketBodies = "MAILBODY"
	// BucketBodyRefs is the key-value bucket that records, per body object,
	// which jobs and dead letters still need it.
	BucketBodyRefs = "MAILREFS"
	// BucketRates is the key-value bucket of the routes' rate limits: a
	// counter per route and window, and a slot per concurrent delivery,
	// shared by every worker.
	BucketRates = "MAILRATE"
	// BucketOutcomes is the key-value bucket of recent final outcomes: for
	// each job settled with delivered recipients, which host accepted
	// each of them with which reply, under "<queue id>.<part>" (the part
	// "_" for the job the ingress queued). It is kept in the broker's
	// memory for an hour and bounded in size, oldest records first out:
	// a record for `jetrelay send --wait`, never part of the lifecycle.
	BucketOutcomes = "MAILDONE"
	// BucketAuth is the key-value bucket of the ingress's failed AUTH
	// attempts and lockouts, per client address and per user, shared by
	// every ingress.
	BucketAuth = "MAILAUTH"
	// BucketMTASTS is the key-value bucket of the MTA-STS policies
	// (RFC 8461) of recipient domains, one [MTASTSPolicy] per domain,
	// shared by every worker and kept across restarts until the policy's
	// max_age runs out.
	BucketMTASTS = "MAILSTS"
	// BucketTLSReports is the key-value bucket of the TLS reporting
	// counts (RFC 8460): one [TLSReportCounts] per UTC day and policy
	// domain, which every worker adds to, and a marker per report
	// written.
	BucketTLSReports = "MAILTLSRPT"
	// ConsumerDelivery is the durable pull consumer that all delivery
	// workers share.
	ConsumerDelivery = "delivery"
	// ConsumerScheduled is never read: its pending count is the number of
	// scheduled retries.
	ConsumerScheduled = "scheduled"
)

// Subject layout of the queue:
//
//	mailq.<shard>.job.<dest>.<queue id>.<part>     ready for delivery
//	mailq.<shard>.sched.<dest>.<queue id>.<part>   a retry waiting for its time
//
// and of the dead letters: maildlq.<queue id>.<dead-letter id>. The queue
// ID has a token of its own, so that every job and dead letter of a
// message is found by subject, without reading the streams ([JobsOf],
// [DeadLettersOf]); <part> is the job's [Job.Part], or [NoPart] for the
// job the ingress published. Subjects written before this layout
// (mailq.<shard>.<kind>.<dest>.<job id>, maildlq.<dead-letter id>) are
// still read.
const (
	SubjectQueuePrefix      = "mailq."
	SubjectDeadLetterPrefix = "maildlq."
	// SubjectDeadLettersAll matches every dead letter.
	SubjectDeadLettersAll = "maildlq.>"
)

// QueueStream names one shard of the queue.
func QueueStream(shard int) string { return StreamQueuePrefix + strconv.Itoa(shard) }

// QueueSubjects is the subject filter of one shard's stream.
func QueueSubjects(shard int) string { return SubjectQueuePrefix + strconv.Itoa(shard) + ".>" }

// JobsFilter matches the ready jobs of a shard (its delivery consumer).
func JobsFilter(shard int) string { return SubjectQueuePrefix + strconv.Itoa(shard) + ".job.>" }

// SchedulesFilter matches the scheduled retries of a shard.
func SchedulesFilter(shard int) string { return SubjectQueuePrefix + strconv.Itoa(shard) + ".sched.>" }

// ShardOf is the queue shard of a message: every job and retry of one
// message lives in the same shard (a schedule must target its own stream).
func ShardOf(queueID string, shards int) int {
	if shards <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(queueID))
	return int(h.Sum32() % uint32(shards))
}

// Message headers jetrelay sets besides the NATS ones.
const (
	// HeaderMsgID is the NATS de-duplication header. Every publish carries a
	// deterministic value so that a republish after a crash is a no-op.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderQueueID repeats the queue ID outside the payload so that tools
	// (nats CLI, logs) can follow a message without decoding it.
	HeaderQueueID = "Jetrelay-Queue-Id"
	// HeaderKind says what the payload is: KindJob or KindDeadLetter.
	HeaderKind = "Jetrelay-Kind"
	// HeaderAttempt carries Job.Attempt, for the same reason.
	HeaderAttempt = "Jetrelay-Attempt"
	// HeaderScheduler is set by the NATS server on a message produced by a
	// schedule; the value is the schedule's subject.
	HeaderScheduler = "Nats-Scheduler"
	// HeaderSchedule is the schedule of a scheduled message ("@at <RFC 3339>").
	HeaderSchedule = "Nats-Schedule"
)

// Values of HeaderKind.
const (
	KindJob        = "job"
	KindDeadLetter = "deadletter"
)

// MultiDest is the destination token of a job whose recipients span more
// than one domain. It cannot collide with an encoded domain: '~' only ever
// starts a two-digit hex escape there.
const MultiDest = "~multi"

// DestToken encodes a recipient domain as one NATS subject token: lower
// case, '.' becomes '_', and every byte outside [a-z0-9-] becomes "~xx"
// (hex). RFC 5321 host names contain no '_', so the mapping is reversible
// for them, and IDNs, address literals and odd bytes stay one token.
func DestToken(domain string) string {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain == "" {
		return "~"
	}
	var b strings.Builder
	b.Grow(len(domain))
	const hex = "0123456789abcdef"
	for i := 0; i < len(domain); i++ {
		c := domain[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		case c == '.':
			b.WriteByte('_')
		default:
			b.WriteByte('~')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0x0f])
		}
	}
	return b.String()
}

// DomainFromToken reverses [DestToken]. It returns "" for MultiDest and for
// tokens that DestToken cannot produce.
func DomainFromToken(tok string) string {
	if tok == MultiDest || tok == "" || tok == "~" {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case c == '_':
			b.WriteByte('.')
		case c == '~':
			if i+2 >= len(tok) {
				return ""
			}
			hi, ok1 := unhex(tok[i+1])
			lo, ok2 := unhex(tok[i+2])
			if !ok1 || !ok2 {
				return ""
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// NoPart is the part token of a job without a part (the one the ingress
// published).
const NoPart = "_"

func partToken(part string) string {
	if part == "" {
		return NoPart
	}
	return part
}

// JobSubject is the subject of a job that is ready for delivery.
func JobSubject(shard int, dest, queueID, part string) string {
	return SubjectQueuePrefix + strconv.Itoa(shard) + ".job." + dest + "." + queueID + "." + partToken(part)
}

// ScheduleSubject is the subject of a retry waiting for its time. The NATS
// scheduler keeps one schedule per subject, so publishing again replaces it
// (this is how "retry now" works).
func ScheduleSubject(shard int, dest, queueID, part string) string {
	return SubjectQueuePrefix + strconv.Itoa(shard) + ".sched." + dest + "." + queueID + "." + partToken(part)
}

// JobsOf matches every job of a message, ready or scheduled, in its shard.
func JobsOf(shard int, queueID string) string {
	return SubjectQueuePrefix + strconv.Itoa(shard) + ".*.*." + queueID + ".*"
}

// DeadLetterSubject is the subject of one dead letter.
func DeadLetterSubject(id string) string {
	qid, ok := QueueIDOf(id)
	if !ok {
		qid = NoPart
	}
	return SubjectDeadLetterPrefix + qid + "." + id
}

// DeadLettersOf matches every dead letter of a message.
func DeadLettersOf(queueID string) string {
	return SubjectDeadLetterPrefix + queueID + ".*"
}

// QueueSubject is a parsed queue subject.
type QueueSubject struct {
	Shard   int
	Kind    string // "job" or "sched"
	Dest    string
	QueueID string
	Part    string
}

// JobID is the ID of the job the subject belongs to.
func (q QueueSubject) JobID() string {
	if q.Part == "" {
		return q.QueueID
	}
	return q.QueueID + "-" + q.Part
}

// ParseQueueSubject splits a job or schedule subject.
func ParseQueueSubject(subject string) (QueueSubject, bool) {
	rest, found := strings.CutPrefix(subject, SubjectQueuePrefix)
	if !found {
		return QueueSubject{}, false
	}
	parts := strings.Split(rest, ".")
	if (len(parts) != 4 && len(parts) != 5) || (parts[1] != "job" && parts[1] != "sched") {
		return QueueSubject{}, false
	}
	shard, err := strconv.Atoi(parts[0])
	if err != nil || shard < 0 {
		return QueueSubject{}, false
	}
	qs := QueueSubject{Shard: shard, Kind: parts[1], Dest: parts[2]}
	if len(parts) == 5 {
		qs.QueueID = parts[3]
		if parts[4] != NoPart {
			qs.Part = parts[4]
		}
		return qs, true
	}
	// The layout before the queue ID had a token of its own: the job ID.
	qs.QueueID, qs.Part, _ = strings.Cut(parts[3], "-")
	return qs, true
}
