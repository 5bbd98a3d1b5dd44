package pickup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/mailhdr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Queue is what the pickup directory needs from the broker; *broker.Client
// has it (the same methods the ingress uses).
type Queue interface {
	// Connected reports whether the broker connection is up.
	Connected() bool
	// Storage says why the broker cannot store mail now, nil when it can.
	Storage() error
	// InlineLimit is the largest body that may travel inside the job.
	InlineLimit() int
	// PutBody stores a body too large to travel inline.
	PutBody(ctx context.Context, name string, r io.Reader) (int64, error)
	// Enqueue stores a job and returns once the broker acknowledged it.
	Enqueue(ctx context.Context, j *contracts.Job, inline ...[]byte) error
}

// Options configure a Watcher (see config.Pickup for their meaning).
type Options struct {
	// Dir is the pickup directory; BadmailDir where files that are not
	// messages go (default: Dir/badmail).
	Dir, BadmailDir string
	// PollInterval is how often Dir is listed; StableFor how long a
	// file's size and modification time must stay the same before it is
	// taken.
	PollInterval, StableFor time.Duration
	// Hostname names the relay in the Received field and Message-ID.
	Hostname string
	// MaxMessageBytes: a larger file goes to the badmail folder.
	MaxMessageBytes int64
	// MaxReceivedHeaders: a message with more Received fields is a loop.
	MaxReceivedHeaders int
	// AddMissingHeaders adds Message-ID and Date when a message has none.
	AddMissingHeaders bool
	// Concurrency is how many files are queued at once.
	Concurrency int
	// Registerer receives the metrics (nil: not exported).
	Registerer prometheus.Registerer
}

// DefaultOptions are the defaults; the configuration reads them from here.
func DefaultOptions() Options {
	return Options{
		PollInterval:       time.Second,
		StableFor:          2 * time.Second,
		MaxMessageBytes:    25 << 20,
		MaxReceivedHeaders: 50,
		AddMissingHeaders:  true,
		Concurrency:        4,
	}
}

func (o *Options) fill() {
	d := DefaultOptions()
	if o.BadmailDir == "" {
		o.BadmailDir = filepath.Join(o.Dir, "badmail")
	}
	if o.PollInterval <= 0 {
		o.PollInterval = d.PollInterval
	}
	if o.StableFor < 0 {
		o.StableFor = 0
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = d.MaxMessageBytes
	}
	if o.MaxReceivedHeaders <= 0 {
		o.MaxReceivedHeaders = d.MaxReceivedHeaders
	}
	if o.Concurrency <= 0 {
		o.Concurrency = d.Concurrency
	}
}

// Watcher queues the files of a pickup directory. Create it with New, run
// it with Run.
type Watcher struct {
	opts    Options
	q       Queue
	log     zerolog.Logger
	metrics *metrics

	mu sync.Mutex // guards seen and stuck (files are taken concurrently)
	// seen is what the last looks found of each file, for the stability
	// rule.
	seen map[string]look
	// stuck are files queued whose delete failed: not queued again while
	// they stay the same (the broker would drop the copy anyway).
	stuck map[string]look
}

// look is one look at a file.
type look struct {
	size  int64
	mtime time.Time
	since time.Time // first look with this size and mtime
}

// New makes the directories (mode 0770 where it creates them) and builds
// the watcher.
func New(opts Options, q Queue, log zerolog.Logger) (*Watcher, error) {
	opts.fill()
	if opts.Dir == "" {
		return nil, errors.New("pickup: no directory")
	}
	for _, d := range []string{opts.Dir, opts.BadmailDir} {
		if err := os.MkdirAll(d, 0o770); err != nil {
			return nil, fmt.Errorf("pickup: %w", err)
		}
	}
	return &Watcher{
		opts:    opts,
		q:       q,
		log:     log.With().Str("component", "pickup").Logger(),
		metrics: newMetrics(opts.Registerer),
		seen:    map[string]look{},
		stuck:   map[string]look{},
	}, nil
}

// Run looks at the directory every PollInterval until ctx is cancelled;
// a file being queued when it is is finished first (within the broker's
// publish timeout).
func (w *Watcher) Run(ctx context.Context) error {
	w.log.Info().Str("dir", w.opts.Dir).Str("badmail_dir", w.opts.BadmailDir).
		Dur("poll_interval", w.opts.PollInterval).Dur("stable_for", w.opts.StableFor).Msg("watching the pickup directory")
	wait := w.opts.PollInterval
	down := false
	for {
		select {
		case <-ctx.Done():
			w.log.Info().Msg("pickup stopped")
			return nil
		case <-time.After(wait):
		}
		if err := w.brokerProblem(); err != nil {
			if !down {
				w.log.Warn().Err(err).Msg("pickup paused: the broker cannot take mail; files stay in the folder")
			}
			down, wait = true, w.opts.PollInterval
			continue
		}
		if down {
			w.log.Info().Msg("pickup resumed")
			down = false
		}
		if w.pass(ctx) {
			wait = w.opts.PollInterval
		} else {
			// A file could not be queued: look again later, up to 30 s.
			wait = min(2*wait, 30*time.Second)
		}
	}
}

func (w *Watcher) brokerProblem() error {
	if !w.q.Connected() {
		return errors.New("broker connection down")
	}
	return w.q.Storage()
}

// pass looks at the directory once and queues the files that are ready;
// it reports false when one of them could not be queued.
func (w *Watcher) pass(ctx context.Context) bool {
	ready := w.readyFiles(time.Now())
	if len(ready) == 0 {
		return true
	}
	var mu sync.Mutex
	ok := true
	sem := make(chan struct{}, w.opts.Concurrency)
	var wg sync.WaitGroup
	for _, f := range ready {
		if ctx.Err() != nil {
			break
		}
		mu.Lock()
		failing := !ok
		mu.Unlock()
		if failing {
			break // the broker is in trouble: not the rest now
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if !w.take(ctx, f) {
				mu.Lock()
				ok = false
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ok
}

// candidate is a file that passed the stability rule.
type candidate struct {
	name string
	look look
}

// readyFiles lists the directory and returns the files that are ready by
// name and stability (see the package doc), oldest first.
func (w *Watcher) readyFiles(now time.Time) []candidate {
	entries, err := os.ReadDir(w.opts.Dir)
	if err != nil {
		w.log.Error().Err(err).Str("dir", w.opts.Dir).Msg("cannot list the pickup directory")
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []candidate
	present := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(name, ".") || !strings.EqualFold(filepath.Ext(name), ".eml") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // gone meanwhile
		}
		present[name] = true
		l := look{size: info.Size(), mtime: info.ModTime(), since: now}
		if s, ok := w.stuck[name]; ok && s.size == l.size && s.mtime.Equal(l.mtime) {
			w.retryDelete(name)
			continue
		}
		delete(w.stuck, name)
		prev, ok := w.seen[name]
		if !ok || prev.size != l.size || !prev.mtime.Equal(l.mtime) {
			w.seen[name] = l // new, or changed since the last look
			continue
		}
		if now.Sub(prev.since) >= w.opts.StableFor {
			out = append(out, candidate{name: name, look: prev})
		}
	}
	for name := range w.seen {
		if !present[name] {
			delete(w.seen, name)
		}
	}
	for name := range w.stuck {
		if !present[name] {
			delete(w.stuck, name)
		}
	}
	// Oldest first, as they were written.
	sortCandidates(out)
	return out
}

// take queues one file, or moves it to the badmail folder; it reports
// false when the file stays because the broker did not take it.
func (w *Watcher) take(ctx context.Context, c candidate) bool {
	path := filepath.Join(w.opts.Dir, c.name)
	log := w.log.With().Str("file", c.name).Logger()
	f, busy, err := openExclusive(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true // taken by another process meanwhile
	case err != nil:
		log.Error().Err(err).Msg("cannot open the pickup file; it stays")
		return true
	case busy:
		log.Debug().Msg("pickup file still open by its writer; not taken yet")
		return true
	}
	data, info, err := readFile(f, w.opts.MaxMessageBytes)
	f.Close()
	if err != nil {
		log.Error().Err(err).Msg("cannot read the pickup file; it stays")
		return true
	}
	if info.Size() != c.look.size || !info.ModTime().Equal(c.look.mtime) {
		log.Debug().Msg("pickup file changed while it was read; not taken yet")
		return true
	}
	qid := fileQueueID(c.name, info.Size(), info.ModTime(), data.sum)
	log = log.With().Str("msg_id", qid).Logger()
	if data.tooLarge {
		w.badmail(log, c.name, qid, fmt.Sprintf("the file is %d bytes, larger than ingress.max_message_bytes (%d)", info.Size(), w.opts.MaxMessageBytes))
		return true
	}
	job, prefix, msg, err := w.message(c.name, qid, info.ModTime(), data.b)
	if err != nil {
		w.badmail(log, c.name, qid, err.Error())
		return true
	}
	// Finish what was started, also when ctx ends (Stop): the broker's
	// publish timeout bounds it.
	if err := w.enqueue(context.WithoutCancel(ctx), job, prefix, msg); err != nil {
		log.Warn().Err(err).Msg("pickup file not queued; it stays and is tried again")
		w.metrics.failed.Inc()
		return false
	}
	w.metrics.queued.Inc()
	log.Info().Str("from", job.From).Int("rcpts", len(job.Rcpts)).Int("size", len(prefix)+len(msg)).Msg("queued from the pickup directory")
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		w.mu.Lock()
		w.stuck[c.name] = c.look
		w.mu.Unlock()
		log.Error().Err(err).Msg("queued, but the pickup file cannot be deleted; it is not queued again while it stays the same")
	}
	w.forget(c.name)
	return true
}

// forget drops what the looks found of a file that is gone.
func (w *Watcher) forget(name string) {
	w.mu.Lock()
	delete(w.seen, name)
	w.mu.Unlock()
}

// retryDelete tries again to delete a file that was queued (w.mu held).
func (w *Watcher) retryDelete(name string) {
	if err := os.Remove(filepath.Join(w.opts.Dir, name)); err == nil || errors.Is(err, fs.ErrNotExist) {
		delete(w.stuck, name)
	}
}

// fileData is a pickup file as read.
type fileData struct {
	b        []byte // the content (nil when too large)
	sum      []byte // SHA-256 of the whole content
	tooLarge bool
}

// readFile reads an open pickup file whole, up to limit bytes; past it
// only its hash is taken.
func readFile(f *os.File, limit int64) (fileData, os.FileInfo, error) {
	info, err := f.Stat()
	if err != nil {
		return fileData{}, nil, err
	}
	h := sha256.New()
	if info.Size() > limit {
		if _, err := io.Copy(h, f); err != nil {
			return fileData{}, nil, err
		}
		return fileData{sum: h.Sum(nil), tooLarge: true}, info, nil
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return fileData{}, nil, err
	}
	if int64(len(b)) > limit {
		// It grew since the Stat: not stable after all.
		return fileData{}, nil, errors.New("the file grew while it was read")
	}
	h.Write(b)
	return fileData{b: b, sum: h.Sum(nil)}, info, nil
}

// fileQueueID derives the queue ID of a pickup file from what identifies
// it: its name, size, modification time and content. The same file gives
// the same ID after a crash, and so the same Nats-Msg-Id for its job,
// which the broker drops as a duplicate. The time part is the
// modification time, or 2024-01-01 for a file dated before that (the
// queue ID's epoch) or more than a day ahead.
func fileQueueID(name string, size int64, mtime time.Time, sum []byte) string {
	t := mtime
	if epoch := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC); t.Before(epoch) || t.After(time.Now().Add(24*time.Hour)) {
		t = epoch
	}
	seed := "pickup/" + name + "/" + strconv.FormatInt(size, 10) + "/" + strconv.FormatInt(mtime.UnixNano(), 10) + "/" + hex.EncodeToString(sum)
	return contracts.DerivedQueueID(t, seed)
}

// message turns a file's content into the job and the message to queue:
// the header prefix (Received, and Message-ID and Date when missing, all
// dated with the file's modification time, so that the bytes are the
// same when the file is queued again after a crash) and the message.
func (w *Watcher) message(name, qid string, mtime time.Time, raw []byte) (*contracts.Job, []byte, []byte, error) {
	data := crlf(raw)
	env, msg, err := parse(data)
	if err != nil {
		return nil, nil, nil, err
	}
	facts := mailhdr.Scan(msg)
	if facts.Received > w.opts.MaxReceivedHeaders {
		return nil, nil, nil, fmt.Errorf("%w: %d Received fields, more than ingress.max_received_headers (%d): a mail loop", ErrMalformed, facts.Received, w.opts.MaxReceivedHeaders)
	}
	prefix := mailhdr.ReceivedLocal("pickup file", name, w.opts.Hostname, qid, env.rcpts, mtime)
	if w.opts.AddMissingHeaders {
		prefix = mailhdr.AppendMissing(prefix, facts, qid, w.opts.Hostname, mtime)
	}
	if int64(len(prefix)+len(msg)) > w.opts.MaxMessageBytes {
		return nil, nil, nil, fmt.Errorf("%w: the message is %d bytes with its line endings made CRLF, larger than ingress.max_message_bytes (%d)", ErrMalformed, len(prefix)+len(msg), w.opts.MaxMessageBytes)
	}
	now := time.Now().UTC()
	job := &contracts.Job{
		QueueID:    qid,
		ReceivedAt: now,
		FirstSeen:  now,
		Client:     contracts.Client{Addr: "pickup", HELO: name, Proto: "local"},
		From:       env.from,
		Attempt:    1,
	}
	smtputf8 := has8bit([]byte(env.from))
	for _, r := range env.rcpts {
		job.Rcpts = append(job.Rcpts, contracts.Recipient{Addr: r})
		smtputf8 = smtputf8 || has8bit([]byte(r))
	}
	job.Params.SMTPUTF8 = smtputf8
	if has8bit(msg) {
		job.Params.Body = "8BITMIME"
	}
	return job, prefix, msg, nil
}

// enqueue stores the job: inline when it fits, else the body first.
func (w *Watcher) enqueue(ctx context.Context, job *contracts.Job, prefix, msg []byte) error {
	job.Body.MaxLine = max(contracts.MeasureLines(prefix), contracts.MeasureLines(msg))
	if len(prefix)+len(msg) <= w.q.InlineLimit()-256 {
		return w.q.Enqueue(ctx, job, prefix, msg)
	}
	size, err := w.q.PutBody(ctx, job.QueueID, io.MultiReader(bytes.NewReader(prefix), bytes.NewReader(msg)))
	if err != nil {
		return err
	}
	job.Body = contracts.Body{Object: job.QueueID, Size: size, MaxLine: job.Body.MaxLine}
	return w.q.Enqueue(ctx, job)
}
