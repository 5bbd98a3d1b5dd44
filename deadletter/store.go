package deadletter

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/filter"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// Entry is one stored dead letter.
type Entry = broker.StoredDeadLetter

// Store reads the dead letters and changes them through the broker.
type Store struct {
	b   *broker.Client
	now func() time.Time
}

// NewStore returns a Store on the broker connection.
func NewStore(b *broker.Client) *Store { return &Store{b: b, now: time.Now} }

// List calls fn for the dead letters that match f, in the order they were
// written, starting after stream sequence `after`, at most limit of them
// (0: no limit). It returns the cursor to pass as `after` for the next
// page (0 when there is none). A filter of queue IDs only is answered by
// looking the messages up, without reading the other dead letters.
// Records that do not decode are skipped.
func (s *Store) List(ctx context.Context, f filter.Filter, after uint64, limit int, fn func(*Entry) bool) (next uint64, err error) {
	n := 0
	now := s.now()
	last := after
	visit := func(e *Entry) bool {
		if e.Err != nil || !f.MatchDeadLetter(e.DL, now) {
			return true
		}
		if limit > 0 && n == limit {
			next = last // there is more after the last one returned
			return false
		}
		n++
		last = e.Seq
		return fn(e)
	}
	if qids, ok := f.QueueIDs(); ok && after == 0 {
		for _, q := range qids {
			if err := s.b.MessageDeadLetters(ctx, q, visit); err != nil || next != 0 {
				return next, err
			}
		}
		if n > 0 {
			return 0, nil
		}
		// Nothing under those queue IDs: dead letters written before
		// subjects carried the queue ID are found by reading them all.
	}
	err = s.b.ScanDeadLetters(ctx, after+1, visit)
	return next, err
}

// Find returns the dead letters ids name: exactly the records named, or,
// for an ID that names no stored record (a job ID from an earlier
// attempt, say), every dead letter of its message.
func (s *Store) Find(ctx context.Context, ids []string) ([]*Entry, error) {
	var found []*Entry
	collect := func(e *Entry) bool { found = append(found, e); return true }
	f := filter.Filter{IDs: ids}
	if _, err := s.List(ctx, f, 0, 0, collect); err != nil {
		return nil, err
	}
	if wide, changed := f.Widen(); len(found) == 0 && changed {
		if _, err := s.List(ctx, wide, 0, 0, collect); err != nil {
			return nil, err
		}
	}
	return found, nil
}

// Body opens a dead letter's message.
func (s *Store) Body(ctx context.Context, e *Entry) (io.ReadCloser, error) {
	return s.b.OpenJobBody(ctx, &e.DL.Job, e.Inline)
}

// ReplayOptions tune a replay.
type ReplayOptions struct {
	// Route sends the replayed jobs to this next hop "host:port" instead
	// of their usual route.
	Route string
	// Rate is the most dead letters replayed per second (0: no limit).
	Rate float64
	// DryRun reports what would be replayed and changes nothing.
	DryRun bool
}

// ReplayResult is the outcome for one dead letter.
type ReplayResult struct {
	Entry *Entry
	// Job is the job it was replayed as (nil on failure or a dry run).
	Job *contracts.Job
	// Already: an earlier, interrupted run had queued it; this one only
	// removed the dead letter.
	Already bool
	Err     error
}

// Replay replays the dead letters f selects, one at a time in the order
// they were written, calling report after each. A failure of one does not
// stop the others; it returns how many were replayed and how many failed,
// and an error only when the dead letters could not be read (or ctx
// ended).
func (s *Store) Replay(ctx context.Context, f filter.Filter, o ReplayOptions, report func(ReplayResult)) (replayed, failed int, err error) {
	var lim *rate.Limiter
	if o.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(o.Rate), 1)
	}
	var stop error
	_, err = s.List(ctx, f, 0, 0, func(e *Entry) bool {
		if o.DryRun {
			replayed++
			report(ReplayResult{Entry: e})
			return true
		}
		if lim != nil {
			if stop = lim.Wait(ctx); stop != nil {
				return false
			}
		}
		job, already, err := s.b.Replay(ctx, e, o.Route)
		if err != nil {
			failed++
		} else {
			replayed++
		}
		report(ReplayResult{Entry: e, Job: job, Already: already, Err: err})
		return true
	})
	if err == nil {
		err = stop
	}
	return replayed, failed, err
}

// Purge deletes the dead letters f selects for good, with their bodies
// when nothing else holds them, calling report after each. It stops at
// the first failure.
func (s *Store) Purge(ctx context.Context, f filter.Filter, report func(*Entry)) (int, error) {
	n := 0
	var perr error
	_, err := s.List(ctx, f, 0, 0, func(e *Entry) bool {
		if perr = s.b.RemoveDeadLetter(ctx, e); perr != nil {
			perr = fmt.Errorf("%s: %w", e.ID(), perr)
			return false
		}
		n++
		report(e)
		return true
	})
	if err == nil {
		err = perr
	}
	return n, err
}

// Sweep releases, every interval until ctx ends, the bodies of dead
// letters that the stream's retention removed. Several processes may
// sweep at once.
func (s *Store) Sweep(ctx context.Context, every time.Duration, log zerolog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := s.b.ReleaseExpiredBodies(ctx)
			if err != nil && ctx.Err() == nil {
				log.Warn().Err(err).Msg("dead-letter body sweep failed; will retry")
			} else if n > 0 {
				log.Info().Int("bodies", n).Msg("released the bodies of expired dead letters")
			}
		}
	}
}
