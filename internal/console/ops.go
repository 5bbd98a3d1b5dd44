package console

import (
	"fmt"
	"io/fs"
	"strconv"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/deadletter"
	"github.com/jetrelay/jetrelay/internal/filter"
)

// A bulk replay or purge runs in the background, owned by the server
// (stopped by Close), and its page shows its progress. Replays are the
// deadletter package's: one at a time, each dead letter removed only once
// its new job is stored, so an interrupted one is simply run again.

// maxOps bounds how many finished operations are kept for their pages.
const maxOps = 100

type operation struct {
	ID, Action, User, Route string
	Filter                  filterForm
	Started                 time.Time

	mu       sync.Mutex
	total    int
	done     int
	failed   int
	errs     []string
	finished bool
	err      string
	ended    time.Time
}

// opSnapshot is an operation as its page shows it.
type opSnapshot struct {
	ID, Action, User, Route, Query string
	Started, Ended                 time.Time
	Total, Completed, Failed       int
	Percent                        int
	Errors                         []string
	Finished                       bool
	Err                            string
}

func (o *operation) snapshot() opSnapshot {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := opSnapshot{ID: o.ID, Action: o.Action, User: o.User, Route: o.Route, Query: o.Filter.query(), Started: o.Started, Ended: o.ended,
		Total: o.total, Completed: o.done, Failed: o.failed, Errors: append([]string(nil), o.errs...), Finished: o.finished, Err: o.err}
	if o.total > 0 {
		s.Percent = (o.done + o.failed) * 100 / o.total
	}
	if o.finished {
		s.Percent = 100
	}
	return s
}

type operations struct {
	mu   sync.Mutex
	next int
	byID map[string]*operation
	ids  []string
}

func (o *operations) add(op *operation) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.next++
	op.ID = strconv.Itoa(o.next)
	o.byID[op.ID] = op
	o.ids = append(o.ids, op.ID)
	if len(o.ids) > maxOps {
		delete(o.byID, o.ids[0])
		o.ids = o.ids[1:]
	}
}

func (o *operations) get(id string) *operation {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.byID[id]
}

func (s *Server) startBulk(c *reqCtx, action string, ff filterForm, f filter.Filter, route string) *operation {
	op := &operation{Action: action, User: c.sess.user, Route: route, Filter: ff, Started: s.now()}
	s.ops.add(op)
	log := s.log.With().Str("user", c.sess.user).Str("remote", s.clientIP(c.r).String()).Str("action", "deadletter bulk "+action).Str("op", op.ID).Logger()
	log.Info().Str("filter", ff.query()).Str("route", route).Msg("console: bulk operation started")
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx := s.ctx
		// Count first, so that the page can show how far along it is.
		total := 0
		_, err := s.dls.List(ctx, f, 0, 0, func(*deadletter.Entry) bool { total++; return true })
		op.mu.Lock()
		op.total = total
		op.mu.Unlock()
		if err == nil {
			switch action {
			case "replay":
				_, _, err = s.dls.Replay(ctx, f, deadletter.ReplayOptions{Route: route}, func(r deadletter.ReplayResult) {
					op.mu.Lock()
					defer op.mu.Unlock()
					if r.Err != nil {
						op.failed++
						if len(op.errs) < 20 {
							op.errs = append(op.errs, fmt.Sprintf("%s: %v", r.Entry.DL.Job.QueueID, r.Err))
						}
						log.Warn().Str("msg_id", r.Entry.DL.Job.QueueID).Err(r.Err).Msg("console: replay failed")
						return
					}
					op.done++
					log.Info().Str("msg_id", r.Entry.DL.Job.QueueID).Msg("console: replayed")
				})
			case "purge":
				_, err = s.dls.Purge(ctx, f, func(e *deadletter.Entry) {
					op.mu.Lock()
					op.done++
					op.mu.Unlock()
					log.Info().Str("msg_id", e.DL.Job.QueueID).Msg("console: purged")
				})
			}
		}
		op.mu.Lock()
		op.finished, op.ended = true, s.now()
		if err != nil {
			op.err = err.Error()
		}
		done, failed := op.done, op.failed
		op.mu.Unlock()
		ev := log.Info()
		if err != nil {
			ev = log.Error().Err(err)
		}
		ev.Int("done", done).Int("failed", failed).Msg("console: bulk operation ended")
	}()
	return op
}

// fsSub is fs.Sub.
func fsSub(f fs.FS, dir string) (fs.FS, error) { return fs.Sub(f, dir) }
