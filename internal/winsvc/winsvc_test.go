package winsvc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestValidateStage(t *testing.T) {
	for _, s := range Stages {
		if err := ValidateStage(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	for _, s := range []string{"", "send", "Serve", "serve ", "config"} {
		if err := ValidateStage(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, n := range []string{"jetrelay", "jetrelay-broker", "JetRelay 2", "relay_1.0a"} {
		if err := ValidateName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range []string{"", " ", "a/b", `a\b`, "a:b", "a*", "a?", `a"b`, "a<b", "a|b", " lead", "trail ", "dot.", "tab\tname", strings.Repeat("x", 257)} {
		if err := ValidateName(n); err == nil {
			t.Errorf("%q: no error", n)
		}
	}
	if err := ValidateName(strings.Repeat("é", 256)); err != nil {
		t.Errorf("256 runes: %v", err)
	}
}

func TestArgs(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Args("serve", "relay.yaml", "--data-dir=/srv/data", "--set=delivery.concurrency=8")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"serve", "--config=" + filepath.Join(wd, "relay.yaml"), "--data-dir=/srv/data", "--set=delivery.concurrency=8"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}

	abs := filepath.Join(wd, "conf dir", "jetrelay.yaml")
	got, err = Args("delivery", abs)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"delivery", "--config=" + abs}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}

	got, err = Args("broker", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"broker"}; !reflect.DeepEqual(got, want) {
		t.Errorf("no config: got %q, want %q", got, want)
	}

	if _, err := Args("send", "x.yaml"); err == nil {
		t.Error("stage send: no error")
	}
}

// rooted is an absolute path on this system (with the drive of the
// working directory on Windows).
func rooted(parts ...string) string {
	wd, _ := os.Getwd()
	return filepath.Join(append([]string{filepath.VolumeName(wd) + string(filepath.Separator)}, parts...)...)
}

func TestCheckExe(t *testing.T) {
	tmp := rooted("Temp", "Dir")
	if err := CheckExe(rooted("Program Files", "jetrelay", "jetrelay.exe"), tmp); err != nil {
		t.Errorf("program files: %v", err)
	}
	for _, exe := range []string{
		filepath.Join(tmp, "go-build123", "b001", "exe", "jetrelay.exe"),
		filepath.Join(strings.ToUpper(tmp), "jetrelay.exe"), // Windows ignores case
	} {
		if err := CheckExe(exe, tmp); err == nil || !strings.Contains(err.Error(), "go run") {
			t.Errorf("%s: error %v, want one about go run", exe, err)
		}
	}
	if err := CheckExe(tmp+"x"+string(filepath.Separator)+"jetrelay.exe", tmp); err != nil {
		t.Errorf("sibling of the temp dir: %v", err)
	}
	if err := CheckExe("jetrelay.exe"); err == nil {
		t.Error("relative path: no error")
	}
}

func TestParseStartup(t *testing.T) {
	for in, want := range map[string]Startup{
		"": StartupDelayed, "delayed": StartupDelayed, "Automatic": StartupAutomatic, "auto": StartupAutomatic,
		"manual": StartupManual, "demand": StartupManual,
	} {
		got, err := ParseStartup(in)
		if err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseStartup("disabled"); err == nil {
		t.Error("disabled: no error")
	}
}

func TestInstallOptionsValidate(t *testing.T) {
	exe := rooted("opt", "jetrelay.exe")
	o := InstallOptions{Exe: exe, Args: []string{"serve"}}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if o.Name != DefaultName || o.DisplayName != DefaultDisplayName || o.Description != DefaultDescription || o.Startup != StartupDelayed {
		t.Errorf("defaults not filled in: %+v", o)
	}

	o = InstallOptions{Name: "jetrelay-broker", Exe: exe, Args: []string{"broker"}, Startup: StartupManual}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if o.DisplayName != DefaultDisplayName+" (jetrelay-broker)" || o.Startup != StartupManual {
		t.Errorf("got %+v", o)
	}

	for name, o := range map[string]InstallOptions{
		"no args":         {Exe: exe},
		"bad stage":       {Exe: exe, Args: []string{"send"}},
		"relative exe":    {Exe: "jetrelay.exe", Args: []string{"serve"}},
		"bad name":        {Name: `a\b`, Exe: exe, Args: []string{"serve"}},
		"bad startup":     {Exe: exe, Args: []string{"serve"}, Startup: "sometimes"},
		"self dependency": {Name: "relay", Exe: exe, Args: []string{"serve"}, Dependencies: []string{"Relay"}},
		"bad dependency":  {Exe: exe, Args: []string{"serve"}, Dependencies: []string{""}},
		"long display":    {Exe: exe, Args: []string{"serve"}, DisplayName: strings.Repeat("d", 257)},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestCommandLine(t *testing.T) {
	got := CommandLine(`C:\Program Files\jetrelay\jetrelay.exe`, []string{"serve", `--config=C:\My Config\r.yaml`, "--set=hostname=a", ""})
	want := `"C:\Program Files\jetrelay\jetrelay.exe" serve "--config=C:\My Config\r.yaml" --set=hostname=a ""`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestRestrictCommand(t *testing.T) {
	got := RestrictCommand(`C:\ProgramData\jetrelay`)
	for _, want := range []string{`"C:\ProgramData\jetrelay"`, "/inheritance:r", "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F"} {
		if !strings.Contains(got, want) {
			t.Errorf("%s: no %s", got, want)
		}
	}
}

func TestLogPath(t *testing.T) {
	if got, want := LogPath(filepath.Join("d", "data"), "jetrelay-broker"), filepath.Join("d", "data", "logs", "jetrelay-broker.log"); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestStateString(t *testing.T) {
	for st, want := range map[State]string{Stopped: "stopped", StartPending: "starting", StopPending: "stopping", Running: "running", Paused: "paused", 42: "state 42"} {
		if st.String() != want {
			t.Errorf("%d: %s, want %s", st, st, want)
		}
	}
}

func TestWaitState(t *testing.T) {
	seq := func(states ...State) func() (State, uint32, error) {
		i := 0
		return func() (State, uint32, error) {
			s := states[min(i, len(states)-1)]
			i++
			return s, 7, nil
		}
	}
	if err := waitState(seq(StartPending, StartPending, Running), Running, time.Second, time.Millisecond); err != nil {
		t.Errorf("to running: %v", err)
	}
	if err := waitState(seq(StopPending, Stopped), Stopped, time.Second, time.Millisecond); err != nil {
		t.Errorf("to stopped: %v", err)
	}
	err := waitState(seq(StartPending, Stopped), Running, time.Second, time.Millisecond)
	if !errors.Is(err, ErrStoppedWhileStarting) || !strings.Contains(err.Error(), "exit code 7") {
		t.Errorf("stopped while starting: %v", err)
	}
	err = waitState(seq(StopPending), Stopped, 20*time.Millisecond, time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), "stopping") {
		t.Errorf("timeout: %v", err)
	}
	boom := errors.New("boom")
	if err := waitState(func() (State, uint32, error) { return 0, 0, boom }, Running, time.Second, time.Millisecond); !errors.Is(err, boom) {
		t.Errorf("query error: %v", err)
	}
}

// recSink records events.
type recSink struct{ ch chan string }

func newRecSink() *recSink { return &recSink{ch: make(chan string, 100)} }

func (r *recSink) Info(_ uint32, m string) error    { r.ch <- "info: " + m; return nil }
func (r *recSink) Warning(_ uint32, m string) error { r.ch <- "warning: " + m; return nil }
func (r *recSink) Error(_ uint32, m string) error   { r.ch <- "error: " + m; return nil }

func (r *recSink) all() []string {
	var out []string
	for {
		select {
		case m := <-r.ch:
			out = append(out, m)
		default:
			return out
		}
	}
}

// harness runs execute with channels standing in for the SCM.
type harness struct {
	t        *testing.T
	requests chan control
	reports  chan status
	tick     chan time.Time
	events   *recSink
	done     chan [2]any
	svc      *Service
}

func startHarness(t *testing.T, run RunFunc) *harness {
	h := &harness{
		t: t, requests: make(chan control), reports: make(chan status, 100), tick: make(chan time.Time),
		events: newRecSink(), done: make(chan [2]any, 1),
	}
	h.svc = newService("relay", h.events)
	go func() {
		code, err := execute(run, h.svc, h.requests, func(c control) control { return c },
			func(s status) { h.reports <- s }, h.tick)
		h.done <- [2]any{code, err}
	}()
	return h
}

func (h *harness) expect(want status) {
	h.t.Helper()
	select {
	case got := <-h.reports:
		if got != want {
			h.t.Fatalf("reported %+v, want %+v", got, want)
		}
	case <-time.After(5 * time.Second):
		h.t.Fatalf("no report, want %+v", want)
	}
}

func (h *harness) noReport() {
	h.t.Helper()
	select {
	case got := <-h.reports:
		h.t.Fatalf("unexpected report %+v", got)
	case <-time.After(20 * time.Millisecond):
	}
}

func (h *harness) result() (uint32, error) {
	h.t.Helper()
	select {
	case r := <-h.done:
		err, _ := r[1].(error)
		return r[0].(uint32), err
	case <-time.After(5 * time.Second):
		h.t.Fatal("execute did not return")
		return 0, nil
	}
}

var hint = uint32(pendingWaitHint / time.Millisecond)

func TestExecuteStartRunStop(t *testing.T) {
	started := make(chan struct{})
	stopped := make(chan struct{})
	finish := make(chan struct{})
	h := startHarness(t, func(ctx context.Context, s *Service) error {
		<-started
		s.Running()
		s.Running() // twice is harmless
		<-ctx.Done()
		close(stopped)
		<-finish
		return nil
	})
	h.expect(status{State: StartPending, WaitHint: hint})
	h.tick <- time.Now()
	h.expect(status{State: StartPending, WaitHint: hint, CheckPoint: 1})
	h.tick <- time.Now()
	h.expect(status{State: StartPending, WaitHint: hint, CheckPoint: 2})
	close(started)
	h.expect(status{State: Running, Accept: true})
	h.tick <- time.Now() // no progress reports while running
	h.noReport()
	h.requests <- ctlInterrogate
	h.expect(status{State: Running, Accept: true})
	h.requests <- ctlStop
	h.expect(status{State: StopPending, WaitHint: hint})
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not cancel the context")
	}
	h.tick <- time.Now()
	h.expect(status{State: StopPending, WaitHint: hint, CheckPoint: 1})
	h.requests <- ctlStop // a second stop changes nothing
	h.expect(status{State: StopPending, WaitHint: hint, CheckPoint: 1})
	close(finish)
	code, err := h.result()
	if code != 0 || err != nil {
		t.Errorf("got %d, %v; want 0, nil", code, err)
	}
	ev := strings.Join(h.events.all(), "\n")
	for _, want := range []string{"info: jetrelay service relay is running", "info: jetrelay service relay: stop requested", "info: jetrelay service relay stopped"} {
		if !strings.Contains(ev, want) {
			t.Errorf("events lack %q:\n%s", want, ev)
		}
	}
}

func TestExecuteShutdownAndPreShutdown(t *testing.T) {
	for _, c := range []control{ctlShutdown, ctlPreShutdown} {
		t.Run(c.String(), func(t *testing.T) {
			h := startHarness(t, func(ctx context.Context, s *Service) error {
				s.Running()
				<-ctx.Done()
				return nil
			})
			h.expect(status{State: StartPending, WaitHint: hint})
			h.expect(status{State: Running, Accept: true})
			h.requests <- c
			h.expect(status{State: StopPending, WaitHint: hint})
			if code, err := h.result(); code != 0 || err != nil {
				t.Errorf("got %d, %v", code, err)
			}
			if ev := strings.Join(h.events.all(), "\n"); !strings.Contains(ev, c.String()+" requested") {
				t.Errorf("events: %s", ev)
			}
		})
	}
}

func TestExecuteStartFails(t *testing.T) {
	boom := errors.New("data_dir: access denied")
	h := startHarness(t, func(ctx context.Context, s *Service) error { return boom })
	h.expect(status{State: StartPending, WaitHint: hint})
	code, err := h.result()
	if code != 1 || !errors.Is(err, boom) {
		t.Errorf("got %d, %v; want 1, %v", code, err, boom)
	}
	if ev := strings.Join(h.events.all(), "\n"); !strings.Contains(ev, "error: jetrelay service relay stopped because of an error: data_dir: access denied") {
		t.Errorf("events: %s", ev)
	}
}

func TestExecuteStageFailsWhileRunning(t *testing.T) {
	fail := make(chan struct{})
	h := startHarness(t, func(ctx context.Context, s *Service) error {
		s.Running()
		<-fail
		return errors.New("delivery: consumer deleted")
	})
	h.expect(status{State: StartPending, WaitHint: hint})
	h.expect(status{State: Running, Accept: true})
	close(fail)
	if code, err := h.result(); code != 1 || err == nil {
		t.Errorf("got %d, %v; want 1 (so that the SCM restarts the service) and the error", code, err)
	}
}

func TestExecuteErrorAfterStop(t *testing.T) {
	h := startHarness(t, func(ctx context.Context, s *Service) error {
		s.Running()
		<-ctx.Done()
		return errors.New("flush failed")
	})
	h.expect(status{State: StartPending, WaitHint: hint})
	h.expect(status{State: Running, Accept: true})
	h.requests <- ctlStop
	h.expect(status{State: StopPending, WaitHint: hint})
	code, err := h.result()
	if code != 0 || err == nil {
		t.Errorf("got %d, %v; want 0 (a requested stop is no failure to recover from) and the error", code, err)
	}
	if ev := strings.Join(h.events.all(), "\n"); !strings.Contains(ev, "error: jetrelay service relay stopped after stop with an error: flush failed") {
		t.Errorf("events: %s", ev)
	}
}

func TestExecuteStopWhileStarting(t *testing.T) {
	// The service does not accept stop while starting, so the SCM does not
	// send one; should one come anyway, the start is cancelled and the
	// service never reports running.
	release := make(chan struct{})
	h := startHarness(t, func(ctx context.Context, s *Service) error {
		<-release
		s.Running()
		<-ctx.Done()
		return nil
	})
	h.expect(status{State: StartPending, WaitHint: hint})
	h.requests <- ctlStop
	h.expect(status{State: StopPending, WaitHint: hint})
	close(release)
	if code, err := h.result(); code != 0 || err != nil {
		t.Errorf("got %d, %v", code, err)
	}
	h.noReport()
}

func TestExecuteOtherControls(t *testing.T) {
	h := startHarness(t, func(ctx context.Context, s *Service) error {
		s.Running()
		<-ctx.Done()
		return nil
	})
	h.expect(status{State: StartPending, WaitHint: hint})
	h.expect(status{State: Running, Accept: true})
	h.requests <- ctlOther
	h.expect(status{State: Running, Accept: true})
	h.requests <- ctlStop
	h.expect(status{State: StopPending, WaitHint: hint})
	h.result()
}
