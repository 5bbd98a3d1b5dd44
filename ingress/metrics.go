package ingress

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the ingress's Prometheus series. The zero value (nil
// fields) is never used: newMetrics always fills every field.
type metrics struct {
	sessions       prometheus.Counter
	active         prometheus.Gauge
	rejects        *prometheus.CounterVec
	accepted       prometheus.Counter
	acceptedBytes  prometheus.Counter
	publishSeconds prometheus.Histogram
	tls            *prometheus.CounterVec
	auth           *prometheus.CounterVec
	denied         prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sessions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetrelay_smtp_sessions_total", Help: "SMTP connections accepted by the ingress.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jetrelay_smtp_sessions_active", Help: "SMTP connections open at the ingress.",
		}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetrelay_smtp_rejects_total", Help: "Commands or connections the ingress refused, by reason.",
		}, []string{"reason"}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetrelay_messages_accepted_total", Help: "Messages answered with 250 after the broker stored them.",
		}),
		acceptedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetrelay_messages_accepted_bytes_total", Help: "Bytes of accepted messages, Received header included.",
		}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jetrelay_publish_seconds",
			Help:    "Time from the end of DATA to the broker's acknowledgement.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		tls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetrelay_tls_sessions_total", Help: "TLS sessions by direction and protocol version.",
		}, []string{"direction", "version"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetrelay_smtp_auth_total", Help: "AUTH attempts at the ingress by mechanism and result.",
		}, []string{"mechanism", "result"}),
		denied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetrelay_smtp_connections_denied_total",
			Help: "Connections refused by ingress.connection_allow / connection_deny before the banner.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.active, m.rejects, m.accepted, m.acceptedBytes, m.publishSeconds, m.auth, m.denied)
		// The TLS counter is shared with delivery in one process.
		if err := reg.Register(m.tls); err != nil {
			if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
				m.tls = are.ExistingCollector.(*prometheus.CounterVec)
			}
		}
	}
	return m
}

func (m *metrics) sessionOpened()         { m.sessions.Inc(); m.active.Inc() }
func (m *metrics) sessionClosed()         { m.active.Dec() }
func (m *metrics) rejected(reason string) { m.rejects.WithLabelValues(reason).Inc() }

// connectionDenied counts a connection refused by connection control, in
// its own series and among the rejects (reason "connection_denied").
func (m *metrics) connectionDenied() {
	m.denied.Inc()
	m.rejected("connection_denied")
}
func (m *metrics) queued(size int64, publish time.Duration) {
	m.accepted.Inc()
	m.acceptedBytes.Add(float64(size))
	m.publishSeconds.Observe(publish.Seconds())
}
