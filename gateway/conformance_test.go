package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/payment"
)

// port is what the worker needs of a gateway.
type port interface {
	Name() string
	Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error)
	Lookup(ctx context.Context, key string) (payment.LookupResult, error)
}

var (
	_ port = (*gateway.HTTP)(nil)
	_ port = (*gateway.Fake)(nil)
)

// portOptions configure a gateway under test alike for every
// implementation.
type portOptions struct {
	latency time.Duration // of a key's first charge request
	maxKeys int           // completed keys remembered for idempotency
}

// impl is a gateway under test and how many keys it has in flight.
type impl struct {
	port
	inFlight func() int
}

// impls are the implementations that must answer alike: the fake, and the
// HTTP client talking to the simulator.
var impls = map[string]func(t *testing.T, o portOptions) impl{
	"fake": func(_ *testing.T, o portOptions) impl {
		f := gateway.NewFake(gateway.FakeConfig{Latency: o.latency, MaxKeys: o.maxKeys})
		return impl{f, func() int { return f.Stats().InFlight }}
	},
	"http+sim": func(t *testing.T, o portOptions) impl {
		b := setup(t, sim.Config{Latency: o.latency, MaxKeys: o.maxKeys}, 0, nil)
		return impl{b.client, func() int { return b.sim.Stats().InFlight }}
	},
}

// requireTableClass checks that the class of a gateway error with a status
// is the one the table of docs/contract.md §5 gives that status: the fake
// and the simulator never answer against the table.
func requireTableClass(t *testing.T, err error, lookup bool) {
	t.Helper()
	ge, ok := errors.AsType[*payment.GatewayError](err)
	if !ok || ge.StatusCode == 0 {
		return
	}
	body, jerr := json.Marshal(map[string]any{"error": map[string]string{"code": ge.Code}})
	require.NoError(t, jerr)
	var classified error
	if lookup {
		_, classified = gateway.ClassifyLookup(ge.StatusCode, http.Header{}, body, time.Now())
	} else {
		_, classified = gateway.Classify(ge.StatusCode, http.Header{}, body, time.Now())
	}
	want, ok := errors.AsType[*payment.GatewayError](classified)
	require.True(t, ok, "status %d classifies as no error", ge.StatusCode)
	require.Equal(t, want.Class, ge.Class, "class of %v against the table", err)
}

// TestConformance runs the same scenarios against the fake and against the
// HTTP client talking to the simulator: both must answer alike.
func TestConformance(t *testing.T) {
	t.Parallel()
	for name, newImpl := range impls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			g := newImpl(t, portOptions{})
			ctx := t.Context()

			res, err := g.Charge(ctx, testCharge("ok", 2500))
			require.NoError(t, err)
			require.Equal(t, payment.StatusSucceeded, res.Status)
			require.NotEmpty(t, res.ChargeID)

			again, err := g.Charge(ctx, testCharge("ok", 2500))
			require.NoError(t, err)
			require.Equal(t, res, again)

			declined, err := g.Charge(ctx, testCharge("no", 2513))
			require.NoError(t, err)
			require.Equal(t, payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: "card_declined"}, declined)

			for _, tt := range []struct {
				name   string
				charge payment.Charge
				class  payment.FailureClass
				status int
				code   string
			}{
				{"reused key", testCharge("ok", 2501), payment.ClassRejected, 422, "idempotency_key_reused"},
				{"invalid", payment.Charge{IdempotencyKey: "bad", PaymentID: "p", AmountMinor: 1}, payment.ClassRejected, 400, "invalid_request"},
			} {
				_, err := g.Charge(ctx, tt.charge)
				ge, ok := errors.AsType[*payment.GatewayError](err)
				require.True(t, ok, "%s: %v", tt.name, err)
				require.Equal(t, tt.class, ge.Class, tt.name)
				require.Equal(t, tt.status, ge.StatusCode, tt.name)
				require.Equal(t, tt.code, ge.Code, tt.name)
				requireTableClass(t, err, false)
			}

			// Lookups: a charge is found with its id, amount, currency and
			// payment id; an unknown or declined key has no charge.
			found, err := g.Lookup(ctx, "ok")
			require.NoError(t, err)
			require.Equal(t, payment.LookupResult{Found: true, ChargeID: res.ChargeID, AmountMinor: 2500, Currency: "EUR", PaymentID: "pay_ok"}, found)
			for _, key := range []string{"unknown", "no", "bad"} {
				notFound, err := g.Lookup(ctx, key)
				require.NoError(t, err, key)
				require.Equal(t, payment.LookupResult{}, notFound, key)
			}
		})
	}
}

// TestConformanceLookupInFlight: while a key's first charge call runs, a
// charge and a lookup for the key are both ClassRetry (409); once the call
// is abandoned, there is no charge to find.
func TestConformanceLookupInFlight(t *testing.T) {
	t.Parallel()
	for name, newImpl := range impls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			g := newImpl(t, portOptions{latency: time.Hour})
			firstCtx, cancelFirst := context.WithCancel(t.Context())
			defer cancelFirst()
			firstErr := make(chan error, 1)
			go func() {
				_, err := g.Charge(firstCtx, testCharge("busy", 1000))
				firstErr <- err
			}()
			require.Eventually(t, func() bool { return g.inFlight() == 1 }, 5*time.Second, time.Millisecond)

			_, err := g.Charge(t.Context(), testCharge("busy", 1000))
			ge := requireGatewayError(t, err, payment.ClassRetry, http.StatusConflict)
			require.Equal(t, "idempotency_key_in_use", ge.Code)
			requireTableClass(t, err, false)

			res, err := g.Lookup(t.Context(), "busy")
			require.Zero(t, res)
			ge = requireGatewayError(t, err, payment.ClassRetry, http.StatusConflict)
			require.Equal(t, "idempotency_key_in_use", ge.Code)
			require.False(t, payment.IsBreakerFailure(err))
			requireTableClass(t, err, true)

			cancelFirst()
			require.ErrorIs(t, <-firstErr, context.Canceled)
			require.Eventually(t, func() bool { return g.inFlight() == 0 }, 5*time.Second, time.Millisecond)
			res, err = g.Lookup(t.Context(), "busy")
			require.NoError(t, err)
			require.False(t, res.Found)
		})
	}
}

// TestConformanceLookupOutlivesKeys: a gateway forgets idempotency keys
// long before charges, so a lookup finds a charge whose key is forgotten.
func TestConformanceLookupOutlivesKeys(t *testing.T) {
	t.Parallel()
	for name, newImpl := range impls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			g := newImpl(t, portOptions{maxKeys: 1})
			first, err := g.Charge(t.Context(), testCharge("old", 1000))
			require.NoError(t, err)
			_, err = g.Charge(t.Context(), testCharge("new", 1000))
			require.NoError(t, err)

			// "old" is forgotten for idempotency: another body under it is a
			// first request, not a 422…
			changed := testCharge("old", 1013)
			res, err := g.Charge(t.Context(), changed)
			require.NoError(t, err, "the key is forgotten")
			require.Equal(t, payment.StatusDeclined, res.Status)

			// …but its charge is still found.
			found, err := g.Lookup(t.Context(), "old")
			require.NoError(t, err)
			require.Equal(t, payment.LookupResult{Found: true, ChargeID: first.ChargeID, AmountMinor: 1000, Currency: "EUR", PaymentID: "pay_old"}, found)
		})
	}
}
