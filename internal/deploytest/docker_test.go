package deploytest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/internal/cli"
)

// The Dockerfile sets this variable with -ldflags -X; -X only works on a
// package-level string variable, which this line proves at compile time.
var _ *string = &cli.Version

type dockerInstr struct {
	cmd  string // upper case: FROM, RUN, COPY, …
	args string
}

// parseDockerfile returns the instructions, with continuation lines joined
// and comment lines removed (as Docker does, also inside continuations).
func parseDockerfile(t *testing.T, p string) []dockerInstr {
	t.Helper()
	var out []dockerInstr
	var cur string
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, p)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur == "") {
			continue
		}
		if rest, ok := strings.CutSuffix(line, "\\"); ok {
			cur += rest + " "
			continue
		}
		cur += line
		cmd, args, _ := strings.Cut(cur, " ")
		out = append(out, dockerInstr{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur = ""
	}
	return out
}

// execForm decodes a JSON-array instruction argument.
func execForm(t *testing.T, instr, args string) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(args), &v); err != nil {
		t.Errorf("%s %s: want the exec (JSON array) form: %v", instr, args, err)
	}
	return v
}

func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	instrs := parseDockerfile(t, deployPath(t, "docker", "Dockerfile"))

	// ARG defaults before the first FROM, for the FROM lines.
	args := map[string]string{}
	var froms []string
	var final []dockerInstr // instructions of the last stage
	var buildRun string
	for _, in := range instrs {
		switch in.cmd {
		case "ARG":
			if len(froms) == 0 {
				k, v, _ := strings.Cut(in.args, "=")
				args[k] = v
			}
		case "FROM":
			img := strings.Fields(in.args)
			ref := img[0]
			if strings.HasPrefix(ref, "--platform") {
				ref = img[1]
			}
			for k, v := range args {
				ref = strings.ReplaceAll(ref, "${"+k+"}", v)
			}
			froms = append(froms, ref)
			final = nil
			continue
		case "RUN":
			if strings.Contains(in.args, "go build") {
				buildRun = in.args
			}
		}
		final = append(final, in)
	}
	if len(froms) < 2 {
		t.Fatalf("FROM %v: want a multi-stage build", froms)
	}
	if !strings.HasPrefix(froms[0], "golang:") || !strings.HasSuffix(froms[0], "-bookworm") {
		t.Errorf("build stage FROM %s: want golang:<version>-bookworm", froms[0])
	}
	// The image's Go must satisfy go.mod (official images set GOTOOLCHAIN=local).
	gomod := string(readFile(t, filepath.Join(root, "go.mod")))
	if m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(gomod); m == nil || args["GO_VERSION"] != m[1] {
		t.Errorf("ARG GO_VERSION=%s: go.mod wants go %v", args["GO_VERSION"], m)
	}
	if last := froms[len(froms)-1]; last != "gcr.io/distroless/static-debian12:nonroot" && last != "scratch" {
		t.Errorf("runtime FROM %s: want distroless/static (nonroot) or scratch", last)
	}

	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w -X github.com/jetrelay/jetrelay/internal/cli.Version=${VERSION}"`, "./cmd/jetrelay"} {
		if !strings.Contains(buildRun, want) {
			t.Errorf("go build RUN lacks %s:\n%s", want, buildRun)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "jetrelay", "main.go")); err != nil {
		t.Error(err)
	}

	var user, entrypoint, cmd, healthcheck string
	var exposed, volumes []string
	copies := map[string]string{} // context source → destination, final stage
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "CMD":
			cmd = in.args
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case "VOLUME":
			volumes = append(volumes, execForm(t, "VOLUME", in.args)...)
		case "HEALTHCHECK":
			healthcheck = in.args
		case "COPY":
			f := strings.Fields(in.args)
			if !strings.HasPrefix(f[0], "--from") && !strings.HasPrefix(f[len(f)-2], "--") {
				copies[f[len(f)-2]] = f[len(f)-1]
			}
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if uid == "" || uid == "0" || uid == "root" || !regexp.MustCompile(`^\d+$`).MatchString(uid) {
		t.Errorf("USER %q: want a numeric non-root user (Kubernetes' runAsNonRoot verifies numeric users only)", user)
	}
	if ep := execForm(t, "ENTRYPOINT", entrypoint); !slices.Equal(ep, []string{"/jetrelay"}) {
		t.Errorf("ENTRYPOINT %v", ep)
	}
	c := execForm(t, "CMD", cmd)
	if !slices.Equal(c, []string{"serve", "--config", "/etc/jetrelay/jetrelay.yaml"}) {
		t.Errorf("CMD %v", c)
	}
	for _, p := range []string{"2525", "8025"} {
		if !slices.Contains(exposed, p) {
			t.Errorf("EXPOSE %v lacks %s", exposed, p)
		}
	}
	if !slices.Contains(volumes, "/var/lib/jetrelay") {
		t.Errorf("VOLUME %v lacks /var/lib/jetrelay", volumes)
	}

	// The default configuration in the image is the one CMD names, and it
	// fits the image: ports exposed, data_dir the volume, reachable from
	// outside the container.
	var src string
	for s, dst := range copies {
		if dst == "/etc/jetrelay/jetrelay.yaml" {
			src = s
		}
	}
	if src == "" {
		t.Fatal("no COPY of a default configuration to /etc/jetrelay/jetrelay.yaml")
	}
	isolateEnv(t)
	cfg := loadConfig(t, filepath.Join(root, filepath.FromSlash(src)), nil, nil)
	for _, addr := range append([]string{cfg.HTTP.Listen}, cfg.Ingress.Listen...) {
		host, port, _ := net.SplitHostPort(addr)
		if !slices.Contains(exposed, port) {
			t.Errorf("%s: port not in EXPOSE %v", addr, exposed)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			t.Errorf("%s: a container's loopback is unreachable from outside", addr)
		}
	}
	if !slices.Contains(volumes, cfg.DataDir) {
		t.Errorf("data_dir %s is not the VOLUME %v", cfg.DataDir, volumes)
	}

	// The health check runs the binary itself (the image has no shell or
	// HTTP client) with the configuration CMD names, and works: against
	// that file it asks /readyz, and fails when that does.
	if healthcheck == "" || strings.EqualFold(healthcheck, "NONE") {
		t.Error("no HEALTHCHECK: want CMD [\"/jetrelay\", \"healthcheck\", \"--ready\", …]")
	} else {
		h := parseDockerHealthcheck(t, healthcheck)
		if len(h.cmd) > 0 && h.cmd[0] != execForm(t, "ENTRYPOINT", entrypoint)[0] {
			t.Errorf("HEALTHCHECK %v: want the ENTRYPOINT's binary", h.cmd)
		}
		if got, runs := flagValue(h.cmd, "--config"), flagValue(c, "--config"); got != runs {
			t.Errorf("HEALTHCHECK --config %s: CMD runs with %s", got, runs)
		}
		probe := checkJetrelayHealthcheck(t, "HEALTHCHECK", h.cmd, filepath.Join(root, filepath.FromSlash(src)), nil)
		if h.timeout <= probe {
			t.Errorf("HEALTHCHECK --timeout=%s: want it longer than the probe's --timeout %s (Docker's kill says nothing)", h.timeout, probe)
		}
		if h.startPeriod < 2*time.Minute || h.interval <= 0 || h.retries < 1 {
			t.Errorf("HEALTHCHECK --start-period=%s --interval=%s --retries=%d: want a start period of at least 2m (provisioning on a cold cluster), an interval and retries", h.startPeriod, h.interval, h.retries)
		}
	}

	// The build context after Dockerfile.dockerignore still has what the
	// build needs, and not .git.
	ignore := dockerIgnore(t, deployPath(t, "docker", "Dockerfile.dockerignore"))
	needed := []string{"go.mod", "go.sum", src}
	for s := range copies {
		needed = append(needed, s)
	}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() && (rel == ".git" || rel == "data") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, "_test.go") {
			needed = append(needed, rel)
		}
		return nil
	})
	for _, n := range needed {
		if ignore(n) {
			t.Errorf("Dockerfile.dockerignore excludes %s, which the build needs", n)
		}
	}
	if !ignore(".git/HEAD") {
		t.Error("Dockerfile.dockerignore should exclude .git")
	}
}

// dockerIgnore returns a matcher with .dockerignore semantics for the
// patterns used here: paths relative to the context root, a pattern
// excluding a directory excludes everything below it, "!" re-includes,
// the last matching pattern wins, "**/" matches any number of directories.
func dockerIgnore(t *testing.T, p string) func(string) bool {
	t.Helper()
	type pat struct {
		neg  bool
		glob string
	}
	var pats []pat
	for _, line := range strings.Split(string(readFile(t, p)), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		neg := strings.HasPrefix(line, "!")
		line = strings.TrimPrefix(line, "!")
		line = strings.Trim(path.Clean("/"+line), "/")
		pats = append(pats, pat{neg, line})
	}
	match := func(glob, name string) bool {
		if g, ok := strings.CutPrefix(glob, "**/"); ok {
			parts := strings.Split(name, "/")
			for i := range parts {
				if ok, _ := path.Match(g, strings.Join(parts[i:], "/")); ok {
					return true
				}
			}
			return false
		}
		// The pattern matches the path or one of its parent directories.
		for n := name; n != "." && n != "/"; n = path.Dir(n) {
			if ok, _ := path.Match(glob, n); ok {
				return true
			}
		}
		return false
	}
	return func(name string) bool {
		excluded := false
		for _, p := range pats {
			if match(p.glob, name) {
				excluded = !p.neg
			}
		}
		return excluded
	}
}
