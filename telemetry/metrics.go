// Package telemetry holds the Prometheus collectors of a worker process. One
// Metrics value is created per process (or per test) with the registerer it
// should register on; there is no global registry.
//
// Label values come from the vocabulary in package payment, never from a
// list kept here: outcome is a payment.Verdict, reason a
// payment.DeadLetterReason, and a gateway call's result is succeeded,
// declined, a payment.FailureClass, breaker_open or canceled. New registers
// every verdict and reason up front, so that a rate over a label that has not
// happened yet reads 0 rather than nothing.
package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/paystream/paystream/payment"
)

// Metrics is the set of worker collectors. A nil *Metrics is not valid; use
// New(prometheus.NewRegistry()) in tests that do not look at metrics.
type Metrics struct {
	// Messages counts processed deliveries by outcome: the name of a
	// payment.Verdict.
	Messages *prometheus.CounterVec
	// Duration observes the time spent processing one delivery, by outcome.
	Duration *prometheus.HistogramVec
	// InFlight is the number of deliveries being processed.
	InFlight prometheus.Gauge
	// GatewayCalls counts gateway calls by result: succeeded, declined, the
	// name of a payment.FailureClass, breaker_open or canceled.
	GatewayCalls *prometheus.CounterVec
	// GatewayDuration observes gateway call latency.
	GatewayDuration prometheus.Histogram
	// BreakerState is 0 closed, 1 half-open, 2 open.
	BreakerState prometheus.Gauge
	// LimiterWait observes the time spent waiting on the rate limiter.
	LimiterWait prometheus.Histogram
	// DeadLetters counts dead letters published, by payment.DeadLetterReason.
	DeadLetters *prometheus.CounterVec
	// Redeliveries counts deliveries with a delivery count above one.
	Redeliveries prometheus.Counter
	// Panics counts recovered panics.
	Panics prometheus.Counter
	// Fetches counts pull requests by result (ok, empty, error).
	Fetches *prometheus.CounterVec
	// Swept counts payments re-published by the sweeper.
	Swept prometheus.Counter
	// Failovers counts payments moved from one gateway to another, by
	// from and to (docs/contract.md §5, "Several gateways").
	Failovers *prometheus.CounterVec
	// Lookups counts gateway lookups made before recording failed, by
	// result (found, not_found, error).
	Lookups *prometheus.CounterVec
	// Reconciliations counts the reconciler's lookups of unknown rows, by
	// result (succeeded, failed: the row was settled so; error: asked again
	// later).
	Reconciliations *prometheus.CounterVec
	// UnknownRows is the number of rows in status unknown, as the last
	// reconciler round of this worker saw it.
	UnknownRows prometheus.Gauge
	// UnknownOldest is the age in seconds of the oldest unknown row (0 when
	// there is none), as the last reconciler round of this worker saw it.
	UnknownOldest prometheus.Gauge
	// SettledInvalid counts stored requests that no longer validate, settled
	// failed by the sweeper.
	SettledInvalid prometheus.Counter
	// RetentionDeleted counts final rows deleted by retention, by status
	// (succeeded, declined, failed).
	RetentionDeleted *prometheus.CounterVec
	// RetentionRuns counts retention runs by result: done, busy (another
	// worker held the job) or error.
	RetentionRuns *prometheus.CounterVec

	guard *guardVecs // per-gateway guard gauges: see Guard
}

// New creates the collectors and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &Metrics{
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_messages_total", Help: "Deliveries processed, by outcome.",
		}, []string{"outcome"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "paystream_processing_duration_seconds", Help: "Time to process one delivery, by outcome.",
			Buckets: latency,
		}, []string{"outcome"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_in_flight", Help: "Deliveries being processed.",
		}),
		GatewayCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_gateway_calls_total", Help: "Gateway calls, by result.",
		}, []string{"result"}),
		GatewayDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "paystream_gateway_call_duration_seconds", Help: "Gateway call latency.",
			Buckets: latency,
		}),
		BreakerState: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_breaker_state", Help: "Gateway circuit breaker state: 0 closed, 1 half-open, 2 open.",
		}),
		LimiterWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "paystream_rate_limiter_wait_seconds", Help: "Time spent waiting on the gateway rate limiter.",
			Buckets: latency,
		}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_dead_letters_total", Help: "Dead letters published, by reason.",
		}, []string{"reason"}),
		Redeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "paystream_redeliveries_total", Help: "Deliveries whose delivery count is above one.",
		}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "paystream_panics_total", Help: "Panics recovered while processing a delivery.",
		}),
		Fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_fetches_total", Help: "Pull requests, by result.",
		}, []string{"result"}),
		Swept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "paystream_swept_total", Help: "Stuck payments re-published by the sweeper.",
		}),
		Lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_gateway_lookups_total", Help: "Gateway lookups before recording failed, by result.",
		}, []string{"result"}),
		Reconciliations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_reconciliations_total", Help: "Lookups of unknown rows by the reconciler, by result.",
		}, []string{"result"}),
		UnknownRows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_unknown_rows", Help: "Rows in status unknown (outcome not yet looked up).",
		}),
		UnknownOldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_unknown_oldest_seconds", Help: "Age of the oldest row in status unknown; 0 when none.",
		}),
		SettledInvalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "paystream_settled_invalid_total", Help: "Stored requests that no longer validate, settled failed by the sweeper.",
		}),
		RetentionDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_retention_deleted_rows_total", Help: "Final payment rows deleted by retention, by status.",
		}, []string{"status"}),
		RetentionRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_retention_runs_total", Help: "Retention runs, by result: done, busy or error.",
		}, []string{"result"}),
	}
	for _, st := range []payment.Status{payment.StatusSucceeded, payment.StatusDeclined, payment.StatusFailed} {
		m.RetentionDeleted.WithLabelValues(string(st))
	}
	for _, r := range []string{"done", "busy", "error"} {
		m.RetentionRuns.WithLabelValues(r)
	}
	for _, r := range []string{"found", "not_found", "error"} {
		m.Lookups.WithLabelValues(r)
	}
	for _, r := range []string{"succeeded", "failed", "error"} {
		m.Reconciliations.WithLabelValues(r)
	}
	for _, v := range payment.Verdicts() {
		m.Messages.WithLabelValues(v.String())
		m.Duration.WithLabelValues(v.String())
	}
	for _, r := range payment.DeadLetterReasons() {
		m.DeadLetters.WithLabelValues(string(r))
	}
	for _, c := range payment.FailureClasses() {
		m.GatewayCalls.WithLabelValues(c.String())
	}
	reg.MustRegister(m.Messages, m.Duration, m.InFlight, m.GatewayCalls, m.GatewayDuration,
		m.BreakerState, m.LimiterWait, m.DeadLetters, m.Redeliveries, m.Panics, m.Fetches, m.Swept,
		m.Lookups, m.Reconciliations, m.UnknownRows, m.UnknownOldest, m.SettledInvalid,
		m.RetentionDeleted, m.RetentionRuns)
	m.guard = newGuardVecs(reg)
	m.Failovers = newFailovers(reg)
	return m
}
