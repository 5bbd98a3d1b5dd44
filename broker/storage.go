package broker

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoStorage wraps a refusal or failure of the broker to store for lack
// of space: the file system under the store is full (or below
// broker.min_free), or a JetStream storage limit is reached. It is
// temporary, like ErrUnavailable, which it comes with; the ingress answers
// 452 4.3.1 for it (Postfix's "Insufficient system storage"), at MAIL
// while it lasts.
var ErrNoStorage = errors.New("insufficient broker storage")

// errStoreWriteFailed marks a storage problem under which the broker
// cannot write at all (a stream's store failed to write), so a publish
// waiting for its acknowledgement will not get one.
var errStoreWriteFailed = errors.New("store write failed")

// storageHold is how long a storage error answered by the broker keeps
// new mail out before the next message tries again.
const storageHold = 10 * time.Second

// storageState is what a Client knows about the broker's storage: the
// embedded server's own watch when there is one, and the last storage
// error a write got.
type storageState struct {
	local atomic.Pointer[func() error]

	mu   sync.Mutex
	last error // the last storage error a write got, nil after a write succeeded
	at   time.Time
}

// AttachEmbedded ties a client to the embedded server of its process:
// Storage consults the server's storage watch first (see
// [Embedded.StorageProblem]), and when the watch reloads JetStream the
// client asks again for the jobs it was waiting for, as after a
// reconnect (the server forgot the requests it held).
func (c *Client) AttachEmbedded(e *Embedded) {
	f := e.StorageProblem
	c.storage.local.Store(&f)
	e.onRestart(c.reconnected.Fire)
}

// Storage returns why the broker cannot store mail now, wrapping
// ErrNoStorage, or nil when it can: the embedded server's file system is
// below broker.min_free or failed a write, or a write was refused for
// storage in the last 10 seconds and none succeeded since.
func (c *Client) Storage() error {
	if f := c.storage.local.Load(); f != nil {
		if err := (*f)(); err != nil {
			return err
		}
	}
	s := &c.storage
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last != nil && time.Since(s.at) < storageHold {
		return s.last
	}
	return nil
}

// wroteOK notes that a write succeeded: storage works.
func (s *storageState) wroteOK() {
	s.mu.Lock()
	s.last = nil
	s.mu.Unlock()
}

// classify turns a failed write into a storage error when the broker
// said it is out of storage, or when it did not answer while the
// embedded server cannot write; other errors are returned as they are.
func (c *Client) classifyWrite(err error) error {
	if err == nil || errors.Is(err, ErrNoStorage) {
		return err
	}
	if !isStorageErr(err) {
		if local := c.storage.local.Load(); local != nil {
			if lerr := (*local)(); errors.Is(lerr, errStoreWriteFailed) {
				return fmt.Errorf("%w: %w", lerr, err)
			}
		}
		return err
	}
	serr := fmt.Errorf("%w: %w", ErrNoStorage, err)
	s := &c.storage
	s.mu.Lock()
	s.last, s.at = serr, time.Now()
	s.mu.Unlock()
	return serr
}

// JetStream's answers for storage (nats-server errors.json).
const (
	jsErrInsufficientResources    jetstream.ErrorCode = 10023 // server's max_file_store reached
	jsErrStorageResourcesExceeded jetstream.ErrorCode = 10047 // account storage limit reached
	jsErrStreamStoreFailed        jetstream.ErrorCode = 10077 // "no space left", "maximum bytes exceeded"
)

func isStorageErr(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jsErrInsufficientResources, jsErrStorageResourcesExceeded:
			return true
		case jsErrStreamStoreFailed:
			d := strings.ToLower(apiErr.Description)
			return strings.Contains(d, "no space") || strings.Contains(d, "maximum bytes") || strings.Contains(d, "resources")
		}
		return false
	}
	return strings.Contains(err.Error(), "no space left on device")
}

// storageWatch is the embedded server's view of its own storage, renewed
// every storageWatchEvery by a goroutine the Embedded owns: free space
// under the store against min_free, and the streams' write errors. A
// stream whose store failed a write (the disk filled up) refuses every
// later write until JetStream reloads it, so once space is back the
// watch restarts JetStream (standalone server only; a cluster moves the
// stream's leadership to a healthy replica itself).
type storageWatch struct {
	dir     string // the store directory
	minFree int64
	srv     *server.Server
	restart func() error // reloads JetStream (nil on a cluster node)
	free    func(dir string) (int64, error)

	problem  atomic.Pointer[error]
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

const storageWatchEvery = time.Second

func (w *storageWatch) run(log func(msg string, err error)) {
	defer close(w.done)
	t := time.NewTicker(storageWatchEvery)
	defer t.Stop()
	var was error
	for {
		err := w.check()
		if (err == nil) != (was == nil) {
			log("storage", err)
		}
		was = err
		w.set(err)
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
	}
}

func (w *storageWatch) set(err error) {
	if err == nil {
		w.problem.Store(nil)
		return
	}
	w.problem.Store(&err)
}

// current is the last verdict (nil: storage is fine).
func (w *storageWatch) current() error {
	if p := w.problem.Load(); p != nil {
		return *p
	}
	return nil
}

// check computes the verdict now, restarting JetStream when a stream's
// write error outlived the lack of space.
func (w *storageWatch) check() error {
	var low error
	if free, err := w.free(w.dir); err == nil && free < w.minFree {
		low = fmt.Errorf("%w: %s has %s free, below broker.min_free (%s)", ErrNoStorage, w.dir, humanBytes(free), humanBytes(w.minFree))
	}
	werr := w.writeError()
	switch {
	case werr == nil:
		return low
	case low != nil:
		return fmt.Errorf("%w; %w: %s", low, errStoreWriteFailed, werr)
	case w.restart != nil:
		// Space is back but the stream still refuses writes: reload it.
		if err := w.restart(); err != nil {
			return fmt.Errorf("%w: %w: %s (reloading JetStream failed: %v)", ErrNoStorage, errStoreWriteFailed, werr, err)
		}
		if werr = w.writeError(); werr == nil {
			return nil
		}
	}
	return fmt.Errorf("%w: %w: %s", ErrNoStorage, errStoreWriteFailed, werr)
}

// writeError is the first stream write error JetStream's health check
// reports ("" none).
func (w *storageWatch) writeError() error {
	st := w.srv.Healthz(&server.HealthzOptions{Details: true})
	if st == nil {
		return nil
	}
	for _, e := range st.Errors {
		if strings.Contains(e.Error, "write error") {
			return errors.New(e.Error)
		}
	}
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// StorageProblem is the embedded server's storage verdict, renewed every
// second: nil when it can store, else an error wrapping ErrNoStorage.
// The clients of the same process use it through [Client.AttachEmbedded].
func (e *Embedded) StorageProblem() error {
	if e.watch == nil {
		return nil
	}
	return e.watch.current()
}

// startStorageWatch starts the watch over the store directory.
func (e *Embedded) startStorageWatch(storeDir string, minFree int64) {
	w := &storageWatch{
		dir: storeDir, minFree: minFree, srv: e.srv, free: diskFree,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	if !e.clustered {
		w.restart = e.restartJetStream(storeDir)
	}
	e.watch = w
	go w.run(func(_ string, err error) {
		if err != nil {
			e.log.Error().Err(err).Msg("storage: refusing new mail until there is space again")
		} else {
			e.log.Info().Msg("storage: space available again, accepting mail")
		}
	})
}

func (e *Embedded) stopStorageWatch() {
	if w := e.watch; w != nil {
		w.stopOnce.Do(func() { close(w.stop) })
		<-w.done
	}
}

// restartJetStream returns a function that reloads JetStream from the
// store: the only way nats-server offers to clear a stream's write error.
// Clients see JetStream unavailable for a moment and retry; nothing
// stored is lost (the streams and consumers are read back from disk).
func (e *Embedded) restartJetStream(storeDir string) func() error {
	return func() error {
		cfg := e.srv.JetStreamConfig()
		if cfg == nil {
			return errors.New("JetStream is not running")
		}
		// EnableJetStream appends "jetstream" to the directory it is given.
		next := server.JetStreamConfig{
			StoreDir: filepath.Dir(cfg.StoreDir), MaxStore: cfg.MaxStore, MaxMemory: cfg.MaxMemory,
			SyncInterval: cfg.SyncInterval, SyncAlways: cfg.SyncAlways, Domain: cfg.Domain,
		}
		e.log.Warn().Str("store", storeDir).Msg("storage: space is back but a stream still refuses writes; reloading JetStream")
		if err := e.srv.ShutdownJetStream(); err != nil {
			return err
		}
		err := e.srv.EnableJetStream(&next)
		e.mu.Lock()
		hooks := e.restarted
		e.mu.Unlock()
		for _, f := range hooks {
			f()
		}
		return err
	}
}

// onRestart registers f to run after JetStream was reloaded.
func (e *Embedded) onRestart(f func()) {
	e.mu.Lock()
	e.restarted = append(e.restarted, f)
	e.mu.Unlock()
}
