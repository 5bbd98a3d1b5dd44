package deploytest

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// jetrelayMetrics are the metric families jetrelay exports (ingress/,
// delivery/ and broker/metrics.go), with whether each is a histogram
// (queried through its _bucket, _sum and _count series), and those of
// internal/queuectl/shape.go. The dashboard
// may use only these; TestMetricListMatchesSource keeps the list honest.
var jetrelayMetrics = map[string]bool{
	"jetrelay_smtp_sessions_total":           false,
	"jetrelay_smtp_sessions_active":          false,
	"jetrelay_smtp_rejects_total":            false,
	"jetrelay_smtp_connections_denied_total": false,
	"jetrelay_messages_accepted_total":       false,
	"jetrelay_messages_accepted_bytes_total": false,
	"jetrelay_publish_seconds":               true,
	"jetrelay_tls_sessions_total":            false,
	"jetrelay_smtp_auth_total":               false,
	"jetrelay_deliveries_total":              false,
	"jetrelay_delivery_latency_seconds":      true,
	"jetrelay_dead_letters_total":            false,
	"jetrelay_delivery_bytes_total":          false,
	"jetrelay_outbound_auth_ok":              false,
	"jetrelay_outbound_auth_failures_total":  false,
	"jetrelay_messages_folded_total":         false,
	"jetrelay_dkim_signatures_total":         false,
	"jetrelay_tlsrpt_sessions_total":         false,
	"jetrelay_queue_ready":                   false,
	"jetrelay_queue_in_flight":               false,
	"jetrelay_queue_scheduled_retries":       false,
	"jetrelay_dead_letters_stored":           false,
	"jetrelay_body_store_bytes":              false,
	"jetrelay_broker_up":                     false,
	// pickup/metrics.go: the pickup directory
	"jetrelay_pickup_files_total":            false,
	"jetrelay_pickup_badmail_total":          false,
	"jetrelay_pickup_enqueue_failures_total": false,
	// broker/metrics.go and internal/queuectl/shape.go: the queue's shape
	"jetrelay_queue_shard_jobs":                 false,
	"jetrelay_queue_oldest_message_age_seconds": false,
	"jetrelay_queue_domain_recipients":          false,
	"jetrelay_queue_shape_complete":             false,
}

var metricName = regexp.MustCompile(`\bjetrelay_[a-z0-9_]+`)

// TestMetricListMatchesSource compares jetrelayMetrics with the names
// registered in the source, so that a renamed metric fails here and not
// as an empty panel.
func TestMetricListMatchesSource(t *testing.T) {
	src := map[string]bool{}
	quoted := regexp.MustCompile(`"(jetrelay_[a-z0-9_]+)"`)
	for _, f := range []string{"ingress/metrics.go", "delivery/metrics.go", "delivery/health.go", "broker/metrics.go", "internal/queuectl/shape.go", "delivery/tlsrpt/tlsrpt.go", "pickup/metrics.go"} {
		for _, m := range quoted.FindAllStringSubmatch(string(readFile(t, filepath.Join(repoRoot(t), filepath.FromSlash(f)))), -1) {
			src[m[1]] = true
		}
	}
	for _, name := range sortedKeys(src) {
		if _, ok := jetrelayMetrics[name]; !ok {
			t.Errorf("%s is exported but not in jetrelayMetrics (add it, and a panel)", name)
		}
	}
	for _, name := range sortedKeys(jetrelayMetrics) {
		if !src[name] {
			t.Errorf("%s is in jetrelayMetrics but no longer in the source", name)
		}
	}
}

type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's panels
}

type grafanaDashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Type       string `json:"type"`
			Name       string `json:"name"`
			Query      any    `json:"query"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

func TestGrafanaDashboard(t *testing.T) {
	var d grafanaDashboard
	if err := json.Unmarshal(readFile(t, deployPath(t, "grafana", "jetrelay-dashboard.json")), &d); err != nil {
		t.Fatal(err)
	}
	if d.Title == "" || d.UID == "" {
		t.Error("want a title and a stable uid")
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want a current one (~39)", d.SchemaVersion)
	}
	var dsVar string
	var exprs []string
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && v.Query == "prometheus" {
			dsVar = v.Name
		}
		exprs = append(exprs, v.Definition)
	}
	if dsVar == "" {
		t.Fatal("want a Prometheus datasource variable")
	}

	var panels []grafanaPanel
	for _, p := range d.Panels {
		panels = append(panels, p)
		panels = append(panels, p.Panels...)
	}
	ids := map[int]bool{}
	for _, p := range panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W < 1 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H < 1 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || len(p.Targets) == 0 {
			t.Errorf("panel %d: want a title and at least one query", p.ID)
		}
		if p.Datasource == nil || p.Datasource.UID != "${"+dsVar+"}" {
			t.Errorf("panel %q: datasource must be the ${%s} variable", p.Title, dsVar)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q: empty query %s", p.Title, tg.RefID)
			}
			exprs = append(exprs, tg.Expr)
			if strings.Contains(tg.Expr, "_bucket") && !strings.Contains(tg.Expr, "histogram_quantile(") {
				t.Errorf("panel %q: %s: buckets belong inside histogram_quantile", p.Title, tg.Expr)
			}
		}
	}

	used := map[string]bool{}
	for _, e := range exprs {
		for _, name := range metricName.FindAllString(e, -1) {
			family := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suffix); ok && jetrelayMetrics[base] {
					family = base
				}
			}
			if _, ok := jetrelayMetrics[family]; !ok {
				t.Errorf("query %q uses %s, which jetrelay does not export", e, name)
				continue
			}
			if jetrelayMetrics[family] && family == name {
				t.Errorf("query %q uses the histogram %s without _bucket/_sum/_count", e, name)
			}
			used[family] = true
		}
	}
	for _, name := range sortedKeys(jetrelayMetrics) {
		if !used[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
	if !slices.ContainsFunc(exprs, func(e string) bool { return strings.Contains(e, "histogram_quantile(0.99") }) {
		t.Error("want p99 latency panels")
	}
}
