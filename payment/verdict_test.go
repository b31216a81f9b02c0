package payment_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

func TestVerdictTable(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, v := range payment.Verdicts() {
		name := v.String()
		require.NotEqual(t, "unknown", name, "verdict %d has no row", v)
		require.False(t, seen[name], "two verdicts named %q", name)
		seen[name] = true
	}
	require.Equal(t, "unknown", payment.Verdict(0).String())
	require.Equal(t, "unknown", payment.Verdict(255).String())
	require.Equal(t, payment.SeverityAlert, payment.Verdict(255).Severity(), "an unknown verdict is loud")
}

func TestDeadLetterReasonsHaveVerdicts(t *testing.T) {
	t.Parallel()
	reasons := payment.DeadLetterReasons()
	require.Subset(t, reasons, []payment.DeadLetterReason{payment.ReasonInvalid, payment.ReasonConflict,
		payment.ReasonExhausted, payment.ReasonGatewayRejected}, "the contract's reasons")
	for _, r := range reasons {
		v := r.Verdict()
		require.Equal(t, string(r), v.String(), "the verdict of a dead letter is named after its reason")
		got, ok := v.DeadLetter()
		require.True(t, ok)
		require.Equal(t, r, got)
	}
	require.Equal(t, payment.Verdict(0), payment.DeadLetterReason("nope").Verdict())
	// The operator must act on payments that ended failed; bad input and
	// conflicts are the sender's problem.
	require.Equal(t, payment.SeverityAlert, payment.ReasonExhausted.Severity())
	require.Equal(t, payment.SeverityAlert, payment.ReasonGatewayRejected.Severity())
	require.Equal(t, payment.SeverityNotice, payment.ReasonInvalid.Severity())
}

func TestStatusVerdict(t *testing.T) {
	t.Parallel()
	require.Equal(t, payment.VerdictSucceeded, payment.StatusVerdict(payment.StatusSucceeded))
	require.Equal(t, payment.VerdictDeclined, payment.StatusVerdict(payment.StatusDeclined))
	require.Equal(t, payment.VerdictFailed, payment.StatusVerdict(payment.StatusFailed))
	require.Equal(t, payment.Verdict(0), payment.StatusVerdict(payment.StatusProcessing))
	require.Equal(t, payment.Verdict(0), payment.StatusVerdict(""))
}

func TestFailureClassTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		class                     payment.FailureClass
		name                      string
		final, breaker, ambiguous bool
	}{
		{payment.ClassRejected, "rejected", true, false, false},
		{payment.ClassRetry, "retry", false, false, false},
		{payment.ClassTrouble, "trouble", false, true, true},
		{0, "unknown", false, true, true},
		{200, "unknown", false, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.name, tt.class.String())
			require.Equal(t, tt.final, tt.class.Final())
			require.Equal(t, tt.breaker, tt.class.BreakerFailure())
			require.Equal(t, tt.ambiguous, tt.class.Ambiguous())
		})
	}
	require.Subset(t, payment.FailureClasses(),
		[]payment.FailureClass{payment.ClassRejected, payment.ClassRetry, payment.ClassTrouble})
}
