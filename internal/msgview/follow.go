package msgview

import (
	"context"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
)

// Following a message until every recipient has an outcome (`send --wait`
// and the console's test message): it reads what the operator commands
// read, the message's jobs and dead letters, and the outcome record of
// its delivered recipients (broker.MessageDelivered).

// State is where one recipient stands, the further along the better
// known: an attempt's outcome outranks a job waiting for its attempt.
type State int

// The states, in the order of how far along they are.
const (
	StateUnknown  State = iota
	StatePending        // queued, no attempt finished yet (or being delivered)
	StateWaiting        // held back by a route's rate limit
	StateDeferred       // an attempt failed temporarily; a retry is scheduled
	StateDead           // dead-lettered
	StateDone           // delivered
)

// String names the state in a word.
func (s State) String() string {
	return [...]string{"unknown", "queued", "waiting", "deferred", "dead-lettered", "delivered"}[s]
}

// Outcome is one recipient's state with what explains it.
type Outcome struct {
	Addr    string
	State   State
	Reply   *contracts.Reply
	Next    time.Time // deferred, waiting: when it is tried again
	Attempt int       // deferred: the attempt that comes next
	Why     string    // waiting: the limit; dead: the reason
	Detail  string    // dead: the explanation
	NoRec   bool      // delivered, but no record of the reply is kept
}

// Snapshot is everything the broker holds of a message at one moment.
type Snapshot struct {
	Jobs      []*broker.QueuedJob
	DLs       []*broker.StoredDeadLetter
	Delivered []broker.Delivered
	Kept      bool // the broker keeps outcome records
}

// Empty reports whether nothing of the message is held.
func (s *Snapshot) Empty() bool {
	return len(s.Jobs) == 0 && len(s.DLs) == 0 && len(s.Delivered) == 0
}

// Observe reads the message's records.
func Observe(ctx context.Context, bc *broker.Client, qid string) (*Snapshot, error) {
	s := &Snapshot{}
	if err := bc.MessageJobs(ctx, qid, func(q *broker.QueuedJob) bool {
		if q.Job != nil {
			s.Jobs = append(s.Jobs, q)
		}
		return true
	}); err != nil {
		return nil, err
	}
	if err := bc.MessageDeadLetters(ctx, qid, func(d *broker.StoredDeadLetter) bool {
		if d.DL != nil {
			s.DLs = append(s.DLs, d)
		}
		return true
	}); err != nil {
		return nil, err
	}
	var err error
	s.Delivered, s.Kept, err = bc.MessageDelivered(ctx, qid)
	return s, err
}

// Judge says where each of rcpts stands in s, and whether every one has
// an outcome (delivered, deferred or dead-lettered). gone: nothing of the
// message is held any more (seen twice, a moment apart, by the caller),
// which means its remaining recipients were delivered.
func Judge(rcpts []string, s *Snapshot, gone bool) ([]Outcome, bool) {
	byAddr := map[string]*Outcome{}
	out := make([]Outcome, len(rcpts))
	for i, r := range rcpts {
		out[i] = Outcome{Addr: r}
		byAddr[strings.ToLower(r)] = &out[i]
	}
	set := func(addr string, o Outcome) {
		cur, ok := byAddr[strings.ToLower(addr)]
		if !ok || o.State < cur.State {
			return
		}
		o.Addr = cur.Addr
		*cur = o
	}
	for _, d := range s.Delivered {
		for _, r := range d.Rcpts {
			set(r.Addr, Outcome{State: StateDone, Reply: r.LastReply})
		}
	}
	var done []contracts.Recipient
	for _, q := range s.Jobs {
		done = append(done, q.Job.Done...)
		for _, r := range q.Job.Rcpts {
			reply := r.LastReply
			if reply == nil {
				reply = q.Job.LastError
			}
			switch {
			case q.Scheduled && q.Job.Waiting != "":
				set(r.Addr, Outcome{State: StateWaiting, Why: q.Job.Waiting, Next: q.NextAt, Reply: reply})
			case q.Scheduled:
				set(r.Addr, Outcome{State: StateDeferred, Reply: reply, Next: q.NextAt, Attempt: q.Job.Attempt})
			default:
				set(r.Addr, Outcome{State: StatePending, Reply: reply, Attempt: q.Job.Attempt})
			}
		}
	}
	for _, d := range s.DLs {
		done = append(done, d.DL.Job.Done...)
		for _, r := range d.DL.Job.Rcpts {
			reply := r.LastReply
			if reply == nil {
				reply = d.DL.LastReply
			}
			set(r.Addr, Outcome{State: StateDead, Reply: reply, Why: d.DL.Reason, Detail: d.DL.Detail})
		}
	}
	for _, r := range done {
		set(r.Addr, Outcome{State: StateDone, Reply: r.LastReply})
	}
	final := true
	for i := range out {
		if out[i].State == StateUnknown && gone {
			out[i] = Outcome{Addr: out[i].Addr, State: StateDone, NoRec: true}
		}
		if out[i].State < StateDeferred {
			final = false
		}
	}
	return out, final
}

// Follower follows one message by its queue ID, one look at a time: the
// caller decides how often and how long (send --wait polls with a
// back-off, the console's page asks every second).
type Follower struct {
	QueueID    string
	Rcpts      []string
	emptySince time.Time
}

// Look reads the message and judges it at now: nothing held, seen again
// at least a second later, counts as delivered.
func (f *Follower) Look(ctx context.Context, bc *broker.Client, now time.Time) ([]Outcome, *Snapshot, bool, error) {
	s, err := Observe(ctx, bc, f.QueueID)
	if err != nil {
		return nil, nil, false, err
	}
	gone := false
	if s.Empty() {
		if f.emptySince.IsZero() {
			f.emptySince = now
		}
		gone = now.Sub(f.emptySince) >= time.Second
	} else {
		f.emptySince = time.Time{}
	}
	outs, final := Judge(f.Rcpts, s, gone)
	return outs, s, final, nil
}
