package deadletter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
)

// Filter selects dead letters. Empty fields match everything.
type Filter struct {
	// IDs are dead-letter IDs or queue IDs (a queue ID matches every dead
	// letter of that message).
	IDs            []string
	Domain         string // a recipient's domain, exactly (case-insensitive)
	From           string // substring of the envelope sender (case-insensitive)
	Rcpt           string // substring of a recipient (case-insensitive)
	ReasonContains string // substring of the reason or its detail (case-insensitive)
	Since, Until   time.Time
	OlderThan      time.Duration // dead for longer than this
}

// Match reports whether a dead letter passes the filter at time now.
func (f Filter) Match(d *contracts.DeadLetter, now time.Time) bool {
	if len(f.IDs) > 0 {
		ok := false
		for _, id := range f.IDs {
			if id == d.ID || id == d.Job.QueueID || id == d.Job.JobID() {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if f.Domain != "" && !anyRcpt(d.Job.Rcpts, func(r contracts.Recipient) bool { return strings.EqualFold(r.Domain(), f.Domain) }) {
		return false
	}
	if f.From != "" && !containsFold(d.Job.From, f.From) {
		return false
	}
	if f.Rcpt != "" && !anyRcpt(d.Job.Rcpts, func(r contracts.Recipient) bool { return containsFold(r.Addr, f.Rcpt) }) {
		return false
	}
	if f.ReasonContains != "" && !containsFold(d.Reason+" "+d.Detail+" "+d.LastReply.String(), f.ReasonContains) {
		return false
	}
	if !f.Since.IsZero() && d.DeadAt.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !d.DeadAt.Before(f.Until) {
		return false
	}
	if f.OlderThan > 0 && now.Sub(d.DeadAt) < f.OlderThan {
		return false
	}
	return true
}

func anyRcpt(rs []contracts.Recipient, f func(contracts.Recipient) bool) bool {
	for _, r := range rs {
		if f(r) {
			return true
		}
	}
	return false
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// Entry is one stored dead letter.
type Entry struct {
	Seq    uint64
	Stored time.Time
	DL     *contracts.DeadLetter
	Inline []byte
}

// Store reads and changes the dead-letter stream.
type Store struct {
	b   *broker.Client
	now func() time.Time
}

// NewStore returns a Store on the broker connection.
func NewStore(b *broker.Client) *Store { return &Store{b: b, now: time.Now} }

// List calls fn for the dead letters that match f, in the order they were
// written, starting after stream sequence `after`, at most limit of them
// (0: no limit). It returns the sequence to pass as `after` for the next
// page (0 when there is none). Records that do not decode are reported
// with an error by fn's caller: List skips them.
func (s *Store) List(ctx context.Context, f Filter, after uint64, limit int, fn func(*Entry) bool) (next uint64, err error) {
	n := 0
	now := s.now()
	err = s.b.ScanDeadLetters(ctx, after+1, func(sd *broker.StoredDeadLetter) bool {
		if sd.Err != nil || !f.Match(sd.DL, now) {
			return true
		}
		if limit > 0 && n == limit {
			next = after // there is more after the last one returned
			return false
		}
		n++
		after = sd.Seq
		return fn(&Entry{Seq: sd.Seq, Stored: sd.Stored, DL: sd.DL, Inline: sd.Inline})
	})
	return next, err
}

// ErrNotFound: no dead letter has that ID.
var ErrNotFound = errors.New("no such dead letter")

// Get finds one dead letter by its ID, or the only one of a queue ID.
func (s *Store) Get(ctx context.Context, id string) (*Entry, error) {
	var found []*Entry
	_, err := s.List(ctx, Filter{IDs: []string{id}}, 0, 0, func(e *Entry) bool {
		found = append(found, e)
		return true
	})
	if err != nil {
		return nil, err
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	case 1:
		return found[0], nil
	}
	ids := make([]string, len(found))
	for i, e := range found {
		ids[i] = e.DL.ID
	}
	return nil, fmt.Errorf("%s matches %d dead letters (%s): name one", id, len(found), strings.Join(ids, ", "))
}

// Body opens a dead letter's message.
func (s *Store) Body(ctx context.Context, e *Entry) (io.ReadCloser, error) {
	if e.DL.Job.Body.Inline() {
		return io.NopCloser(bytes.NewReader(e.Inline)), nil
	}
	return s.b.OpenBody(ctx, e.DL.Job.Body.Object)
}

// ReplayOptions tune a replay.
type ReplayOptions struct {
	// Route sends the replayed job to this next hop "host:port" instead of
	// its normal route.
	Route string
}

// Replay turns a dead letter back into a job: the recipients that failed,
// a fresh attempt count and queue lifetime, a link to the dead letter
// (Job.ReplayOf) and the replay count. The dead letter is removed only
// after the broker acknowledged the new job; a replay interrupted after
// that point and run again finds its record and only finishes the
// removal, so the message is never queued twice. It returns the new job,
// and already=true when an earlier run had published it.
func (s *Store) Replay(ctx context.Context, e *Entry, o ReplayOptions) (job *contracts.Job, already bool, err error) {
	d := e.DL
	if len(d.Job.Rcpts) == 0 || d.Reason == contracts.ReasonMalformed {
		return nil, false, fmt.Errorf("dead letter %s (%s) has no recipients to replay", d.ID, d.Reason)
	}
	nj := replayJob(d, s.now(), o)
	if prev, done, err := s.b.ReplayedAs(ctx, d.ID); err != nil {
		return nil, false, err
	} else if done {
		already = true
		nj.Part = strings.TrimPrefix(prev, nj.QueueID+"-")
	} else {
		if !nj.Body.Inline() {
			if _, _, err := s.b.UpdateBodyRefs(ctx, nj.Body.Object, nil, []string{nj.JobID()}); err != nil {
				return nil, false, err
			}
		}
		if err := s.b.PublishJob(ctx, nj, e.Inline); err != nil {
			return nil, false, err
		}
		if err := s.b.MarkReplayed(ctx, d.ID, nj.JobID()); err != nil {
			return nil, false, err
		}
	}
	if err := s.remove(ctx, e); err != nil {
		return nj, already, err
	}
	return nj, already, nil
}

// replayJob builds the job a dead letter is replayed as.
func replayJob(d *contracts.DeadLetter, now time.Time, o ReplayOptions) *contracts.Job {
	nj := d.Job
	nj.Version = 0
	nj.ReplayCount = d.Job.ReplayCount + 1
	nj.ReplayOf = d.ID
	nj.Part = d.Job.Part + "r" + strconv.Itoa(nj.ReplayCount)
	nj.Attempt = 1
	nj.FirstSeen = now.UTC()
	nj.LastError = nil
	nj.DelayNotified = false
	nj.Route = o.Route
	nj.History = append([]contracts.AttemptRecord(nil), d.Job.History...)
	nj.Rcpts = make([]contracts.Recipient, len(d.Job.Rcpts))
	for i, r := range d.Job.Rcpts {
		r.LastReply = nil
		nj.Rcpts[i] = r
	}
	return &nj
}

// Purge deletes a dead letter for good, and its body when nothing else
// needs it.
func (s *Store) Purge(ctx context.Context, e *Entry) error { return s.remove(ctx, e) }

func (s *Store) remove(ctx context.Context, e *Entry) error {
	if err := s.b.DeleteDeadLetterMsg(ctx, e.Seq); err != nil {
		return err
	}
	if e.DL.Job.Body.Inline() {
		return nil
	}
	left, _, err := s.b.UpdateBodyRefs(ctx, e.DL.Job.Body.Object, []string{Holder(e.DL.ID)}, nil)
	if err != nil {
		return err
	}
	if left == 0 {
		return s.b.ReleaseBody(ctx, e.DL.Job.Body.Object)
	}
	return nil
}

// Sweep releases the bodies of dead letters that expired (MaxAge of the
// stream removes records without telling anyone): every holder "dl:<id>"
// whose record is gone is dropped, and a body nobody holds any more is
// deleted. Safe to run from several processes at once. It returns how many
// bodies it deleted.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	objs, err := s.b.BodyObjects(ctx)
	if err != nil {
		return 0, err
	}
	released := 0
	for _, obj := range objs {
		holders, err := s.b.BodyHolders(ctx, obj)
		if err != nil {
			return released, err
		}
		var gone []string
		for _, h := range holders {
			id, ok := strings.CutPrefix(h, holderPrefix)
			if !ok {
				continue
			}
			exists, err := s.b.DeadLetterExists(ctx, id)
			if err != nil {
				return released, err
			}
			if !exists {
				gone = append(gone, h)
			}
		}
		if len(gone) == 0 && len(holders) > 0 {
			continue
		}
		left, _, err := s.b.UpdateBodyRefs(ctx, obj, gone, nil)
		if err != nil {
			return released, err
		}
		if left == 0 {
			if err := s.b.ReleaseBody(ctx, obj); err != nil {
				return released, err
			}
			released++
		}
	}
	return released, nil
}
