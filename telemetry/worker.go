package telemetry

import "github.com/prometheus/client_golang/prometheus"

// WorkerMetrics are the parts of a worker's heartbeat record (package
// fleet) that Metrics has no gauge for: identity, slots, rate limit, last
// pull and readiness. paystream_in_flight and paystream_breaker_state
// already carry the rest.
type WorkerMetrics struct {
	// Info is 1, labelled worker_id, version and host.
	Info *prometheus.GaugeVec
	// Concurrency is the worker's slots (PAYSTREAM_CONCURRENCY).
	Concurrency prometheus.Gauge
	// RateLimit is gateway calls per second (0 unlimited).
	RateLimit prometheus.Gauge
	// LastPull is the Unix time of the last successful pull request.
	LastPull prometheus.Gauge
	// Ready is 1 when the worker is ready, else 0.
	Ready prometheus.Gauge
	// DependencyUp is 1 per dependency (nats, database, jetstream,
	// gateway) that is up, 0 for the one that fails: what /readyz names.
	DependencyUp *prometheus.GaugeVec
}

// NewWorker creates the worker gauges and registers them on reg.
func NewWorker(reg prometheus.Registerer) *WorkerMetrics {
	m := &WorkerMetrics{
		Info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "paystream_worker_info", Help: "1, labelled with the worker's id, version and host.",
		}, []string{"worker_id", "version", "host"}),
		Concurrency: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_worker_concurrency", Help: "Payments this worker may process at once.",
		}),
		RateLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_worker_rate_limit", Help: "Gateway calls per second allowed to this worker; 0 is unlimited.",
		}),
		LastPull: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_worker_last_pull_timestamp_seconds", Help: "Unix time of the worker's last successful pull request.",
		}),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_worker_ready", Help: "1 when the worker is ready (as /readyz), else 0.",
		}),
		DependencyUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "paystream_dependency_up",
			Help: "1 when the dependency is up, 0 when it fails: nats (connected), database (answers a ping), " +
				"jetstream (consumer bound, outcome and dead-letter publishes stored), gateway (credentials taken, breaker not open).",
		}, []string{"dependency"}),
	}
	reg.MustRegister(m.Info, m.Concurrency, m.RateLimit, m.LastPull, m.Ready, m.DependencyUp)
	return m
}
