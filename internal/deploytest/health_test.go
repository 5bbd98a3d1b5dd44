package deploytest

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/internal/cli"
	"github.com/jetrelay/jetrelay/internal/config"
)

// probeTarget stands in for a running jetrelay's HTTP listener: /readyz
// and /healthz answer with the status set, and the paths asked are kept.
type probeTarget struct {
	srv    *httptest.Server
	mu     sync.Mutex
	status int
	paths  []string
}

func newProbeTarget(t *testing.T) *probeTarget {
	t.Helper()
	p := &probeTarget{status: http.StatusOK}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.paths = append(p.paths, r.URL.Path)
		st := p.status
		p.mu.Unlock()
		w.WriteHeader(st)
		fmt.Fprintln(w, http.StatusText(st))
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *probeTarget) set(status int) {
	p.mu.Lock()
	p.status, p.paths = status, nil
	p.mu.Unlock()
}

func (p *probeTarget) asked() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.paths)
}

// checkJetrelayHealthcheck runs a container's health check command
// (argv: "/jetrelay", "healthcheck", …) in-process, the way the container
// would: with the configuration the container gets (localConfig standing
// for the file at the command's --config, env for its environment) and
// http.listen pointed at a probe target. It must ask /readyz (readiness,
// what depends_on waits for), exit 0 when that answers 200 and 1 when it
// answers 503 or nothing listens. It returns the probe's --timeout.
func checkJetrelayHealthcheck(t *testing.T, what string, argv []string, localConfig string, env map[string]string) time.Duration {
	t.Helper()
	if len(argv) < 2 || argv[0] != "/jetrelay" || argv[1] != "healthcheck" {
		t.Errorf("%s: %v: want /jetrelay healthcheck …", what, argv)
		return 0
	}
	if !slices.Contains(argv, "--ready") {
		t.Errorf("%s: %v: want --ready (GET /readyz: the stages accept work)", what, argv)
	}
	if flagValue(argv, "--url") != "" {
		t.Errorf("%s: %v: want the address from http.listen of the configuration, not --url", what, argv)
	}
	timeout, err := time.ParseDuration(flagValue(argv, "--timeout"))
	if err != nil {
		t.Errorf("%s: %v: want an explicit --timeout, shorter than the health check's own: %v", what, argv, err)
	}
	args := slices.Clone(argv[1:])
	i := slices.Index(args, "--config")
	if i < 0 || i+1 >= len(args) {
		t.Errorf("%s: %v: want --config, the file the stage runs with", what, argv)
		return timeout
	}
	args[i+1] = localConfig

	isolateEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	target := newProbeTarget(t)
	t.Setenv(config.EnvPrefix+"HTTP_LISTEN", strings.TrimPrefix(target.srv.URL, "http://"))
	run := func() (int, string) {
		var out, errb bytes.Buffer
		code := cli.Main(args, strings.NewReader(""), &out, &errb)
		return code, out.String() + errb.String()
	}
	for _, c := range []struct {
		status, code int
	}{{http.StatusOK, 0}, {http.StatusServiceUnavailable, 1}} {
		target.set(c.status)
		code, out := run()
		if code != c.code {
			t.Errorf("%s: with /readyz answering %d, exit %d, want %d:\n%s", what, c.status, code, c.code, out)
		}
		if got := target.asked(); !slices.Equal(got, []string{"/readyz"}) {
			t.Errorf("%s: asked %v, want /readyz once", what, got)
		}
	}
	target.srv.Close()
	if code, out := run(); code != 1 {
		t.Errorf("%s: with nothing listening, exit %d, want 1:\n%s", what, code, out)
	}
	return timeout
}

// dockerHealthcheck is a HEALTHCHECK instruction: its options and its
// command in exec form.
type dockerHealthcheck struct {
	interval, timeout, startPeriod time.Duration
	retries                        int
	cmd                            []string
}

func parseDockerHealthcheck(t *testing.T, args string) dockerHealthcheck {
	t.Helper()
	var h dockerHealthcheck
	rest := args
	for strings.HasPrefix(rest, "--") {
		opt, after, _ := strings.Cut(rest, " ")
		rest = strings.TrimSpace(after)
		k, v, _ := strings.Cut(strings.TrimPrefix(opt, "--"), "=")
		var err error
		switch k {
		case "interval":
			h.interval, err = time.ParseDuration(v)
		case "timeout":
			h.timeout, err = time.ParseDuration(v)
		case "start-period":
			h.startPeriod, err = time.ParseDuration(v)
		case "retries":
			_, err = fmt.Sscanf(v, "%d", &h.retries)
		default:
			t.Errorf("HEALTHCHECK option --%s: not one the tests (or Docker before 25) know", k)
		}
		if err != nil {
			t.Errorf("HEALTHCHECK %s: %v", opt, err)
		}
	}
	form, ok := strings.CutPrefix(rest, "CMD ")
	if !ok {
		t.Errorf("HEALTHCHECK %s: want CMD [\"/jetrelay\", \"healthcheck\", …]", args)
		return h
	}
	h.cmd = execForm(t, "HEALTHCHECK CMD", strings.TrimSpace(form))
	return h
}

// composeDependencyCycle returns a cycle of depends_on among the services
// (nil: none); compose would never start one.
func composeDependencyCycle(c composeFile) []string {
	state := map[string]int{} // 0 new, 1 on the path, 2 done
	var path []string
	var visit func(string) []string
	visit = func(s string) []string {
		switch state[s] {
		case 1:
			return append(slices.Clone(path[slices.Index(path, s):]), s)
		case 2:
			return nil
		}
		state[s] = 1
		path = append(path, s)
		for _, d := range sortedKeys(c.Services[s].DependsOn) {
			if cyc := visit(d); cyc != nil {
				return cyc
			}
		}
		path = path[:len(path)-1]
		state[s] = 2
		return nil
	}
	for _, s := range sortedKeys(c.Services) {
		if cyc := visit(s); cyc != nil {
			return cyc
		}
	}
	return nil
}

// TestComposeHealth: every service has a health check; every depends_on
// waits for the health of a service that has one, without a cycle; the
// stages wait for every NATS node and delivery for its smart host; the
// relay's health checks are the image's command, and work: run against
// the configuration each container gets, they ask /readyz and fail when
// it does.
func TestComposeHealth(t *testing.T) {
	c := loadCompose(t)
	for _, name := range sortedKeys(c.Services) {
		svc := c.Services[name]
		hc := svc.Healthcheck
		if hc == nil || len(hc.Test) < 2 || (hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL") {
			t.Errorf("%s: want a healthcheck with a test [\"CMD\", …]", name)
			continue
		}
		if hc.Interval == "" || hc.Timeout == "" || hc.Retries < 1 {
			t.Errorf("%s: healthcheck: want interval, timeout and retries", name)
		}
		for dep, d := range svc.DependsOn {
			if d.Condition != "service_healthy" {
				t.Errorf("%s: depends_on %s: condition %q, want service_healthy", name, dep, d.Condition)
			}
			if ds, ok := c.Services[dep]; !ok || ds.Healthcheck == nil {
				t.Errorf("%s: depends_on %s, which is not a service with a healthcheck", name, dep)
			}
		}
	}
	if cyc := composeDependencyCycle(c); cyc != nil {
		t.Errorf("depends_on cycle %v: compose would start none of them", cyc)
	}
	if hc := c.Services[sinkService].Healthcheck; hc == nil || !slices.Equal(hc.Test, []string{"CMD", "/mailpit", "readyz"}) {
		t.Errorf("%s: want the image's own check, [CMD /mailpit readyz]", sinkService)
	}

	docker := dockerHealthcheckOf(t)
	for _, name := range slices.Concat(ingressServices, deliveryServices) {
		t.Run(name, func(t *testing.T) {
			svc := c.Services[name]
			for _, n := range natsServices {
				if _, ok := svc.DependsOn[n]; !ok {
					t.Errorf("want depends_on %s", n)
				}
			}
			if _, ok := svc.DependsOn[sinkService]; ok != slices.Contains(deliveryServices, name) {
				t.Errorf("depends_on %s: %v, want it for delivery only (its smart host)", sinkService, ok)
			}
			hc := svc.Healthcheck
			if hc.Test[0] != "CMD" || !slices.Equal(hc.Test[1:], docker.cmd) {
				t.Errorf("healthcheck %v: want the image's, CMD %v", hc.Test, docker.cmd)
			}
			runs := flagValue(svc.Command, "--config")
			if got := flagValue(hc.Test, "--config"); got != runs {
				t.Errorf("healthcheck --config %s: the stage runs with %s", got, runs)
			}
			probe := checkJetrelayHealthcheck(t, name+" healthcheck", hc.Test[1:], mountSource(t, svc, runs), serviceEnv(t, svc))
			if to, err := parseDuration(hc.Timeout); err != nil || probe >= to {
				t.Errorf("healthcheck timeout %s: want it longer than the probe's --timeout %s", hc.Timeout, probe)
			}
			if sp, err := parseDuration(hc.StartPeriod); err != nil || sp < 2*time.Minute {
				t.Errorf("healthcheck start_period %q: want at least 2m (provisioning on a cold cluster)", hc.StartPeriod)
			}
		})
	}
}

// dockerHealthcheckOf parses the final stage's HEALTHCHECK of the
// Dockerfile.
func dockerHealthcheckOf(t *testing.T) dockerHealthcheck {
	t.Helper()
	var last string
	for _, in := range parseDockerfile(t, deployPath(t, "docker", "Dockerfile")) {
		switch in.cmd {
		case "FROM":
			last = ""
		case "HEALTHCHECK":
			last = in.args
		}
	}
	if last == "" || strings.EqualFold(last, "NONE") {
		t.Fatal("the image has no HEALTHCHECK")
	}
	return parseDockerHealthcheck(t, last)
}
