package processing_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sony/gobreaker/v2"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
)

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, g.Write(&m))
	return m.GetGauge().GetValue()
}

// breakerConfig opens the breaker after failures consecutive failures, for
// openFor.
func breakerConfig(failures uint32, openFor time.Duration) processing.Config {
	cfg := testConfig()
	cfg.BreakerFailures, cfg.BreakerOpenTimeout = failures, openFor
	return cfg
}

// requireAdmit checks Admit's limit; a wait comes only with limit 0.
func requireAdmit(t *testing.T, p *processing.Processor, want int) time.Duration {
	t.Helper()
	limit, wait := p.Admit()
	require.Equal(t, want, limit, "Admit limit")
	if want != 0 {
		require.Zero(t, wait)
	}
	return wait
}

// waitHalfOpen lets the open breaker's open timeout pass — on the fake
// clock of the test's synctest bubble, so it takes no real time and no
// timing luck — and checks that it half-opens then.
func waitHalfOpen(t *testing.T, p *processing.Processor) {
	t.Helper()
	limit, wait := p.Admit()
	require.Equal(t, 0, limit, "the breaker is open")
	time.Sleep(wait + time.Nanosecond) // gobreaker half-opens strictly after its expiry
	synctest.Wait()
	requireAdmit(t, p, 1)
}

func TestBreakerOpensOnTroubleAndRecovers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const openFor = 250 * time.Millisecond
		gw := newFakeGateway(trouble(), trouble(), trouble(), succeeded("ch_ok"))
		b := setup(t, breakerConfig(3, openFor), nil, gw)

		for i := range 3 {
			requireAdmit(t, b.proc, -1)
			d := b.proc.Process(t.Context(), delivery(1))
			require.Equal(t, processing.ActionRetry, d.Action, "failure %d", i+1)
			require.Equal(t, "retry", d.Verdict.String())
		}
		require.Len(t, gw.calls(), 3)

		wait := requireAdmit(t, b.proc, 0)
		require.Greater(t, wait, time.Duration(0))
		require.LessOrEqual(t, wait, openFor)
		require.InDelta(t, 2, gaugeValue(t, b.m.BreakerState), 0)

		// While open, a delivery already pulled is retried without a gateway
		// call and without a claim.
		d := b.proc.Process(t.Context(), delivery(2))
		require.Equal(t, processing.ActionRetry, d.Action)
		require.Equal(t, "retry", d.Verdict.String())
		require.ErrorIs(t, d.Err, gobreaker.ErrOpenState)
		requireDelay(t, d.Delay, 100*time.Millisecond, 200*time.Millisecond+openFor)
		require.Len(t, gw.calls(), 3, "no gateway call while open")
		claims, completes, releases := b.claims.calls()
		require.Len(t, claims, 3, "no claim while open")
		require.Empty(t, completes)
		require.Len(t, releases, 3)

		waitHalfOpen(t, b.proc)
		require.InDelta(t, 1, gaugeValue(t, b.m.BreakerState), 0)
		d = b.proc.Process(t.Context(), delivery(3))
		require.Equal(t, "succeeded", d.Verdict.String())
		requireAdmit(t, b.proc, -1)
		require.InDelta(t, 0, gaugeValue(t, b.m.BreakerState), 0)
	})
}

func TestBreakerOpenOnLastDeliveryIsExhausted(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		gw := newFakeGateway(trouble())
		b := setup(t, breakerConfig(1, time.Minute), nil, gw)
		require.Equal(t, "retry", b.proc.Process(t.Context(), delivery(1)).Verdict.String())
		requireAdmit(t, b.proc, 0)

		d := b.proc.Process(t.Context(), delivery(5))
		require.Equal(t, processing.ActionTerm, d.Action)
		require.Equal(t, payment.ReasonExhausted, d.DeadLetter.Reason)
		require.Equal(t, payment.StatusFailed, d.Outcome.Status)
		require.Equal(t, payment.ErrorCodeExhausted, d.Outcome.ErrorCode)
		require.ErrorIs(t, d.Err, gobreaker.ErrOpenState)
		require.Len(t, gw.calls(), 1)
	})
}

func TestBreakerHalfOpen(t *testing.T) {
	t.Parallel()

	t.Run("a failed probe opens it again", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			gw := newFakeGateway(trouble(), trouble(), succeeded("ch_ok"))
			b := setup(t, breakerConfig(1, 50*time.Millisecond), nil, gw)

			require.Equal(t, "retry", b.proc.Process(t.Context(), delivery(1)).Verdict.String())
			requireAdmit(t, b.proc, 0)
			waitHalfOpen(t, b.proc)
			require.Equal(t, "retry", b.proc.Process(t.Context(), delivery(2)).Verdict.String())
			requireAdmit(t, b.proc, 0)
			waitHalfOpen(t, b.proc)
			require.Equal(t, "succeeded", b.proc.Process(t.Context(), delivery(3)).Verdict.String())
			requireAdmit(t, b.proc, -1)
			require.Len(t, gw.calls(), 3)
		})
	})

	t.Run("one probe at a time and a cancelled probe does not count", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			gw := newFakeGateway(trouble(), gwStep{block: true}, succeeded("ch_ok"))
			b := setup(t, breakerConfig(1, 50*time.Millisecond), nil, gw)

			require.Equal(t, "retry", b.proc.Process(t.Context(), delivery(1)).Verdict.String())
			waitHalfOpen(t, b.proc)

			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan processing.Decision, 1)
			go func() { done <- b.proc.Process(ctx, delivery(2)) }()
			<-gw.started

			d := b.proc.Process(t.Context(), delivery(2))
			require.Equal(t, processing.ActionRetry, d.Action, "a second call while the probe runs")
			require.ErrorIs(t, d.Err, gobreaker.ErrTooManyRequests)
			require.Len(t, gw.calls(), 2)

			cancel()
			require.Equal(t, "shutdown", (<-done).Verdict.String())
			requireAdmit(t, b.proc, 1)
			require.Equal(t, "succeeded", b.proc.Process(t.Context(), delivery(3)).Verdict.String())
			requireAdmit(t, b.proc, -1)
		})
	})
}

// TestBreakerHalfOpenAdmitsNothingWhileProbing is a regression test found
// by the chaos suite: while half-open, Admit said 1 on every call, so the
// pull loop fetched one message after another while the probe ran, and each
// of them failed with ErrTooManyRequests and was nak'ed, burning one of its
// deliveries every time (thousands of deliveries per outage in the suite).
func TestBreakerHalfOpenAdmitsNothingWhileProbing(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		gw := newFakeGateway(trouble(), gwStep{block: true}, succeeded("ch_ok"))
		b := setup(t, breakerConfig(1, 50*time.Millisecond), nil, gw)

		require.Equal(t, "retry", b.proc.Process(t.Context(), delivery(1)).Verdict.String())
		waitHalfOpen(t, b.proc)

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan processing.Decision, 1)
		go func() { done <- b.proc.Process(ctx, delivery(2)) }()
		<-gw.started

		wait := requireAdmit(t, b.proc, 0)
		require.Positive(t, wait, "the pull loop waits while the probe runs")
		require.LessOrEqual(t, wait, 100*time.Millisecond, "and looks again soon")

		cancel()
		require.Equal(t, "shutdown", (<-done).Verdict.String())
		requireAdmit(t, b.proc, 1)
	})
}

func TestBreakerIgnoresBusinessAnswers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		steps := []gwStep{
			declined("card_declined"),
			gwErr(payment.ClassRejected, 400, "invalid_request", 0),
			gwErr(payment.ClassRejected, 422, "idempotency_key_reused", 0),
			gwErr(payment.ClassRetry, 429, "", time.Second),
			gwErr(payment.ClassRetry, 409, "", 0),
			declined("insufficient_funds"),
			succeeded("ch_1"),
		}
		b := setup(t, breakerConfig(1, time.Minute), nil, newFakeGateway(steps...))
		for range steps {
			b.proc.Process(t.Context(), delivery(1))
			requireAdmit(t, b.proc, -1)
		}
		require.Len(t, b.gw.calls(), len(steps))
	})
}

func TestBreakerCountsConsecutiveFailures(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, breakerConfig(2, time.Minute), nil,
			newFakeGateway(trouble(), declined("card_declined"), trouble(), trouble()))
		b.proc.Process(t.Context(), delivery(1))
		requireAdmit(t, b.proc, -1)
		b.proc.Process(t.Context(), delivery(1)) // a decline resets the count
		requireAdmit(t, b.proc, -1)
		b.proc.Process(t.Context(), delivery(1))
		requireAdmit(t, b.proc, -1)
		b.proc.Process(t.Context(), delivery(1))
		requireAdmit(t, b.proc, 0)
	})
}
