package pickup

import "github.com/prometheus/client_golang/prometheus"

// metrics are the pickup directory's series.
type metrics struct {
	queued, badmail, failed prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		queued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetrelay_pickup_files_total", Help: "Pickup directory files queued (and deleted) after the broker acknowledged them.",
		}),
		badmail: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetrelay_pickup_badmail_total", Help: "Pickup directory files moved to the badmail folder (not messages), each with a .reason file.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetrelay_pickup_enqueue_failures_total", Help: "Attempts to queue a pickup file that the broker did not acknowledge (the file stays and is tried again).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.queued, m.badmail, m.failed)
	}
	return m
}
