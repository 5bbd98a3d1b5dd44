package cli

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
)

func newServeCmd(g *globals) *cobra.Command {
	var listen, smarthost string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run everything in one process: embedded broker, ingress and delivery",
		Long: `serve runs the whole relay in one process with an embedded NATS JetStream
server storing under data_dir. With no configuration at all it listens on
127.0.0.1:2525, relays for loopback clients only and delivers directly to
the recipients' MX hosts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := g.loadValid(map[string]string{"ingress.listen": listen, "delivery.smarthost": smarthost})
			if err != nil {
				return err
			}
			return runStages(cfg, log, app.Stages{Broker: true, Ingress: true, Delivery: true})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "ingress.listen: SMTP address(es), comma-separated")
	cmd.Flags().StringVar(&smarthost, "smarthost", "", "delivery.smarthost: relay everything through host:port")
	return cmd
}

func newBrokerCmd(g *globals) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Run only the embedded NATS JetStream server, for stages in other processes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := g.loadValid(map[string]string{"broker.listen": listen})
			if err != nil {
				return err
			}
			if cfg.Broker.Listen == "off" {
				return errors.New("broker.listen is off: a broker without a client port serves nobody")
			}
			return runStages(cfg, log, app.Stages{Broker: true})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "broker.listen: client address, e.g. 127.0.0.1:4222")
	return cmd
}

func newIngressCmd(g *globals) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "ingress",
		Short: "Run only the SMTP ingress, connected to the broker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := g.loadValid(map[string]string{"ingress.listen": listen})
			if err != nil {
				return err
			}
			return runStages(cfg, log, app.Stages{Ingress: true})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "ingress.listen: SMTP address(es), comma-separated")
	return cmd
}

func newDeliveryCmd(g *globals) *cobra.Command {
	var smarthost string
	var concurrency string
	cmd := &cobra.Command{
		Use:   "delivery",
		Short: "Run only a delivery worker, connected to the broker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := g.loadValid(map[string]string{"delivery.smarthost": smarthost, "delivery.concurrency": concurrency})
			if err != nil {
				return err
			}
			return runStages(cfg, log, app.Stages{Delivery: true})
		},
	}
	cmd.Flags().StringVar(&smarthost, "smarthost", "", "delivery.smarthost: relay everything through host:port")
	cmd.Flags().StringVar(&concurrency, "concurrency", "", "delivery.concurrency: jobs handled at once")
	return cmd
}

// runStages runs the chosen stages until SIGINT/SIGTERM (a second signal
// exits at once), or, when the Windows Service Control Manager started the
// process, until the service is stopped; then it stops them gracefully.
func runStages(cfg *config.Config, log zerolog.Logger, st app.Stages) error {
	applyMemoryLimit(cfg, log)
	if handled, err := runAsService(cfg, log, st); handled {
		return err
	}
	var running atomic.Pointer[app.App]
	ctx, stop := signalContext(log, func() {
		if a := running.Load(); a != nil {
			a.ReloadCertificates()
		}
	})
	defer stop()
	log.Info().Str("version", version()).Msg("jetrelay")
	return runUntil(ctx, cfg, log, st, func(a *app.App) { running.Store(a) })
}

// runUntil starts the stages, calls started once they accept work, waits
// until ctx is done or a stage fails, and stops them gracefully.
func runUntil(ctx context.Context, cfg *config.Config, log zerolog.Logger, st app.Stages, started func(*app.App)) error {
	a, err := app.Start(ctx, cfg, log, st, app.Options{})
	if err != nil {
		if ctx.Err() != nil {
			// Stopped while still starting (waiting for the broker, say):
			// a requested stop, not a failure.
			log.Info().Err(err).Msg("stop requested while starting")
			return nil
		}
		return err
	}
	if started != nil {
		started(a)
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info().Msg("stop requested: shutting down gracefully")
	case runErr = <-a.Errors():
		log.Error().Err(runErr).Msg("a stage failed; stopping")
	}
	a.Stop()
	return runErr
}
