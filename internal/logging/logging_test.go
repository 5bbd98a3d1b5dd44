package logging

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The console format written to a file (or anything but a terminal)
// carries no colour: a log file must read as text.
func TestConsoleWithoutColourOffTerminal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "jetrelay.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	for _, w := range []interface {
		Write([]byte) (int, error)
	}{f, &buf} {
		log := New(w, "debug", "console")
		log.Info().Str("msg_id", "2N14RHDRP8P0BKGG").Msg("delivery attempt")
		log.Warn().Err(os.ErrNotExist).Msg("something")
		log.Error().Msg("failed")
	}
	b, _ := os.ReadFile(f.Name())
	for name, out := range map[string]string{"file": string(b), "buffer": buf.String()} {
		if strings.Contains(out, "\x1b[") {
			t.Errorf("%s: ANSI escape sequences in the console log:\n%q", name, out)
		}
		if !strings.Contains(out, "msg_id=2N14RHDRP8P0BKGG") {
			t.Errorf("%s: fields missing:\n%s", name, out)
		}
	}
}

func TestColourRules(t *testing.T) {
	if Colour(&bytes.Buffer{}) {
		t.Error("a buffer is not a terminal")
	}
	tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0)
	if err != nil {
		t.Skip("no terminal to test with")
	}
	defer tty.Close()
	t.Setenv("NO_COLOR", "1")
	if Colour(tty) {
		t.Error("NO_COLOR is set, yet colour on a terminal")
	}
}
