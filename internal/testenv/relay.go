package testenv

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/rs/zerolog"
)

// TestConfig is a configuration for an in-process relay: everything on
// loopback with free ports, data in a temporary directory, retries after
// one second, no jitter, no destination back-off, HTTP off.
func TestConfig(t testing.TB) *config.Config {
	cfg := config.Default()
	cfg.Hostname = "relay.test"
	cfg.DataDir = t.TempDir()
	cfg.Broker.Listen = "127.0.0.1:0"
	cfg.Ingress.Listen = config.StringList{"127.0.0.1:0"}
	cfg.Ingress.ShutdownGrace = config.Duration(5 * time.Second)
	cfg.HTTP.Listen = "off"
	cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Second)}
	cfg.Delivery.Retry.Jitter = 0
	cfg.Delivery.DestinationBackoff = 0
	cfg.Delivery.ShutdownGrace = config.Duration(5 * time.Second)
	cfg.Delivery.IdleTimeout = config.Duration(5 * time.Second)
	cfg.Broker.AckWait = config.Duration(10 * time.Second)
	return cfg
}

// Relay is an in-process jetrelay built with the production wiring.
type Relay struct {
	t    testing.TB
	Cfg  *config.Config
	App  *app.App
	Opts app.Options
	st   app.Stages
	log  zerolog.Logger
}

// RelayOption adjusts a test relay.
type RelayOption func(*Relay)

// WithLogs also writes the relay's log (JSON lines, every level from
// debug up) to w, for tests that check what it says.
func WithLogs(w io.Writer) RelayOption {
	return func(r *Relay) {
		tw, lvl := testLogWriter(r.t)
		r.log = zerolog.New(zerolog.MultiLevelWriter(
			&zerolog.FilteredLevelWriter{Writer: zerolog.LevelWriterAdapter{Writer: tw}, Level: lvl},
			zerolog.SyncWriter(w),
		)).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	}
}

// StartRelay runs serve (embedded broker, ingress, delivery) with cfg.
func StartRelay(t testing.TB, cfg *config.Config, o app.Options, opts ...RelayOption) *Relay {
	return StartStages(t, cfg, app.Stages{Broker: true, Ingress: true, Delivery: true}, o, opts...)
}

// StartStages runs the chosen stages with cfg.
func StartStages(t testing.TB, cfg *config.Config, st app.Stages, o app.Options, opts ...RelayOption) *Relay {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	r := &Relay{t: t, Cfg: cfg, Opts: o, st: st, log: TestLogger(t)}
	for _, o := range opts {
		o(r)
	}
	r.start()
	t.Cleanup(r.Stop)
	return r
}

func (r *Relay) start() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, err := app.Start(ctx, r.Cfg, r.log, r.st, r.Opts)
	if err != nil {
		r.t.Fatalf("start relay: %v", err)
	}
	r.App = a
}

// Addr is the ingress SMTP address.
func (r *Relay) Addr() string { return r.App.IngressAddrs()[0].String() }

// Stop shuts the relay down gracefully (idempotent).
func (r *Relay) Stop() {
	if r.App != nil {
		r.App.Stop()
	}
}

// Restart stops the relay and starts it again on the same data directory
// and the same ingress address.
func (r *Relay) Restart() {
	r.t.Helper()
	addr := ""
	if r.st.Ingress {
		addr = r.Addr()
	}
	r.Stop()
	if addr != "" {
		r.Cfg.Ingress.Listen = config.StringList{addr}
	}
	r.start()
}

// TestLogger logs into the test's output, and drops lines written after
// the test has finished (goroutines winding down).
func TestLogger(t testing.TB) zerolog.Logger {
	if _, ok := t.(*testing.F); ok {
		// A fuzz target must not log through F once fuzzing started.
		return zerolog.Nop()
	}
	w, lvl := testLogWriter(t)
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// testLogWriter writes into the test's output until the test ends, and
// says from which level on.
func testLogWriter(t testing.TB) (io.Writer, zerolog.Level) {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	lvl := zerolog.InfoLevel
	if testing.Verbose() {
		lvl = zerolog.DebugLevel
	}
	if _, ok := t.(*testing.B); ok {
		// Benchmarks measure the relay, not the test log: warnings only,
		// as in bench/compare.sh.
		lvl = zerolog.WarnLevel
	}
	return w, lvl
}

type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if w.done.Load() {
		return len(p), nil
	}
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

var _ io.Writer = (*testWriter)(nil)

// WaitQueueEmpty waits until nothing is ready, in flight or scheduled: the
// pipeline has finished every job, so no further delivery can happen.
func (r *Relay) WaitQueueEmpty(timeout time.Duration) broker.QueueState {
	r.t.Helper()
	var st broker.QueueState
	Eventually(r.t, timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		st, err = r.App.Broker().QueueState(ctx)
		return err == nil && st.Empty()
	}, "queue not empty: %+v", &st)
	return st
}

// State reads the queue state now.
func (r *Relay) State() broker.QueueState {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := r.App.Broker().QueueState(ctx)
	if err != nil {
		r.t.Fatalf("queue state: %v", err)
	}
	return st
}

// Metric returns the first line of the relay's /metrics that starts with
// name (a metric name, with labels if need be), "" when there is none.
// The relay must serve HTTP (cfg.HTTP.Listen).
func (r *Relay) Metric(name string) string {
	r.t.Helper()
	resp, err := http.Get("http://" + r.App.HTTPAddr().String() + "/metrics")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name) {
			return l
		}
	}
	return ""
}
