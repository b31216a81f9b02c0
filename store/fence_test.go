package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// TestLeaseExpiryAndFence: holder A's short lease runs out, B takes the key
// over, and every later write by A is fenced out.
func TestLeaseExpiryAndFence(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const key = "fenced"

	claimA := newClaim(key, 1)
	claimA.Lease = 50 * time.Millisecond
	resA := b.claimNew(t, claimA)

	// Wait on the database clock, which is the one leases use.
	require.Eventually(t, func() bool {
		var expired bool
		err := b.pool.QueryRow(b.ctx,
			"SELECT lease_until < clock_timestamp() FROM payments WHERE idempotency_key = $1", key).Scan(&expired)
		return err == nil && expired
	}, 5*time.Second, 5*time.Millisecond)

	claimB := newClaim(key, 2)
	claimB.Owner = ownerB
	resB, err := b.store.Claim(b.ctx, claimB)
	require.NoError(t, err)
	require.Equal(t, payment.ClaimTakeover, resB.Kind)
	require.Equal(t, 2, resB.Attempt)

	before := b.raw(t, key)
	_, err = b.store.Complete(b.ctx, completion(key, resA.Attempt, ownerA, payment.StatusSucceeded))
	require.ErrorIs(t, err, payment.ErrFenced)
	require.Contains(t, err.Error(), `"fenced"`)
	require.Equal(t, before, b.raw(t, key), "a fenced completion writes nothing")

	// A's token with B's name, or B's token with A's name, are fenced too.
	_, err = b.store.Complete(b.ctx, completion(key, resA.Attempt, ownerB, payment.StatusSucceeded))
	require.ErrorIs(t, err, payment.ErrFenced)
	_, err = b.store.Complete(b.ctx, completion(key, resB.Attempt, ownerA, payment.StatusSucceeded))
	require.ErrorIs(t, err, payment.ErrFenced)

	require.ErrorIs(t, b.store.Release(b.ctx, payment.Release{Key: key, Attempt: resA.Attempt, Owner: ownerA}), payment.ErrFenced)
	require.Equal(t, before, b.raw(t, key), "a fenced release writes nothing")

	rec, err := b.store.Complete(b.ctx, completion(key, resB.Attempt, ownerB, payment.StatusSucceeded))
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, rec.Status)
	require.Equal(t, 2, rec.Attempts)
	require.Equal(t, "ch_"+key, rec.GatewayChargeID)
	require.Empty(t, rec.ErrorCode)
	require.False(t, rec.CompletedAt.IsZero())
	raw := b.raw(t, key)
	require.Nil(t, raw.LeaseUntil)
	require.Nil(t, raw.Body, "the request body is dropped once final")
	require.Nil(t, raw.Subject)

	// Once final, the holder's own lease is gone too.
	_, err = b.store.Complete(b.ctx, completion(key, resB.Attempt, ownerB, payment.StatusFailed))
	require.ErrorIs(t, err, payment.ErrFenced)
	require.ErrorIs(t, b.store.Release(b.ctx, payment.Release{Key: key, Attempt: resB.Attempt, Owner: ownerB}), payment.ErrFenced)
	got, err := b.store.Get(b.ctx, key)
	require.NoError(t, err)
	require.Equal(t, rec, got)
}

func TestCompleteWithExpiredButUntakenLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := b.claimNew(t, newClaim("k", 1))
	b.expireLease(t, "k", time.Hour)
	// Nobody took over: the holder's write still counts.
	rec, err := b.store.Complete(b.ctx, completion("k", res.Attempt, ownerA, payment.StatusDeclined))
	require.NoError(t, err)
	require.Equal(t, payment.StatusDeclined, rec.Status)
}

func TestReleaseKeepsAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := b.claimNew(t, newClaim("k", 1))
	require.NoError(t, b.store.Release(b.ctx, payment.Release{Key: "k", Attempt: res.Attempt, Owner: ownerA}))
	raw := b.raw(t, "k")
	require.Equal(t, "processing", raw.Status)
	require.Equal(t, int32(1), raw.Attempts)
	var expired bool
	require.NoError(t, b.pool.QueryRow(b.ctx,
		"SELECT lease_until <= clock_timestamp() FROM payments WHERE idempotency_key = 'k'").Scan(&expired))
	require.True(t, expired)
}

func TestCompleteRejectsInvalidInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := b.claimNew(t, newClaim("k", 1))
	_, err := b.store.Complete(b.ctx, completion("k", res.Attempt, ownerA, payment.StatusProcessing))
	require.ErrorIs(t, err, store.ErrInvalidArgument)
	_, err = b.store.Complete(b.ctx, completion("k", 0, ownerA, payment.StatusSucceeded))
	require.ErrorIs(t, err, store.ErrInvalidArgument)
	require.ErrorIs(t, b.store.Release(b.ctx, payment.Release{Key: "k", Attempt: 1}), store.ErrInvalidArgument)
	require.Equal(t, "processing", b.raw(t, "k").Status)
}

func TestCompleteAndReleaseBatchMixed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	held := map[string]int{}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		held[k] = b.claimNew(t, newClaim(k, 1)).Attempt
	}

	results, err := b.store.CompleteBatch(b.ctx, []payment.Completion{
		completion("c", held["c"], ownerA, payment.StatusSucceeded),
		completion("a", held["a"]+1, ownerA, payment.StatusSucceeded), // wrong token
		completion("unknown", 1, ownerA, payment.StatusSucceeded),
		completion("b", held["b"], ownerB, payment.StatusSucceeded), // wrong owner
		completion("d", held["d"], ownerA, payment.StatusDeclined),
		completion("d", held["d"], ownerA, payment.StatusSucceeded), // already final
	})
	require.NoError(t, err)
	require.Len(t, results, 6)
	require.NoError(t, results[0].Err)
	require.Equal(t, payment.StatusSucceeded, results[0].Record.Status)
	require.Equal(t, "c", results[0].Record.IdempotencyKey)
	require.ErrorIs(t, results[1].Err, payment.ErrFenced)
	require.ErrorIs(t, results[2].Err, payment.ErrFenced)
	require.ErrorIs(t, results[3].Err, payment.ErrFenced)
	require.NoError(t, results[4].Err)
	require.Equal(t, payment.StatusDeclined, results[4].Record.Status)
	require.ErrorIs(t, results[5].Err, payment.ErrFenced)
	require.Zero(t, results[1].Record)

	for k, want := range map[string]string{"a": "processing", "b": "processing", "c": "succeeded", "d": "declined"} {
		require.Equal(t, want, b.raw(t, k).Status, "key %s", k)
	}

	errs, err := b.store.ReleaseBatch(b.ctx, []payment.Release{
		{Key: "e", Attempt: held["e"], Owner: ownerA},
		{Key: "c", Attempt: held["c"], Owner: ownerA}, // final
		{Key: "a", Attempt: held["a"], Owner: ownerA},
		{Key: "b", Attempt: held["b"], Owner: ownerB}, // wrong owner
	})
	require.NoError(t, err)
	require.Len(t, errs, 4)
	require.NoError(t, errs[0])
	require.ErrorIs(t, errs[1], payment.ErrFenced)
	require.NoError(t, errs[2])
	require.ErrorIs(t, errs[3], payment.ErrFenced)

	// Released keys are taken over at once; b's lease still runs.
	res, err := b.store.ClaimBatch(b.ctx, []payment.Claim{newClaim("a", 2), newClaim("b", 2), newClaim("e", 2)})
	require.NoError(t, err)
	require.Equal(t, payment.ClaimTakeover, res[0].Kind)
	require.Equal(t, payment.ClaimInFlight, res[1].Kind)
	require.Equal(t, payment.ClaimTakeover, res[2].Kind)
}

func TestEmptyBatches(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cr, err := b.store.ClaimBatch(b.ctx, nil)
	require.NoError(t, err)
	require.Empty(t, cr)
	co, err := b.store.CompleteBatch(b.ctx, nil)
	require.NoError(t, err)
	require.Empty(t, co)
	re, err := b.store.ReleaseBatch(b.ctx, nil)
	require.NoError(t, err)
	require.Empty(t, re)
}
