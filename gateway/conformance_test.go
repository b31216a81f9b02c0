package gateway_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/payment"
)

// charger is what the worker needs of a gateway.
type charger interface {
	Name() string
	Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error)
}

var (
	_ charger = (*gateway.HTTP)(nil)
	_ charger = (*gateway.Fake)(nil)
)

// TestConformance runs the same scenarios against the fake and against the
// HTTP client talking to the simulator: both must answer alike.
func TestConformance(t *testing.T) {
	t.Parallel()
	impls := map[string]func(t *testing.T) charger{
		"fake": func(*testing.T) charger { return gateway.NewFake(gateway.FakeConfig{}) },
		"http+sim": func(t *testing.T) charger {
			return setup(t, sim.Config{}, 0, nil).client
		},
	}
	for name, newCharger := range impls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			g := newCharger(t)
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
			}
		})
	}
}
