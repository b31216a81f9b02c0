package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// insertRows writes n final rows directly: key k<i>, payment id p<i> for
// every tenth row (its key differs), else the key; completed over the last
// 50 minutes.
func insertRows(t *testing.T, b *testBundle, n int) {
	t.Helper()
	_, err := b.pool.Exec(b.ctx, `
		INSERT INTO payments (idempotency_key, payment_id, merchant_id, amount_minor, currency, status, attempts,
		                      fingerprint, created_at, updated_at, completed_at)
		SELECT 'k' || i, CASE WHEN i % 10 = 0 THEN 'p' || i ELSE 'k' || i END, 'm' || (i % 3), i, 'EUR',
		       CASE WHEN i % 4 = 0 THEN 'declined' ELSE 'succeeded' END, 1, 'fp',
		       ts, ts, ts
		FROM generate_series(1, $1) AS i, LATERAL (SELECT clock_timestamp() - interval '50 minutes' * i / $1 AS ts) AS x`, n)
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, `ANALYZE payments`)
	require.NoError(t, err)
}

func TestSearchPayments(t *testing.T) {
	t.Parallel()
	b := setup(t)
	insertRows(t, b, 500)

	// By key, and by a payment id that differs from its key.
	recs, next, err := b.store.SearchPayments(b.ctx, store.SearchFilter{ID: "k7"}, store.Cursor{}, 10)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, store.Cursor{}, next)
	recs, _, err = b.store.SearchPayments(b.ctx, store.SearchFilter{ID: "p40"}, store.Cursor{}, 10)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, "k40", recs[0].IdempotencyKey)

	// Filters and keyset pages: every match exactly once.
	f := store.SearchFilter{ListFilter: store.ListFilter{MerchantID: "m1", Status: payment.StatusSucceeded, MinAmount: 100, MaxAmount: 400}}
	want, err := b.store.CountPayments(b.ctx, f, store.CountOptions{})
	require.NoError(t, err)
	require.False(t, want.Estimate, "few rows are counted exactly")
	seen := map[string]bool{}
	var after store.Cursor
	for {
		recs, next, err := b.store.SearchPayments(b.ctx, f, after, 7)
		require.NoError(t, err)
		for _, r := range recs {
			require.False(t, seen[r.IdempotencyKey], "twice: %s", r.IdempotencyKey)
			seen[r.IdempotencyKey] = true
			require.Equal(t, "m1", r.MerchantID)
			require.GreaterOrEqual(t, r.AmountMinor, int64(100))
		}
		if next.Key == "" {
			break
		}
		after = next
	}
	require.Equal(t, want.N, int64(len(seen)))
}

func TestCountPaymentsEstimates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	insertRows(t, b, 2000)
	exact, err := b.store.CountPayments(b.ctx, store.SearchFilter{}, store.CountOptions{})
	require.NoError(t, err)
	require.Equal(t, store.RowCount{N: 2000}, exact)
	// Above ExactBelow the planner's estimate is returned, marked so.
	est, err := b.store.CountPayments(b.ctx, store.SearchFilter{}, store.CountOptions{ExactBelow: 10})
	require.NoError(t, err)
	require.True(t, est.Estimate)
	require.InDelta(t, 2000, est.N, 200, "the statistics are fresh (ANALYZE)")
	byStatus, err := b.store.StatusCounts(b.ctx, store.CountOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(1500), byStatus[payment.StatusSucceeded].N)
	require.Equal(t, int64(500), byStatus[payment.StatusDeclined].N)
}

func TestOutcomes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	insertRows(t, b, 600)
	buckets, err := b.store.Outcomes(b.ctx, time.Hour, 5*time.Minute, 10*time.Second)
	require.NoError(t, err)
	require.Len(t, buckets, 12)
	var total int64
	for i, bk := range buckets {
		if i > 0 {
			require.Equal(t, 5*time.Minute, bk.Start.Sub(buckets[i-1].Start))
		}
		total += bk.ByStatus[payment.StatusSucceeded] + bk.ByStatus[payment.StatusDeclined]
	}
	require.Equal(t, int64(600), total)
	require.Zero(t, buckets[0].ByStatus[payment.StatusSucceeded], "nothing completed 55-60 minutes ago")
	_, err = b.store.Outcomes(b.ctx, time.Hour, 0, 0)
	require.ErrorIs(t, err, store.ErrInvalidArgument)
}

func TestListActions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := range 5 {
		actor := []string{"alice", "bob"}[i%2]
		_, err := b.store.RecordAction(b.ctx, store.OperatorAction{Actor: actor, Action: "dlq_replay", DryRun: i%2 == 0})
		require.NoError(t, err)
	}
	page, next, err := b.store.ListActions(b.ctx, store.ActionFilter{}, 2)
	require.NoError(t, err)
	require.Len(t, page, 2)
	require.Greater(t, page[0].ID, page[1].ID, "newest first")
	page2, _, err := b.store.ListActions(b.ctx, store.ActionFilter{BeforeID: next}, 10)
	require.NoError(t, err)
	require.Len(t, page2, 3)
	alice, _, err := b.store.ListActions(b.ctx, store.ActionFilter{Actor: "alice"}, 10)
	require.NoError(t, err)
	require.Len(t, alice, 3)
}
