package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// window makes 1,000 payments published 1 ms apart that take 10 ms, of
// which the ten published at slowAt(i) take 200 ms: 150 to the row's
// completion and 50 from there to the outcome event.
func window(slowAt func(i int) time.Duration) []stamp {
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	slow := map[time.Duration]bool{}
	for i := range 10 {
		slow[slowAt(i)] = true
	}
	var out []stamp
	for i := range 1000 {
		sent := t0.Add(time.Duration(i) * time.Millisecond)
		took, toDone := 10*time.Millisecond, 8*time.Millisecond
		if slow[time.Duration(i)*time.Millisecond] {
			took, toDone = 200*time.Millisecond, 150*time.Millisecond
		}
		out = append(out, stamp{sent: sent, completed: sent.Add(toDone), got: sent.Add(took)})
	}
	return out
}

func TestLatenciesOneStall(t *testing.T) {
	p50, p99, tl := latencies(window(func(i int) time.Duration { return time.Duration(500+i) * time.Millisecond }))
	require.Equal(t, 10*time.Millisecond, p50)
	require.Equal(t, 200*time.Millisecond, p99)
	require.Equal(t, 10, tl.n)
	require.Equal(t, 1.0, tl.burst)
	require.Equal(t, 150*time.Millisecond, tl.toCompleted)
	require.Equal(t, 50*time.Millisecond, tl.toOutcome)
	require.Equal(t, "the slowest 1 % (10): 100 % published within one 250ms, median 150.0 ms to the row's completion (before its commit) and 50.0 ms from there to the outcome event", tl.String())
}

func TestLatenciesSpread(t *testing.T) {
	// One slow payment every 100 ms: at most three within 250 ms.
	_, p99, tl := latencies(window(func(i int) time.Duration { return time.Duration(i*100) * time.Millisecond }))
	require.Equal(t, 200*time.Millisecond, p99)
	require.InDelta(t, 0.3, tl.burst, 1e-9)
}

func TestLatenciesEmpty(t *testing.T) {
	p50, p99, tl := latencies(nil)
	require.Zero(t, p50)
	require.Zero(t, p99)
	require.Zero(t, tl.n)
}

func TestLatenciesBurstWindowIsHalfOpen(t *testing.T) {
	// 1,000 payments 2.5 ms apart, every hundredth slow: the ten slow ones
	// are exactly 250 ms apart, so no two fall in one window.
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	var stamps []stamp
	for i := range 1000 {
		sent := t0.Add(time.Duration(i) * 2500 * time.Microsecond)
		took := 10 * time.Millisecond
		if i%100 == 0 {
			took = 200 * time.Millisecond
		}
		stamps = append(stamps, stamp{sent: sent, completed: sent.Add(took / 2), got: sent.Add(took)})
	}
	_, p99, tl := latencies(stamps)
	require.Equal(t, 200*time.Millisecond, p99)
	require.InDelta(t, 0.1, tl.burst, 1e-9)
}
