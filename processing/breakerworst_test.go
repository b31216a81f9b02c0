package processing_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/telemetry"
)

// named is a fake gateway under another name.
type named struct {
	*fakeGateway
	name string
}

func (n named) Name() string { return n.name }

// TestProcessorBreakerStateIsTheWorst: the processor's breaker (the
// heartbeat's breaker field) is the worst of its gateways', not the first
// one's; BreakersOpen counts the open ones, for readiness.
func TestProcessorBreakerStateIsTheWorst(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.BreakerFailures = 1
	a, b := named{newFakeGateway(), "a"}, named{newFakeGateway(), "b"}
	p := processing.NewRouted(cfg, &fakeClaims{}, []processing.Route{{Gateway: a, Weight: 1}, {Gateway: b, Weight: 1}},
		zerolog.Nop(), telemetry.New(prometheus.NewRegistry()))
	require.Equal(t, "closed", p.BreakerState())
	open, n := p.BreakersOpen()
	require.Equal(t, [2]int{0, 2}, [2]int{open, n})

	trip := func(g *processing.Guard) {
		_, err := g.Execute(func() (payment.ChargeResult, error) {
			return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 503}
		})
		require.Error(t, err)
	}
	guards := p.Guards()
	trip(guards[1]) // the second gateway's
	require.Equal(t, "closed", guards[0].BreakerState())
	require.Equal(t, "open", p.BreakerState(), "the second gateway's open breaker is hidden")
	open, n = p.BreakersOpen()
	require.Equal(t, [2]int{1, 2}, [2]int{open, n})
	trip(guards[0])
	open, _ = p.BreakersOpen()
	require.Equal(t, 2, open)
}
