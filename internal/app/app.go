// Package app wires jetrelay's stages into a running process: the
// embedded broker, the broker connection and provisioning, the ingress,
// the delivery worker and the HTTP endpoints. The command line uses it for
// serve, broker, ingress and delivery; the end-to-end tests use it to run
// the very same wiring in-process.
//
// Invariant: Stop stops the stages in dependency order — ingress and
// delivery drain first, then the broker connection flushes, and the
// embedded server stops last — so nothing accepted is left half-written.
package app

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/deadletter"
	"github.com/jetrelay/jetrelay/delivery"
	"github.com/jetrelay/jetrelay/ingress"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/console"
	"github.com/jetrelay/jetrelay/internal/queuectl"
	"github.com/jetrelay/jetrelay/pickup"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Stages selects what a process runs.
type Stages struct{ Broker, Ingress, Delivery bool }

// Name is the process role for logs and connection names.
func (s Stages) Name() string {
	switch {
	case s.Broker && (s.Ingress || s.Delivery):
		return "serve"
	case s.Broker:
		return "broker"
	case s.Ingress && s.Delivery:
		return "stages"
	case s.Ingress:
		return "ingress"
	}
	return "delivery"
}

// Options adjust the wiring for tests.
type Options struct {
	// RootCAs for verifying next hops (nil: system roots).
	RootCAs *x509.CertPool
	// Timeouts for outbound SMTP (zero: RFC 5321 defaults).
	Timeouts delivery.Timeouts
	// HTTPClient reaches OAuth token endpoints and the Graph API (nil: a
	// client with the system's roots).
	HTTPClient *http.Client
}

// App is a running process.
type App struct {
	cfg      *config.Config
	log      zerolog.Logger
	reg      *prometheus.Registry
	emb      *broker.Embedded
	bc       *broker.Client
	ingress  *ingress.Server
	worker   *delivery.Worker
	reloader *ingress.CertReloader
	http     *http.Server
	httpAddr net.Addr
	shape    *queuectl.ShapeCache
	console  *console.Server
	conAddr  net.Addr

	started atomic.Bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errs    chan error
	once    sync.Once
}

// Start brings up the stages and returns once they accept work. A stage
// without an embedded broker waits for the broker as long as it takes
// (readiness stays false meanwhile), until startCtx is cancelled. The
// caller must call Stop.
func Start(startCtx context.Context, cfg *config.Config, log zerolog.Logger, st Stages, o Options) (a *App, err error) {
	log = log.With().Str("process", st.Name()).Logger()
	ctx, cancel := context.WithCancel(context.Background())
	stopStart := context.AfterFunc(startCtx, cancel)
	defer stopStart()
	a = &App{cfg: cfg, log: log, reg: prometheus.NewRegistry(), cancel: cancel, errs: make(chan error, 4)}
	defer func() {
		if err != nil {
			a.Stop()
		}
	}()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	log.Info().Str("hostname", cfg.Hostname).Msg("starting")
	// Health endpoints first: /healthz answers while the broker is awaited,
	// /readyz says "not ready" until every stage accepts work.
	if err := a.startHTTP(); err != nil {
		return a, err
	}

	if st.Broker {
		a.emb, err = startEmbedded(cfg, log)
		if err != nil {
			return a, err
		}
		creds := a.emb.Credentials()
		a.bc, err = broker.Connect(ctx, broker.ConnectOptions{
			Name: "jetrelay-" + st.Name(), InProcess: a.emb.Server(), User: creds.User, Password: creds.Password,
		}, log)
		if err == nil {
			a.bc.AttachEmbedded(a.emb)
		}
	} else {
		a.bc, err = ConnectBroker(ctx, cfg, "jetrelay-"+st.Name(), log, true)
		if err == nil {
			err = a.bc.WaitConnected(ctx, log)
		}
	}
	if err != nil {
		return a, err
	}
	if err := a.bc.Provision(ctx, BrokerSettings(cfg)); err != nil {
		return a, err
	}
	a.reg.MustRegister(broker.NewQueueCollector(a.bc))
	// The queue's shape (oldest message, recipients per domain), read at
	// most every queuectl.ShapeInterval for /metrics and the console. It
	// is the whole queue's, not this process's, and reading it scans the
	// queue: only the processes that run the broker or the ingress export
	// it, so that scaling delivery workers out does not multiply the
	// scans (the console, wherever it runs, reads its own cache lazily).
	a.shape = queuectl.NewShapeCache(queuectl.New(a.bc), 0, 0)
	if st.Broker || st.Ingress {
		a.reg.MustRegister(queuectl.NewShapeCollector(a.shape))
	}

	if st.Ingress {
		opts, rl, err := IngressOptions(cfg, log)
		if err != nil {
			return a, err
		}
		a.reloader = rl
		opts.Registerer = a.reg
		// AUTH lockouts shared with every ingress, through the broker.
		locks, err := a.bc.WatchAuthLocks(ctx)
		if err != nil {
			return a, err
		}
		opts.Lockouts = locks
		a.ingress = ingress.New(opts, a.bc, log)
		if err := a.ingress.Listen(); err != nil {
			return a, err
		}
		if rl != nil {
			a.wg.Add(1)
			go func() { defer a.wg.Done(); rl.Watch(ctx, 5*time.Second) }()
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := a.ingress.Serve(ctx); err != nil {
				a.errs <- fmt.Errorf("ingress: %w", err)
			}
		}()

		if cfg.Ingress.Pickup.Dir != "" {
			pw, err := pickup.New(PickupOptions(cfg, a.reg), a.bc, log)
			if err != nil {
				return a, err
			}
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				_ = pw.Run(ctx)
			}()
		}
	}
	if st.Delivery {
		a.worker, err = NewWorker(cfg, a.bc, log, a.reg, o)
		if err != nil {
			return a, err
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := a.worker.Run(ctx); err != nil {
				a.errs <- fmt.Errorf("delivery: %w", err)
			}
		}()
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.sweep(ctx)
		}()
	}
	if cfg.Console.Enabled {
		if err := a.startConsole(ctx); err != nil {
			return a, err
		}
	}
	a.started.Store(true)
	log.Info().Msg("started")
	return a, nil
}

// startConsole serves the operator console (internal/console) on
// console.listen: a listener of its own, not http.listen, because the
// metrics are scraped without signing in, often from other machines,
// while the console is on loopback unless the admin says otherwise, and
// may serve HTTPS.
func (a *App) startConsole(ctx context.Context) error {
	o := console.Options{
		Config: a.cfg, Broker: a.bc, Shape: a.shape, Ready: a.ready, Log: a.log,
		IngressAddr: func() string {
			if addrs := a.IngressAddrs(); len(addrs) > 0 {
				return addrs[0].String()
			}
			return ""
		},
	}
	if a.worker != nil {
		o.AuthStates = a.worker.AuthStates
	}
	c, err := console.New(o)
	if err != nil {
		return err
	}
	a.console = c
	a.conAddr, err = c.Listen(ctx)
	return err
}

// ConsoleAddr is the console's bound address (nil when off).
func (a *App) ConsoleAddr() net.Addr { return a.conAddr }

// sweep releases, every deadletter.sweep_interval, the bodies of dead
// letters that the stream's retention removed.
func (a *App) sweep(ctx context.Context) {
	deadletter.NewStore(a.bc).Sweep(ctx, a.cfg.DeadLetter.SweepInterval.D(), a.log)
}

// Errors reports a stage that failed on its own.
func (a *App) Errors() <-chan error { return a.errs }

// ReloadCertificates re-reads the ingress certificate (SIGHUP).
func (a *App) ReloadCertificates() {
	if a.reloader != nil {
		if err := a.reloader.Reload(); err != nil {
			a.log.Error().Err(err).Msg("certificate reload failed; keeping the old one")
		}
	}
}

// IngressAddrs are the ingress's bound addresses (plain/STARTTLS).
func (a *App) IngressAddrs() []net.Addr {
	if a.ingress == nil {
		return nil
	}
	return a.ingress.Addrs()
}

// IngressTLSAddrs are the implicit-TLS addresses.
func (a *App) IngressTLSAddrs() []net.Addr {
	if a.ingress == nil {
		return nil
	}
	return a.ingress.TLSAddrs()
}

// HTTPAddr is the bound /metrics address (nil when off).
func (a *App) HTTPAddr() net.Addr { return a.httpAddr }

// Broker is the process's broker connection.
func (a *App) Broker() *broker.Client { return a.bc }

// Embedded is the embedded server, when this process runs one.
func (a *App) Embedded() *broker.Embedded { return a.emb }

// Stop shuts everything down gracefully, in order, and waits.
func (a *App) Stop() {
	a.once.Do(func() {
		a.cancel() // ingress drains, delivery finishes attempts in flight
		a.wg.Wait()
		if a.console != nil {
			a.console.Close()
		}
		if a.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = a.http.Shutdown(ctx)
			cancel()
		}
		if a.bc != nil {
			a.bc.Close()
		}
		if a.emb != nil {
			a.emb.Shutdown()
		}
		a.log.Info().Msg("stopped")
	})
}

func (a *App) ready() error {
	if !a.started.Load() {
		return errors.New("starting (waiting for the broker)")
	}
	if a.bc == nil || !a.bc.Connected() {
		return errors.New("broker connection down")
	}
	if err := a.bc.Storage(); err != nil {
		return fmt.Errorf("refusing new mail: %w", err)
	}
	if a.emb != nil {
		if err := a.emb.Health(); err != nil {
			return fmt.Errorf("embedded broker: %w", err)
		}
	}
	if a.worker != nil {
		if p := a.worker.AuthProblems(); len(p) > 0 {
			return fmt.Errorf("outbound authentication failing (messages wait in the queue): %s", strings.Join(p, "; "))
		}
	}
	return nil
}

// startHTTP serves /healthz, /readyz and /metrics on http.listen.
func (a *App) startHTTP() error {
	if a.cfg.HTTP.Listen == "" || a.cfg.HTTP.Listen == "off" {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := a.ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	if a.cfg.HTTP.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	l, err := net.Listen("tcp", a.cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen %s: %w", a.cfg.HTTP.Listen, err)
	}
	a.httpAddr = l.Addr()
	a.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := a.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error().Err(err).Msg("http server failed")
		}
	}()
	a.log.Info().Str("addr", l.Addr().String()).Msg("http: /healthz /readyz /metrics")
	return nil
}
