package telemetry

import "github.com/prometheus/client_golang/prometheus"

func newFailovers(reg prometheus.Registerer) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "paystream_gateway_failovers_total",
		Help: "Payments moved to another gateway because the first surely did not charge, by from and to.",
	}, []string{"from", "to"})
	reg.MustRegister(v)
	return v
}
