package telemetry

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// guardVecs are the per-gateway gauges of the gateway guards (package
// processing's Guard), labelled by gateway.
type guardVecs struct {
	share, fallback, fleetBreaker, concurrency, breaker *prometheus.GaugeVec

	mu       sync.Mutex
	breakers map[string]float64 // each gateway's breaker state, for BreakerState
}

func newGuardVecs(reg prometheus.Registerer) *guardVecs {
	v := &guardVecs{
		share: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "paystream_gateway_budget_share",
			Help: "This worker's share of the gateway's fleet-wide budget, in calls per second (0 without a budget, or until the fleet grants one).",
		}, []string{"gateway"}),
		fallback: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "paystream_gateway_budget_fallback",
			Help: "1 while the budget share is the fallback (the fleet's KV bucket cannot be reached: budget / last known fleet size), else 0.",
		}, []string{"gateway"}),
		fleetBreaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "paystream_gateway_fleet_breaker",
			Help: "The fleet's view of the gateway: 0 up, 1 down and this worker holds the probe lease, 2 down and another worker probes.",
		}, []string{"gateway"}),
		concurrency: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "paystream_gateway_concurrency_limit",
			Help: "Messages this worker lets be in flight for the gateway (fixed, or adaptive and bounded by Little's law); -1 no limit.",
		}, []string{"gateway"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "paystream_gateway_breaker_state",
			Help: "This worker's circuit breaker for the gateway: 0 closed, 1 half-open, 2 open.",
		}, []string{"gateway"}),
		breakers: map[string]float64{},
	}
	reg.MustRegister(v.share, v.fallback, v.fleetBreaker, v.concurrency, v.breaker)
	return v
}

// GuardGauges are the gauges of one gateway's guard.
type GuardGauges struct {
	// Share is the budget share in calls per second; Fallback 1 while it
	// is the fallback share.
	Share, Fallback prometheus.Gauge
	// FleetBreaker is 0 up, 1 down and probing here, 2 down elsewhere.
	FleetBreaker prometheus.Gauge
	// ConcurrencyLimit is the limit on messages in flight; -1 none.
	ConcurrencyLimit prometheus.Gauge
}

// Guard returns the gauges of gateway's guard.
func (m *Metrics) Guard(gateway string) GuardGauges {
	return GuardGauges{
		Share:            m.guard.share.WithLabelValues(gateway),
		Fallback:         m.guard.fallback.WithLabelValues(gateway),
		FleetBreaker:     m.guard.fleetBreaker.WithLabelValues(gateway),
		ConcurrencyLimit: m.guard.concurrency.WithLabelValues(gateway),
	}
}

// SetBreakerState records gateway's breaker state (0 closed, 1 half-open,
// 2 open) in paystream_gateway_breaker_state{gateway}, and sets the
// unlabelled paystream_breaker_state (BreakerState) to the worst state of
// all the gateways: with one gateway, its state, as before several
// gateways existed.
func (m *Metrics) SetBreakerState(gateway string, state float64) {
	v := m.guard
	v.mu.Lock()
	defer v.mu.Unlock()
	v.breakers[gateway] = state
	v.breaker.WithLabelValues(gateway).Set(state)
	worst := 0.0
	for _, s := range v.breakers {
		worst = max(worst, s)
	}
	m.BreakerState.Set(worst)
}
