// Package winsvc runs jetrelay as a Windows service: it registers the
// service with the Service Control Manager (SCM), starts, stops and removes
// it, and, when the SCM has started the process, drives the service's status
// (StartPending → Running → StopPending → Stopped) around the stages.
//
// A service stop (and a system shutdown) cancels the context of the function
// given to Run, which then shuts the stages down gracefully exactly as after
// SIGTERM: the ingress drains, delivery finishes the attempts in flight, the
// embedded broker stops last.
//
// Where a service's logs go: the SCM discards stdout and stderr, so a
// service writes its log to data_dir\logs\<service name>.log (rotated at
// LogMaxBytes, LogKeep old files kept), and its start, stop and failures,
// and every log line at error level, to the Application event log under the
// service's name as source.
//
// The SCM calls live in the *_windows.go files; on other systems the same
// functions exist and return ErrNotSupported, and IsService reports false,
// so the package builds and the command line compiles everywhere. The rest
// (command line, validation, the status state machine, the log file and the
// event formatting) is platform-independent and tested on every system.
package winsvc

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Defaults of `jetrelay service install`.
const (
	DefaultName        = "jetrelay"
	DefaultDisplayName = "jetrelay SMTP relay"
	DefaultDescription = "Relays mail from applications and servers to the recipients' MX hosts or a smart host, queued durably on NATS JetStream."
	DefaultStage       = "serve"
)

// Log file of a running service: data_dir\logs\<name>.log, rotated when it
// would grow past LogMaxBytes, with LogKeep older files (<name>.log.1 is
// the newest).
const (
	LogMaxBytes = 20 << 20
	LogKeep     = 5
)

// Recovery after a failure (a crash, or a stage failing and the process
// stopping with a non-zero exit code): restart after these delays, the last
// one repeating; the failure count resets after RecoveryResetPeriod without
// a failure.
var (
	RecoveryDelays      = []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute}
	RecoveryResetPeriod = 24 * time.Hour
)

// PreshutdownTimeout is how long Windows waits for the service at system
// shutdown (it accepts the pre-shutdown notification): long enough for the
// ingress and delivery shutdown grace (30s by default) and the broker.
const PreshutdownTimeout = 90 * time.Second

// ErrNotSupported is what the service functions return on other systems.
var ErrNotSupported = errors.New("`jetrelay service` works only on Windows; on Linux use the systemd units in deploy/systemd")

// Stages are the commands a service can run.
var Stages = []string{"serve", "broker", "ingress", "delivery"}

// ValidateStage checks that stage is one of Stages.
func ValidateStage(stage string) error {
	if slices.Contains(Stages, stage) {
		return nil
	}
	return fmt.Errorf("stage %q: want one of %s", stage, strings.Join(Stages, ", "))
}

// ValidateName checks a service name the way the SCM does: at most 256
// characters, no slash or backslash, not empty. The name is also the event
// log source and the name of the log file, so control characters and the
// characters Windows forbids in file names are refused too.
func ValidateName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return errors.New("service name is empty")
	case utf8.RuneCountInString(name) > 256:
		return fmt.Errorf("service name %q: longer than 256 characters", name)
	case strings.ContainsAny(name, `/\:*?"<>|`):
		return fmt.Errorf("service name %q: must not contain any of / \\ : * ? \" < > |", name)
	case strings.TrimSpace(name) != name || strings.HasSuffix(name, "."):
		return fmt.Errorf("service name %q: must not start or end with a space or end with a dot", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("service name %q: contains a control character", name)
		}
	}
	return nil
}

// Args builds the command line the SCM runs after the binary: the stage,
// then --config with configFile made absolute (when configFile is set),
// then extra (flags in --name=value form, so that values starting with a
// dash stay values).
func Args(stage, configFile string, extra ...string) ([]string, error) {
	if err := ValidateStage(stage); err != nil {
		return nil, err
	}
	args := []string{stage}
	if configFile != "" {
		abs, err := filepath.Abs(configFile)
		if err != nil {
			return nil, fmt.Errorf("config file %s: %w", configFile, err)
		}
		args = append(args, "--config="+abs)
	}
	return append(args, extra...), nil
}

// CheckExe refuses a binary in a temporary directory (what `go run`
// builds): the SCM would start it long after it is gone.
func CheckExe(exe string, tempDirs ...string) error {
	if !filepath.IsAbs(exe) {
		return fmt.Errorf("binary path %s is not absolute", exe)
	}
	for _, d := range tempDirs {
		if d != "" && isUnder(exe, d) {
			return fmt.Errorf("the binary %s is in the temporary directory %s (built by `go run`?); "+
				"build jetrelay.exe, copy it to its final place (e.g. C:\\Program Files\\jetrelay) and run `service install` from there", exe, d)
		}
	}
	return nil
}

// isUnder reports whether path is dir or inside it, ignoring case as
// Windows does.
func isUnder(path, dir string) bool {
	p := strings.ToLower(filepath.Clean(path))
	d := strings.ToLower(filepath.Clean(dir))
	if p == d {
		return true
	}
	if !strings.HasSuffix(d, string(filepath.Separator)) {
		d += string(filepath.Separator)
	}
	return strings.HasPrefix(p, d)
}

// LogPath is the log file of the service name with data directory dataDir.
func LogPath(dataDir, name string) string {
	return filepath.Join(dataDir, "logs", name+".log")
}

// Startup is when the SCM starts the service.
type Startup string

const (
	StartupDelayed   Startup = "delayed"   // automatic, shortly after the other automatic services (the default)
	StartupAutomatic Startup = "automatic" // automatic, at boot
	StartupManual    Startup = "manual"    // only by `service start` (or another service depending on it)
)

// ParseStartup parses "delayed", "automatic" (or "auto") and "manual".
func ParseStartup(s string) (Startup, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "delayed", "delayed-auto", "":
		return StartupDelayed, nil
	case "automatic", "auto":
		return StartupAutomatic, nil
	case "manual", "demand":
		return StartupManual, nil
	}
	return "", fmt.Errorf("startup %q: want delayed, automatic or manual", s)
}

// InstallOptions describe the service to register.
type InstallOptions struct {
	Name        string
	DisplayName string
	Description string
	// Exe is the absolute path of jetrelay.exe; Args the command line
	// after it (see Args).
	Exe  string
	Args []string
	// Startup defaults to StartupDelayed.
	Startup Startup
	// Dependencies are services that must run first (e.g. the broker's
	// service for an ingress or delivery service on the same machine).
	Dependencies []string
}

// Validate fills in the defaults and checks the options.
func (o *InstallOptions) Validate() error {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if err := ValidateName(o.Name); err != nil {
		return err
	}
	if o.DisplayName == "" {
		o.DisplayName = DefaultDisplayName
		if o.Name != DefaultName {
			o.DisplayName += " (" + o.Name + ")"
		}
	}
	if utf8.RuneCountInString(o.DisplayName) > 256 {
		return errors.New("display name: longer than 256 characters")
	}
	if o.Description == "" {
		o.Description = DefaultDescription
	}
	if o.Startup == "" {
		o.Startup = StartupDelayed
	}
	if _, err := ParseStartup(string(o.Startup)); err != nil {
		return err
	}
	if err := CheckExe(o.Exe); err != nil {
		return err
	}
	if len(o.Args) == 0 {
		return errors.New("no command line for the service")
	}
	if err := ValidateStage(o.Args[0]); err != nil {
		return err
	}
	for _, d := range o.Dependencies {
		if err := ValidateName(d); err != nil {
			return fmt.Errorf("dependency: %w", err)
		}
		if strings.EqualFold(d, o.Name) {
			return fmt.Errorf("service %s cannot depend on itself", o.Name)
		}
	}
	return nil
}

// CommandLine renders exe and args for people (quoting arguments with
// spaces), e.g. to show what the SCM will run. The SCM itself gets the
// arguments escaped by syscall.EscapeArg.
func CommandLine(exe string, args []string) string {
	parts := make([]string, 0, 1+len(args))
	for _, a := range append([]string{exe}, args...) {
		if a == "" || strings.ContainsAny(a, " \t\"") {
			a = `"` + strings.ReplaceAll(a, `"`, `\"`) + `"`
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// State is a service's state, with the SCM's values (SERVICE_STOPPED …).
type State uint32

const (
	Stopped         State = 1
	StartPending    State = 2
	StopPending     State = 3
	Running         State = 4
	ContinuePending State = 5
	PausePending    State = 6
	Paused          State = 7
)

func (s State) String() string {
	switch s {
	case Stopped:
		return "stopped"
	case StartPending:
		return "starting"
	case StopPending:
		return "stopping"
	case Running:
		return "running"
	case ContinuePending:
		return "continuing"
	case PausePending:
		return "pausing"
	case Paused:
		return "paused"
	}
	return fmt.Sprintf("state %d", uint32(s))
}

// Status is what `service status` shows.
type Status struct {
	Name        string
	DisplayName string
	State       State
	PID         uint32
	// ExitCode is the service's last exit code (0: none or success).
	ExitCode    uint32
	CommandLine string
	Startup     Startup
}

// ErrAlreadyRunning is returned by Start when the service runs already.
var ErrAlreadyRunning = errors.New("the service is running already")

// RestrictCommand is the command that restricts an existing data
// directory the way CreateDataDir creates a new one: full control for
// SYSTEM (S-1-5-18) and the Administrators (S-1-5-32-544), nothing
// inherited from ProgramData, whose ACL lets every local user read.
func RestrictCommand(dir string) string {
	return fmt.Sprintf(`icacls "%s" /inheritance:r /grant:r *S-1-5-18:(OI)(CI)F *S-1-5-32-544:(OI)(CI)F`, dir)
}

// ErrStoppedWhileStarting is returned by Start when the service stopped
// before it reported running.
var ErrStoppedWhileStarting = errors.New("the service stopped while starting")

// waitState polls query every poll until the state is want, or Stopped
// when want is Running (the service failed to start), or timeout passes.
func waitState(query func() (State, uint32, error), want State, timeout, poll time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, code, err := query()
		if err != nil {
			return err
		}
		if st == want {
			return nil
		}
		if want == Running && st == Stopped {
			if code != 0 {
				return fmt.Errorf("%w (exit code %d)", ErrStoppedWhileStarting, code)
			}
			return ErrStoppedWhileStarting
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for the service to be %s (it is %s)", timeout, want, st)
		}
		time.Sleep(poll)
	}
}

// RunFunc is what a service runs: it starts the stages, calls s.Running
// once they accept work, and returns after ctx is cancelled (service stop
// or system shutdown) and the stages have stopped gracefully — or earlier
// with an error when a stage fails.
type RunFunc func(ctx context.Context, s *Service) error

// Service is the running service, given to the RunFunc.
type Service struct {
	// Name is the name the SCM started the service under.
	Name string

	events    eventSink
	running   chan struct{}
	runningMu sync.Once
}

func newService(name string, events eventSink) *Service {
	if events == nil {
		events = nopSink{}
	}
	return &Service{Name: name, events: events, running: make(chan struct{})}
}

// Running reports the service as running: the stages accept work. The SCM
// accepts stop requests from then on. Calling it again does nothing.
func (s *Service) Running() { s.runningMu.Do(func() { close(s.running) }) }

// Event IDs in the Application event log (EventCreate.exe as message file
// accepts 1 to 1000).
const (
	eventLifecycle = 1   // started, stopping, stopped
	eventFailed    = 2   // the service stopped because of an error
	eventLog       = 100 // a log line at error level
)

// Status reporting, for the state machine below.
const (
	// checkpointInterval: while starting or stopping, the service reports
	// progress (a new checkpoint) this often ...
	checkpointInterval = 2 * time.Second
	// pendingWaitHint: ... and tells the SCM to expect the next one within
	// this time.
	pendingWaitHint = 10 * time.Second
)

// control is a request of the SCM, reduced to what the service acts on.
type control int

const (
	ctlOther control = iota
	ctlInterrogate
	ctlStop
	ctlShutdown
	ctlPreShutdown
)

func (c control) String() string {
	switch c {
	case ctlInterrogate:
		return "interrogate"
	case ctlStop:
		return "stop"
	case ctlShutdown:
		return "shutdown"
	case ctlPreShutdown:
		return "pre-shutdown"
	}
	return "other"
}

// status is what the service reports to the SCM.
type status struct {
	State State
	// Accept: the service accepts stop, shutdown and pre-shutdown (only
	// while running).
	Accept     bool
	CheckPoint uint32
	WaitHint   uint32 // milliseconds
}

// execute is the service's life, independent of the Windows API so that
// it can be tested anywhere: it reports StartPending, runs run, reports
// Running when run calls s.Running, turns stop, shutdown and pre-shutdown
// into a cancellation of run's context and StopPending, and keeps the SCM
// informed of progress (checkpoints on tick) while starting and stopping.
// It returns when run returns, with the service-specific exit code for the
// SCM — 1 when run failed without having been asked to stop (the SCM's
// recovery actions then restart the service), else 0 — and run's error.
// The SCM marks the service stopped after that.
func execute[R any](run RunFunc, s *Service, requests <-chan R, kind func(R) control,
	report func(status), tick <-chan time.Time) (exitCode uint32, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	cur := status{State: StartPending, WaitHint: uint32(pendingWaitHint / time.Millisecond)}
	report(cur)
	go func() { done <- run(ctx, s) }()

	running := s.running
	var stopReason control
	for {
		select {
		case <-running:
			running = nil
			if stopReason == ctlOther {
				cur = status{State: Running, Accept: true}
				report(cur)
				_ = s.events.Info(eventLifecycle, fmt.Sprintf("jetrelay service %s is running", s.Name))
			}
		case r := <-requests:
			switch c := kind(r); c {
			case ctlStop, ctlShutdown, ctlPreShutdown:
				if stopReason != ctlOther {
					report(cur)
					continue
				}
				stopReason = c
				cancel()
				cur = status{State: StopPending, WaitHint: uint32(pendingWaitHint / time.Millisecond)}
				report(cur)
				_ = s.events.Info(eventLifecycle, fmt.Sprintf("jetrelay service %s: %s requested, shutting down gracefully", s.Name, c))
			default: // interrogate, and anything not accepted: the current status
				report(cur)
			}
		case <-tick:
			if cur.State == StartPending || cur.State == StopPending {
				cur.CheckPoint++
				report(cur)
			}
		case err := <-done:
			switch {
			case err != nil && stopReason == ctlOther:
				_ = s.events.Error(eventFailed, fmt.Sprintf("jetrelay service %s stopped because of an error: %v", s.Name, err))
				return 1, err
			case err != nil:
				_ = s.events.Error(eventFailed, fmt.Sprintf("jetrelay service %s stopped after %s with an error: %v", s.Name, stopReason, err))
			default:
				_ = s.events.Info(eventLifecycle, fmt.Sprintf("jetrelay service %s stopped", s.Name))
			}
			return 0, err
		}
	}
}
