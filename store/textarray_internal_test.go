package store

import (
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// TestTextArray: pgx encodes a textArray byte for byte as the []string of
// the same elements (text[], in both formats: empty and non-ASCII elements,
// quotes and commas, an empty array, nil as NULL), and without an
// allocation per element.
func TestTextArray(t *testing.T) {
	m := pgtype.NewMap()
	encode := func(format int16, v any) []byte {
		plan := m.PlanEncode(pgtype.TextArrayOID, format, v)
		require.NotNil(t, plan, "%T", v)
		b, err := plan.Encode(v, nil)
		require.NoError(t, err)
		return b
	}
	for _, a := range []textArray{{"k1", "", "ü€", `a"b,c{}`, "NULL", `back\slash`}, {}, nil} {
		for _, format := range []int16{pgtype.BinaryFormatCode, pgtype.TextFormatCode} {
			want := encode(format, []string(a))
			require.Equal(t, want, encode(format, a), "format %d, %q", format, a)
			if a == nil {
				require.Nil(t, want, "NULL")
			}
		}
	}

	long := make(textArray, 64)
	for i := range long {
		long[i] = "key-that-is-not-empty"
	}
	allocs := func(v any) float64 {
		plan := m.PlanEncode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, v)
		buf := make([]byte, 0, 4096)
		return testing.AllocsPerRun(100, func() { _, _ = plan.Encode(v, buf[:0]) })
	}
	require.Less(t, allocs(long), 4.0, "textArray: no allocation per element")
	require.GreaterOrEqual(t, allocs([]string(long)), 64.0, "[]string: one per element, what textArray saves")
}
