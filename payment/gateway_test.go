package payment_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

// TestFailureClassContractRows pins every row of the class table against the
// "what the worker does" and "breaker failure?" columns of
// docs/contract.md §5.
func TestFailureClassContractRows(t *testing.T) {
	t.Parallel()
	type props struct{ final, breaker, ambiguous, misconfigured bool }
	want := map[payment.FailureClass]props{
		// 400, 422, other 4xx: records failed, dead-letters gateway_rejected.
		payment.ClassRejected: {final: true},
		// 409, 429: retries later, not a breaker failure.
		payment.ClassRetry: {},
		// 408, 3xx, 1xx, 5xx, timeout, connection error: the charge may or
		// may not have happened; retries later; a breaker failure.
		payment.ClassTrouble: {breaker: true, ambiguous: true},
		// 401, 403: a configuration error, retries later, readiness false,
		// a breaker failure; no money moved.
		payment.ClassUnauthorized: {breaker: true, misconfigured: true},
	}
	require.Len(t, payment.FailureClasses(), len(want), "a class without a row here")
	for _, c := range payment.FailureClasses() {
		t.Run(c.String(), func(t *testing.T) {
			t.Parallel()
			w, ok := want[c]
			require.True(t, ok, "class %d has no expected row", c)
			require.Equal(t, w, props{c.Final(), c.BreakerFailure(), c.Ambiguous(), c.Misconfigured()})
			require.Equal(t, w.breaker, payment.IsBreakerFailure(&payment.GatewayError{Class: c}))
		})
	}
	// A value outside the table is treated as the most careful class.
	unknown := payment.FailureClass(0)
	require.Equal(t, "unknown", unknown.String())
	require.Equal(t, props{breaker: true, ambiguous: true},
		props{unknown.Final(), unknown.BreakerFailure(), unknown.Ambiguous(), unknown.Misconfigured()})
}
