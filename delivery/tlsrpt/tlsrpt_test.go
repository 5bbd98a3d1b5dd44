package tlsrpt_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/delivery/tlsrpt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

func provisioned(t *testing.T) *broker.Client {
	t.Helper()
	ctx := context.Background()
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	cr := e.Credentials()
	b, err := broker.Connect(ctx, broker.ConnectOptions{Name: "test", URLs: []string{cr.URL}, User: cr.User, Password: cr.Password}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.Provision(ctx, broker.Settings{DedupeWindow: time.Minute, AckWait: 10 * time.Second, QueueShards: 1}); err != nil {
		t.Fatal(err)
	}
	return b
}

const policy = "version: STSv1\r\nmode: enforce\r\nmx: mx.a.test\r\nmax_age: 86400\r\n"

func session(domain, result string) tlsrpt.Session {
	return tlsrpt.Session{Domain: domain, Mode: "enforce", Policy: policy, MX: []string{"mx.a.test"}, Result: result, MXHost: "mx.a.test", IP: "192.0.2.1"}
}

// The metric counts per policy domain, mode and result, and names at
// most MaxDomains domains (the rest are _other).
func TestMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := tlsrpt.New(tlsrpt.Options{Registerer: reg, MaxDomains: 2})
	r.Record(session("a.test", tlsrpt.Success))
	r.Record(session("a.test", tlsrpt.Success))
	r.Record(session("b.test", tlsrpt.StartTLSNotSupported))
	r.Record(tlsrpt.Session{Domain: "c.test", Result: tlsrpt.STSPolicyFetchError})
	r.Record(session("d.test", tlsrpt.CertificateNotTrusted))
	r.Record(session("a.test", tlsrpt.ValidationFailure)) // a named domain stays named
	want := map[string]float64{
		"a.test enforce success":                 2,
		"a.test enforce validation-failure":      1,
		"b.test enforce starttls-not-supported":  1,
		"_other none sts-policy-fetch-error":     1,
		"_other enforce certificate-not-trusted": 1,
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "jetrelay_tlsrpt_sessions_total" {
		t.Fatalf("gather: %v %d", err, len(mfs))
	}
	got := map[string]float64{}
	for _, m := range mfs[0].GetMetric() {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		got[l["policy_domain"]+" "+l["mode"]+" "+l["result"]] = m.GetCounter().GetValue()
	}
	if len(got) != len(want) {
		t.Fatalf("series %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("series %v, want %v", got, want)
		}
	}
}

// Two workers' counts add up in the broker; once the UTC day is over
// (and two flush intervals more) exactly one of them writes the day's
// RFC 8460 report for each policy domain, and not again.
func TestDailyReport(t *testing.T) {
	b := provisioned(t)
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Date(2026, 5, 1, 23, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	worker := func(holder string) *tlsrpt.Recorder {
		return tlsrpt.New(tlsrpt.Options{Store: b, Dir: dir, Organization: "relay.example", Contact: "postmaster@relay.example",
			Holder: holder, FlushInterval: time.Minute, Now: clock})
	}
	w1, w2 := worker("w1"), worker("w2")
	if n, err := w1.WriteDue(ctx); n != 0 || err != nil {
		t.Fatalf("empty bucket: %d written, %v", n, err)
	}
	for i := 0; i < 3; i++ {
		w1.Record(session("a.test", tlsrpt.Success))
	}
	w2.Record(session("a.test", tlsrpt.Success))
	w2.Record(session("a.test", tlsrpt.CertificateHostMismatch))
	w2.Record(session("a.test", tlsrpt.CertificateHostMismatch))
	w1.Record(session("b.test", tlsrpt.StartTLSNotSupported))
	for _, w := range []*tlsrpt.Recorder{w1, w2} {
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if n, err := w.WriteDue(ctx); n != 0 || err != nil {
			t.Fatalf("during the day: %d written, %v", n, err)
		}
	}
	// Just after midnight the other workers may not have flushed yet.
	now = time.Date(2026, 5, 2, 0, 1, 0, 0, time.UTC)
	if n, err := w1.WriteDue(ctx); n != 0 || err != nil {
		t.Fatalf("one minute after midnight: %d written, %v", n, err)
	}
	now = time.Date(2026, 5, 2, 0, 3, 0, 0, time.UTC)
	w2.Record(session("a.test", tlsrpt.Success)) // the new day's, not in the report
	n1, err := w1.WriteDue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n2, err := w2.WriteDue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n1+n2 != 2 {
		t.Fatalf("reports written: %d + %d, want 2 (one per domain)", n1, n2)
	}
	if n, _ := w1.WriteDue(ctx); n != 0 {
		t.Fatalf("written again: %d", n)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC).Unix()
	name := filepath.Join(dir, "relay.example!a.test!"+itoa(start)+"!"+itoa(start+86399)+".json")
	if len(files) != 2 || (files[0] != name && files[1] != name) {
		t.Fatalf("files %q, want %q and b.test's", files, name)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Org       string `json:"organization-name"`
		Contact   string `json:"contact-info"`
		ID        string `json:"report-id"`
		DateRange struct {
			Start time.Time `json:"start-datetime"`
			End   time.Time `json:"end-datetime"`
		} `json:"date-range"`
		Policies []struct {
			Policy struct {
				Type   string   `json:"policy-type"`
				String []string `json:"policy-string"`
				Domain string   `json:"policy-domain"`
				MX     []string `json:"mx-host"`
			} `json:"policy"`
			Summary struct {
				Success int64 `json:"total-successful-session-count"`
				Failure int64 `json:"total-failure-session-count"`
			} `json:"summary"`
			Details []struct {
				Type  string `json:"result-type"`
				MX    string `json:"receiving-mx-hostname"`
				IP    string `json:"receiving-ip"`
				Count int64  `json:"failed-session-count"`
			} `json:"failure-details"`
		} `json:"policies"`
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("%v:\n%s", err, data)
	}
	if rep.Org != "relay.example" || rep.Contact != "postmaster@relay.example" || rep.ID == "" ||
		rep.DateRange.Start.Unix() != start || rep.DateRange.End.Unix() != start+86399 || len(rep.Policies) != 1 {
		t.Fatalf("report:\n%s", data)
	}
	p := rep.Policies[0]
	if p.Policy.Type != "sts" || p.Policy.Domain != "a.test" || strings.Join(p.Policy.String, "|") != "version: STSv1|mode: enforce|mx: mx.a.test|max_age: 86400" ||
		strings.Join(p.Policy.MX, ",") != "mx.a.test" || p.Summary.Success != 4 || p.Summary.Failure != 2 ||
		len(p.Details) != 1 || p.Details[0].Type != "certificate-host-mismatch" || p.Details[0].MX != "mx.a.test" || p.Details[0].IP != "192.0.2.1" || p.Details[0].Count != 2 {
		t.Fatalf("report of a.test:\n%s", data)
	}
}

// A report's file name cannot leave the directory, whatever the
// organization or domain holds.
func TestFileName(t *testing.T) {
	rep, err := tlsrpt.BuildReport(contracts.TLSReportCounts{Day: "2026-05-01", Domain: "../a!b.test"}, "org/x\\y!z", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := tlsrpt.FileName(rep); got != "org_x_y_z!.._a_b.test!1777593600!1777679999.json" {
		t.Fatalf("FileName = %q", got)
	}
	if _, err := tlsrpt.BuildReport(contracts.TLSReportCounts{Day: "May 1"}, "o", ""); err == nil {
		t.Fatal("a bad day was accepted")
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
