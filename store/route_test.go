package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

// TestRoute: the claim stores the chosen gateway, a take-over keeps it, a
// failover moves it under the lease's fence and lists every gateway, and
// each call names its gateway (docs/contract.md §5, "Several gateways").
func TestRoute(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const key = "route-1"

	c := newClaim(key, 1)
	c.Gateway = "acq_a"
	res := b.claimNew(t, c)
	require.Equal(t, "acq_a", res.Record.Gateway)

	// A lease that is not ours, or a wrong from, moves nothing.
	require.ErrorIs(t, b.store.Route(b.ctx, key, res.Attempt, ownerB, "acq_a", "acq_b"), payment.ErrFenced)
	require.ErrorIs(t, b.store.Route(b.ctx, key, res.Attempt, ownerA, "acq_x", "acq_b"), payment.ErrFenced)
	require.NoError(t, b.store.Route(b.ctx, key, res.Attempt, ownerA, "acq_a", "acq_b"))
	tried, err := b.store.GatewaysTried(b.ctx, key)
	require.NoError(t, err)
	require.Equal(t, []string{"acq_a", "acq_b"}, tried)

	// The lease ends unrecorded; the take-over stays on acq_b whatever it
	// would choose now.
	b.expireLease(t, key, time.Second)
	c2 := newClaim(key, 2)
	c2.Owner, c2.Gateway = ownerB, "acq_a"
	res2, err := b.store.Claim(b.ctx, c2)
	require.NoError(t, err)
	require.Equal(t, payment.ClaimTakeover, res2.Kind)
	require.Equal(t, "acq_b", res2.Record.Gateway)

	done := completion(key, res2.Attempt, ownerB, payment.StatusSucceeded)
	done.Gateway = "acq_b"
	done.Attempts = []payment.Attempt{{Kind: payment.AttemptCharge, StartedAt: time.Now(), Class: payment.AttemptClassOK,
		Result: "succeeded", ChargeID: "ch_b", Gateway: "acq_b"}}
	rec, err := b.store.Complete(b.ctx, done)
	require.NoError(t, err)
	require.Equal(t, "acq_b", rec.Gateway)
	var gw string
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT gateway FROM payment_attempts WHERE idempotency_key = $1`, key).Scan(&gw))
	require.Equal(t, "acq_b", gw)
	tried, err = b.store.GatewaysTried(b.ctx, key)
	require.NoError(t, err)
	require.Equal(t, []string{"acq_a", "acq_b"}, tried)
}
