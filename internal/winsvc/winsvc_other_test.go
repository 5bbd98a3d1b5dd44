//go:build !windows

package winsvc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNotSupported(t *testing.T) {
	if Supported || IsService() {
		t.Fatal("Supported or IsService on a system without Windows services")
	}
	ran := false
	errs := map[string]error{
		"Run":       Run(func(context.Context, *Service) error { ran = true; return nil }),
		"Install":   Install(InstallOptions{Name: "jetrelay"}),
		"Uninstall": Uninstall("jetrelay"),
		"Start":     Start("jetrelay", time.Second),
		"Stop":      Stop("jetrelay", time.Second),
	}
	_, errs["QueryStatus"] = QueryStatus("jetrelay")
	_, errs["CreateDataDir"] = CreateDataDir("/var/lib/jetrelay")
	for name, err := range errs {
		if !errors.Is(err, ErrNotSupported) {
			t.Errorf("%s: %v, want ErrNotSupported", name, err)
		}
	}
	if ran {
		t.Error("Run ran the function")
	}
	if msg := ErrNotSupported.Error(); !strings.Contains(msg, "only on Windows") || !strings.Contains(msg, "deploy/systemd") {
		t.Errorf("unclear error: %s", msg)
	}
}
