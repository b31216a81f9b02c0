package processing_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/telemetry"
)

// TestBreakerStatePerGateway: each gateway's breaker has its own
// paystream_gateway_breaker_state{gateway}; the unlabelled
// paystream_breaker_state is the worst of them, so that a second gateway's
// closed breaker does not hide the first one's open one.
func TestBreakerStatePerGateway(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := telemetry.New(reg)
	guard := func(name string) *processing.Guard {
		return processing.NewGuard(processing.GuardConfig{Gateway: name, RateBurst: 1,
			BreakerFailures: 1, BreakerOpenTimeout: time.Hour}, zerolog.Nop(), m)
	}
	a, b := guard("a"), guard("b")
	fail := func() (payment.ChargeResult, error) {
		return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 503, Code: "service_unavailable"}
	}
	_, err := a.Execute(fail)
	require.Error(t, err)
	_, err = b.Execute(ok)
	require.NoError(t, err)
	require.Equal(t, "open", a.BreakerState())
	require.InDelta(t, 2, gaugeValue(t, m.BreakerState), 0, "the worst breaker")

	got := map[string]float64{}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "paystream_gateway_breaker_state" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			got[mt.GetLabel()[0].GetValue()] = mt.GetGauge().GetValue()
		}
	}
	require.Equal(t, map[string]float64{"a": 2, "b": 0}, got)
}
