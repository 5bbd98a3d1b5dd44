package deploytest

import (
	"net"
	"slices"
	"strconv"
	"testing"

	"github.com/jetrelay/jetrelay/contracts"
)

// scaledObjectSpec is the part of a KEDA ScaledObject the tests look at.
type scaledObjectSpec struct {
	ScaleTargetRef struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Name       string `yaml:"name"`
	} `yaml:"scaleTargetRef"`
	PollingInterval int  `yaml:"pollingInterval"`
	MinReplicaCount *int `yaml:"minReplicaCount"`
	MaxReplicaCount *int `yaml:"maxReplicaCount"`
	Advanced        struct {
		HorizontalPodAutoscalerConfig struct {
			Behavior map[string]any `yaml:"behavior"`
		} `yaml:"horizontalPodAutoscalerConfig"`
	} `yaml:"advanced"`
	Triggers []struct {
		Type       string            `yaml:"type"`
		MetricType string            `yaml:"metricType"`
		Metadata   map[string]string `yaml:"metadata"`
	} `yaml:"triggers"`
}

// TestKubernetesScaledObject: the delivery workers scale with KEDA on the
// lag of the delivery consumer of every queue shard (one nats-jetstream
// trigger per stream of broker.queue_shards, names from contracts), read
// from the monitoring port the NATS Helm values enable, in the account
// the relay's user is in; CPU is a trigger of the same ScaledObject, not a
// second HPA on the Deployment.
func TestKubernetesScaledObject(t *testing.T) {
	isolateEnv(t)
	_, objs := k8sManifests(t)
	cfg := loadConfig(t, k8sConfigFile(t, objs), nil, nil)
	var values map[string]any
	decodeYAMLInto(t, deployPath(t, "kubernetes", natsValues), &values)

	o := findObject(t, objs, "ScaledObject", k8sDelivery)
	if o.APIVersion != "keda.sh/v1alpha1" {
		t.Errorf("ScaledObject apiVersion %q: want keda.sh/v1alpha1", o.APIVersion)
	}
	so := decodeSpec[scaledObjectSpec](t, o)
	if r := so.ScaleTargetRef; r.Name != k8sDelivery || (r.Kind != "" && r.Kind != "Deployment") || (r.APIVersion != "" && r.APIVersion != "apps/v1") {
		t.Errorf("scaleTargetRef %+v: want the delivery Deployment", r)
	}
	// KEDA makes the HPA: none of ours may target the same Deployment.
	for _, x := range objs {
		if x.Kind == "HorizontalPodAutoscaler" && decodeSpec[hpaSpec](t, x).ScaleTargetRef.Name == k8sDelivery {
			t.Errorf("%s: HorizontalPodAutoscaler %s targets %s too; KEDA's HPA and it would fight", x.file, x.Metadata.Name, k8sDelivery)
		}
	}
	// The same bounds as the CPU-only alternative.
	hpa := decodeSpec[hpaSpec](t, findObject(t, k8sFileObjects(t, "delivery-hpa.yaml"), "HorizontalPodAutoscaler", k8sDelivery))
	if so.MinReplicaCount == nil || so.MaxReplicaCount == nil || *so.MinReplicaCount != hpa.MinReplicas || *so.MaxReplicaCount != hpa.MaxReplicas {
		t.Errorf("replica counts %v..%v: want minReplicaCount and maxReplicaCount, the same as delivery-hpa.yaml's %d..%d",
			so.MinReplicaCount, so.MaxReplicaCount, hpa.MinReplicas, hpa.MaxReplicas)
	}
	if dig(so.Advanced.HorizontalPodAutoscalerConfig.Behavior, "scaleDown", "stabilizationWindowSeconds") == nil {
		t.Error("advanced.horizontalPodAutoscalerConfig.behavior.scaleDown: want a stabilization window (workers stop slowly, mail comes in waves)")
	}

	// Where KEDA reads the lag: the headless Service of the NATS release,
	// whose pods it asks by name on a cluster, on the monitoring port.
	if dig(values, "config", "monitor", "enabled") != true {
		t.Errorf("%s: config.monitor.enabled must be true: KEDA reads /jsz on the monitoring port", natsValues)
	}
	monitorPort := 8222
	if p, ok := dig(values, "config", "monitor", "port").(int); ok {
		monitorPort = p
	}
	wantEndpoint := net.JoinHostPort(natsRelease+"-headless."+k8sNamespace+".svc.cluster.local", strconv.Itoa(monitorPort))
	// The relay's user is in the global account unless the values define
	// accounts.
	if dig(values, "config", "merge", "accounts") != nil {
		t.Fatalf("%s defines accounts: the triggers' account must follow", natsValues)
	}

	shards := cfg.Broker.QueueShards
	if shards < 1 {
		t.Fatalf("broker.queue_shards %d", shards)
	}
	var streams []string
	cpu := false
	for i, tr := range so.Triggers {
		switch tr.Type {
		case "nats-jetstream":
			m := tr.Metadata
			streams = append(streams, m["stream"])
			if m["natsServerMonitoringEndpoint"] != wantEndpoint {
				t.Errorf("trigger %d: natsServerMonitoringEndpoint %q, want %q", i, m["natsServerMonitoringEndpoint"], wantEndpoint)
			}
			if m["account"] != "$G" {
				t.Errorf("trigger %d: account %q, want \"$G\" (the global account of authorization.user)", i, m["account"])
			}
			if m["consumer"] != contracts.ConsumerDelivery {
				t.Errorf("trigger %d: consumer %q, want %q (the workers' durable consumer)", i, m["consumer"], contracts.ConsumerDelivery)
			}
			if u := m["useHttps"]; u != "" && u != "false" {
				t.Errorf("trigger %d: useHttps %q: the monitoring port has no TLS in %s", i, u, natsValues)
			}
			lag, err := strconv.Atoi(m["lagThreshold"])
			if err != nil || lag < 1 {
				t.Errorf("trigger %d: lagThreshold %q: want a positive whole number", i, m["lagThreshold"])
			}
			// The lag counts the jobs a worker holds in flight: one worker
			// busy on its own must not ask for another.
			if c := cfg.Delivery.Concurrency; lag*shards < c {
				t.Errorf("trigger %d: lagThreshold %d × %d shards < delivery.concurrency %d: a busy worker alone would ask for more", i, lag, shards, c)
			}
		case "cpu":
			cpu = true
			v, err := strconv.Atoi(tr.Metadata["value"])
			if tr.MetricType != "Utilization" || err != nil || v < 1 || v > 100 {
				t.Errorf("trigger %d: cpu %s %q: want metricType Utilization and a value in percent", i, tr.MetricType, tr.Metadata["value"])
			}
		default:
			t.Errorf("trigger %d: type %q: not one the tests know", i, tr.Type)
		}
	}
	var want []string
	for i := range shards {
		want = append(want, contracts.QueueStream(i))
	}
	slices.Sort(streams)
	if !slices.Equal(streams, want) {
		t.Errorf("nats-jetstream triggers for streams %v: want one per queue shard, %v (broker.queue_shards %d)", streams, want, shards)
	}
	if !cpu {
		t.Error("want a cpu trigger, the fallback when the lag cannot be read")
	}
	del := decodeSpec[deploymentSpec](t, findObject(t, objs, "Deployment", k8sDelivery))
	if del.Template.Spec.Containers[0].Resources.Requests["cpu"] == "" {
		t.Error("the delivery pods need a CPU request for the cpu trigger")
	}
}
