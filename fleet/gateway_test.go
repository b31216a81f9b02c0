package fleet

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFairShares(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		budget float64
		wants  map[string]float64
		want   map[string]float64
	}{
		{"equal", 60, map[string]float64{"a": 60, "b": 60, "c": 60}, map[string]float64{"a": 20, "b": 20, "c": 20}},
		{"a modest one leaves the rest to the others", 60, map[string]float64{"a": 6, "b": 60, "c": 60},
			map[string]float64{"a": 6, "b": 27, "c": 27}},
		{"unwanted capacity is spread evenly", 60, map[string]float64{"a": 6, "b": 12, "c": 3},
			map[string]float64{"a": 6 + 13, "b": 12 + 13, "c": 3 + 13}},
		{"alone", 60, map[string]float64{"a": 1}, map[string]float64{"a": 60}},
		{"no budget", 0, map[string]float64{"a": 1}, map[string]float64{"a": 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := fairShares(tt.budget, tt.wants)
			sum := 0.0
			for id, w := range tt.want {
				require.InDelta(t, w, got[id], 1e-9, id)
				sum += got[id]
			}
			require.LessOrEqual(t, sum, tt.budget+1e-9)
		})
	}
}

// TestGrantNeverOverBudget: a newcomer grows only into what the others
// freed, so that the members' shares never add up to more than the budget,
// whatever order the workers step in.
func TestGrantNeverOverBudget(t *testing.T) {
	t.Parallel()
	now := time.Now()
	live := map[string]Member{
		"a": {Want: 60, Has: 30, Expires: now.Add(time.Minute)},
		"b": {Want: 60, Has: 30, Expires: now.Add(time.Minute)},
	}
	sum := func() float64 {
		s := 0.0
		for _, m := range live {
			s += m.Has
		}
		return s
	}
	step := func(id string) {
		m := live[id]
		m.Has = grant(60, live, id, 60)
		m.Want, m.Expires = 60, now.Add(time.Minute)
		live[id] = m
		require.LessOrEqual(t, sum(), 60+1e-9, "after %s's step", id)
	}
	step("c")
	require.Zero(t, live["c"].Has, "nothing free yet")
	for _, id := range []string{"c", "a", "c", "b", "c", "a", "b"} {
		step(id)
	}
	for id, m := range live {
		require.InDelta(t, 20, m.Has, 1e-9, id)
	}
	require.True(t, math.Abs(sum()-60) < 1e-9)
}

// TestExpiredShareHeldForAnInterval: a member whose entry expired less than
// an interval ago still holds its share (its steps may run late); after
// the interval it is dropped and its share is free.
func TestExpiredShareHeldForAnInterval(t *testing.T) {
	t.Parallel()
	now := time.Now()
	c := &Coordinator{cfg: GatewayConfig{WorkerID: "b", Gateway: "gw", Budget: 60, Interval: time.Second}.WithDefaults(), want: 60}
	rec := GatewayRecord{Gateway: "gw", Budget: 60, Workers: map[string]Member{
		"a": {Want: 60, Has: 60, Expires: now.Add(-500 * time.Millisecond)},
	}}
	next, _ := c.next(rec, now, LocalStats{Breaker: "closed"})
	require.Contains(t, next.Workers, "a", "within the grace")
	require.Zero(t, next.Workers["b"].Has, "a's share is still held")

	next, write := c.next(rec, now.Add(600*time.Millisecond), LocalStats{Breaker: "closed"})
	require.True(t, write)
	require.NotContains(t, next.Workers, "a", "past the grace: dropped")
	require.InDelta(t, 60, next.Workers["b"].Has, 1e-9, "its share is free")
}
