package deploytest

import (
	"bufio"
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// unitFile is a parsed systemd unit: section → key → values (keys may
// repeat).
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	u := unitFile{}
	section := ""
	var pending string
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, path)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending == "" && (line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";")) {
			continue
		}
		if rest, ok := strings.CutSuffix(line, "\\"); ok {
			pending += rest + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: not key=value in a section: %q", path, n, line)
		}
		u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	return u
}

// get returns the last value of a key (systemd's rule for single-valued
// keys).
func (u unitFile) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// systemdUnits maps each unit to the subcommand it runs and the example
// configurations it is documented with.
type systemdUnit struct {
	file    string
	command string
	configs []string
	// instance substitutes %i in template units.
	instance string
}

var systemdUnits = []systemdUnit{
	{"jetrelay.service", "serve", []string{"serve-minimal.yaml", "iis-replacement.yaml", "submission-with-auth.yaml", "cluster-node.yaml"}, ""},
	{"jetrelay-broker.service", "broker", []string{"stages-separate.yaml"}, ""},
	{"jetrelay-ingress.service", "ingress", []string{"stages-separate.yaml"}, ""},
	{"jetrelay-delivery@.service", "delivery", []string{"stages-separate.yaml"}, "8031"},
}

func TestSystemdUnits(t *testing.T) {
	files, _ := filepath.Glob(deployPath(t, "systemd", "*.service"))
	for _, f := range files {
		if !slices.ContainsFunc(systemdUnits, func(u systemdUnit) bool {
			return u.file == filepath.Base(f)
		}) {
			t.Errorf("%s is not in systemdUnits", filepath.Base(f))
		}
	}
	// The stages' HTTP addresses on the shared machine must differ.
	httpListen := map[string]string{}

	for _, unit := range systemdUnits {
		t.Run(unit.file, func(t *testing.T) {
			u := parseUnit(t, deployPath(t, "systemd", unit.file))
			svc := func(k string) string { return u.get("Service", k) }
			if u.get("Unit", "Description") == "" || len(u["Install"]["WantedBy"]) == 0 {
				t.Error("want Description and WantedBy")
			}
			for k, want := range map[string]string{
				"User": "jetrelay", "Restart": "on-failure", "KillSignal": "SIGTERM",
				"StateDirectory": "jetrelay", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
				"ProtectHome": "yes", "PrivateTmp": "yes",
			} {
				if got := svc(k); got != want {
					t.Errorf("%s=%q, want %q", k, got, want)
				}
			}

			// ExecStart: the binary, the subcommand, then global flags.
			argv := strings.Fields(svc("ExecStart"))
			if len(argv) < 2 || filepath.Base(argv[0]) != "jetrelay" || argv[1] != unit.command {
				t.Fatalf("ExecStart=%s: want jetrelay %s …", svc("ExecStart"), unit.command)
			}
			if dd := flagValue(argv, "--data-dir"); dd != "" && dd != "/var/lib/"+svc("StateDirectory") {
				t.Errorf("--data-dir %s is not the StateDirectory, the only writable place under ProtectSystem=strict", dd)
			}
			var flags []string
			for i := 2; i < len(argv); i++ {
				if argv[i] == "--config" || argv[i] == "-c" {
					i++
					continue
				}
				flags = append(flags, argv[i])
			}
			if flagValue(argv, "--config") == "" {
				t.Error("ExecStart has no --config")
			}

			needsPort25 := unit.command == "serve" || unit.command == "ingress"
			if needsPort25 {
				if !strings.Contains(svc("AmbientCapabilities"), "CAP_NET_BIND_SERVICE") {
					t.Error("want AmbientCapabilities=CAP_NET_BIND_SERVICE to bind port 25 without root")
				}
				if !strings.Contains(svc("ExecReload"), "kill -HUP $MAINPID") {
					t.Error("want ExecReload=/bin/kill -HUP $MAINPID (certificate reload)")
				}
			} else if svc("AmbientCapabilities") != "" {
				t.Error("only the units that bind SMTP ports need a capability")
			}
			if unit.command == "ingress" || unit.command == "delivery" {
				if !slices.Contains(strings.Fields(u.get("Unit", "Requires")), "jetrelay-broker.service") ||
					!slices.Contains(strings.Fields(u.get("Unit", "After")), "jetrelay-broker.service") {
					t.Error("want Requires= and After=jetrelay-broker.service")
				}
			}

			// Environment= lines become the process's environment.
			env := map[string]string{}
			for _, e := range u["Service"]["Environment"] {
				for _, kv := range strings.Fields(e) {
					k, v, _ := strings.Cut(strings.Trim(kv, `"`), "=")
					env[k] = strings.ReplaceAll(v, "%i", unit.instance)
				}
			}

			stop, err := parseDuration(svc("TimeoutStopSec"))
			if err != nil {
				t.Errorf("TimeoutStopSec=%q: %v", svc("TimeoutStopSec"), err)
			}
			for _, name := range unit.configs {
				t.Run(name, func(t *testing.T) {
					isolateEnv(t)
					path := deployPath(t, "config", name)
					cfg := loadConfig(t, path, env, nil)
					files := referencedFiles(t, cfg)
					for k, v := range env {
						files[k] = v
					}
					configCheck(t, path, files, flags...)
					if stop < maxGrace(cfg)+stopMargin {
						t.Errorf("TimeoutStopSec=%s: want more than the shutdown grace %s + %s", stop, maxGrace(cfg), stopMargin)
					}
					if unit.command != "serve" {
						httpListen[unit.file] = loadConfig(t, path, env, nil).HTTP.Listen
					}
				})
			}
		})
	}
	seen := map[string]string{}
	for unit, addr := range httpListen {
		if other, dup := seen[addr]; dup && addr != "off" {
			t.Errorf("%s and %s both serve HTTP on %s", unit, other, addr)
		}
		seen[addr] = unit
	}
	if len(httpListen) != 3 {
		t.Errorf("checked the HTTP addresses of %d stage units, want 3", len(httpListen))
	}
}

func TestSystemdSysusers(t *testing.T) {
	data := string(readFile(t, deployPath(t, "systemd", "jetrelay.sysusers")))
	var ok bool
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "u" && f[1] == "jetrelay" {
			ok = true
		}
	}
	if !ok {
		t.Error("jetrelay.sysusers does not create the jetrelay user")
	}
}
