package deploytest

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// k8sObject is the part of a Kubernetes object the tests look at; spec is
// decoded further by kind.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       yaml.Node         `yaml:"spec"`

	file string
}

type deploymentSpec struct {
	Replicas *int `yaml:"replicas"`
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec podSpec `yaml:"spec"`
	} `yaml:"template"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot *bool  `yaml:"runAsNonRoot"`
		RunAsUser    *int64 `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	Containers []k8sContainer `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
	} `yaml:"volumes"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Lifecycle struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
}

type k8sProbe struct {
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
	HTTPGet          *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type serviceSpec struct {
	Type                  string            `yaml:"type"`
	ExternalTrafficPolicy string            `yaml:"externalTrafficPolicy"`
	Selector              map[string]string `yaml:"selector"`
	Ports                 []struct {
		Port       int `yaml:"port"`
		TargetPort any `yaml:"targetPort"`
	} `yaml:"ports"`
}

type hpaSpec struct {
	ScaleTargetRef struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Name       string `yaml:"name"`
	} `yaml:"scaleTargetRef"`
	MinReplicas int         `yaml:"minReplicas"`
	MaxReplicas int         `yaml:"maxReplicas"`
	Metrics     []hpaMetric `yaml:"metrics"`
}

type hpaMetric struct {
	Type     string `yaml:"type"`
	Resource *struct {
		Name string `yaml:"name"`
	} `yaml:"resource"`
}

type kustomization struct {
	APIVersion string           `yaml:"apiVersion"`
	Kind       string           `yaml:"kind"`
	Namespace  string           `yaml:"namespace"`
	Resources  []string         `yaml:"resources"`
	Images     []kustomizeImage `yaml:"images"`
}

type kustomizeImage struct {
	Name    string `yaml:"name"`
	NewName string `yaml:"newName"`
	NewTag  string `yaml:"newTag"`
}

// Names the manifests and the tests agree on.
const (
	k8sConfigMap  = "jetrelay-config"
	k8sConfigKey  = "jetrelay.yaml"
	k8sSecret     = "jetrelay-secrets"
	k8sIngress    = "jetrelay-ingress"
	k8sDelivery   = "jetrelay-delivery"
	k8sNamespace  = "jetrelay"
	natsValues    = "nats-values.yaml"
	natsRelease   = "nats" // helm release name the README installs; its client Service has this name
	k8sImage      = "jetrelay"
	kustomizeFile = "kustomization.yaml"
)

// k8sManifests loads kustomization.yaml and every object of the resources
// it lists.
func k8sManifests(t *testing.T) (kustomization, []k8sObject) {
	t.Helper()
	var k kustomization
	decodeYAMLInto(t, deployPath(t, "kubernetes", kustomizeFile), &k)
	var objs []k8sObject
	for _, res := range k.Resources {
		objs = append(objs, k8sFileObjects(t, res)...)
	}
	return k, objs
}

// k8sFileObjects loads the objects of one manifest of deploy/kubernetes.
func k8sFileObjects(t *testing.T, res string) []k8sObject {
	t.Helper()
	data := readFile(t, deployPath(t, "kubernetes", filepath.FromSlash(res)))
	docs, err := yamlDocs(data)
	if err != nil {
		t.Fatalf("%s: %v", res, err)
	}
	var objs []k8sObject
	for _, d := range docs {
		b, _ := yaml.Marshal(d)
		var o k8sObject
		if err := yaml.Unmarshal(b, &o); err != nil {
			t.Fatalf("%s: %v", res, err)
		}
		o.file = res
		objs = append(objs, o)
	}
	return objs
}

// k8sAlternatives are manifests used instead of one the kustomization
// lists, never with it: the CPU-only HPA for clusters without KEDA, in
// place of the ScaledObject (two HPAs on one Deployment fight).
var k8sAlternatives = map[string]string{"delivery-hpa.yaml": "delivery-scaledobject.yaml"}

func findObject(t *testing.T, objs []k8sObject, kind, name string) k8sObject {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	t.Fatalf("no %s %s in the manifests", kind, name)
	return k8sObject{}
}

func decodeSpec[T any](t *testing.T, o k8sObject) T {
	t.Helper()
	var s T
	if err := o.Spec.Decode(&s); err != nil {
		t.Fatalf("%s %s: spec: %v", o.Kind, o.Metadata.Name, err)
	}
	return s
}

func TestKubernetesManifestsWellFormed(t *testing.T) {
	k, objs := k8sManifests(t)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: apiVersion %q kind %q", k.APIVersion, k.Kind)
	}
	if k.Namespace != k8sNamespace {
		t.Errorf("kustomization namespace %q: want %q", k.Namespace, k8sNamespace)
	}
	// Every manifest of the directory is in the kustomization, so that
	// nothing is silently left out of `kubectl apply -k`.
	files, _ := filepath.Glob(deployPath(t, "kubernetes", "*.yaml"))
	for _, f := range files {
		base := filepath.Base(f)
		if alt, ok := k8sAlternatives[base]; ok {
			if slices.Contains(k.Resources, base) == slices.Contains(k.Resources, alt) {
				t.Errorf("kustomization.yaml resources: want either %s or %s, not both or neither", alt, base)
			}
			continue
		}
		if base != kustomizeFile && base != natsValues && !slices.Contains(k.Resources, base) {
			t.Errorf("%s is not listed in kustomization.yaml resources", base)
		}
	}
	if !slices.ContainsFunc(k.Images, func(i kustomizeImage) bool {
		return i.Name == k8sImage && i.NewName != "" && i.NewTag != "" && i.NewTag != "latest"
	}) {
		t.Errorf("kustomization images: want %s with newName and a pinned newTag", k8sImage)
	}

	seen := map[string]bool{}
	for _, o := range objs {
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Errorf("%s: an object without apiVersion, kind or metadata.name", o.file)
		}
		id := o.Kind + "/" + o.Metadata.Name
		if seen[id] {
			t.Errorf("%s: %s defined twice", o.file, id)
		}
		seen[id] = true
		if o.Metadata.Namespace != "" && o.Metadata.Namespace != k8sNamespace {
			t.Errorf("%s: %s in namespace %q", o.file, id, o.Metadata.Namespace)
		}
	}
	for _, id := range []string{"Namespace/" + k8sNamespace, "ConfigMap/" + k8sConfigMap, "Secret/" + k8sSecret,
		"Deployment/" + k8sIngress, "Deployment/" + k8sDelivery, "ScaledObject/" + k8sDelivery} {
		if !seen[id] {
			t.Errorf("%s missing", id)
		}
	}
	secret := findObject(t, objs, "Secret", k8sSecret)
	if len(secret.StringData) == 0 {
		t.Error("the Secret has no stringData placeholders")
	}
	for key, v := range secret.StringData {
		if !strings.Contains(v, "CHANGE-ME") {
			t.Errorf("Secret %s: %s is %q: want an obvious placeholder containing CHANGE-ME", k8sSecret, key, v)
		}
	}
}

// k8sConfigFile writes the ConfigMap's jetrelay.yaml to a temporary file.
func k8sConfigFile(t *testing.T, objs []k8sObject) string {
	t.Helper()
	cm := findObject(t, objs, "ConfigMap", k8sConfigMap)
	data, ok := cm.Data[k8sConfigKey]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", k8sConfigMap, k8sConfigKey)
	}
	p := filepath.Join(t.TempDir(), k8sConfigKey)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func portOf(t *testing.T, hostport string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// TestKubernetesDeployments checks both Deployments against the
// configuration they run with, and runs `config check` on that
// configuration with the containers' environment (secrets taken from the
// Secret's placeholders).
func TestKubernetesDeployments(t *testing.T) {
	_, objs := k8sManifests(t)
	secret := findObject(t, objs, "Secret", k8sSecret)
	cm := findObject(t, objs, "ConfigMap", k8sConfigMap)

	for _, name := range []string{k8sIngress, k8sDelivery} {
		t.Run(name, func(t *testing.T) {
			isolateEnv(t)
			d := findObject(t, objs, "Deployment", name)
			spec := decodeSpec[deploymentSpec](t, d)
			pod := spec.Template.Spec
			for k, v := range spec.Selector.MatchLabels {
				if spec.Template.Metadata.Labels[k] != v {
					t.Errorf("selector %s=%s does not match the pod template's labels", k, v)
				}
			}
			if len(pod.Containers) != 1 {
				t.Fatalf("want one container, got %d", len(pod.Containers))
			}
			c := pod.Containers[0]
			stage := strings.TrimPrefix(name, "jetrelay-")
			if len(c.Args) == 0 || c.Args[0] != stage {
				t.Errorf("args %v: want `jetrelay %s …`", c.Args, stage)
			}
			if c.Image != k8sImage {
				t.Errorf("image %q: want %q (set by kustomization images)", c.Image, k8sImage)
			}

			// Security: non-root, read-only root, no privilege escalation.
			if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
				t.Error("want securityContext.runAsNonRoot: true")
			}
			if u := pod.SecurityContext.RunAsUser; u == nil || *u == 0 {
				t.Error("want a numeric non-root runAsUser (the image's 65532)")
			}
			sc := c.SecurityContext
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Error("want readOnlyRootFilesystem: true")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("want allowPrivilegeEscalation: false")
			}
			if !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Error("want capabilities.drop: [ALL]")
			}
			if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
				t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
			}

			// The config file: --config names the ConfigMap's key where
			// the ConfigMap is mounted.
			cfgArg := flagValue(c.Args, "--config")
			var mounted bool
			for _, vm := range c.VolumeMounts {
				for _, v := range pod.Volumes {
					if v.Name == vm.Name && v.ConfigMap != nil && v.ConfigMap.Name == k8sConfigMap &&
						vm.SubPath == "" && vm.MountPath+"/"+k8sConfigKey == cfgArg {
						mounted = true
					}
				}
			}
			if !mounted {
				t.Errorf("--config %q is not the ConfigMap %s's key %s as mounted (as a directory, so that updates arrive)", cfgArg, k8sConfigMap, k8sConfigKey)
			}
			if _, ok := cm.Data[k8sConfigKey]; !ok {
				t.Fatalf("ConfigMap has no %s", k8sConfigKey)
			}

			// The environment: literal values and Secret references that
			// exist.
			env := map[string]string{}
			for _, e := range c.Env {
				switch {
				case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
					ref := e.ValueFrom.SecretKeyRef
					v, ok := secret.StringData[ref.Key]
					if ref.Name != k8sSecret || !ok {
						t.Errorf("env %s: secretKeyRef %s/%s does not exist", e.Name, ref.Name, ref.Key)
					}
					env[e.Name] = v
				default:
					env[e.Name] = e.Value
				}
			}
			cfgFile := k8sConfigFile(t, objs)
			configCheck(t, cfgFile, env)
			cfg := loadConfig(t, cfgFile, env, nil)

			// Probes on the HTTP port of http.listen.
			httpPort := portOf(t, cfg.HTTP.Listen)
			ports := map[string]int{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			if ports["http"] != httpPort {
				t.Errorf("container port http %d: http.listen is %s", ports["http"], cfg.HTTP.Listen)
			}
			for what, pr := range map[string]struct {
				probe *k8sProbe
				path  string
			}{"readiness": {c.ReadinessProbe, "/readyz"}, "liveness": {c.LivenessProbe, "/healthz"}, "startup": {c.StartupProbe, "/healthz"}} {
				if pr.probe == nil || pr.probe.HTTPGet == nil || pr.probe.HTTPGet.Path != pr.path || pr.probe.HTTPGet.Port != "http" {
					t.Errorf("%s probe: want httpGet %s on port http", what, pr.path)
				}
			}
			// The startup probe must outlast provisioning (up to 2 minutes
			// before the HTTP endpoints come up).
			if p := c.StartupProbe; p != nil && time.Duration(p.PeriodSeconds*p.FailureThreshold)*time.Second < 2*time.Minute {
				t.Errorf("startup probe allows %ds: want at least 2 minutes", p.PeriodSeconds*p.FailureThreshold)
			}

			// Stop: the pod's grace period covers the preStop pause and the
			// stage's shutdown grace.
			grace := cfg.Ingress.ShutdownGrace.D()
			if stage == "delivery" {
				grace = cfg.Delivery.ShutdownGrace.D()
			}
			var pause time.Duration
			if ps := c.Lifecycle.PreStop; ps != nil && ps.Sleep != nil {
				pause = time.Duration(ps.Sleep.Seconds) * time.Second
			}
			if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second < pause+grace+stopMargin {
				t.Errorf("terminationGracePeriodSeconds: want at least %s (preStop %s + %s.shutdown_grace %s + %s)", pause+grace+stopMargin, pause, stage, grace, stopMargin)
			}

			switch stage {
			case "ingress":
				if spec.Replicas == nil || *spec.Replicas != 2 {
					t.Error("want 2 ingress replicas")
				}
				if ports["smtp"] != portOf(t, cfg.Ingress.Listen[0]) {
					t.Errorf("container port smtp %d: ingress.listen is %v", ports["smtp"], cfg.Ingress.Listen)
				}
			case "delivery":
				if spec.Replicas != nil {
					t.Error("the autoscaler owns the delivery replicas: spec.replicas must be absent")
				}
				if _, ok := env["JETRELAY_DELIVERY_SMARTHOST_PASSWORD"]; !ok {
					t.Error("want JETRELAY_DELIVERY_SMARTHOST_PASSWORD from the Secret")
				}
			}
			if _, ok := env["JETRELAY_BROKER_PASSWORD"]; !ok {
				t.Error("want JETRELAY_BROKER_PASSWORD from the Secret")
			}
		})
	}
}

func TestKubernetesServiceAndHPA(t *testing.T) {
	isolateEnv(t)
	_, objs := k8sManifests(t)
	ing := decodeSpec[deploymentSpec](t, findObject(t, objs, "Deployment", k8sIngress))
	cfg := loadConfig(t, k8sConfigFile(t, objs), nil, nil)

	var svc *serviceSpec
	for _, o := range objs {
		if o.Kind != "Service" {
			continue
		}
		s := decodeSpec[serviceSpec](t, o)
		match := len(s.Selector) > 0
		for k, v := range s.Selector {
			if ing.Template.Metadata.Labels[k] != v {
				match = false
			}
		}
		if match {
			svc = &s
		}
	}
	if svc == nil {
		t.Fatal("no Service selects the ingress pods")
	}
	if svc.Type != "LoadBalancer" && svc.Type != "ClusterIP" && svc.Type != "" {
		t.Errorf("Service type %q", svc.Type)
	}
	if svc.Type == "LoadBalancer" && svc.ExternalTrafficPolicy != "Local" {
		t.Error("a LoadBalancer Service needs externalTrafficPolicy: Local: relay_networks decides by the client's source address")
	}
	ok := false
	for _, p := range svc.Ports {
		if p.Port != 25 {
			continue
		}
		target := 0
		switch tp := p.TargetPort.(type) {
		case int:
			target = tp
		case string:
			for _, cp := range ing.Template.Spec.Containers[0].Ports {
				if cp.Name == tp {
					target = cp.ContainerPort
				}
			}
		}
		ok = target == portOf(t, cfg.Ingress.Listen[0])
	}
	if !ok {
		t.Errorf("want Service port 25 → the ingress's %s", cfg.Ingress.Listen[0])
	}

	// The CPU-only HPA, the alternative for clusters without KEDA.
	hpaObj := findObject(t, k8sFileObjects(t, "delivery-hpa.yaml"), "HorizontalPodAutoscaler", k8sDelivery)
	if hpaObj.APIVersion != "autoscaling/v2" {
		t.Errorf("HPA apiVersion %q: want autoscaling/v2", hpaObj.APIVersion)
	}
	hpa := decodeSpec[hpaSpec](t, hpaObj)
	if r := hpa.ScaleTargetRef; r.Kind != "Deployment" || r.Name != k8sDelivery || r.APIVersion != "apps/v1" {
		t.Errorf("HPA scaleTargetRef %+v: want the delivery Deployment", r)
	}
	if hpa.MinReplicas < 2 || hpa.MaxReplicas < hpa.MinReplicas {
		t.Errorf("HPA replicas %d..%d", hpa.MinReplicas, hpa.MaxReplicas)
	}
	if !slices.ContainsFunc(hpa.Metrics, func(m hpaMetric) bool {
		return m.Type == "Resource" && m.Resource != nil && m.Resource.Name == "cpu"
	}) {
		t.Error("HPA: want a CPU resource metric")
	}
	// CPU utilisation is measured against requests.
	del := decodeSpec[deploymentSpec](t, findObject(t, objs, "Deployment", k8sDelivery))
	if del.Template.Spec.Containers[0].Resources.Requests["cpu"] == "" {
		t.Error("the delivery pods need a CPU request for the HPA")
	}
}

// TestNATSHelmValues checks the values for the nats-io/nats chart against
// the relay's ConfigMap and Secret.
func TestNATSHelmValues(t *testing.T) {
	isolateEnv(t)
	var v map[string]any
	decodeYAMLInto(t, deployPath(t, "kubernetes", natsValues), &v)
	_, objs := k8sManifests(t)
	secret := findObject(t, objs, "Secret", k8sSecret)
	cfg := loadConfig(t, k8sConfigFile(t, objs), nil, nil)

	checks := []struct {
		path []string
		want any
	}{
		{[]string{"config", "cluster", "enabled"}, true},
		{[]string{"config", "cluster", "replicas"}, cfg.Broker.Replicas},
		{[]string{"config", "jetstream", "enabled"}, true},
		{[]string{"config", "jetstream", "fileStore", "enabled"}, true},
		{[]string{"config", "jetstream", "fileStore", "pvc", "enabled"}, true},
		{[]string{"config", "jetstream", "memoryStore", "enabled"}, false},
		{[]string{"config", "jetstream", "merge", "sync_interval"}, "always"},
		{[]string{"config", "merge", "authorization", "user"}, cfg.Broker.User},
		{[]string{"config", "merge", "authorization", "password"}, "<< $JETRELAY_BROKER_PASSWORD >>"},
	}
	for _, c := range checks {
		if got := dig(v, c.path...); got != c.want {
			t.Errorf("%s: %v, want %v", strings.Join(c.path, "."), got, c.want)
		}
	}
	if cfg.Broker.Replicas != 3 {
		t.Errorf("broker.replicas %d in the ConfigMap: want 3", cfg.Broker.Replicas)
	}
	if tag := digString(v, "container", "image", "tag"); !versionAtLeast(tag, 2, 12) {
		t.Errorf("container.image.tag %q: want 2.12 or newer (message schedules)", tag)
	}
	ref := dig(v, "container", "env", "JETRELAY_BROKER_PASSWORD", "valueFrom", "secretKeyRef")
	name, key := digString(ref, "name"), digString(ref, "key")
	if _, ok := secret.StringData[key]; name != k8sSecret || !ok {
		t.Errorf("container.env.JETRELAY_BROKER_PASSWORD: secretKeyRef %s/%s does not exist", name, key)
	}
	if p := digString(v, "config", "cluster", "routeURLs", "password"); p != "" && !strings.Contains(p, "CHANGE-ME") {
		t.Errorf("config.cluster.routeURLs.password %q: want a placeholder", p)
	}
	// The relay reaches the release's client Service.
	for _, u := range cfg.Broker.URL {
		if !strings.HasPrefix(u, "nats://"+natsRelease+":") && !strings.HasPrefix(u, "nats://"+natsRelease+".") {
			t.Errorf("broker.url %s: want the client Service of the %q release", u, natsRelease)
		}
	}
}
