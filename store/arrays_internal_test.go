package store

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// TestArrays: pgx encodes a textArray, int8Array and timeArray byte for
// byte as the plain slice of the same elements (in both formats; empty,
// non-ASCII and quoting elements, negative and large numbers, times in
// other zones, an empty array, nil as NULL), and without an allocation per
// element.
func TestArrays(t *testing.T) {
	m := pgtype.NewMap()
	encode := func(oid uint32, format int16, v any) []byte {
		plan := m.PlanEncode(oid, format, v)
		require.NotNil(t, plan, "%T", v)
		b, err := plan.Encode(v, nil)
		require.NoError(t, err)
		return b
	}
	// same checks that ours encodes as plain does, in both formats.
	same := func(oid uint32, ours, plain any, isNil bool) {
		t.Helper()
		for _, format := range []int16{pgtype.BinaryFormatCode, pgtype.TextFormatCode} {
			want := encode(oid, format, plain)
			require.Equal(t, want, encode(oid, format, ours), "format %d, %v", format, plain)
			if isNil {
				require.Nil(t, want, "NULL")
			}
		}
	}
	for _, a := range []textArray{{"k1", "", "ü€", `a"b,c{}`, "NULL", `back\slash`}, {}, nil} {
		same(pgtype.TextArrayOID, a, []string(a), a == nil)
	}
	for _, a := range []int8Array{{0, -1, 255, 256, 1 << 40, -1 << 63}, {}, nil} {
		same(pgtype.Int8ArrayOID, a, []int64(a), a == nil)
	}
	at := time.Date(2026, 12, 2, 21, 0, 0, 123456000, time.FixedZone("x", 5*3600+1800))
	for _, a := range []timeArray{{at, at.UTC(), time.Unix(0, 0)}, {}, nil} {
		same(pgtype.TimestamptzArrayOID, a, []time.Time(a), a == nil)
	}

	allocs := func(oid uint32, v any) float64 {
		plan := m.PlanEncode(oid, pgtype.BinaryFormatCode, v)
		buf := make([]byte, 0, 4096)
		return testing.AllocsPerRun(100, func() { _, _ = plan.Encode(v, buf[:0]) })
	}
	texts, ints, times := make(textArray, 64), make(int8Array, 64), make(timeArray, 64)
	for i := range 64 {
		texts[i], ints[i], times[i] = "key-that-is-not-empty", 1000+int64(i), at
	}
	for _, c := range []struct {
		oid          uint32
		ours, plain  any
		name, plainT string
	}{
		{pgtype.TextArrayOID, texts, []string(texts), "textArray", "[]string"},
		{pgtype.Int8ArrayOID, ints, []int64(ints), "int8Array", "[]int64"},
		{pgtype.TimestamptzArrayOID, times, []time.Time(times), "timeArray", "[]time.Time"},
	} {
		require.Less(t, allocs(c.oid, c.ours), 4.0, "%s: no allocation per element", c.name)
		require.GreaterOrEqual(t, allocs(c.oid, c.plain), 64.0, "%s: one per element, what %s saves", c.plainT, c.name)
	}
}
