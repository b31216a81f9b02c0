package processing_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/processing"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	const (
		base = 100 * time.Millisecond
		max  = 10 * time.Second
	)
	tests := []struct {
		name      string
		base, max time.Duration
		n         uint64
		lo, hi    time.Duration
	}{
		{name: "n=0 counts as 1", base: base, max: max, n: 0, lo: 50 * time.Millisecond, hi: base},
		{name: "first delivery", base: base, max: max, n: 1, lo: 50 * time.Millisecond, hi: base},
		{name: "doubles", base: base, max: max, n: 2, lo: base, hi: 2 * base},
		{name: "doubles again", base: base, max: max, n: 3, lo: 2 * base, hi: 4 * base},
		{name: "n=7", base: base, max: max, n: 7, lo: 32 * base, hi: 64 * base},
		{name: "capped", base: base, max: max, n: 8, lo: max / 2, hi: max},
		{name: "capped far out", base: base, max: max, n: 40, lo: max / 2, hi: max},
		{name: "shift of 63", base: base, max: max, n: 64, lo: max / 2, hi: max},
		{name: "huge n", base: base, max: max, n: math.MaxUint64, lo: max / 2, hi: max},
		{name: "base above max", base: time.Minute, max: max, n: 1, lo: max / 2, hi: max},
		{name: "largest max", base: time.Second, max: math.MaxInt64, n: math.MaxUint64, lo: math.MaxInt64 / 2, hi: math.MaxInt64},
		// Regression: base<<31 wrapped around to 2^31ns (about 2s) and was
		// taken for a value under the cap.
		{name: "shift that overflows int64", base: 1<<33 + 1, max: time.Hour, n: 32, lo: 30 * time.Minute, hi: time.Hour},
		{name: "shift that overflows at 10s", base: 10 * time.Second, max: 1000 * time.Hour, n: 32, lo: 500 * time.Hour, hi: 1000 * time.Hour},
		{name: "zero max", base: base, max: 0, n: 3, lo: 0, hi: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			seen := map[time.Duration]bool{}
			for range 2000 {
				d := processing.Backoff(tt.base, tt.max, tt.n)
				require.GreaterOrEqual(t, d, tt.lo)
				require.LessOrEqual(t, d, tt.hi)
				seen[d] = true
			}
			if tt.hi-tt.lo >= time.Millisecond {
				require.Greater(t, len(seen), 1, "the delay is jittered")
			}
		})
	}
}

func TestBackoffGrowsUntilCapped(t *testing.T) {
	t.Parallel()
	base, max := 250*time.Millisecond, 30*time.Second
	for n := uint64(1); n <= 200; n++ {
		d := min(base<<min(n-1, 20), max)
		for range 50 {
			got := processing.Backoff(base, max, n)
			require.GreaterOrEqual(t, got, d/2, "n=%d", n)
			require.LessOrEqual(t, got, d, "n=%d", n)
		}
	}
}
