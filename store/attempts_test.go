package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

func call(kind payment.AttemptKind, class, result string, http int) payment.Attempt {
	return payment.Attempt{Kind: kind, StartedAt: time.Now().Truncate(time.Microsecond), Duration: 3 * time.Millisecond,
		HTTPStatus: http, Class: class, Result: result}
}

// TestAttemptsRecordedWithTheFencedWrite: a release and a completion write
// their lease's gateway calls in the same statement; a write fenced out adds
// none, and deleting the payment deletes its calls.
func TestAttemptsRecordedWithTheFencedWrite(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const key = "att"
	res := b.claimNew(t, newClaim(key, 1))

	trouble := call(payment.AttemptCharge, "trouble", "", 503)
	trouble.ErrorCode = "service_unavailable"
	require.NoError(t, b.store.Release(b.ctx, payment.Release{Key: key, Attempt: res.Attempt, Owner: ownerA,
		Ambiguous: true, Attempts: []payment.Attempt{trouble}}))
	// The same release again is fenced (the owner was cleared): no call added.
	require.ErrorIs(t, b.store.Release(b.ctx, payment.Release{Key: key, Attempt: res.Attempt, Owner: ownerA,
		Attempts: []payment.Attempt{trouble}}), payment.ErrFenced)

	b.expireLease(t, key, time.Second)
	c2 := newClaim(key, 2)
	c2.Owner = ownerB
	res2, err := b.store.Claim(b.ctx, c2)
	require.NoError(t, err)
	require.Equal(t, payment.ClaimTakeover, res2.Kind)

	// A's stale completion is fenced and adds nothing.
	stale := completion(key, res.Attempt, ownerA, payment.StatusSucceeded)
	stale.Attempts = []payment.Attempt{call(payment.AttemptCharge, "ok", "succeeded", 0)}
	_, err = b.store.Complete(b.ctx, stale)
	require.ErrorIs(t, err, payment.ErrFenced)

	ok := call(payment.AttemptCharge, payment.AttemptClassOK, "succeeded", 0)
	ok.ChargeID = "ch_att"
	lookup := call(payment.AttemptLookup, payment.AttemptClassOK, payment.LookupNotFound, 0)
	done := completion(key, res2.Attempt, ownerB, payment.StatusSucceeded)
	done.Attempts = []payment.Attempt{lookup, ok}
	// A batch with another key's completion, whose calls stay its own.
	other := b.claimNew(t, newClaim("other", 3))
	oc := completion("other", other.Attempt, ownerA, payment.StatusDeclined)
	oc.Attempts = []payment.Attempt{call(payment.AttemptCharge, payment.AttemptClassOK, "declined", 0)}
	out, err := b.store.CompleteBatch(b.ctx, []payment.Completion{oc, done})
	require.NoError(t, err)
	require.NoError(t, out[0].Err)
	require.NoError(t, out[1].Err)

	got, err := b.store.Attempts(b.ctx, key)
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Equal(t, []int{1, 2, 2}, []int{got[0].LeaseAttempt, got[1].LeaseAttempt, got[2].LeaseAttempt})
	require.Equal(t, []string{ownerA, ownerB, ownerB}, []string{got[0].WorkerID, got[1].WorkerID, got[2].WorkerID})
	require.Equal(t, trouble.StartedAt.UTC(), got[0].StartedAt.UTC())
	got[0].StartedAt = trouble.StartedAt
	require.Equal(t, trouble, got[0].Attempt)
	require.Equal(t, payment.AttemptLookup, got[1].Kind)
	require.Equal(t, payment.LookupNotFound, got[1].Result)
	require.Equal(t, "ch_att", got[2].ChargeID)
	require.Equal(t, 3*time.Millisecond, got[2].Duration)

	otherCalls, err := b.store.Attempts(b.ctx, "other")
	require.NoError(t, err)
	require.Len(t, otherCalls, 1)
	require.Equal(t, "declined", otherCalls[0].Result)

	// An invalid call refuses the write as a whole.
	bad := completion("x", 1, ownerA, payment.StatusSucceeded)
	bad.Attempts = []payment.Attempt{{Kind: "poke", Class: "ok", StartedAt: time.Now()}}
	_, err = b.store.Complete(b.ctx, bad)
	require.ErrorIs(t, err, store.ErrInvalidArgument)

	// Retention's delete cascades.
	_, err = b.pool.Exec(b.ctx, `DELETE FROM payments WHERE idempotency_key = $1`, key)
	require.NoError(t, err)
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(*) FROM payment_attempts WHERE idempotency_key = $1`, key).Scan(&n))
	require.Zero(t, n)
}

// TestListPaymentsKeyset: pages of every size return every matching row
// exactly once, newest first, while rows are added during the walk.
func TestListPaymentsKeyset(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 57
	for i := range n {
		c := newClaim(fmt.Sprintf("k%03d", i), uint64(i+1))
		c.AmountMinor = int64(100 + i)
		if i%3 == 0 {
			c.MerchantID = "merchant_2"
		}
		c.Fingerprint = fingerprint(c)
		res := b.claimNew(t, c)
		if i%2 == 0 {
			_, err := b.store.Complete(b.ctx, completion(c.Key, res.Attempt, ownerA, payment.StatusDeclined))
			require.NoError(t, err)
		}
	}
	// Same created_at for several rows: the key breaks the tie.
	_, err := b.pool.Exec(b.ctx, `UPDATE payments SET created_at = '2026-01-01T00:00:00Z' WHERE idempotency_key < 'k010'`)
	require.NoError(t, err)

	walk := func(f store.ListFilter, limit int, during func(page int)) []string {
		var (
			keys []string
			cur  store.Cursor
		)
		for page := 0; ; page++ {
			rows, next, err := b.store.ListPayments(b.ctx, f, cur, limit)
			require.NoError(t, err)
			for i, r := range rows {
				keys = append(keys, r.IdempotencyKey)
				if i > 0 {
					prev := rows[i-1]
					require.True(t, prev.CreatedAt.After(r.CreatedAt) ||
						(prev.CreatedAt.Equal(r.CreatedAt) && prev.IdempotencyKey > r.IdempotencyKey), "newest first")
				}
			}
			if next.Key == "" {
				return keys
			}
			parsed, err := store.ParseCursor(next.String())
			require.NoError(t, err)
			require.Equal(t, next.Key, parsed.Key)
			require.True(t, next.CreatedAt.Equal(parsed.CreatedAt))
			cur = parsed
			if during != nil {
				during(page)
			}
		}
	}
	for _, limit := range []int{1, 5, 56, 57, 100} {
		keys := walk(store.ListFilter{}, limit, nil)
		require.Len(t, keys, n, "limit %d", limit)
		seen := map[string]bool{}
		for _, k := range keys {
			require.False(t, seen[k], "limit %d: %s twice", limit, k)
			seen[k] = true
		}
	}
	// New rows written during the walk are newer: they never show up in
	// later pages, and no old row is lost or repeated.
	added := 0
	keys := walk(store.ListFilter{}, 10, func(int) {
		b.claimNew(t, newClaim(fmt.Sprintf("new%d", added), uint64(1000+added)))
		added++
	})
	require.Len(t, keys, n)

	f := store.ListFilter{Status: payment.StatusDeclined, MerchantID: "merchant_2", MinAmount: 110, MaxAmount: 150}
	keys = walk(f, 2, nil)
	var want []string
	for i := n - 1; i >= 0; i-- {
		if i%2 == 0 && i%3 == 0 && 100+i >= 110 && 100+i <= 150 {
			want = append(want, fmt.Sprintf("k%03d", i))
		}
	}
	require.ElementsMatch(t, want, keys)

	keys = walk(store.ListFilter{ErrorCode: "card_declined", ByCompleted: true, Since: time.Now().Add(-time.Hour)}, 7, nil)
	require.Len(t, keys, (n+1)/2)

	_, err = store.ParseCursor("!!")
	require.ErrorIs(t, err, store.ErrBadCursor)
}

// TestSettleRecordsItsLookup: the reconciler's settling lookup is written
// with the settlement; a fenced settlement adds nothing.
func TestSettleRecordsItsLookup(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const key = "unk"
	res := b.claimNew(t, newClaim(key, 1))
	_, err := b.store.Complete(b.ctx, payment.Completion{Key: key, Attempt: res.Attempt, Owner: ownerA,
		Status: payment.StatusUnknown, Ambiguous: true})
	require.NoError(t, err)

	found := call(payment.AttemptLookup, payment.AttemptClassOK, payment.LookupFound, 0)
	found.ChargeID = "ch_late"
	stale := payment.Completion{Key: key, Attempt: res.Attempt + 1, Status: payment.StatusSucceeded,
		GatewayChargeID: "ch_late", Owner: "reconciler", Attempts: []payment.Attempt{found}}
	_, err = b.store.Settle(b.ctx, stale, payment.StatusUnknown, time.Now())
	require.ErrorIs(t, err, payment.ErrFenced)
	got, err := b.store.Attempts(b.ctx, key)
	require.NoError(t, err)
	require.Empty(t, got)

	stale.Attempt = res.Attempt
	rec, err := b.store.Settle(b.ctx, stale, payment.StatusUnknown, time.Now())
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, rec.Status)
	got, err = b.store.Attempts(b.ctx, key)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "reconciler", got[0].WorkerID)
	require.Equal(t, "ch_late", got[0].ChargeID)
	require.Equal(t, res.Attempt, got[0].LeaseAttempt)
}
