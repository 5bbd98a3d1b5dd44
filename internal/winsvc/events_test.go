package winsvc

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
)

func TestFormatEvent(t *testing.T) {
	line := `{"level":"error","process":"serve","component":"delivery","msg_id":"0KQ3H5XZ7M2P9RTA","attempt":3,"error":"dial tcp: refused","time":"2026-01-02T03:04:05Z","message":"attempt failed"}` + "\n"
	got := formatEvent([]byte(line))
	want := "attempt failed\r\n" +
		"\r\nattempt: 3" +
		"\r\ncomponent: delivery" +
		"\r\nerror: dial tcp: refused" +
		"\r\nmsg_id: 0KQ3H5XZ7M2P9RTA" +
		"\r\nprocess: serve"
	if got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}

	if got := formatEvent([]byte(`{"level":"error","message":"only a message"}`)); got != "only a message" {
		t.Errorf("message only: %q", got)
	}
	if got := formatEvent([]byte("2026-01-02T03:04:05Z ERR not json\n")); got != "2026-01-02T03:04:05Z ERR not json" {
		t.Errorf("not JSON: %q", got)
	}
	if got := formatEvent([]byte(`{"n":{"a":[1,2]},"message":"nested"}`)); got != "nested\r\n\r\nn: {\"a\":[1,2]}" {
		t.Errorf("nested: %q", got)
	}
}

func TestTruncateEvent(t *testing.T) {
	long := strings.Repeat("é", maxEventChars) // 2 bytes each
	got := truncateEvent(long)
	if !utf8.ValidString(got) || !strings.HasSuffix(got, " …") || len(got) > maxEventChars+len(" …") {
		t.Errorf("truncated to %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if got := truncateEvent("short"); got != "short" {
		t.Errorf("short: %q", got)
	}
}

func TestEventLogWriter(t *testing.T) {
	sink := newRecSink()
	s := newService("relay", sink)
	now := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	w := s.EventLogWriter(zerolog.ErrorLevel).(*eventWriter)
	w.now = func() time.Time { return now }

	var file bytes.Buffer
	log := zerolog.New(zerolog.MultiLevelWriter(&file, w))
	log.Info().Msg("info line")
	log.Warn().Msg("warn line")
	log.Error().Str("msg_id", "X1").Msg("error line")
	if got := sink.all(); len(got) != 1 || got[0] != "error: error line\r\n\r\nmsg_id: X1" {
		t.Errorf("events: %q", got)
	}
	if n := strings.Count(file.String(), "\n"); n != 3 {
		t.Errorf("file got %d lines, want all 3", n)
	}

	// A flood: eventBurst per window, then one note about the rest.
	for i := range eventBurst + 5 {
		log.Error().Msg(fmt.Sprint("flood ", i))
	}
	if got := sink.all(); len(got) != eventBurst-1 {
		t.Errorf("flood: %d events, want %d", len(got), eventBurst-1)
	}
	now = now.Add(eventWindow)
	log.Error().Msg("after the window")
	got := sink.all()
	if len(got) != 2 || !strings.HasPrefix(got[0], "warning: 6 more log lines at error level") || got[1] != "error: after the window" {
		t.Errorf("after the window: %q", got)
	}

	// Warnings, with a lower minimum, go as warnings.
	w2 := s.EventLogWriter(zerolog.WarnLevel)
	wlog := zerolog.New(w2)
	wlog.Warn().Msg("careful")
	if got := sink.all(); len(got) != 1 || got[0] != "warning: careful" {
		t.Errorf("warn: %q", got)
	}
	// Plain writes (no level) are ignored.
	if n, err := w2.Write([]byte("x")); n != 1 || err != nil {
		t.Errorf("Write: %d, %v", n, err)
	}
	if got := sink.all(); len(got) != 0 {
		t.Errorf("plain write went to the event log: %q", got)
	}
}
