package deploytest

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/delivery"
	"github.com/jetrelay/jetrelay/internal/config"
)

// exampleConfigs are the files of deploy/config/, each a complete
// configuration for `jetrelay --config`. The test fails when a file is
// added without being listed here (and so without its profile checks).
var exampleConfigs = []string{
	"serve-minimal.yaml",
	"iis-replacement.yaml",
	"submission-with-auth.yaml",
	"cluster-node.yaml",
	"stages-separate.yaml",
}

func TestExampleConfigsAreListed(t *testing.T) {
	files, err := filepath.Glob(deployPath(t, "config", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !slices.Contains(exampleConfigs, filepath.Base(f)) {
			t.Errorf("deploy/config/%s is not in exampleConfigs", filepath.Base(f))
		}
	}
	for _, name := range exampleConfigs {
		if _, err := os.Stat(deployPath(t, "config", name)); err != nil {
			t.Error(err)
		}
	}
}

// TestExampleConfigsPassConfigCheck runs `jetrelay config check` on every
// example and on the image's default configuration, with the files they
// reference created in a temporary directory.
func TestExampleConfigsPassConfigCheck(t *testing.T) {
	paths := []string{deployPath(t, "docker", "jetrelay.yaml")}
	for _, name := range exampleConfigs {
		paths = append(paths, deployPath(t, "config", name))
	}
	for _, path := range paths {
		t.Run(filepath.Base(filepath.Dir(path))+"/"+filepath.Base(path), func(t *testing.T) {
			isolateEnv(t)
			cfg := loadConfig(t, path, nil, nil)
			env := referencedFiles(t, cfg)
			if filepath.Base(filepath.Dir(path)) == "docker" && cfg.Hostname == config.Default().Hostname {
				// The image's default leaves hostname to JETRELAY_HOSTNAME,
				// as its comment says; without it config check warns that
				// the container's host name is not a domain name.
				env["JETRELAY_HOSTNAME"] = "relay.example.com"
			}
			configCheck(t, path, env)
			checkPlaceholderSecrets(t, path, cfg)
		})
	}
}

// checkPlaceholderSecrets: a secret written into an example must be an
// obvious placeholder, never something that looks usable.
func checkPlaceholderSecrets(t *testing.T, path string, cfg *config.Config) {
	t.Helper()
	secrets := map[string]string{
		"broker.password":             cfg.Broker.Password,
		"broker.token":                cfg.Broker.Token,
		"broker.cluster.password":     cfg.Broker.Cluster.Password,
		"delivery.smarthost_password": cfg.Delivery.SmarthostPassword,
	}
	for dom, r := range cfg.Delivery.Routes {
		secrets["delivery.routes."+dom+".password"] = r.Password
	}
	for key, v := range secrets {
		if v != "" && !strings.Contains(v, "CHANGE-ME") {
			t.Errorf("%s: %s is %q: use an obvious placeholder containing CHANGE-ME", path, key, v)
		}
	}
}

// TestExampleConfigProfiles checks that each example is what its name
// promises.
func TestExampleConfigProfiles(t *testing.T) {
	isolateEnv(t)
	load := func(name string) *config.Config { return loadConfig(t, deployPath(t, "config", name), nil, nil) }
	port := func(hostport string) string {
		_, p, err := net.SplitHostPort(hostport)
		if err != nil {
			t.Fatalf("%q: %v", hostport, err)
		}
		return p
	}

	t.Run("serve-minimal", func(t *testing.T) {
		c := load("serve-minimal.yaml")
		if len(c.Broker.URL) != 0 || c.Broker.Cluster.Name != "" {
			t.Error("serve-minimal must use the embedded, single-node broker")
		}
		if c.Hostname == "" || !strings.Contains(c.Hostname, ".") {
			t.Errorf("hostname %q: want an FQDN", c.Hostname)
		}
	})

	t.Run("iis-replacement", func(t *testing.T) {
		c := load("iis-replacement.yaml")
		if !strings.Contains(c.Hostname, ".") {
			t.Errorf("hostname %q: want an FQDN", c.Hostname)
		}
		if !slices.Contains(c.Ingress.Listen, "0.0.0.0:25") {
			t.Errorf("ingress.listen %v: want 0.0.0.0:25", c.Ingress.Listen)
		}
		for _, want := range []string{"127.0.0.0/8", "::1/128"} {
			if !slices.Contains(c.Ingress.RelayNetworks, want) {
				t.Errorf("relay_networks %v: want loopback %s", c.Ingress.RelayNetworks, want)
			}
		}
		var single, cidr int
		for _, n := range c.Ingress.RelayNetworks {
			if strings.Contains(n, "/") {
				cidr++
			} else {
				single++
			}
		}
		if single < 2 || cidr < 3 {
			t.Errorf("relay_networks %v: want a few listed addresses and CIDRs besides loopback", c.Ingress.RelayNetworks)
		}
		if len(c.Delivery.Smarthost) != 1 || port(c.Delivery.Smarthost[0]) != "587" {
			t.Errorf("smarthost %v: want one smart host on port 587", c.Delivery.Smarthost)
		}
		if c.Delivery.SmarthostTLS != string(delivery.TLSRequired) {
			t.Errorf("smarthost_tls %q: want required (STARTTLS)", c.Delivery.SmarthostTLS)
		}
		if c.Delivery.SmarthostUsername == "" || c.Delivery.SmarthostPasswordFile == "" || c.Delivery.SmarthostPassword != "" {
			t.Error("want smarthost_username and smarthost_password_file (and no inline password)")
		}
		if c.Delivery.DelayWarning.D() != 12*time.Hour {
			t.Errorf("delay_warning %s: want 12h", c.Delivery.DelayWarning)
		}
		// IIS: 10, 10, 10 minutes, then every 15; expire after 2 days.
		var sched []time.Duration
		for _, d := range c.Delivery.Retry.Schedule {
			sched = append(sched, d.D())
		}
		if !slices.Equal(sched, []time.Duration{10 * time.Minute, 10 * time.Minute, 10 * time.Minute, 15 * time.Minute}) {
			t.Errorf("retry.schedule %v: want IIS's 10m, 10m, 10m, 15m", sched)
		}
		if c.Delivery.Retry.MaxAge.D() != 48*time.Hour {
			t.Errorf("retry.max_age %s: want IIS's 2 days", c.Delivery.Retry.MaxAge)
		}
	})

	t.Run("submission-with-auth", func(t *testing.T) {
		c := load("submission-with-auth.yaml")
		if !slices.ContainsFunc(c.Ingress.Listen, func(a string) bool { return port(a) == "587" }) {
			t.Errorf("ingress.listen %v: want port 587", c.Ingress.Listen)
		}
		if c.Ingress.TLS.Cert == "" || c.Ingress.TLS.Key == "" || c.Ingress.UsersFile == "" || !c.Ingress.RequireTLS {
			t.Error("want ingress.tls.cert/key, users_file and require_tls")
		}
		if c.Ingress.AllowInsecureAuth {
			t.Error("allow_insecure_auth must stay off on a submission port")
		}
	})

	t.Run("cluster-node", func(t *testing.T) {
		c := load("cluster-node.yaml")
		b := c.Broker
		if b.Replicas != 3 {
			t.Errorf("broker.replicas %d: want 3", b.Replicas)
		}
		if b.ServerName == "" || b.Listen == "" || b.User == "" || (b.Password == "" && b.PasswordFile == "") {
			t.Error("want broker.server_name, listen, user and a password")
		}
		if b.Cluster.Name == "" || b.Cluster.Listen == "" || len(b.Cluster.Routes) != 3 {
			t.Errorf("broker.cluster %+v: want name, listen and the routes of 3 nodes", b.Cluster)
		}
		if b.Cluster.User == "" || b.Cluster.Password == "" {
			t.Error("route connections must authenticate (broker.cluster.user/password)")
		}
		if b.SyncInterval != "always" {
			t.Errorf("broker.sync_interval %q: want always", b.SyncInterval)
		}
		if len(b.URL) != 0 {
			t.Error("a cluster node runs the embedded broker: broker.url must be empty")
		}
	})

	t.Run("stages-separate", func(t *testing.T) {
		c := load("stages-separate.yaml")
		if len(c.Broker.URL) != 0 {
			t.Error("stages on one machine find the broker through data_dir/broker.json: broker.url must be empty")
		}
		if c.Broker.Listen == "" || c.Broker.Listen == "off" {
			t.Error("broker.listen must give the other processes a client port")
		}
		if c.DataDir == "" || c.DataDir == config.Default().DataDir {
			t.Errorf("data_dir %q: want an absolute, shared directory", c.DataDir)
		}
	})
}
