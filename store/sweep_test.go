package store_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// setAgo sets a timestamp column of key's row to the database clock minus ago.
func (b *testBundle) setAgo(t *testing.T, key, column string, ago time.Duration) {
	t.Helper()
	tag, err := b.pool.Exec(b.ctx,
		"UPDATE payments SET "+column+" = clock_timestamp() - $2 * interval '1 microsecond' WHERE idempotency_key = $1",
		key, ago.Microseconds())
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())
}

func stuckKeys(rows []payment.Stuck) []string {
	keys := make([]string, len(rows))
	for i, r := range rows {
		keys[i] = r.Key
	}
	return keys
}

func TestSweepStuck(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const grace = time.Minute

	for _, k := range []string{"old", "older", "recent", "live", "final", "swept"} {
		b.claimNew(t, newClaim(k, 1))
	}
	b.setAgo(t, "old", "lease_until", 10*time.Minute)
	b.setAgo(t, "older", "lease_until", 20*time.Minute)
	b.setAgo(t, "recent", "lease_until", 10*time.Second) // expired, within grace
	b.setAgo(t, "swept", "lease_until", 10*time.Minute)
	b.setAgo(t, "swept", "swept_at", 10*time.Second) // re-published lately
	_, err := b.store.Complete(b.ctx, completion("final", 1, ownerA, payment.StatusFailed))
	require.NoError(t, err)
	b.setAgo(t, "final", "completed_at", time.Hour)

	rows, ok, err := b.store.SweepStuck(b.ctx, grace, 1)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, []string{"older"}, stuckKeys(rows), "oldest lease first, at most limit")
	require.Equal(t, payment.Stuck{
		Key: "older", PaymentID: "pay_older", MerchantID: "merchant_1", AmountMinor: 1999, Currency: "EUR", Attempts: 1,
		Subject: "payments.requests.merchant_1", Body: []byte(`{"payment_id":"pay_older"}`),
	}, rows[0])
	require.NotNil(t, b.raw(t, "older").SweptAt)

	rows, ok, err = b.store.SweepStuck(b.ctx, grace, 100)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, []string{"old"}, stuckKeys(rows), "older was swept just now")

	rows, ok, err = b.store.SweepStuck(b.ctx, grace, 100)
	require.NoError(t, err)
	require.True(t, ok)
	require.Empty(t, rows, "nothing again within grace")

	// After grace, a row still stuck comes back.
	b.setAgo(t, "old", "swept_at", 2*grace)
	rows, _, err = b.store.SweepStuck(b.ctx, grace, 100)
	require.NoError(t, err)
	require.Equal(t, []string{"old"}, stuckKeys(rows))

	// A take-over (the re-published request arriving) starts afresh.
	res, err := b.store.Claim(b.ctx, newClaim("older", 99))
	require.NoError(t, err)
	require.Equal(t, payment.ClaimTakeover, res.Kind)
	require.Nil(t, b.raw(t, "older").SweptAt)
}

func TestSweepStuckOneSweeperAtATime(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 30
	for i := range n {
		key := string(rune('A' + i))
		b.claimNew(t, newClaim(key, 1))
		b.setAgo(t, key, "lease_until", time.Hour)
	}

	// While another worker holds the sweeper lock, nobody else sweeps.
	tx, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	defer tx.Rollback(b.ctx) //nolint:errcheck // rolled back below
	_, err = tx.Exec(b.ctx, "SELECT pg_advisory_xact_lock($1)", store.SweeperLockID)
	require.NoError(t, err)
	rows, ok, err := b.store.SweepStuck(b.ctx, time.Minute, 100)
	require.NoError(t, err)
	require.False(t, ok)
	require.Nil(t, rows)
	require.NoError(t, tx.Rollback(b.ctx))

	// Concurrent sweepers, a few rows each: every stuck row is handed out
	// exactly once.
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		wg   sync.WaitGroup
	)
	// Each sweeper tries until every row was handed out (most tries lose
	// the lock to another sweeper), or a deadline passes.
	deadline := time.Now().Add(20 * time.Second)
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				rows, _, err := b.store.SweepStuck(b.ctx, time.Minute, 3)
				if !assertNoError(t, err) {
					return
				}
				mu.Lock()
				for _, r := range rows {
					seen[r.Key]++
				}
				done := len(seen) == n
				mu.Unlock()
				if done {
					return
				}
			}
		})
	}
	wg.Wait()
	require.Len(t, seen, n)
	for k, c := range seen {
		require.Equal(t, 1, c, "key %s", k)
	}
}

// assertNoError is require.NoError for goroutines other than the test's.
func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}

func TestSweepStuckInvalidArguments(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, _, err := b.store.SweepStuck(b.ctx, 0, 10)
	require.ErrorIs(t, err, store.ErrInvalidArgument)
	_, _, err = b.store.SweepStuck(b.ctx, time.Minute, 0)
	require.ErrorIs(t, err, store.ErrInvalidArgument)
}
