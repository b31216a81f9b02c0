package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

// TestTakeoverChargesTheStoredRequest: a take-over keeps the request of the
// key's first claim and hands it back, so that every attempt charges the
// same body (docs/contract.md §5), also when a failed row is replayed.
func TestTakeoverChargesTheStoredRequest(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := newClaim("frozen", 1)
	b.claimNew(t, first)
	require.NoError(t, b.store.Release(b.ctx, payment.Release{Key: "frozen", Attempt: 1, Owner: ownerA}))

	// A duplicate (same fingerprint) whose body differs, in its
	// description say, takes over: it gets the first body back.
	dup := newClaim("frozen", 2)
	dup.Body = []byte(`{"payment_id":"pay_frozen","description":"another"}`)
	dup.Owner = ownerB
	res, err := b.store.Claim(b.ctx, dup)
	require.NoError(t, err)
	require.Equal(t, payment.ClaimTakeover, res.Kind)
	require.Equal(t, payment.StatusProcessing, res.From)
	require.Equal(t, first.Body, res.Request)
	require.Equal(t, first.Body, b.raw(t, "frozen").Body)

	// Failed rows keep the request for a replay.
	_, err = b.store.Complete(b.ctx, completion("frozen", 2, ownerB, payment.StatusFailed))
	require.NoError(t, err)
	require.Equal(t, first.Body, b.raw(t, "frozen").Body)
	replay := newClaim("frozen", 3)
	replay.Body = []byte(`{"payment_id":"pay_frozen","description":"replayed"}`)
	res, err = b.store.Claim(b.ctx, replay)
	require.NoError(t, err)
	require.Equal(t, payment.ClaimTakeover, res.Kind)
	require.Equal(t, payment.StatusFailed, res.From)
	require.Equal(t, first.Body, res.Request)

	// A succeeded row drops it.
	_, err = b.store.Complete(b.ctx, completion("frozen", 3, ownerA, payment.StatusSucceeded))
	require.NoError(t, err)
	require.Nil(t, b.raw(t, "frozen").Body)
}

// TestReleaseHoldsTheLeaseUntilTheRetry: a released row stays leased until
// the retry is due, so that another message is in flight, the same message
// is busy, and the sweeper finds nothing (docs/contract.md §6.5).
func TestReleaseHoldsTheLeaseUntilTheRetry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.claimNew(t, newClaim("held", 1))
	require.NoError(t, b.store.Release(b.ctx, payment.Release{Key: "held", Attempt: 1, Owner: ownerA, Hold: 20 * time.Second}))

	same, err := b.store.Claim(b.ctx, newClaim("held", 1))
	require.NoError(t, err)
	require.Equal(t, payment.ClaimBusy, same.Kind)
	require.Greater(t, same.RetryAfter, 19*time.Second)
	require.LessOrEqual(t, same.RetryAfter, 20*time.Second)

	other, err := b.store.Claim(b.ctx, newClaim("held", 2))
	require.NoError(t, err)
	require.Equal(t, payment.ClaimInFlight, other.Kind)

	rows, ok, err := b.store.SweepStuck(b.ctx, time.Second, 10)
	require.NoError(t, err)
	require.True(t, ok)
	require.Empty(t, rows, "the sweeper re-publishes a payment that waits for its retry")

	// The releaser's own lease is gone: it can no longer record.
	_, err = b.store.Complete(b.ctx, completion("held", 1, ownerA, payment.StatusSucceeded))
	require.ErrorIs(t, err, payment.ErrFenced)

	b.expireLease(t, "held", time.Millisecond)
	res, err := b.store.Claim(b.ctx, newClaim("held", 1))
	require.NoError(t, err)
	require.Equal(t, payment.ClaimTakeover, res.Kind)
	require.False(t, res.Record.Ambiguous, "a released lease charged nothing")
}

// TestAmbiguity: a row becomes ambiguous when a release or record says an
// attempt may have charged, or when a lease is lost (its holder never gave
// it back) — and stays so.
func TestAmbiguity(t *testing.T) {
	t.Parallel()
	b := setup(t)

	b.claimNew(t, newClaim("lost", 1))
	b.expireLease(t, "lost", time.Second)
	res, err := b.store.Claim(b.ctx, newClaim("lost", 2))
	require.NoError(t, err)
	require.Equal(t, payment.ClaimTakeover, res.Kind)
	require.True(t, res.Record.Ambiguous, "the holder of a lost lease may have charged")

	b.claimNew(t, newClaim("released", 1))
	require.NoError(t, b.store.Release(b.ctx, payment.Release{Key: "released", Attempt: 1, Owner: ownerA, Ambiguous: true}))
	res, err = b.store.Claim(b.ctx, newClaim("released", 1))
	require.NoError(t, err)
	require.Equal(t, payment.ClaimTakeover, res.Kind)
	require.True(t, res.Record.Ambiguous)
	rec, err := b.store.Complete(b.ctx, completion("released", 2, ownerA, payment.StatusFailed))
	require.NoError(t, err)
	require.True(t, rec.Ambiguous, "ambiguity is never forgotten")
	got, err := b.store.Get(b.ctx, "released")
	require.NoError(t, err)
	require.True(t, got.Ambiguous)
}

// TestUnknownAndReconciliation walks a row through unknown: recorded by its
// lease holder, in flight for every claim, due for the reconciler, settled
// once.
func TestUnknownAndReconciliation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.claimNew(t, newClaim("unk", 1))
	rec, err := b.store.Complete(b.ctx, payment.Completion{Key: "unk", Attempt: 1, Owner: ownerA,
		Status: payment.StatusUnknown, Gateway: "fake", Ambiguous: true})
	require.NoError(t, err)
	require.Equal(t, payment.StatusUnknown, rec.Status)
	require.True(t, rec.CompletedAt.IsZero(), "unknown is not final")
	raw := b.raw(t, "unk")
	require.Nil(t, raw.LeaseUntil)
	require.NotNil(t, raw.Body, "the request stays for the operator")

	for _, seq := range []uint64{1, 7} {
		res, err := b.store.Claim(b.ctx, newClaim("unk", seq))
		require.NoError(t, err)
		require.Equal(t, payment.ClaimInFlight, res.Kind, "the reconciler owns an unknown row")
	}

	count, oldest, err := b.store.UnknownStats(b.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, count)
	require.Greater(t, oldest, time.Duration(0))

	var tries []int
	backoff := func(n int) time.Duration { tries = append(tries, n); return time.Hour }
	rows, ok, err := b.store.DueUnknown(b.ctx, 10, backoff)
	require.NoError(t, err)
	require.True(t, ok)
	require.Len(t, rows, 1)
	require.Equal(t, "unk", rows[0].IdempotencyKey)
	require.Equal(t, []int{1}, tries)
	rows, _, err = b.store.DueUnknown(b.ctx, 10, backoff)
	require.NoError(t, err)
	require.Empty(t, rows, "not due again for an hour")

	at := time.Date(2026, 12, 1, 10, 0, 0, 123000, time.UTC)
	settled, err := b.store.Settle(b.ctx, payment.Completion{Key: "unk", Attempt: 1, Status: payment.StatusSucceeded,
		GatewayChargeID: "ch_late", Ambiguous: true}, payment.StatusUnknown, at)
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, settled.Status)
	require.Equal(t, "ch_late", settled.GatewayChargeID)
	require.Equal(t, "fake", settled.Gateway, "the gateway recorded with unknown stays")
	require.True(t, at.Equal(settled.CompletedAt))
	require.Nil(t, b.raw(t, "unk").Body)

	_, err = b.store.Settle(b.ctx, payment.Completion{Key: "unk", Attempt: 1, Status: payment.StatusFailed},
		payment.StatusUnknown, at)
	require.ErrorIs(t, err, payment.ErrFenced, "settled once")
	count, oldest, err = b.store.UnknownStats(b.ctx)
	require.NoError(t, err)
	require.Zero(t, count)
	require.Zero(t, oldest)
}

// TestSettleStuck: the sweeper settles a processing row only once its lease
// has expired, fenced on the attempts it read.
func TestSettleStuck(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.claimNew(t, newClaim("stuck", 1))
	c := payment.Completion{Key: "stuck", Attempt: 1, Status: payment.StatusFailed, ErrorCode: payment.ErrorCodeInvalid}
	_, err := b.store.Settle(b.ctx, c, payment.StatusProcessing, time.Now())
	require.ErrorIs(t, err, payment.ErrFenced, "a live lease is not the sweeper's")
	b.expireLease(t, "stuck", time.Minute)
	_, err = b.store.Settle(b.ctx, payment.Completion{Key: "stuck", Attempt: 2, Status: payment.StatusFailed},
		payment.StatusProcessing, time.Now())
	require.ErrorIs(t, err, payment.ErrFenced, "another attempt")
	rec, err := b.store.Settle(b.ctx, c, payment.StatusProcessing, time.Now())
	require.NoError(t, err)
	require.Equal(t, payment.StatusFailed, rec.Status)
	require.Equal(t, payment.ErrorCodeInvalid, rec.ErrorCode)
}

// TestExtendLease: a holder pushes its lease out while its call runs; a
// lease taken over or released cannot be extended.
func TestExtendLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.claimNew(t, newClaim("ext", 1))
	b.expireLease(t, "ext", -time.Second) // one second left
	require.NoError(t, b.store.ExtendLease(b.ctx, "ext", 1, ownerA, time.Minute))
	require.WithinDuration(t, time.Now().Add(time.Minute), *b.raw(t, "ext").LeaseUntil, 10*time.Second)
	require.ErrorIs(t, b.store.ExtendLease(b.ctx, "ext", 1, ownerB, time.Minute), payment.ErrFenced)
	require.ErrorIs(t, b.store.ExtendLease(b.ctx, "ext", 2, ownerA, time.Minute), payment.ErrFenced)
	require.NoError(t, b.store.Release(b.ctx, payment.Release{Key: "ext", Attempt: 1, Owner: ownerA}))
	require.ErrorIs(t, b.store.ExtendLease(b.ctx, "ext", 1, ownerA, time.Minute), payment.ErrFenced)
}
