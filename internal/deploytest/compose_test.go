package deploytest

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// composeFile is the part of docker-compose.yml the tests look at.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Networks map[string]struct {
		IPAM struct {
			Config []struct {
				Subnet string `yaml:"subnet"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
	Volumes map[string]any `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       map[string]any    `yaml:"build"`
	Command     []string          `yaml:"command"`
	EnvFile     []string          `yaml:"env_file"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
	StopGracePeriod string   `yaml:"stop_grace_period"`
	StopSignal      string   `yaml:"stop_signal"`
	Networks        []string `yaml:"networks"`
	ReadOnly        bool     `yaml:"read_only"`
}

var (
	natsServices     = []string{"nats-1", "nats-2", "nats-3"}
	ingressServices  = []string{"ingress-1", "ingress-2"}
	deliveryServices = []string{"delivery-1", "delivery-2", "delivery-3"}
	sinkService      = "mailpit"
)

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	// yaml.v3 resolves the << merge keys of the x-jetrelay / x-nats anchors.
	decodeYAMLInto(t, deployPath(t, "compose", "docker-compose.yml"), &c)
	return c
}

// mountSource resolves a service's bind mount of target to the file in
// deploy/compose/.
func mountSource(t *testing.T, svc composeService, target string) string {
	t.Helper()
	for _, v := range svc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == target {
			if !strings.HasPrefix(parts[0], "./") {
				t.Fatalf("volume %q: want a bind mount of a file in deploy/compose", v)
			}
			return deployPath(t, "compose", filepath.FromSlash(parts[0][2:]))
		}
	}
	t.Fatalf("no volume mounted at %s in %v", target, svc.Volumes)
	return ""
}

// serviceEnv is what a container gets: its env files, then environment.
func serviceEnv(t *testing.T, svc composeService) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, f := range svc.EnvFile {
		for k, v := range envFile(t, deployPath(t, "compose", filepath.FromSlash(f))) {
			env[k] = v
		}
	}
	for k, v := range svc.Environment {
		env[k] = v
	}
	return env
}

// flagValue returns the value after flag in args.
func flagValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

func TestComposeServices(t *testing.T) {
	c := loadCompose(t)
	want := slices.Concat(natsServices, ingressServices, deliveryServices, []string{sinkService})
	for _, name := range want {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	for name := range c.Services {
		if !slices.Contains(want, name) {
			t.Errorf("service %s is not one the tests know; extend them", name)
		}
	}

	for _, name := range natsServices {
		svc := c.Services[name]
		tag, ok := strings.CutPrefix(svc.Image, "nats:")
		if !ok || !versionAtLeast(tag, 2, 12) {
			t.Errorf("%s: image %q: want the official nats image, 2.12 or newer (message schedules)", name, svc.Image)
		}
		if got := flagValue(svc.Command, "--name"); got != name {
			t.Errorf("%s: --name %q: want the service name, unique per node", name, got)
		}
		if svc.Healthcheck == nil || !strings.Contains(strings.Join(svc.Healthcheck.Test, " "), "/healthz") {
			t.Errorf("%s: want a healthcheck on the monitoring port's /healthz", name)
		}
		if !slices.ContainsFunc(svc.Volumes, func(v string) bool { return strings.HasSuffix(v, ":/data") && !strings.HasPrefix(v, ".") }) {
			t.Errorf("%s: want a named volume on /data (the JetStream store)", name)
		}
	}

	sink := c.Services[sinkService]
	if !strings.HasPrefix(sink.Image, "axllent/mailpit") {
		t.Errorf("%s: image %q: want axllent/mailpit", sinkService, sink.Image)
	}

	for _, name := range slices.Concat(ingressServices, deliveryServices) {
		svc := c.Services[name]
		stage := strings.SplitN(name, "-", 2)[0]
		if len(svc.Command) == 0 || svc.Command[0] != stage {
			t.Errorf("%s: command %v: want `jetrelay %s …`", name, svc.Command, stage)
		}
		if svc.Build["dockerfile"] != "deploy/docker/Dockerfile" || svc.Build["context"] != "../.." {
			t.Errorf("%s: build %v: want the repository root as context and deploy/docker/Dockerfile", name, svc.Build)
		}
		for _, n := range natsServices {
			if svc.DependsOn[n].Condition != "service_healthy" {
				t.Errorf("%s: want depends_on %s: {condition: service_healthy}", name, n)
			}
		}
		if !svc.ReadOnly {
			t.Errorf("%s: want read_only: true (nothing is written by ingress or delivery)", name)
		}
	}
}

// TestComposeJetrelayConfig runs `config check` on the configuration each
// jetrelay container gets (mounted file, env_file, environment, flags of
// its command) and checks that it fits the compose topology.
func TestComposeJetrelayConfig(t *testing.T) {
	c := loadCompose(t)
	for _, name := range slices.Concat(ingressServices, deliveryServices) {
		t.Run(name, func(t *testing.T) {
			isolateEnv(t)
			svc := c.Services[name]
			cfgPath := flagValue(svc.Command, "--config")
			if cfgPath == "" {
				t.Fatalf("command %v has no --config", svc.Command)
			}
			local := mountSource(t, svc, cfgPath)
			env := serviceEnv(t, svc)
			// The rest of the command after the subcommand are flags;
			// pass them on (config check takes the global ones).
			var flags []string
			for i := 1; i < len(svc.Command); i++ {
				if svc.Command[i] == "--config" {
					i++
					continue
				}
				flags = append(flags, svc.Command[i])
			}
			configCheck(t, local, env, flags...)

			cfg := loadConfig(t, local, env, nil)
			for _, n := range natsServices {
				if !slices.Contains(cfg.Broker.URL, "nats://"+n+":4222") {
					t.Errorf("broker.url %v: want every node, nats://%s:4222 missing", cfg.Broker.URL, n)
				}
			}
			if cfg.Broker.Replicas != 3 {
				t.Errorf("broker.replicas %d: want 3", cfg.Broker.Replicas)
			}
			if cfg.Broker.User == "" || cfg.Broker.Password == "" {
				t.Error("want broker.user and a password (from broker.env)")
			}
			if !strings.Contains(cfg.Broker.Password, "CHANGE-ME") {
				t.Errorf("broker password %q in broker.env: want an obvious placeholder", cfg.Broker.Password)
			}
			if !slices.Equal(cfg.Delivery.Smarthost, []string{sinkService + ":1025"}) || cfg.Delivery.SmarthostTLS != "none" {
				t.Errorf("smarthost %v tls %s: want %s:1025 without TLS", cfg.Delivery.Smarthost, cfg.Delivery.SmarthostTLS, sinkService)
			}
			subnet := c.Networks["relay"].IPAM.Config
			if len(subnet) == 0 || !slices.Contains(cfg.Ingress.RelayNetworks, subnet[0].Subnet) {
				t.Errorf("relay_networks %v: want the compose network's subnet", cfg.Ingress.RelayNetworks)
			}
			if grace, err := parseDuration(svc.StopGracePeriod); err != nil || grace < maxGrace(cfg)+stopMargin {
				t.Errorf("stop_grace_period %q: want at least the shutdown grace %s + %s", svc.StopGracePeriod, maxGrace(cfg), stopMargin)
			}
			// The published ports must reach what the config listens on.
			_, httpPort, _ := net.SplitHostPort(cfg.HTTP.Listen)
			wantPorts := []string{httpPort}
			if strings.HasPrefix(name, "ingress") {
				_, smtpPort, _ := net.SplitHostPort(cfg.Ingress.Listen[0])
				wantPorts = append(wantPorts, smtpPort)
			}
			for _, p := range wantPorts {
				if !slices.ContainsFunc(svc.Ports, func(s string) bool { return strings.HasSuffix(s, ":"+p) }) {
					t.Errorf("ports %v: container port %s (from the config) is not published", svc.Ports, p)
				}
			}
		})
	}
}

// TestComposeNATSConfig parses nats.conf with the NATS server's own parser,
// with the environment the containers get, and checks it against the
// compose file and the relay's configuration.
func TestComposeNATSConfig(t *testing.T) {
	isolateEnv(t)
	c := loadCompose(t)
	svc := c.Services["nats-1"]
	cfgPath := flagValue(svc.Command, "--config")
	local := mountSource(t, svc, cfgPath)
	env := serviceEnv(t, svc)
	for k, v := range env {
		t.Setenv(k, v)
	}
	opts, err := server.ProcessConfigFile(local)
	if err != nil {
		t.Fatalf("nats-server would not start with %s: %v", local, err)
	}
	if !opts.JetStream || !opts.SyncAlways {
		t.Errorf("jetstream %v sync always %v: want JetStream with sync_interval: always", opts.JetStream, opts.SyncAlways)
	}
	if !slices.ContainsFunc(svc.Volumes, func(v string) bool { return strings.HasSuffix(v, ":"+opts.StoreDir) }) {
		t.Errorf("store_dir %s is not a volume of nats-1 (%v)", opts.StoreDir, svc.Volumes)
	}
	if opts.Cluster.Name == "" || opts.Cluster.Port == 0 {
		t.Errorf("cluster %+v: want a name and a route port", opts.Cluster)
	}
	var routeHosts []string
	for _, r := range opts.Routes {
		routeHosts = append(routeHosts, r.Hostname())
		if r.Port() != fmt.Sprint(opts.Cluster.Port) {
			t.Errorf("route %s: want the cluster port %d", r.Redacted(), opts.Cluster.Port)
		}
	}
	slices.Sort(routeHosts)
	if !slices.Equal(routeHosts, natsServices) {
		t.Errorf("routes to %v: want %v", routeHosts, natsServices)
	}
	// Stopping in lame duck mode must finish before docker's SIGKILL.
	if svc.StopSignal == "SIGUSR2" {
		grace, err := parseDuration(svc.StopGracePeriod)
		if ldm := opts.LameDuckDuration + opts.LameDuckGracePeriod; err != nil || grace <= ldm {
			t.Errorf("stop_grace_period %q: lame duck mode takes %s", svc.StopGracePeriod, ldm)
		}
	}
	if !strings.Contains(strings.Join(svc.Healthcheck.Test, " "), fmt.Sprintf(":%d/healthz", opts.HTTPPort)) {
		t.Errorf("healthcheck %v does not use the monitoring port %d", svc.Healthcheck.Test, opts.HTTPPort)
	}

	// The servers' credentials are the relay's.
	relay := c.Services[ingressServices[0]]
	relayCfg := loadConfig(t, mountSource(t, relay, flagValue(relay.Command, "--config")), serviceEnv(t, relay), nil)
	if opts.Username != relayCfg.Broker.User || opts.Password != relayCfg.Broker.Password || opts.Password == "" {
		t.Errorf("nats.conf authorization user %q: the relay connects as %q with another password", opts.Username, relayCfg.Broker.User)
	}
	for _, u := range relayCfg.Broker.URL {
		pu, err := url.Parse(u)
		if err != nil || pu.Port() != fmt.Sprint(opts.Port) {
			t.Errorf("broker.url %s: want the servers' client port %d", u, opts.Port)
		}
	}
}
