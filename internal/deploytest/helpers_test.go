package deploytest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/internal/cli"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"
)

// repoRoot is the module root, two levels above this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	return root
}

// deployPath joins elements below deploy/.
func deployPath(t testing.TB, elem ...string) string {
	t.Helper()
	return filepath.Join(append([]string{repoRoot(t), "deploy"}, elem...)...)
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// yamlDocs decodes every document of a (possibly multi-document) YAML
// stream, skipping empty documents.
func yamlDocs(data []byte) ([]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []any
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, fmt.Errorf("document %d: %w", len(docs)+1, err)
		}
		if v != nil {
			docs = append(docs, v)
		}
	}
}

// decodeYAMLInto decodes the single document of a YAML file into v.
func decodeYAMLInto(t testing.TB, path string, v any) {
	t.Helper()
	if err := yaml.Unmarshal(readFile(t, path), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// dig walks nested maps along keys and returns the value found (nil when
// a key is missing).
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func digString(v any, keys ...string) string {
	s, _ := dig(v, keys...).(string)
	return s
}

// isolateEnv removes every JETRELAY_* variable of the developer's or CI's
// environment for the duration of the test, so that only what a test sets
// reaches `config check`. Tests that call it cannot run in parallel.
func isolateEnv(t testing.TB) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, config.EnvPrefix) {
			t.Setenv(k, v) // registers the restore
			os.Unsetenv(k)
		}
	}
}

// checkResult is the outcome of one `jetrelay config check`.
type checkResult struct {
	code           int
	stdout, stderr string
}

// runConfigCheck runs the real `jetrelay config check --config path
// [flags]` in-process with the current environment (t.Setenv reaches it:
// cli.Main reads os.Environ) and returns its outcome and the warnings it
// printed.
func runConfigCheck(t testing.TB, path string, env map[string]string, flags ...string) (checkResult, []string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	args := append([]string{"config", "check", "--config", path}, flags...)
	var stdout, stderr bytes.Buffer
	code := cli.Main(args, strings.NewReader(""), &stdout, &stderr)
	r := checkResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
	var warnings []string
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(line, "# warning:") {
			warnings = append(warnings, line)
		}
	}
	return r, warnings
}

// configCheck runs `jetrelay config check` (see runConfigCheck) and fails
// the test unless the check passes without warnings (a warning is, for
// example, an environment variable that matches no key: a typo in a
// manifest).
func configCheck(t testing.TB, path string, env map[string]string, flags ...string) checkResult {
	t.Helper()
	r, warnings := runConfigCheck(t, path, env, flags...)
	what := "jetrelay config check --config " + path + " " + strings.Join(flags, " ")
	if r.code != 0 {
		t.Errorf("%s: exit code %d\nstderr:\n%s\nstdout:\n%s", what, r.code, r.stderr, r.stdout)
		return r
	}
	if !strings.Contains(r.stderr, "configuration OK") {
		t.Errorf("%s: no \"configuration OK\" in stderr:\n%s", what, r.stderr)
	}
	for _, w := range warnings {
		t.Errorf("%s: %s", what, w)
	}
	return r
}

// loadConfig loads a configuration the way the commands do (defaults, file,
// the given environment, flags as overrides) without validating it.
func loadConfig(t testing.TB, path string, env map[string]string, overrides map[string]string) *config.Config {
	t.Helper()
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	cfg, _, err := config.Load(path, environ, overrides)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	return cfg
}

// referencedFiles creates, in a temporary directory, every file a
// configuration names (certificates, users file, password files) and
// returns the environment overrides that point the configuration at them.
// `config check` verifies that such files exist (and that the users file
// parses); the example paths (/etc/jetrelay/…) do not exist here.
func referencedFiles(t testing.TB, cfg *config.Config) map[string]string {
	t.Helper()
	env := map[string]string{}
	dir := t.TempDir()
	var pki *testenv.PKI
	certs := func() *testenv.PKI {
		if pki == nil {
			pki = testenv.NewPKI(t, cfg.Hostname)
		}
		return pki
	}
	secret := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("CHANGE-ME-test-secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if cfg.Ingress.TLS.Cert != "" || cfg.Ingress.TLS.Key != "" {
		env["JETRELAY_INGRESS_TLS_CERT"] = certs().CertFile
		env["JETRELAY_INGRESS_TLS_KEY"] = certs().KeyFile
	}
	if cfg.Ingress.UsersFile != "" {
		env["JETRELAY_INGRESS_USERS_FILE"] = usersFile(t, dir)
	}
	if cfg.Delivery.SmarthostPasswordFile != "" {
		env["JETRELAY_DELIVERY_SMARTHOST_PASSWORD_FILE"] = secret("smarthost.pass")
	}
	if cfg.Broker.PasswordFile != "" {
		env["JETRELAY_BROKER_PASSWORD_FILE"] = secret("broker.pass")
	}
	if cfg.Broker.Credentials != "" {
		env["JETRELAY_BROKER_CREDENTIALS"] = secret("broker.creds")
	}
	if cfg.Broker.NKeyFile != "" {
		env["JETRELAY_BROKER_NKEY_FILE"] = secret("broker.nk")
	}
	if cfg.Broker.TLS.CA != "" {
		env["JETRELAY_BROKER_TLS_CA"] = certs().CertFile
	}
	if cfg.Broker.TLS.Cert != "" || cfg.Broker.TLS.Key != "" {
		env["JETRELAY_BROKER_TLS_CERT"] = certs().CertFile
		env["JETRELAY_BROKER_TLS_KEY"] = certs().KeyFile
	}
	for dom, r := range cfg.Delivery.Routes {
		if r.PasswordFile != "" {
			// Map keys cannot be overridden from the environment.
			t.Fatalf("delivery.routes.%s.password_file: the test cannot point it at a temporary file; extend referencedFiles", dom)
		}
	}
	return env
}

// usersFile writes a valid ingress.users_file with one bcrypt user.
func usersFile(t testing.TB, dir string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("CHANGE-ME-test-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "users.yaml")
	data := fmt.Sprintf("users:\n  app:\n    password: %q\n    allowed_senders: [\"alerts@example.com\"]\n", hash)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// envFile parses a docker-compose style env file (KEY=VALUE lines, #
// comments).
func envFile(t testing.TB, path string) map[string]string {
	t.Helper()
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, path)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			t.Fatalf("%s:%d: not KEY=VALUE: %q", path, n, line)
		}
		env[k] = v
	}
	return env
}

// parseDuration reads durations as the artefacts write them: Go syntax
// ("90s", "1m30s"), systemd's "min" or a bare number of seconds.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	s = strings.ReplaceAll(strings.ReplaceAll(s, "min", "m"), " ", "")
	return time.ParseDuration(s)
}

// versionAtLeast reports whether an image tag such as "2.12-alpine" or
// "2.12.1" is at least major.minor.
func versionAtLeast(tag string, major, minor int) bool {
	m := regexp.MustCompile(`^v?(\d+)\.(\d+)`).FindStringSubmatch(tag)
	if m == nil {
		return false
	}
	ma, _ := strconv.Atoi(m[1])
	mi, _ := strconv.Atoi(m[2])
	return ma > major || (ma == major && mi >= minor)
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// maxGrace is the longer of the ingress and delivery shutdown graces.
func maxGrace(cfg *config.Config) time.Duration {
	return max(cfg.Ingress.ShutdownGrace.D(), cfg.Delivery.ShutdownGrace.D())
}

// stopMargin is what a stop timeout must leave on top of the shutdown
// grace: the HTTP server's shutdown (5s), draining the broker connection
// and flushing the embedded broker's store.
const stopMargin = 10 * time.Second
