package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/payment"
)

func TestFakeDeclinesAmountsEndingIn13(t *testing.T) {
	t.Parallel()
	f := gateway.NewFake(gateway.FakeConfig{})
	require.Equal(t, "fake", f.Name())
	for _, tt := range []struct {
		amount   int64
		declined bool
	}{
		{13, true}, {113, true}, {1013, true}, {999_913, true},
		{1, false}, {12, false}, {14, false}, {130, false}, {1300, false}, {1031, false},
	} {
		t.Run(fmt.Sprint(tt.amount), func(t *testing.T) {
			t.Parallel()
			res, err := f.Charge(t.Context(), testCharge(fmt.Sprintf("amount-%d", tt.amount), tt.amount))
			require.NoError(t, err)
			if tt.declined {
				require.Equal(t, payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: "card_declined"}, res)
				return
			}
			require.Equal(t, payment.StatusSucceeded, res.Status)
			require.True(t, strings.HasPrefix(res.ChargeID, "ch_fk"), res.ChargeID)
		})
	}
}

func TestFakeIdempotency(t *testing.T) {
	t.Parallel()
	f := gateway.NewFake(gateway.FakeConfig{})
	ctx := t.Context()

	first, err := f.Charge(ctx, testCharge("k1", 1000))
	require.NoError(t, err)
	for range 3 {
		again, err := f.Charge(ctx, testCharge("k1", 1000))
		require.NoError(t, err)
		require.Equal(t, first, again)
	}
	declined, err := f.Charge(ctx, testCharge("k13", 1013))
	require.NoError(t, err)
	again, err := f.Charge(ctx, testCharge("k13", 1013))
	require.NoError(t, err)
	require.Equal(t, declined, again)

	other, err := f.Charge(ctx, testCharge("k2", 1000))
	require.NoError(t, err)
	require.NotEqual(t, first.ChargeID, other.ChargeID)

	st := f.Stats()
	require.Equal(t, int64(2), st.Charges)
	require.Equal(t, 3, st.Keys)
	require.Empty(t, st.DoubleCharged)
	require.Equal(t, 1, f.ChargesFor("k1"))
	require.Equal(t, 0, f.ChargesFor("k13"))
	require.Equal(t, 0, f.ChargesFor("unknown"))

	// The same key with a different charge is refused.
	changed := testCharge("k1", 1000)
	changed.Description = "changed"
	_, err = f.Charge(ctx, changed)
	ge := requireGatewayError(t, err, payment.ClassRejected, http.StatusUnprocessableEntity)
	require.Equal(t, "idempotency_key_reused", ge.Code)

	// The same payment under a second key is a double charge, and reported.
	dup := testCharge("k3", 1000)
	dup.PaymentID = "pay_k1"
	_, err = f.Charge(ctx, dup)
	require.NoError(t, err)
	st = f.Stats()
	require.Equal(t, int64(3), st.Charges)
	require.Equal(t, []string{"pay_k1"}, st.DoubleCharged)
}

func TestFakeRefusesInvalidCharge(t *testing.T) {
	t.Parallel()
	f := gateway.NewFake(gateway.FakeConfig{})
	for _, tt := range []struct {
		name   string
		mutate func(*payment.Charge)
	}{
		{"no key", func(c *payment.Charge) { c.IdempotencyKey = "" }},
		{"key with space", func(c *payment.Charge) { c.IdempotencyKey = "a b" }},
		{"long key", func(c *payment.Charge) { c.IdempotencyKey = strings.Repeat("k", 256) }},
		{"no payment id", func(c *payment.Charge) { c.PaymentID = "" }},
		{"no merchant", func(c *payment.Charge) { c.MerchantID = "" }},
		{"no currency", func(c *payment.Charge) { c.Currency = "" }},
		{"no payment method", func(c *payment.Charge) { c.PaymentMethod = "" }},
		{"zero amount", func(c *payment.Charge) { c.AmountMinor = 0 }},
		{"negative amount", func(c *payment.Charge) { c.AmountMinor = -13 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := testCharge("k-"+strings.ReplaceAll(tt.name, " ", "-"), 1000)
			tt.mutate(&c)
			_, err := f.Charge(t.Context(), c)
			ge := requireGatewayError(t, err, payment.ClassRejected, http.StatusBadRequest)
			require.Equal(t, "invalid_request", ge.Code)
		})
	}
	require.Zero(t, f.Stats().Keys)
}

func TestFakeSameKeyInFlight(t *testing.T) {
	t.Parallel()
	f := gateway.NewFake(gateway.FakeConfig{Latency: time.Hour})
	c := testCharge("busy", 1000)

	firstCtx, cancelFirst := context.WithCancel(t.Context())
	defer cancelFirst()
	firstErr := make(chan error, 1)
	go func() {
		_, err := f.Charge(firstCtx, c)
		firstErr <- err
	}()
	require.Eventually(t, func() bool { return f.Stats().InFlight == 1 }, 5*time.Second, time.Millisecond)

	_, err := f.Charge(t.Context(), c)
	ge := requireGatewayError(t, err, payment.ClassRetry, http.StatusConflict)
	require.Equal(t, "idempotency_key_in_use", ge.Code)
	require.False(t, payment.IsBreakerFailure(err))

	cancelFirst()
	err = <-firstErr
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, payment.IsBreakerFailure(err))
	st := f.Stats()
	require.Zero(t, st.InFlight)
	require.Zero(t, st.Keys)
	require.Zero(t, st.Charges)
}

func TestFakeConcurrentSameKeyChargesOnce(t *testing.T) {
	t.Parallel()
	f := gateway.NewFake(gateway.FakeConfig{FailureRate: 0.3, Seed: 3})
	const callers = 16
	results := make([]payment.ChargeResult, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			for {
				res, err := f.Charge(t.Context(), testCharge("shared", 4200))
				if err == nil {
					results[i] = res
					return
				}
				if ge, ok := errors.AsType[*payment.GatewayError](err); !ok || ge.Class == payment.ClassRejected {
					t.Errorf("caller %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i := 1; i < callers; i++ {
		require.Equal(t, results[0], results[i])
	}
	require.Equal(t, payment.StatusSucceeded, results[0].Status)
	require.Equal(t, int64(1), f.Stats().Charges)
}

func TestFakeFailureRate(t *testing.T) {
	t.Parallel()
	f := gateway.NewFake(gateway.FakeConfig{FailureRate: 1})
	_, err := f.Charge(t.Context(), testCharge("k", 1000))
	ge := requireGatewayError(t, err, payment.ClassTrouble, http.StatusServiceUnavailable)
	require.Equal(t, "service_unavailable", ge.Code)
	require.True(t, payment.IsBreakerFailure(err))
	st := f.Stats()
	require.Zero(t, st.Charges)
	require.Zero(t, st.Keys, "a failure leaves no result for the key")
	require.Zero(t, st.InFlight)
}

func TestFakeDeclineRate(t *testing.T) {
	t.Parallel()
	f := gateway.NewFake(gateway.FakeConfig{DeclineRate: 1})
	res, err := f.Charge(t.Context(), testCharge("k", 1000))
	require.NoError(t, err)
	require.Equal(t, payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: "insufficient_funds"}, res)
	require.Zero(t, f.Stats().Charges)
}

func TestFakeSeedIsDeterministic(t *testing.T) {
	t.Parallel()
	outcomes := func(seed int64) []string {
		f := gateway.NewFake(gateway.FakeConfig{DeclineRate: 0.5, FailureRate: 0.2, Seed: seed})
		var out []string
		for i := range 50 {
			res, err := f.Charge(t.Context(), testCharge(fmt.Sprint(i), 1000))
			if err != nil {
				out = append(out, "error")
				continue
			}
			out = append(out, string(res.Status)+":"+res.ChargeID+res.DeclineCode)
		}
		return out
	}
	a := outcomes(42)
	require.Equal(t, a, outcomes(42))
	require.NotEqual(t, a, outcomes(43))
	require.Contains(t, a, "error")
	require.Contains(t, a, "declined:insufficient_funds")
}

func TestFakeLatencyRespectsContext(t *testing.T) {
	t.Parallel()
	f := gateway.NewFake(gateway.FakeConfig{Latency: time.Hour})

	t.Run("deadline", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		_, err := f.Charge(ctx, testCharge("deadline", 1000))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Zero(t, f.ChargesFor("deadline"))
	})
	t.Run("already canceled", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := f.Charge(ctx, testCharge("canceled", 1000))
		require.ErrorIs(t, err, context.Canceled)
		require.False(t, payment.IsBreakerFailure(err))
	})
}

func TestFakeForgetsOldestKeys(t *testing.T) {
	t.Parallel()
	f := gateway.NewFake(gateway.FakeConfig{MaxKeys: 2})
	for _, k := range []string{"a", "b", "c"} {
		_, err := f.Charge(t.Context(), testCharge(k, 1000))
		require.NoError(t, err)
	}
	require.Equal(t, 0, f.ChargesFor("a"), "the oldest key is forgotten")
	require.Equal(t, 1, f.ChargesFor("b"))
	require.Equal(t, 1, f.ChargesFor("c"))

	// Like a real gateway past its key retention, a forgotten key charges
	// again; the payment id is forgotten with it.
	_, err := f.Charge(t.Context(), testCharge("a", 1000))
	require.NoError(t, err)
	require.Equal(t, int64(4), f.Stats().Charges)
}

func TestFakeLookup(t *testing.T) {
	t.Parallel()
	f := gateway.NewFake(gateway.FakeConfig{MaxKeys: 1, MaxCharges: 2})
	ids := map[string]string{}
	for _, k := range []string{"a", "b", "c"} {
		res, err := f.Charge(t.Context(), testCharge(k, 1000))
		require.NoError(t, err)
		ids[k] = res.ChargeID
	}
	for k, want := range map[string]bool{"a": false, "b": true, "c": true} {
		res, err := f.Lookup(t.Context(), k)
		require.NoError(t, err)
		require.Equal(t, want, res.Found, "key %s: MaxCharges keeps the latest two charges", k)
		if want {
			require.Equal(t, ids[k], res.ChargeID)
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := f.Lookup(ctx, "c")
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "lookup")
	require.False(t, payment.IsBreakerFailure(err))

	for _, key := range []string{"", "a b", strings.Repeat("k", 256)} {
		_, err := f.Lookup(t.Context(), key)
		ge := requireGatewayError(t, err, payment.ClassRejected, http.StatusBadRequest)
		require.Equal(t, "invalid_request", ge.Code)
	}
}

func TestFakeFailureRateSparesLookups(t *testing.T) {
	t.Parallel()
	f := gateway.NewFake(gateway.FakeConfig{FailureRate: 1})
	_, err := f.Charge(t.Context(), testCharge("k", 1000))
	requireGatewayError(t, err, payment.ClassTrouble, http.StatusServiceUnavailable)
	res, err := f.Lookup(t.Context(), "k")
	require.NoError(t, err, "lookups answer truthfully: the failed charge moved no money")
	require.False(t, res.Found)
}
