package deploytest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCheckHarness proves that the in-process `config check` used by
// the other tests does fail: on a missing referenced file, on an invalid
// value, and (as a warning) on an environment variable that matches no key.
func TestConfigCheckHarness(t *testing.T) {
	isolateEnv(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "jetrelay.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	write("hostname: relay.example.com\ndata_dir: " + dir + "\n")
	if r, w := runConfigCheck(t, path, nil); r.code != 0 || len(w) != 0 {
		t.Fatalf("a valid config failed: code %d, warnings %v, stderr %s", r.code, w, r.stderr)
	}

	write("hostname: relay.example.com\ningress:\n  users_file: " + filepath.Join(dir, "missing.yaml") + "\n")
	if r, _ := runConfigCheck(t, path, nil); r.code == 0 || !strings.Contains(r.stderr, "ingress.users_file") {
		t.Errorf("a missing users_file passed: code %d, stderr %s", r.code, r.stderr)
	}

	write("hostname: relay.example.com\nbroker:\n  replicas: 7\n")
	if r, _ := runConfigCheck(t, path, nil); r.code == 0 {
		t.Error("broker.replicas: 7 passed")
	}

	write("hostname: relay.example.com\ningress:\n  lisen: [\":25\"]\n")
	if r, _ := runConfigCheck(t, path, nil); r.code == 0 {
		t.Error("an unknown key passed")
	}

	write("hostname: relay.example.com\n")
	if _, w := runConfigCheck(t, path, map[string]string{"JETRELAY_BROKER_PASWORD": "x"}); len(w) == 0 {
		t.Error("a mistyped environment variable gave no warning")
	}
}
