package processing_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

// TestGatewayCallsGoWithTheFencedWrite: each gateway call made under a
// lease travels with the completion or release of that lease, so that the
// store writes it in the same fenced transaction.
func TestGatewayCallsGoWithTheFencedWrite(t *testing.T) {
	t.Parallel()
	trouble := &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 503, Code: "service_unavailable"}
	gw := newFakeGateway(
		gwStep{err: trouble},
		gwStep{err: trouble},
	)
	gw.lookups = []lookupStep{{res: payment.LookupResult{Found: true, ChargeID: "ch_found"}}}
	b := setup(t, testConfig(), nil, gw)

	d := b.proc.Process(t.Context(), delivery(1))
	require.Equal(t, "retry", d.Verdict.String())
	d = b.proc.Process(t.Context(), delivery(5))
	require.Equal(t, "succeeded", d.Verdict.String(), "the lookup found the charge")

	completes, releases := b.claims.gatewayCalls()
	failed := payment.Attempt{Kind: payment.AttemptCharge, HTTPStatus: 503, Class: "trouble", ErrorCode: "service_unavailable",
		Gateway: "fakegw"}
	require.Equal(t, [][]payment.Attempt{{failed}}, releases)
	require.Equal(t, [][]payment.Attempt{{failed, {Kind: payment.AttemptLookup, Class: payment.AttemptClassOK,
		Result: payment.LookupFound, ChargeID: "ch_found", Gateway: "fakegw"}}}, completes)

	b.claims.mu.Lock()
	for _, c := range b.claims.completeCalls {
		for _, a := range c.Attempts {
			require.False(t, a.StartedAt.IsZero())
		}
	}
	b.claims.mu.Unlock()
}
