//go:build windows

package winsvc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"
)

// Supported reports whether this system has Windows services.
const Supported = true

var isService = sync.OnceValue(func() bool {
	ok, err := svc.IsWindowsService()
	return err == nil && ok
})

// IsService reports whether the Service Control Manager started this
// process. The answer is computed once.
func IsService() bool { return isService() }

// Run runs the process as the service the SCM started it as: it connects
// to the SCM, reports StartPending, calls run, reports Running when run
// calls s.Running, cancels run's context on stop, shutdown or pre-shutdown
// (reporting StopPending with progress while run drains) and reports
// Stopped when run returns — with a service-specific exit code of 1 when
// run failed on its own, which triggers the recovery actions. It returns
// run's error. Call it only when IsService reports true.
func Run(run RunFunc) error {
	h := &handler{run: run, result: make(chan error, 1)}
	// For a service of its own process the SCM ignores the name given
	// here; Execute learns the real one from its arguments.
	if err := svc.Run(DefaultName, h); err != nil {
		return fmt.Errorf("windows service: %w", err)
	}
	select {
	case err := <-h.result:
		return err
	default:
		return nil
	}
}

type handler struct {
	run    RunFunc
	result chan error
}

const accepted = svc.AcceptStop | svc.AcceptShutdown | svc.AcceptPreShutdown

func (h *handler) Execute(args []string, r <-chan svc.ChangeRequest, changes chan<- svc.Status) (bool, uint32) {
	name := DefaultName
	if len(args) > 0 && args[0] != "" {
		name = args[0]
	}
	var events eventSink = nopSink{}
	if el, err := eventlog.Open(name); err == nil {
		defer el.Close()
		events = el
	}
	s := newService(name, events)
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	report := func(st status) {
		out := svc.Status{State: svc.State(st.State), CheckPoint: st.CheckPoint, WaitHint: st.WaitHint}
		if st.Accept {
			out.Accepts = accepted
		}
		changes <- out
	}
	code, err := execute(h.run, s, r, controlOf, report, t.C)
	h.result <- err
	return code != 0, code
}

func controlOf(c svc.ChangeRequest) control {
	switch c.Cmd {
	case svc.Interrogate:
		return ctlInterrogate
	case svc.Stop:
		return ctlStop
	case svc.Shutdown:
		return ctlShutdown
	case svc.PreShutdown:
		return ctlPreShutdown
	}
	return ctlOther
}

// connect opens the SCM, explaining the usual failure.
func connect() (*mgr.Mgr, error) {
	m, err := mgr.Connect()
	if err != nil {
		if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
			return nil, errors.New("connecting to the Service Control Manager: access denied (run this from an elevated prompt: Run as administrator)")
		}
		return nil, fmt.Errorf("connecting to the Service Control Manager: %w", err)
	}
	return m, nil
}

func open(m *mgr.Mgr, name string) (*mgr.Service, error) {
	s, err := m.OpenService(name)
	if err != nil {
		if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
			return nil, fmt.Errorf("service %s is not installed", name)
		}
		return nil, fmt.Errorf("service %s: %w", name, err)
	}
	return s, nil
}

// Install registers the service: its command line, start type, recovery
// actions (restart on failure, also when it stops with an error exit
// code), a pre-shutdown timeout, and an event log source of its name.
func Install(o InstallOptions) error {
	if err := o.Validate(); err != nil {
		return err
	}
	m, err := connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	if s, err := m.OpenService(o.Name); err == nil {
		s.Close()
		return fmt.Errorf("service %s already exists (remove it first with `jetrelay service uninstall --name %s`, or choose another --name)", o.Name, o.Name)
	}
	c := mgr.Config{
		DisplayName:  o.DisplayName,
		Description:  o.Description,
		StartType:    mgr.StartAutomatic,
		ErrorControl: mgr.ErrorNormal,
		Dependencies: o.Dependencies,
	}
	switch o.Startup {
	case StartupDelayed:
		c.DelayedAutoStart = true
	case StartupManual:
		c.StartType = mgr.StartManual
	}
	s, err := m.CreateService(o.Name, o.Exe, c, o.Args...)
	if err != nil {
		if errors.Is(err, windows.ERROR_SERVICE_MARKED_FOR_DELETE) {
			return fmt.Errorf("creating service %s: it was removed but is still open somewhere (close the Services console and try again): %w", o.Name, err)
		}
		return fmt.Errorf("creating service %s: %w", o.Name, err)
	}
	defer s.Close()
	fail := func(what string, err error) error {
		_ = s.Delete()
		return fmt.Errorf("service %s: %s: %w (the service was not installed)", o.Name, what, err)
	}
	actions := make([]mgr.RecoveryAction, 0, len(RecoveryDelays))
	for _, d := range RecoveryDelays {
		actions = append(actions, mgr.RecoveryAction{Type: mgr.ServiceRestart, Delay: d})
	}
	if err := s.SetRecoveryActions(actions, uint32(RecoveryResetPeriod/time.Second)); err != nil {
		return fail("setting the recovery actions", err)
	}
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		return fail("setting the recovery actions", err)
	}
	info := servicePreshutdownInfo{PreshutdownTimeout: uint32(PreshutdownTimeout / time.Millisecond)}
	if err := windows.ChangeServiceConfig2(s.Handle, windows.SERVICE_CONFIG_PRESHUTDOWN_INFO, (*byte)(unsafe.Pointer(&info))); err != nil {
		return fail("setting the pre-shutdown timeout", err)
	}
	if !eventSourceExists(o.Name) {
		if err := eventlog.InstallAsEventCreate(o.Name, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil {
			return fail("registering the event log source", err)
		}
	}
	return nil
}

// servicePreshutdownInfo is SERVICE_PRESHUTDOWN_INFO, missing from
// golang.org/x/sys/windows.
type servicePreshutdownInfo struct {
	PreshutdownTimeout uint32 // milliseconds
}

const eventLogKey = `SYSTEM\CurrentControlSet\Services\EventLog\Application\`

func eventSourceExists(name string) bool {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, eventLogKey+name, registry.QUERY_VALUE)
	if err != nil {
		return false
	}
	k.Close()
	return true
}

// Uninstall removes a stopped service and its event log source (see
// Stop). Its data directory and log files stay.
func Uninstall(name string) error {
	m, err := connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := open(m, name)
	if err != nil {
		return err
	}
	defer s.Close()
	if st, err := s.Query(); err == nil && st.State != svc.Stopped {
		return fmt.Errorf("service %s is %s; stop it first", name, State(st.State))
	}
	if err := s.Delete(); err != nil {
		return fmt.Errorf("removing service %s: %w", name, err)
	}
	if eventSourceExists(name) {
		if err := eventlog.Remove(name); err != nil {
			return fmt.Errorf("service %s removed, but not its event log source: %w", name, err)
		}
	}
	return nil
}

// Start starts the service and waits up to timeout until it runs. The
// error says so when it stopped instead (see the event log and the log
// file), or when it was running already (ErrAlreadyRunning).
func Start(name string, timeout time.Duration) error {
	m, err := connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := open(m, name)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Start(); err != nil {
		if errors.Is(err, windows.ERROR_SERVICE_ALREADY_RUNNING) {
			return ErrAlreadyRunning
		}
		return fmt.Errorf("starting service %s: %w", name, err)
	}
	return waitState(query(s), Running, timeout, 300*time.Millisecond)
}

// Stop asks the service to stop and waits up to timeout until it has
// (the stages drain first). A stopped service is not an error.
func Stop(name string, timeout time.Duration) error {
	m, err := connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := open(m, name)
	if err != nil {
		return err
	}
	defer s.Close()
	st, err := s.Query()
	if err != nil {
		return fmt.Errorf("service %s: %w", name, err)
	}
	switch st.State {
	case svc.Stopped:
		return nil
	case svc.StopPending:
	default:
		if _, err := s.Control(svc.Stop); err != nil {
			if errors.Is(err, windows.ERROR_SERVICE_CANNOT_ACCEPT_CTRL) {
				return fmt.Errorf("service %s is %s and cannot stop now; try again in a moment", name, State(st.State))
			}
			if !errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
				return fmt.Errorf("stopping service %s: %w", name, err)
			}
		}
	}
	return waitState(query(s), Stopped, timeout, 300*time.Millisecond)
}

func query(s *mgr.Service) func() (State, uint32, error) {
	return func() (State, uint32, error) {
		st, err := s.Query()
		if err != nil {
			return 0, 0, fmt.Errorf("service %s: %w", s.Name, err)
		}
		code := st.Win32ExitCode
		if code == uint32(windows.ERROR_SERVICE_SPECIFIC_ERROR) {
			code = st.ServiceSpecificExitCode
		}
		return State(st.State), code, nil
	}
}

// QueryStatus describes the installed service name.
func QueryStatus(name string) (Status, error) {
	m, err := connect()
	if err != nil {
		return Status{}, err
	}
	defer m.Disconnect()
	s, err := open(m, name)
	if err != nil {
		return Status{}, err
	}
	defer s.Close()
	out := Status{Name: name}
	st, err := s.Query()
	if err != nil {
		return out, fmt.Errorf("service %s: %w", name, err)
	}
	out.State, out.PID = State(st.State), st.ProcessId
	out.ExitCode = st.Win32ExitCode
	if out.ExitCode == uint32(windows.ERROR_SERVICE_SPECIFIC_ERROR) {
		out.ExitCode = st.ServiceSpecificExitCode
	}
	c, err := s.Config()
	if err != nil {
		return out, fmt.Errorf("service %s: %w", name, err)
	}
	out.DisplayName, out.CommandLine = c.DisplayName, c.BinaryPathName
	switch {
	case c.StartType == mgr.StartManual:
		out.Startup = StartupManual
	case c.StartType == mgr.StartAutomatic && c.DelayedAutoStart:
		out.Startup = StartupDelayed
	case c.StartType == mgr.StartAutomatic:
		out.Startup = StartupAutomatic
	case c.StartType == mgr.StartDisabled:
		out.Startup = "disabled"
	default:
		out.Startup = Startup(fmt.Sprintf("start type %d", c.StartType))
	}
	return out, nil
}

// dataDirSDDL allows SYSTEM and the Administrators full control, inherited
// by everything inside, and nothing to anyone else (protected: nothing is
// inherited from ProgramData, whose ACL lets every user read).
const dataDirSDDL = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"

// CreateDataDir creates the data directory dir (and its parents) with
// access for SYSTEM and the Administrators only: it holds the broker's
// credentials (broker.json) and the queued mail, and Windows ignores the
// Unix permission bits jetrelay asks for. An existing directory is left
// as it is (created is false).
func CreateDataDir(dir string) (created bool, err error) {
	if !filepath.IsAbs(dir) {
		return false, fmt.Errorf("data_dir %s is not an absolute path", dir)
	}
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return false, fmt.Errorf("data_dir %s is not a directory", dir)
		}
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return false, fmt.Errorf("data_dir: %w", err)
	}
	sd, err := windows.SecurityDescriptorFromString(dataDirSDDL)
	if err != nil {
		return false, fmt.Errorf("data_dir security descriptor: %w", err)
	}
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return false, err
	}
	sa := &windows.SecurityAttributes{Length: uint32(unsafe.Sizeof(windows.SecurityAttributes{})), SecurityDescriptor: sd}
	if err := windows.CreateDirectory(p, sa); err != nil {
		return false, fmt.Errorf("creating data_dir %s: %w", dir, err)
	}
	return true, nil
}
