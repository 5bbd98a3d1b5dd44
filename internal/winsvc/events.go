package winsvc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// eventSink is the Windows event log as the service uses it
// (*eventlog.Log on Windows).
type eventSink interface {
	Info(eid uint32, msg string) error
	Warning(eid uint32, msg string) error
	Error(eid uint32, msg string) error
}

type nopSink struct{}

func (nopSink) Info(uint32, string) error    { return nil }
func (nopSink) Warning(uint32, string) error { return nil }
func (nopSink) Error(uint32, string) error   { return nil }

// Event log limits: a message is cut at maxEventChars (the API's limit is
// 31839 characters); at most eventBurst log lines per eventWindow go to the
// event log, the rest only to the log file (one event says how many were
// left out).
const (
	maxEventChars = 8000
	eventBurst    = 20
	eventWindow   = time.Minute
)

// EventLogWriter returns a zerolog writer that copies log lines at level
// min or above to the Application event log (as errors, or warnings below
// error level), rate-limited so that a failing dependency cannot flood it.
// Put it next to the log file with zerolog.MultiLevelWriter. It never
// fails a write.
func (s *Service) EventLogWriter(min zerolog.Level) zerolog.LevelWriter {
	return &eventWriter{sink: s.events, min: min, now: time.Now}
}

type eventWriter struct {
	sink eventSink
	min  zerolog.Level
	now  func() time.Time

	mu          sync.Mutex
	windowStart time.Time
	count       int
	suppressed  int
}

func (w *eventWriter) Write(p []byte) (int, error) { return len(p), nil }

func (w *eventWriter) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	if l < w.min || l == zerolog.NoLevel || l == zerolog.Disabled {
		return len(p), nil
	}
	w.mu.Lock()
	now := w.now()
	if now.Sub(w.windowStart) >= eventWindow {
		if w.suppressed > 0 {
			_ = w.sink.Warning(eventLog, fmt.Sprintf("%d more log lines at %s level or above were written only to the log file", w.suppressed, w.min))
		}
		w.windowStart, w.count, w.suppressed = now, 0, 0
	}
	if w.count >= eventBurst {
		w.suppressed++
		w.mu.Unlock()
		return len(p), nil
	}
	w.count++
	w.mu.Unlock()
	msg := formatEvent(p)
	if l >= zerolog.ErrorLevel {
		_ = w.sink.Error(eventLog, msg)
	} else {
		_ = w.sink.Warning(eventLog, msg)
	}
	return len(p), nil
}

// formatEvent turns a JSON log line into an event text: the message, then
// one "key: value" line per field (sorted; level and time left out, the
// event log has its own). A line that is not JSON is used as it is.
func formatEvent(line []byte) string {
	line = bytes.TrimSpace(line)
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return truncateEvent(string(line))
	}
	var b strings.Builder
	if msg, ok := m[zerolog.MessageFieldName].(string); ok {
		b.WriteString(msg)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		switch k {
		case zerolog.MessageFieldName, zerolog.LevelFieldName, zerolog.TimestampFieldName:
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) > 0 && b.Len() > 0 {
		b.WriteString("\r\n")
	}
	for _, k := range keys {
		v := m[k]
		var s string
		switch v := v.(type) {
		case string:
			s = v
		default:
			j, _ := json.Marshal(v)
			s = string(j)
		}
		fmt.Fprintf(&b, "\r\n%s: %s", k, s)
	}
	return truncateEvent(b.String())
}

func truncateEvent(s string) string {
	if len(s) <= maxEventChars {
		return s
	}
	cut := maxEventChars
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + " …"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
