package broker

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// The NATS server's start-up banner (two dozen notices, ASCII art among
// them) becomes one structured line with the fields that matter, at the
// first start and at a restart that restores streams.
func TestEmbeddedStartIsOneLine(t *testing.T) {
	dir := t.TempDir()
	for run := 0; run < 2; run++ {
		var buf bytes.Buffer
		log := zerolog.New(zerolog.SyncWriter(&buf)).Level(zerolog.InfoLevel)
		e, err := StartEmbedded(EmbeddedOptions{DataDir: dir, SyncAlways: true}, log)
		if err != nil {
			t.Fatal(err)
		}
		if run == 0 {
			// Something to restore at the next start.
			c, err := Connect(t.Context(), ConnectOptions{InProcess: e.Server(), User: e.Credentials().User, Password: e.Credentials().Password}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Provision(t.Context(), Settings{QueueShards: 2}); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
		e.Shutdown()
		var ready map[string]any
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("not JSON: %q", line)
			}
			msg, _ := m["message"].(string)
			switch {
			case msg == "embedded broker ready":
				ready = m
			case msg == "", strings.Contains(msg, "Version:"), strings.Contains(msg, "___"), strings.Contains(msg, "JETSTREAM"),
				strings.Contains(msg, "Store Directory"), strings.Contains(msg, "Listening for client connections"),
				strings.Contains(msg, "Restored"), strings.Contains(msg, "Server is ready"):
				t.Errorf("run %d: a banner line got through: %q", run, line)
			}
		}
		if ready == nil {
			t.Fatalf("run %d: no \"embedded broker ready\" line:\n%s", run, buf.String())
		}
		for _, k := range []string{"nats_version", "store", "sync", "url", "listen", "server_name"} {
			if s, _ := ready[k].(string); s == "" {
				t.Errorf("run %d: %s missing from %v", run, k, ready)
			}
		}
		if ready["sync"] != "always" || !strings.HasPrefix(ready["url"].(string), "nats://127.0.0.1:") {
			t.Errorf("run %d: %v", run, ready)
		}
		if run == 1 && !strings.Contains(ready["restored"].(string), "streams") {
			t.Errorf("the restore is not summed up: %v", ready)
		}
	}
}
