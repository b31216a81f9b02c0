package processing_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/sony/gobreaker/v2"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/telemetry"
)

func newTestGuard(t *testing.T, cfg processing.GuardConfig) *processing.Guard {
	t.Helper()
	if cfg.Gateway == "" {
		cfg.Gateway = testGateway
	}
	if cfg.RateBurst == 0 {
		cfg.RateBurst = 1
	}
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures, cfg.BreakerOpenTimeout = 100, time.Minute
	}
	return processing.NewGuard(cfg, zerolog.Nop(), telemetry.New(prometheus.NewRegistry()))
}

func ok() (payment.ChargeResult, error) {
	return payment.ChargeResult{Status: payment.StatusSucceeded}, nil
}

// TestGuardFleetView: while the gateway is down for the fleet, a worker
// that is not the prober admits nothing and makes no call; the prober
// admits one message at a time, and only until its turn ends.
func TestGuardFleetView(t *testing.T) {
	t.Parallel()
	g := newTestGuard(t, processing.GuardConfig{})
	limit, _ := g.Admit(0)
	require.Equal(t, -1, limit, "up, no limits")

	g.SetFleet(true, time.Time{})
	limit, wait := g.Admit(0)
	require.Equal(t, 0, limit)
	require.Positive(t, wait)
	_, err := g.Execute(ok)
	require.ErrorIs(t, err, processing.ErrFleetOpen)
	require.ErrorIs(t, err, gobreaker.ErrOpenState, "a refused call was never made")
	require.Zero(t, g.Stats().Calls)

	g.SetFleet(true, time.Now().Add(time.Hour))
	limit, _ = g.Admit(0)
	require.Equal(t, 1, limit, "the prober probes")
	limit, _ = g.Admit(1)
	require.Equal(t, 0, limit, "one at a time")
	_, err = g.Execute(ok)
	require.NoError(t, err)
	require.True(t, g.Stats().Prober)

	g.SetFleet(true, time.Now().Add(-time.Second))
	limit, _ = g.Admit(0)
	require.Equal(t, 0, limit, "the prober's turn has ended")

	g.SetFleet(false, time.Time{})
	limit, _ = g.Admit(0)
	require.Equal(t, -1, limit)
}

// TestGuardShare: a share lowers the rate limit (never above the process's
// cap), a share of 0 admits nothing and holds waits until a share comes,
// and Little's law bounds the messages in flight.
func TestGuardShare(t *testing.T) {
	t.Parallel()
	g := newTestGuard(t, processing.GuardConfig{RateLimit: 50, RateBurst: 10})
	g.SetShare(100, false)
	require.InDelta(t, 50, g.Stats().Limit, 0, "capped by the process's own limit")
	g.SetShare(20, true)
	st := g.Stats()
	require.InDelta(t, 20, st.Limit, 0)
	require.True(t, st.Fallback)
	limit, _ := g.Admit(0)
	require.Equal(t, 11, limit, "Little's bound: ceil(20/s × 0.5s) + 1 before any latency is known")

	g.SetShare(0, false)
	limit, _ = g.Admit(0)
	require.Equal(t, 0, limit, "no share, no pulls")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := g.Wait(ctx)
		done <- err
	}()
	require.Eventually(t, func() bool { return g.Stats().Waiting == 1 }, 5*time.Second, time.Millisecond)
	g.SetShare(1000, false)
	require.NoError(t, <-done, "a share releases the wait")
	cancel()
}

// TestGuardRateUnderChangingShare: sixteen waits queue at the limiter while
// the fleet changes the share every 100 ms (as it does when another
// worker's want moves each step); the calls granted stay within the higher
// share and near the shares' mean. Before the waits queued behind one
// reservation, every wait reserved ahead and cancelled on each change, and
// x/time/rate's cancellation made the rate collapse (5 calls in 3 s under
// 50/49.9) or overshoot (487 calls in 3 s under 50/40, over three times
// the share); three worker processes under a sick worker's flapping want
// sent 110–130 calls/s against a budget of 100 (fleet/process_test.go).
func TestGuardRateUnderChangingShare(t *testing.T) {
	t.Parallel()
	for _, shares := range [][2]float64{{50, 49.9}, {50, 40}} {
		t.Run(fmt.Sprintf("%v/%v", shares[0], shares[1]), func(t *testing.T) {
			t.Parallel()
			g := newTestGuard(t, processing.GuardConfig{})
			g.SetShare(shares[0], false)
			const run = 3 * time.Second
			ctx, cancel := context.WithCancel(t.Context())
			var (
				wg    sync.WaitGroup
				mu    sync.Mutex
				calls int
			)
			for range 16 {
				wg.Go(func() {
					for {
						if _, err := g.Wait(ctx); err != nil {
							return
						}
						mu.Lock()
						calls++
						mu.Unlock()
					}
				})
			}
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			end := time.NewTimer(run)
			defer end.Stop()
			start := time.Now()
		flap:
			for i := 1; ; i++ {
				select {
				case <-tick.C:
					g.SetShare(shares[i%2], false)
				case <-end.C:
					break flap
				}
			}
			cancel()
			elapsed := time.Since(start)
			wg.Wait()
			mean := (shares[0] + shares[1]) / 2
			t.Logf("share %v/%v changed every 100 ms: %d calls in %v (%.1f/s, shares' mean %.1f/s)",
				shares[0], shares[1], calls, elapsed.Round(time.Millisecond), float64(calls)/elapsed.Seconds(), mean)
			require.LessOrEqual(t, float64(calls), shares[0]*elapsed.Seconds()+1, "never above the higher share")
			require.GreaterOrEqual(t, float64(calls), 0.5*mean*run.Seconds(), "near the shares' mean, not starved")
		})
	}
}

// TestGuardAdaptiveConcurrency: the AIMD limit starts at a quarter of the
// ceiling, grows while calls succeed and the limit is used, and shrinks on
// 429s.
func TestGuardAdaptiveConcurrency(t *testing.T) {
	t.Parallel()
	g := newTestGuard(t, processing.GuardConfig{Concurrency: 32, Adaptive: true})
	limit, _ := g.Admit(0)
	require.Equal(t, 8, limit)
	busy := func(fn func() (payment.ChargeResult, error), n int) {
		// n calls in flight at once (each waits for all to have
		// started), so that the limit counts as used.
		var started, done sync.WaitGroup
		started.Add(n)
		for range n {
			done.Go(func() {
				_, _ = g.Execute(func() (payment.ChargeResult, error) {
					started.Done()
					started.Wait()
					return fn()
				})
			})
		}
		done.Wait()
	}
	for range 20 {
		busy(ok, 8)
	}
	grown, _ := g.Admit(0)
	require.Greater(t, grown, 8, "grows while calls succeed")
	tooMany := func() (payment.ChargeResult, error) {
		return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassRetry, StatusCode: 429, Code: "rate_limited"}
	}
	// It shrinks at most once per round trip (at least a millisecond):
	// 429s keep coming until it has.
	require.Eventually(t, func() bool {
		busy(tooMany, 4)
		shrunk, _ := g.Admit(0)
		return shrunk < grown
	}, 5*time.Second, time.Millisecond, "shrinks on 429s")
	shrunk, _ := g.Admit(0)
	require.GreaterOrEqual(t, shrunk, 1)
}
