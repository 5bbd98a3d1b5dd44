// Package cli is the jetrelay command line: one binary whose subcommands
// run the pipeline's stages (serve, broker, ingress, delivery), operate on
// the queue and the dead letters, and help set up and test a relay.
//
// It is the only place that reads flags, the environment and the config
// file, and the only place that wires stages together; the stages
// themselves know nothing of each other.
//
// Invariants: operator commands change state only through the broker's
// lifecycle operations; what they print is true of the whole selection
// ("3 of 307" when a page is cut); decoration (progress bars, colour) goes
// only to a terminal, never into a pipe, a file or a test's buffer; with
// --json stdout carries only JSON Lines; exit codes mean what they say
// (send --wait: 0 delivered, 75 deferred or no outcome yet, 1 failed).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/logging"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
)

// Version is set at build time (-ldflags "-X github.com/jetrelay/jetrelay/internal/cli.Version=v1.2.3");
// otherwise it comes from the module build info.
var Version = ""

// Main runs the command line and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(stderr, "jetrelay:", ee.msg)
			}
			return ee.code
		}
		fmt.Fprintln(stderr, "jetrelay:", err)
		return 1
	}
	return 0
}

// exitError ends the process with a specific code.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// globals are the flags every command takes.
type globals struct {
	configFile string
	sets       []string
	logLevel   string
	logFormat  string
	dataDir    string
	hostname   string
	brokerURL  string

	stdin          io.Reader
	stdout, stderr io.Writer
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "jetrelay",
		Short: "An SMTP relay for applications, on NATS JetStream",
		Long: `jetrelay accepts mail from applications and servers (SQL Server Database
Mail, cron, monitoring), queues it durably on NATS JetStream and relays it
to the recipients' MX hosts or a smart host, with retries, bounces and a
dead-letter queue you can inspect and replay.

Start everything on one machine with:  jetrelay serve`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVarP(&g.configFile, "config", "c", os.Getenv("JETRELAY_CONFIG"), "YAML configuration file (env JETRELAY_CONFIG)")
	pf.StringArrayVar(&g.sets, "set", nil, "override any key, e.g. --set delivery.retry.max_age=2d (repeatable)")
	pf.StringVar(&g.logLevel, "log-level", "", "log.level: trace, debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "", "log.format: json or console")
	pf.StringVar(&g.dataDir, "data-dir", "", "data_dir")
	pf.StringVar(&g.hostname, "hostname", "", "hostname (FQDN for banner, EHLO and Received)")
	pf.StringVar(&g.brokerURL, "broker-url", "", "broker.url: NATS server(s) to connect to")

	root.AddCommand(
		newServeCmd(g), newBrokerCmd(g), newIngressCmd(g), newDeliveryCmd(g),
		newSendCmd(g), newConfigCmd(g), newVersionCmd(g), newUserCmd(g),
		newQueueCmd(g), newDeadLetterCmd(g),
	)
	for _, c := range extraCommands {
		root.AddCommand(c(g))
	}
	return root
}

// extraCommands are commands defined in their own files (platform-specific
// or optional ones); each file appends its constructor in an init func.
var extraCommands []func(*globals) *cobra.Command

// load builds the configuration from the file, the environment, the
// global flags and the command's own flag overrides.
func (g *globals) load(extra map[string]string) (*config.Config, *config.Source, error) {
	ov := map[string]string{}
	for _, s := range g.sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, nil, fmt.Errorf("--set %q: want key=value", s)
		}
		ov[strings.TrimSpace(k)] = v
	}
	for k, v := range map[string]string{
		"log.level": g.logLevel, "log.format": g.logFormat, "data_dir": g.dataDir,
		"hostname": g.hostname, "broker.url": g.brokerURL,
	} {
		if v != "" {
			ov[k] = v
		}
	}
	for k, v := range extra {
		if v != "" {
			ov[k] = v
		}
	}
	return config.Load(g.configFile, os.Environ(), ov)
}

// loadValid loads and validates, for the commands that run something.
func (g *globals) loadValid(extra map[string]string) (*config.Config, zerolog.Logger, error) {
	cfg, src, err := g.load(extra)
	if err != nil {
		return nil, zerolog.Nop(), err
	}
	if err := cfg.Validate(); err != nil {
		return nil, zerolog.Nop(), fmt.Errorf("invalid configuration (run `jetrelay config check`):\n%w", src.Locate(err))
	}
	log := logging.New(g.stderr, cfg.Log.Level, cfg.Log.Format)
	for _, w := range src.Warnings {
		log.Warn().Msg(w)
	}
	return cfg, log, nil
}

// signalContext is cancelled by the first SIGINT or SIGTERM (graceful
// shutdown); a second one exits at once. SIGHUP calls onHUP.
func signalContext(log zerolog.Logger, onHUP func()) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		stopping := false
		for {
			select {
			case <-done:
				return
			case s := <-ch:
				if s == syscall.SIGHUP {
					if onHUP != nil {
						log.Info().Msg("SIGHUP: reloading certificates")
						onHUP()
					}
					continue
				}
				if stopping {
					log.Warn().Str("signal", s.String()).Msg("second signal: exiting now")
					os.Exit(1)
				}
				stopping = true
				log.Info().Str("signal", s.String()).Msg("shutting down gracefully (send again to force)")
				cancel()
			}
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}
}

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
		if v != "" {
			return v
		}
	}
	return "devel"
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(g.stdout, "jetrelay %s\n", version())
			return nil
		},
	}
}
