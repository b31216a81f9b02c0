package telemetry

import "github.com/prometheus/client_golang/prometheus"

// FleetMetrics are gauges of what the workers share — the consumer and the
// payments table — that every worker reports alike, so that an alert sees
// them while any worker is scraped. Alert rules take max() across workers
// (deploy/observability/alerts.yml).
type FleetMetrics struct {
	// ConsumerPending is the shared consumer's messages not yet delivered.
	ConsumerPending prometheus.Gauge
	// ConsumerAckPending is its messages delivered and not yet acknowledged.
	ConsumerAckPending prometheus.Gauge
	// ConsumerRedelivered is its messages delivered more than once and not
	// yet acknowledged.
	ConsumerRedelivered prometheus.Gauge
	// ConsumerOldestUnacked is the age of the oldest message not yet
	// acknowledged, in seconds; 0 when there is none.
	ConsumerOldestUnacked prometheus.Gauge
	// StuckRows is the rows in processing whose lease ended longer ago than
	// the sweeper should take to bring them back.
	StuckRows prometheus.Gauge
}

// NewFleet creates the fleet gauges and registers them on reg.
func NewFleet(reg prometheus.Registerer) *FleetMetrics {
	m := &FleetMetrics{
		ConsumerPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_consumer_pending_messages", Help: "Messages of the shared consumer not yet delivered.",
		}),
		ConsumerAckPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_consumer_ack_pending_messages", Help: "Messages of the shared consumer delivered and not yet acknowledged.",
		}),
		ConsumerRedelivered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_consumer_redelivered_messages", Help: "Messages of the shared consumer redelivered and not yet acknowledged.",
		}),
		ConsumerOldestUnacked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_consumer_oldest_unacked_seconds", Help: "Age of the shared consumer's oldest message not yet acknowledged; 0 when none.",
		}),
		StuckRows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_stuck_processing_rows", Help: "Rows in processing whose lease ended longer ago than the sweeper's grace and interval.",
		}),
	}
	reg.MustRegister(m.ConsumerPending, m.ConsumerAckPending, m.ConsumerRedelivered, m.ConsumerOldestUnacked, m.StuckRows)
	return m
}
