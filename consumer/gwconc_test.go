package consumer_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
)

// TestGatewayConcurrencyWithTwoGateways: with two gateways each gateway's
// concurrency limit (PAYSTREAM_GATEWAY_CONCURRENCY=3) holds, although the
// consumer has 16 slots: the meter in front of each simulator never sees
// more than 3 charges in flight, and both gateways run up to it.
func TestGatewayConcurrencyWithTwoGateways(t *testing.T) {
	t.Parallel()
	const limit = 3
	meter := func(seed int64) (*sim.Meter, string) {
		m := sim.NewMeter(sim.New(sim.Config{Latency: 30 * time.Millisecond, Seed: seed}, zerolog.Nop(), prometheus.NewRegistry()))
		srv := httptest.NewServer(m)
		t.Cleanup(srv.Close)
		return m, srv.URL
	}
	ma, urlA := meter(5)
	mb, urlB := meter(6)
	a := newHTTPGateway(t, "a", urlA, 2*time.Second)
	b := newHTTPGateway(t, "b", urlB, 2*time.Second)
	s := newStack(t, stackOptions{concurrency: 16, gwConc: limit, routes: []processing.Route{
		{Gateway: a, Weight: 1},
		{Gateway: b, Weight: 1},
	}})
	s.startWorker("w1")
	const n = 120
	for i := range n {
		s.publishRequest(request(i, int64(3000+2*i)), "")
	}
	s.waitFor("every payment final", 90*time.Second, func() bool { return s.finalRows() == n })
	require.Equal(t, map[payment.Status]int{payment.StatusSucceeded: n}, s.counts())
	pa, pb := ma.PeakInFlight(), mb.PeakInFlight()
	t.Logf("peak charges in flight: a %d, b %d (limit %d each, consumer slots 16)", pa, pb, limit)
	require.LessOrEqual(t, pa, limit, "gateway a over its concurrency limit")
	require.LessOrEqual(t, pb, limit, "gateway b over its concurrency limit")
	require.Equal(t, limit, pa, "gateway a ran up to its limit")
	require.Equal(t, limit, pb, "gateway b ran up to its limit")
}
