package outbox

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// relayMetrics are a Relay's collectors.
type relayMetrics struct {
	pending    prometheus.Gauge
	oldestAge  prometheus.Gauge
	published  prometheus.Counter
	duplicates prometheus.Counter
	errors     prometheus.Counter
}

func newRelayMetrics() *relayMetrics {
	return &relayMetrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_outbox_pending_rows",
			Help: "Committed rows waiting in the outbox table (a batch being relayed included), as last measured.",
		}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_outbox_oldest_row_age_seconds",
			Help: "Age of the oldest outbox row as last measured; 0 when the table is empty.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "paystream_outbox_published_total",
			Help: "Outbox rows the stream stored (rate() gives published per second).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "paystream_outbox_duplicates_total",
			Help: "Outbox rows the stream acknowledged as duplicates of a stored Nats-Msg-Id (republished after a failed round).",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "paystream_outbox_failed_batches_total",
			Help: "Batches rolled back because a publish, the database or the delete failed.",
		}),
	}
}

func (m *relayMetrics) register(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.pending, m.oldestAge, m.published, m.duplicates, m.errors} {
		errs = append(errs, reg.Register(c))
	}
	return errors.Join(errs...)
}
