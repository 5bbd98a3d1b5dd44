package deploytest

import (
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// secretLine matches assignments to keys that hold secrets, in YAML
// ("password: x", "- broker-password: x"), env files and systemd units
// ("X_PASSWORD=x") and NATS configuration ("password: x").
var secretLine = regexp.MustCompile(`(?i)^\s*-?\s*"?([a-z0-9_.-]*(?:password|passwd|secret|token)[a-z0-9_.-]*)"?\s*[:=]\s*(.*?)\s*$`)

// TestSecretsArePlaceholders scans every file under deploy/ for secret
// values written in it: each must be an obvious placeholder (CHANGE-ME),
// a reference ($VAR, << $VAR >>), or a file path (…_file keys). Comments
// and documentation (Markdown) are not scanned.
func TestSecretsArePlaceholders(t *testing.T) {
	root := deployPath(t)
	var n int
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".md") || strings.HasSuffix(path, ".json") {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for i, line := range strings.Split(string(readFile(t, path)), "\n") {
			trimmed := strings.TrimSpace(line)
			if strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "//") {
				continue
			}
			m := secretLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			key := strings.ToLower(m[1])
			val := m[2]
			if j := strings.Index(val, " #"); j >= 0 {
				val = strings.TrimSpace(val[:j])
			}
			val = strings.Trim(val, `"'`)
			n++
			switch {
			case val == "", val == "|", val == "{}", val == "true", val == "false":
				// no value here, or a flag such as automountServiceAccountToken
			case strings.HasSuffix(key, "_file") || strings.HasSuffix(key, "-file") || strings.HasSuffix(key, "file"):
			case strings.HasPrefix(key, "secretkeyref"), strings.HasSuffix(key, "secrets"):
			case strings.Contains(val, "CHANGE-ME"):
			case strings.HasPrefix(val, "$"), strings.HasPrefix(val, "<<"):
			default:
				t.Errorf("%s:%d: %s = %q: a secret in a deployment artefact must be an obvious placeholder (CHANGE-ME…) or a reference", rel, i+1, m[1], val)
			}
		}
		return nil
	})
	if n == 0 {
		t.Error("found no secret assignment at all: the scan is broken")
	}
}
