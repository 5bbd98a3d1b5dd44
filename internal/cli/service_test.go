package cli

import (
	"bytes"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/winsvc"
	"github.com/rs/zerolog"
)

func TestServiceFlags(t *testing.T) {
	g := &globals{
		dataDir: "data", sets: []string{"delivery.concurrency=8", "ingress.listen=-weird"},
		logLevel: "debug", logFormat: "console", hostname: "relay.corp.example", brokerURL: "nats://a:4222",
	}
	got, err := serviceFlags(g)
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("data")
	want := []string{
		"--data-dir=" + abs, "--set=delivery.concurrency=8", "--set=ingress.listen=-weird",
		"--log-level=debug", "--log-format=console", "--hostname=relay.corp.example", "--broker-url=nats://a:4222",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got, _ := serviceFlags(&globals{}); len(got) != 0 {
		t.Errorf("no flags: %q", got)
	}
}

// The service's command line parses back into the same settings.
func TestServiceArgsParse(t *testing.T) {
	g := &globals{sets: []string{"hostname=h.example"}, logLevel: "warn"}
	extra, err := serviceFlags(g)
	if err != nil {
		t.Fatal(err)
	}
	args, err := winsvc.Args("delivery", "relay.yaml", extra...)
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	root := newRoot(strings.NewReader(""), &out, &errb)
	cmd, rest, err := root.Find(args)
	if err != nil || cmd.Name() != "delivery" {
		t.Fatalf("find %q: %v, %v", args, cmd, err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatal(err)
	}
	f := cmd.Flags()
	abs, _ := filepath.Abs("relay.yaml")
	if v, _ := f.GetString("config"); v != abs {
		t.Errorf("config %q, want %q", v, abs)
	}
	if v, _ := f.GetStringArray("set"); !reflect.DeepEqual(v, []string{"hostname=h.example"}) {
		t.Errorf("set %q", v)
	}
	if v, _ := f.GetString("log-level"); v != "warn" {
		t.Errorf("log-level %q", v)
	}
}

func TestRelativePaths(t *testing.T) {
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	cfg := config.Default()
	cfg.DataDir = abs("data")
	cfg.Ingress.UsersFile = "users.txt"
	cfg.Ingress.TLS.Cert = abs("cert.pem")
	cfg.Ingress.TLS.Key = `.\key.pem`
	cfg.Delivery.Routes = map[string]config.Route{"corp.example": {Host: "10.0.0.5:25", PasswordFile: "route.pass"}}
	got := relativePaths(cfg)
	want := []string{"delivery.routes.corp.example.password_file (route.pass)", `ingress.tls.key (.\key.pem)`, "ingress.users_file (users.txt)"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	cfg.DataDir = "./data"
	if got := relativePaths(cfg); got[0] != "data_dir (./data)" {
		t.Errorf("relative data_dir: %q", got)
	}
}

func TestServiceCommands(t *testing.T) {
	root := newRoot(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
	svc, _, err := root.Find([]string{"service"})
	if err != nil || svc.Name() != "service" {
		t.Fatalf("no service command: %v", err)
	}
	var names []string
	for _, c := range svc.Commands() {
		names = append(names, c.Name())
	}
	if want := []string{"install", "start", "status", "stop", "uninstall"}; !reflect.DeepEqual(names, want) {
		t.Errorf("subcommands %q, want %q", names, want)
	}
	install, _, _ := root.Find([]string{"service", "install"})
	for _, f := range []string{"name", "display-name", "description", "stage", "stages", "startup", "depends-on", "start", "config"} {
		if install.Flag(f) == nil {
			t.Errorf("install has no --%s", f)
		}
	}
}

func TestServiceNotWindows(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the service commands work here")
	}
	for _, args := range [][]string{
		{"service", "install", "--config", "x.yaml"}, {"service", "uninstall"}, {"service", "start"},
		{"service", "stop", "--name", "relay"}, {"service", "status"},
	} {
		var out, errb bytes.Buffer
		code := Main(args, strings.NewReader(""), &out, &errb)
		if code != 1 || !strings.Contains(errb.String(), "only on Windows") || !strings.Contains(errb.String(), "deploy/systemd") {
			t.Errorf("%q: exit %d, stderr %q", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"service", "--help"}, strings.NewReader(""), &out, &errb); code != 0 || !strings.Contains(out.String(), "install") {
		t.Errorf("service --help: exit %d, %q %q", code, out.String(), errb.String())
	}
}

func TestRunAsServiceNotAService(t *testing.T) {
	if winsvc.IsService() {
		t.Skip("running under the Service Control Manager")
	}
	handled, err := runAsService(config.Default(), zerolog.Nop(), app.Stages{Delivery: true})
	if handled || err != nil {
		t.Errorf("handled %v, err %v; want false, nil outside the SCM", handled, err)
	}
}
