package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/logging"
	"github.com/jetrelay/jetrelay/internal/winsvc"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
)

func init() { extraCommands = append(extraCommands, newServiceCmd) }

func newServiceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Install, remove, start and stop jetrelay as a Windows service",
		Long: `service registers jetrelay with the Windows Service Control Manager, in
place of the IIS SMTP Virtual Server: the SCM then runs
"jetrelay.exe serve --config C:\path\jetrelay.yaml" (or another stage) at
boot, restarts it when it fails, and a service stop (or a system shutdown)
shuts the stages down gracefully, exactly like SIGTERM: the ingress drains,
delivery finishes the attempts in flight, the embedded broker stops last.

Run these commands from an elevated prompt (Run as administrator).

Logs: the SCM discards the output of a service, so a service writes its log
to data_dir\logs\<name>.log (rotated at 20 MiB, 5 old files kept), and its
start, stop and failures, and every error, to the Application event log
with the service name as source (Event Viewer, or
Get-WinEvent -ProviderName jetrelay). Errors before logging starts, such as
a configuration that no longer loads, show only as the service stopping:
run the service's command line (jetrelay service status) in a console to
see them.

Data: data_dir defaults to %ProgramData%\jetrelay. install creates it, when
missing, with access for SYSTEM and the Administrators only (it holds the
broker credentials and the queued mail); other commands that read it, such
as jetrelay send, then need an elevated prompt too.

On Linux use the systemd units in deploy/systemd instead.`,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if !winsvc.Supported {
				return winsvc.ErrNotSupported
			}
			return nil
		},
	}
	cmd.AddCommand(newServiceInstallCmd(g), newServiceUninstallCmd(g), newServiceStartCmd(g),
		newServiceStopCmd(g), newServiceStatusCmd(g))
	return cmd
}

func newServiceInstallCmd(g *globals) *cobra.Command {
	o := winsvc.InstallOptions{}
	var stage, startup string
	var start, noCreateDataDir bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Register the Windows service (automatic start, restart on failure)",
		Long: `install registers a Windows service that runs this jetrelay.exe (by its
absolute path: install from the binary's final place, e.g.
C:\Program Files\jetrelay\jetrelay.exe) with --stage (serve by default)
and the configuration given by --config, made absolute. The global flags
given here (--set, --data-dir, --log-level, --log-format, --hostname,
--broker-url) become part of the service's command line; JETRELAY_*
variables of this shell do not (the service sees only system environment
variables).

The configuration is loaded and validated first, and relative paths in it
are refused: a service runs in C:\Windows\System32.

The service starts automatically (delayed by default), is restarted 5s,
30s and 2m after a failure, and gets an event log source of its name.
Several services can run different stages (--name jetrelay-broker
--stage broker, --name jetrelay-delivery --stage delivery --depends-on
jetrelay-broker).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			su, err := winsvc.ParseStartup(startup)
			if err != nil {
				return err
			}
			o.Startup = su
			if err := winsvc.ValidateName(o.Name); err != nil {
				return err
			}
			if err := winsvc.ValidateStage(stage); err != nil {
				return err
			}
			if g.dataDir != "" {
				if g.dataDir, err = filepath.Abs(g.dataDir); err != nil {
					return fmt.Errorf("--data-dir: %w", err)
				}
			}
			cfg, src, err := g.load(nil)
			if err != nil {
				return fmt.Errorf("configuration does not load: %w", err)
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("invalid configuration (run `jetrelay config check`):\n%w", err)
			}
			if rel := relativePaths(cfg); len(rel) > 0 {
				return fmt.Errorf("a service runs in C:\\Windows\\System32, so these paths must be absolute: %s", strings.Join(rel, ", "))
			}
			if stage == "broker" && cfg.Broker.Listen == "off" {
				return errors.New("broker.listen is off: a broker without a client port serves nobody")
			}
			for _, e := range src.Env {
				fmt.Fprintf(g.stderr, "warning: %s is set in this shell; the service does not see it unless it is a system environment variable (put it in the config file or pass --set)\n", e)
			}
			for _, w := range src.Warnings {
				fmt.Fprintf(g.stderr, "warning: %s\n", w)
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding the jetrelay binary: %w", err)
			}
			if p, err := filepath.EvalSymlinks(exe); err == nil {
				exe = p
			}
			if err := winsvc.CheckExe(exe, os.TempDir()); err != nil {
				return err
			}
			extra, err := serviceFlags(g)
			if err != nil {
				return err
			}
			o.Exe = exe
			if o.Args, err = winsvc.Args(stage, g.configFile, extra...); err != nil {
				return err
			}
			if err := winsvc.Install(o); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "installed service %s (%s), %s start:\n  %s\n", o.Name, o.DisplayName, o.Startup, winsvc.CommandLine(o.Exe, o.Args))
			if !noCreateDataDir {
				created, err := winsvc.CreateDataDir(cfg.DataDir)
				switch {
				case err != nil:
					fmt.Fprintf(g.stderr, "warning: %v\n", err)
				case created:
					fmt.Fprintf(g.stdout, "created data_dir %s (access: SYSTEM and Administrators)\n", cfg.DataDir)
				default:
					fmt.Fprintf(g.stdout, "data_dir %s exists; its permissions are unchanged. To allow only SYSTEM and the Administrators:\n  %s\n",
						cfg.DataDir, winsvc.RestrictCommand(cfg.DataDir))
				}
			}
			fmt.Fprintf(g.stdout, "logs: %s and the Application event log (source %s)\n", winsvc.LogPath(cfg.DataDir, o.Name), o.Name)
			if !start {
				fmt.Fprintf(g.stdout, "start it with: jetrelay service start%s\n", nameFlag(o.Name))
				return nil
			}
			return startService(g, o.Name, timeout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", winsvc.DefaultName, "service name (also the event log source and the log file's name)")
	f.StringVar(&o.DisplayName, "display-name", "", `display name (default "`+winsvc.DefaultDisplayName+`")`)
	f.StringVar(&o.Description, "description", "", "description shown in the Services console")
	f.StringVar(&stage, "stage", winsvc.DefaultStage, "what the service runs: "+strings.Join(winsvc.Stages, ", "))
	f.StringVar(&stage, "stages", winsvc.DefaultStage, "alias of --stage")
	_ = f.MarkHidden("stages")
	f.StringVar(&startup, "startup", string(winsvc.StartupDelayed), "delayed (automatic, after the other automatic services), automatic or manual")
	f.StringSliceVar(&o.Dependencies, "depends-on", nil, "services that must run first, e.g. jetrelay-broker (repeatable)")
	f.BoolVar(&noCreateDataDir, "no-create-data-dir", false, "do not create data_dir with restricted access")
	f.BoolVar(&start, "start", false, "start the service after installing it")
	f.DurationVar(&timeout, "timeout", 3*time.Minute, "with --start: how long to wait for the service to run")
	return cmd
}

func newServiceUninstallCmd(g *globals) *cobra.Command {
	var name string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop the Windows service (gracefully) and remove it",
		Long: `uninstall stops the service, waiting for the stages to drain, and removes
it and its event log source. data_dir, with the queue, the dead letters
and the logs, stays.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := winsvc.ValidateName(name); err != nil {
				return err
			}
			if err := winsvc.Stop(name, timeout); err != nil {
				return err
			}
			if err := winsvc.Uninstall(name); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "removed service %s; its data_dir (queue, dead letters, logs) is left in place\n", name)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", winsvc.DefaultName, "service name")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the service to stop")
	return cmd
}

func newServiceStartCmd(g *globals) *cobra.Command {
	var name string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start the Windows service and wait until it runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := winsvc.ValidateName(name); err != nil {
				return err
			}
			return startService(g, name, timeout)
		},
	}
	cmd.Flags().StringVar(&name, "name", winsvc.DefaultName, "service name")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Minute, "how long to wait for the service to run")
	return cmd
}

func startService(g *globals, name string, timeout time.Duration) error {
	err := winsvc.Start(name, timeout)
	switch {
	case errors.Is(err, winsvc.ErrAlreadyRunning):
		fmt.Fprintf(g.stdout, "service %s is running already\n", name)
		return nil
	case errors.Is(err, winsvc.ErrStoppedWhileStarting):
		msg := fmt.Sprintf("service %s: %v.\nSee the Application event log (source %s) and data_dir\\logs\\%s.log", name, err, name, name)
		if st, qerr := winsvc.QueryStatus(name); qerr == nil && st.CommandLine != "" {
			msg += ",\nor run its command line in an elevated console to see errors from before logging starts:\n  " + st.CommandLine
		}
		return errors.New(msg)
	case err != nil:
		return err
	}
	fmt.Fprintf(g.stdout, "service %s is running\n", name)
	return nil
}

func newServiceStopCmd(g *globals) *cobra.Command {
	var name string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Stop the Windows service gracefully and wait until it has stopped",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := winsvc.ValidateName(name); err != nil {
				return err
			}
			if err := winsvc.Stop(name, timeout); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "service %s is stopped\n", name)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", winsvc.DefaultName, "service name")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the stages to drain and stop")
	return cmd
}

func newServiceStatusCmd(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the Windows service's state and command line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := winsvc.ValidateName(name); err != nil {
				return err
			}
			st, err := winsvc.QueryStatus(name)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "service:  %s (%s)\nstate:    %s", st.Name, st.DisplayName, st.State)
			if st.PID != 0 {
				fmt.Fprintf(g.stdout, " (pid %d)", st.PID)
			}
			if st.State == winsvc.Stopped && st.ExitCode != 0 {
				fmt.Fprintf(g.stdout, " (last exit code %d)", st.ExitCode)
			}
			fmt.Fprintf(g.stdout, "\nstartup:  %s\ncommand:  %s\n", st.Startup, st.CommandLine)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", winsvc.DefaultName, "service name")
	return cmd
}

func nameFlag(name string) string {
	if name == winsvc.DefaultName {
		return ""
	}
	return " --name " + winsvc.CommandLine(name, nil)
}

// serviceFlags turns the global flags given to `service install` into the
// service's own flags, in --name=value form; --data-dir becomes absolute.
// --config is handled by winsvc.Args.
func serviceFlags(g *globals) ([]string, error) {
	var out []string
	if g.dataDir != "" {
		abs, err := filepath.Abs(g.dataDir)
		if err != nil {
			return nil, fmt.Errorf("--data-dir: %w", err)
		}
		out = append(out, "--data-dir="+abs)
	}
	for _, s := range g.sets {
		out = append(out, "--set="+s)
	}
	for _, f := range []struct{ name, v string }{
		{"log-level", g.logLevel}, {"log-format", g.logFormat}, {"hostname", g.hostname}, {"broker-url", g.brokerURL},
	} {
		if f.v != "" {
			out = append(out, "--"+f.name+"="+f.v)
		}
	}
	return out, nil
}

// relativePaths lists the configuration's file and directory keys whose
// value is a relative path.
func relativePaths(cfg *config.Config) []string {
	paths := map[string]string{
		"data_dir":                         cfg.DataDir,
		"broker.credentials":               cfg.Broker.Credentials,
		"broker.password_file":             cfg.Broker.PasswordFile,
		"broker.nkey_file":                 cfg.Broker.NKeyFile,
		"broker.tls.ca":                    cfg.Broker.TLS.CA,
		"broker.tls.cert":                  cfg.Broker.TLS.Cert,
		"broker.tls.key":                   cfg.Broker.TLS.Key,
		"ingress.tls.cert":                 cfg.Ingress.TLS.Cert,
		"ingress.tls.key":                  cfg.Ingress.TLS.Key,
		"ingress.users_file":               cfg.Ingress.UsersFile,
		"delivery.smarthost_password_file": cfg.Delivery.SmarthostPasswordFile,
	}
	for domain, r := range cfg.Delivery.Routes {
		paths["delivery.routes."+domain+".password_file"] = r.PasswordFile
	}
	var out []string
	for k, v := range paths {
		if v != "" && !filepath.IsAbs(v) {
			out = append(out, k+" ("+v+")")
		}
	}
	sort.Strings(out)
	return out
}

// runAsService runs the stages as a Windows service when the Service
// Control Manager started this process (handled is then true): the
// service's stop request, or the system's shutdown, stops them gracefully
// as SIGTERM does elsewhere, and the log goes to data_dir\logs\<service
// name>.log and, for errors, to the event log, since the SCM discards
// stderr. runStages calls it first.
func runAsService(cfg *config.Config, _ zerolog.Logger, st app.Stages) (handled bool, err error) {
	if !winsvc.IsService() {
		return false, nil
	}
	return true, winsvc.Run(func(ctx context.Context, s *winsvc.Service) error {
		log, closeLog := serviceLogger(cfg, s)
		defer closeLog()
		log.Info().Str("version", version()).Str("service", s.Name).Msg("jetrelay, as a Windows service")
		err := runUntil(ctx, cfg, log, st, func(*app.App) { s.Running() })
		if err != nil {
			log.Error().Err(err).Msg("service ends with an error")
		}
		return err
	})
}

// serviceLogger is the process logger of a service: the log file under
// data_dir, with log.level and log.format, plus errors to the event log.
func serviceLogger(cfg *config.Config, s *winsvc.Service) (zerolog.Logger, func()) {
	var out io.Writer = io.Discard
	closeLog := func() {}
	lf, ferr := winsvc.OpenLogFile(winsvc.LogPath(cfg.DataDir, s.Name), winsvc.LogMaxBytes, winsvc.LogKeep)
	if ferr == nil {
		out, closeLog = lf, func() { _ = lf.Close() }
	}
	if cfg.Log.Format == "console" {
		out = zerolog.ConsoleWriter{Out: out, NoColor: true, TimeFormat: time.RFC3339}
	}
	// The writer formats by itself, so the logger writes JSON to it.
	log := logging.New(zerolog.MultiLevelWriter(out, s.EventLogWriter(zerolog.ErrorLevel)), cfg.Log.Level, "json")
	if ferr != nil {
		log.Error().Err(ferr).Msg("cannot open the log file; only errors are logged, to the event log")
	}
	return log, closeLog
}
