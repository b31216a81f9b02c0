package audit

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway/sim"
)

// TestStatsReadTheOptionalConflictCounter: the audit decodes GET /v1/stats
// into sim.Stats; a simulator without in_flight_conflicts reads as 0.
func TestStatsReadTheOptionalConflictCounter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		body      string
		conflicts int64
	}{
		{"absent", `{"real_charges":3,"distinct_keys":4,"in_flight":1,"double_charged_payment_ids":[]}`, 0},
		{"present", `{"real_charges":3,"distinct_keys":4,"in_flight":1,"double_charged_payment_ids":[],"in_flight_conflicts":7}`, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var st sim.Stats
			require.NoError(t, json.Unmarshal([]byte(tc.body), &st))
			require.Equal(t, int64(3), st.Charges)
			require.Equal(t, 4, st.Keys)
			require.Equal(t, tc.conflicts, st.InFlightConflicts)
		})
	}
	var st sim.Stats
	require.Error(t, json.Unmarshal([]byte(`{"in_flight_conflicts":"many"}`), &st))
}
