package fleet_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway/sim"
)

// TestAdaptiveConcurrencyFindsCapacity: a gateway that answers 429 above
// capacity charges in flight; a worker with an AIMD limit (ceiling 32,
// starting at a quarter of it) converges near that capacity and the 429s
// fall to a trickle. The curve — the limit each half second, the
// simulator's charges and 429s each second — is logged.
func TestAdaptiveConcurrencyFindsCapacity(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 10 seconds")
	}
	const capacity = 12
	r := newRig(t, sim.Config{Latency: 50 * time.Millisecond})
	r.ccfg.Concurrency = 32
	r.meter.SetMaxConcurrent(capacity)
	r.publish(4000, "c")
	w := r.start(1, stackOptions{concurrency: 32, adaptive: true})

	var (
		curve  strings.Builder
		limits []int
	)
	start := time.Now()
	for i := range 24 {
		next := start.Add(time.Duration(i+1) * 500 * time.Millisecond)
		require.Eventually(t, func() bool { return time.Now().After(next) }, time.Until(next)+2*time.Second, 5*time.Millisecond)
		st := w.proc.Guard().Stats()
		limits = append(limits, st.ConcurrencyLimit)
		fmt.Fprintf(&curve, " %.1fs:%d", next.Sub(start).Seconds(), st.ConcurrencyLimit)
	}
	secs := r.meter.Seconds(start, time.Now())
	var perSec strings.Builder
	for _, s := range secs {
		fmt.Fprintf(&perSec, " %d/%d", s.Charges, s.Rejected)
	}
	t.Logf("capacity %d charges in flight; AIMD limit every 0.5s:%s", capacity, curve.String())
	t.Logf("charges/429s per second at the simulator:%s; peak in flight %d", perSec.String(), r.meter.PeakInFlight())

	// The last 4 seconds: near capacity, few 429s.
	tail := limits[len(limits)-8:]
	sum := 0
	for _, l := range tail {
		sum += l
	}
	mean := float64(sum) / float64(len(tail))
	require.GreaterOrEqual(t, mean, 0.6*capacity, "the limit does not collapse: %v", tail)
	require.LessOrEqual(t, mean, 2.5*capacity, "the limit comes down near capacity: %v", tail)
	charges, rejected := 0, 0
	for _, s := range secs[len(secs)-4:] {
		charges, rejected = charges+s.Charges, rejected+s.Rejected
	}
	require.Less(t, float64(rejected), 0.25*float64(charges), "429s fall to a trickle: %d of %d", rejected, charges)
}
