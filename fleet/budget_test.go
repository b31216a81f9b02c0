package fleet_test

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway/sim"
)

// budgetR is the fleet-wide budget of the budget tests, in calls per
// second: low enough for three stacks under -race on two shared cores.
const budgetR = 30

// secondsLine prints per-second counts for the log.
func secondsLine(secs []sim.SecondCount) string {
	var b strings.Builder
	for _, s := range secs {
		fmt.Fprintf(&b, " %d", s.Charges)
	}
	return b.String()
}

// requireWithin checks the seconds' charges against the budget want: the
// budget's promise is an upper bound, so the mean may not exceed want by
// more than frac, at most half of the seconds may, and none may exceed 1.5
// want. A test process starved of CPU (the tests run beside others on two
// cores) stalls now and then for a good part of a second: the calls whose
// turn came during the stall then reach the simulator together, and one
// second reads low and the next high though the limiters kept their rates.
// Below the budget is the machine's capacity, not the budget's: a loaded CI
// machine running three workers under -race may not reach R (a run at load
// 15 averaged 0.85 R). So the lower side is a figure in the log, and only a
// fleet that uses less than half of R fails (a budget that starves).
func requireWithin(t *testing.T, what string, secs []sim.SecondCount, want, frac float64) {
	t.Helper()
	require.NotEmpty(t, secs)
	sum, above, below := 0, 0, 0
	for _, s := range secs {
		sum += s.Charges
		switch {
		case float64(s.Charges) > want*(1+frac):
			above++
		case float64(s.Charges) < want*(1-frac):
			below++
		}
	}
	mean := float64(sum) / float64(len(secs))
	t.Logf("%s: mean %.1f calls/s over %d s (R=%v), %d second(s) above +%.0f%%, %d below -%.0f%%:%s",
		what, mean, len(secs), want, above, frac*100, below, frac*100, secondsLine(secs))
	require.LessOrEqual(t, mean, want*(1+frac), "%s: mean rate above R", what)
	require.GreaterOrEqual(t, mean, want/2, "%s: the fleet used less than half of R", what)
	require.LessOrEqual(t, above, len(secs)/2, "%s: seconds above R +%.0f%%", what, frac*100)
	for _, s := range secs {
		require.LessOrEqual(t, float64(s.Charges), 1.5*want, "%s: a burst far above R", what)
	}
}

// warmUp waits until two whole seconds in a row at the simulator were
// within 10 % of want: the pipelines are full.
func warmUp(t *testing.T, r *rig, want float64) {
	t.Helper()
	require.Eventually(t, func() bool {
		now := time.Now()
		secs := r.meter.Seconds(now.Add(-2*time.Second), now)
		for _, s := range secs {
			if math.Abs(float64(s.Charges)-want) > want*0.1 {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "the fleet never reached its budget: %s", secondsLine(r.meter.Seconds(time.Now().Add(-30*time.Second), time.Now())))
}

// requireSharesWithin checks the record: the members' shares never add up
// to more than the budget.
func requireSharesWithin(t *testing.T, r *rig, budget float64) {
	t.Helper()
	rec, ok := r.record(r.connect(r.kvSrv))
	if !ok {
		return
	}
	sum := 0.0
	for _, m := range rec.Workers {
		sum += m.Has
	}
	require.LessOrEqual(t, sum, budget+1e-6, "shares in the record: %+v", rec.Workers)
}

// TestBudgetHoldsWhileWorkersComeAndGo: three stacks share a budget of R
// calls per second at the simulator; the aggregate stays at most R +10 %
// (requireWithin) while one stops and a fourth starts. A crash (no goodbye)
// leaves the dead worker's share reserved until its entry expires: the
// rate dips, never exceeds R, and recovers.
func TestBudgetHoldsWhileWorkersComeAndGo(t *testing.T) {
	if testing.Short() {
		t.Skip("measures rates for about 20 seconds")
	}
	r := newRig(t, sim.Config{Latency: 5 * time.Millisecond})
	r.publish(3000, "b")
	o := stackOptions{budget: budgetR, interval: 200 * time.Millisecond}
	kv := r.connect(r.kvSrv)
	stacks := []*stack{r.start(1, o), r.start(2, o), r.start(3, o)}

	// Settled: three members whose shares add up to R.
	require.Eventually(t, func() bool {
		rec, ok := r.record(kv)
		if !ok || len(rec.Workers) != 3 {
			return false
		}
		sum := 0.0
		for _, m := range rec.Workers {
			sum += m.Has
		}
		return sum > budgetR*0.95 && sum <= budgetR+1e-6
	}, 10*time.Second, 20*time.Millisecond)
	warmUp(t, r, budgetR)
	start := time.Now()
	waitSecond(t, start.Add(2*time.Second))

	// One worker stops, a fourth starts a second later.
	stacks[0].stop()
	waitSecond(t, time.Now())
	stacks = append(stacks, r.start(4, o))
	waitSecond(t, time.Now().Add(3*time.Second))
	churn := r.meter.Seconds(start.Add(time.Second), time.Now())
	requireWithin(t, "steady, then w1 stops and w4 starts", churn, budgetR, 0.10)
	requireSharesWithin(t, r, budgetR)

	// A crash: w2's entry stays until its TTL (3 intervals) runs out.
	crashAt := time.Now()
	stacks[1].crash()
	waitSecond(t, time.Now().Add(3*time.Second))
	crash := r.meter.Seconds(crashAt.Add(time.Second), time.Now())
	t.Logf("per second after w2 crashed (its share stays reserved for %v):%s", 4*o.interval, secondsLine(crash))
	requireWithin(t, "after w2 crashed", crash, budgetR, 0.10)
	requireSharesWithin(t, r, budgetR)
}

// TestBudgetFallsBackWhenKVIsUnreachable: with the fleet's KV server down,
// each worker keeps its share until its own entry expires, then falls back
// to R / last known fleet size (metrics say so); the aggregate never
// bursts above R and stays near it.
func TestBudgetFallsBackWhenKVIsUnreachable(t *testing.T) {
	if testing.Short() {
		t.Skip("measures rates for about 10 seconds")
	}
	r := newRig(t, sim.Config{Latency: 5 * time.Millisecond})
	r.publish(2000, "f")
	o := stackOptions{budget: budgetR, interval: 200 * time.Millisecond}
	kv := r.connect(r.kvSrv)
	stacks := []*stack{r.start(1, o), r.start(2, o), r.start(3, o)}
	require.Eventually(t, func() bool {
		rec, ok := r.record(kv)
		return ok && len(rec.Workers) == 3
	}, 10*time.Second, 20*time.Millisecond)
	warmUp(t, r, budgetR)
	for _, s := range stacks {
		st := s.proc.Guard().Stats()
		t.Logf("w%d: share %.1f/s, calls %d, concurrency limit %d, latency %v", s.id, st.Share, st.Calls, st.ConcurrencyLimit, st.Latency)
	}
	down := time.Now()
	r.kvSrv.Shutdown()
	require.Eventually(t, func() bool {
		for _, s := range stacks {
			st := s.proc.Guard().Stats()
			if !st.Fallback {
				return false
			}
		}
		return true
	}, 5*time.Second, 20*time.Millisecond, "every worker on the fallback share")
	for _, s := range stacks {
		st := s.proc.Guard().Stats()
		require.InDelta(t, budgetR/3.0, st.Share, 1e-9, "fallback share R / last known fleet size")
	}
	waitSecond(t, time.Now().Add(3*time.Second))
	secs := r.meter.Seconds(down, time.Now())
	requireWithin(t, "KV down: on the fallback share", secs, budgetR, 0.10)

	r.kvSrv.Start()
	require.Eventually(t, func() bool {
		for _, s := range stacks {
			if s.proc.Guard().Stats().Fallback {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "shares leased again once KV is back")
}
