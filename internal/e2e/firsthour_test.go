package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// A stage whose credentials the broker refuses says which broker refused
// which credentials and which configuration keys set them, instead of
// "broker connection closed"; so does an operator command.
func TestFirstHourBrokerRefusesCredentials(t *testing.T) {
	brk := testenv.StartStages(t, testenv.TestConfig(t), app.Stages{Broker: true}, app.Options{})
	creds, err := broker.ReadCredentials(brk.Cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.TestConfig(t)
	cfg.Broker.URL = config.StringList{creds.URL}
	cfg.Broker.User = "jetrelay"
	cfg.Broker.Password = "not-the-password"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := app.Start(ctx, cfg, testenv.TestLogger(t), app.Stages{Ingress: true}, app.Options{})
	if a != nil {
		defer a.Stop()
	}
	if err == nil {
		t.Fatal("the ingress started with credentials the broker refuses")
	}
	for _, want := range []string{"the broker at " + creds.URL, `refused user "jetrelay" with a password`, "Authorization Violation",
		"broker.user and broker.password"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in: %v", want, err)
		}
	}
	if !errors.Is(err, broker.ErrRefused) || strings.Contains(err.Error(), "not-the-password") {
		t.Errorf("error: %v", err)
	}

	// An operator command with the same settings.
	file := testenv.WriteConfig(t, "broker:\n  url: "+creds.URL+"\n  user: jetrelay\n  password: not-the-password\n")
	out, errs, code := jrFile(t, file, "queue", "list")
	if code != 1 || !strings.Contains(errs, `refused user "jetrelay" with a password`) || !strings.Contains(errs, "broker.user and broker.password") {
		t.Fatalf("queue list: exit %d\n%s%s", code, out, errs)
	}
}
