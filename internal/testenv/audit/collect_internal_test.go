package audit

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecodeStatsReadsTheOptionalConflictCounter(t *testing.T) {
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
			st, conflicts, err := decodeStats([]byte(tc.body))
			require.NoError(t, err)
			require.Equal(t, int64(3), st.Charges)
			require.Equal(t, 4, st.Keys)
			require.Equal(t, tc.conflicts, conflicts)
		})
	}
	_, _, err := decodeStats([]byte(`{"in_flight_conflicts":"many"}`))
	require.Error(t, err)
}
