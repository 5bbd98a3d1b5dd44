package delivery

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	deliveries *prometheus.CounterVec
	latency    prometheus.Histogram
	dead       *prometheus.CounterVec
	tls        *prometheus.CounterVec
	bytes      prometheus.Counter
	folded     *prometheus.CounterVec
	dkim       *prometheus.CounterVec
}

func (m *metrics) deadLetter(reason string) { m.dead.WithLabelValues(reason).Inc() }

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetrelay_deliveries_total",
			Help: "Delivery attempts per destination group, by result (delivered, deferred, failed, mixed) and reply class.",
		}, []string{"result", "class"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jetrelay_delivery_latency_seconds",
			Help:    "Time from acceptance at the ingress to delivery at the next hop, per recipient.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400},
		}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetrelay_dead_letters_total", Help: "Dead letters written, by reason.",
		}, []string{"reason"}),
		tls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetrelay_tls_sessions_total", Help: "TLS sessions by direction and protocol version.",
		}, []string{"direction", "version"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetrelay_delivery_bytes_total", Help: "Message bytes written to next hops (with SMTP dot-stuffing).",
		}),
		folded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetrelay_messages_folded_total",
			Help: "Messages sent with lines made to fit 998 octets, by how: headers (header lines folded), broken (body lines broken), quoted_printable (a text body re-encoded).",
		}, []string{"how"}),
		dkim: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetrelay_dkim_signatures_total",
			Help: "Messages the SMTP transport signed with DKIM, or did not, by signing domain (\"none\" when no key applied) and result: signed, no_key, error (sent unsigned).",
		}, []string{"domain", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.latency, m.dead, m.bytes, m.folded, m.dkim)
		// The TLS counter is shared with the ingress in one process.
		if err := reg.Register(m.tls); err != nil {
			if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
				m.tls = are.ExistingCollector.(*prometheus.CounterVec)
			}
		}
	}
	return m
}
