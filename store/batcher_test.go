package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// startBatcher runs a Batcher until the test ends and checks that Run
// returns.
func startBatcher(t *testing.T, s *store.Store, cfg store.BatcherConfig) *store.Batcher {
	t.Helper()
	batcher := store.NewBatcher(s, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- batcher.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return batcher
}

func TestBatcherBadItemDoesNotFailOthers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 8
	// The batch is sent only when full: all n claims go in one statement.
	batcher := startBatcher(t, b.store, store.BatcherConfig{MaxBatch: n, MaxWait: time.Hour})

	var wg sync.WaitGroup
	results := make([]payment.ClaimResult, n)
	errs := make([]error, n)
	for i := range n {
		c := newClaim(fmt.Sprintf("k%d", i), uint64(i+1))
		if i == 3 {
			c.PaymentID = "pay\x00bad" // Postgres refuses NUL in text: the statement fails
		}
		wg.Go(func() { results[i], errs[i] = batcher.Claim(b.ctx, c) })
	}
	wg.Wait()
	for i := range n {
		if i == 3 {
			require.Error(t, errs[i])
			require.Contains(t, errs[i].Error(), `"k3"`)
			require.NotErrorIs(t, errs[i], store.ErrBatcherStopped)
			_, err := b.store.Get(b.ctx, "k3")
			require.ErrorIs(t, err, store.ErrNotFound)
			continue
		}
		require.NoError(t, errs[i], "item %d", i)
		require.Equal(t, payment.ClaimNew, results[i].Kind, "item %d", i)
		require.Equal(t, fmt.Sprintf("k%d", i), results[i].Record.IdempotencyKey)
	}
}

func TestBatcherCompleteAndRelease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	batcher := startBatcher(t, b.store, store.BatcherConfig{MaxWait: -1})

	const n = 40
	attempts := make([]int, n)
	for i := range n {
		res, err := batcher.Claim(b.ctx, newClaim(fmt.Sprintf("k%02d", i), uint64(i+1)))
		require.NoError(t, err)
		require.Equal(t, payment.ClaimNew, res.Kind)
		attempts[i] = res.Attempt
	}

	var wg sync.WaitGroup
	recs := make([]payment.Record, n)
	errs := make([]error, n)
	for i := range n {
		key := fmt.Sprintf("k%02d", i)
		wg.Go(func() {
			switch i % 4 {
			case 0: // complete
				recs[i], errs[i] = batcher.Complete(b.ctx, completion(key, attempts[i], ownerA, payment.StatusSucceeded))
			case 1: // complete with a stale token: fenced
				recs[i], errs[i] = batcher.Complete(b.ctx, completion(key, attempts[i]+1, ownerA, payment.StatusSucceeded))
			case 2: // release
				errs[i] = batcher.Release(b.ctx, payment.Release{Key: key, Attempt: attempts[i], Owner: ownerA})
			case 3: // release by someone else: fenced
				errs[i] = batcher.Release(b.ctx, payment.Release{Key: key, Attempt: attempts[i], Owner: ownerB})
			}
		})
	}
	wg.Wait()
	for i := range n {
		key := fmt.Sprintf("k%02d", i)
		switch i % 4 {
		case 0:
			require.NoError(t, errs[i])
			require.Equal(t, payment.StatusSucceeded, recs[i].Status)
			require.Equal(t, key, recs[i].IdempotencyKey)
		case 1, 3:
			require.ErrorIs(t, errs[i], payment.ErrFenced, "item %d", i)
			require.Contains(t, errs[i].Error(), fmt.Sprintf("%q", key))
		case 2:
			require.NoError(t, errs[i])
		}
	}
}

func TestBatcherCallerGivesUpBeforeSend(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Batches of two, sent only when full.
	batcher := startBatcher(t, b.store, store.BatcherConfig{MaxBatch: 2, MaxWait: time.Hour})

	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() {
		_, err := batcher.Claim(ctx, newClaim("abandoned", 1))
		done <- err
	}()
	// The batcher holds the claim in a batch that is not full yet.
	require.Eventually(t, func() bool { return batcher.ClaimsReceived() == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)

	// This claim fills the batch: the abandoned claim is dropped, not sent.
	res, err := batcher.Claim(b.ctx, newClaim("k", 10))
	require.NoError(t, err)
	require.Equal(t, payment.ClaimNew, res.Kind)
	_, err = b.store.Get(b.ctx, "abandoned")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestBatcherCallerGivesUpAfterSend(t *testing.T) {
	t.Parallel()
	b := setup(t)
	batcher := startBatcher(t, b.store, store.BatcherConfig{MaxWait: -1})
	first := b.claimNew(t, newClaim("k", 1))
	b.expireLease(t, "k", time.Second)

	// Another transaction holds the row lock: the take-over claim's
	// statement waits for it.
	tx, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	defer tx.Rollback(b.ctx) //nolint:errcheck // rolled back below
	_, err = tx.Exec(b.ctx, "SELECT 1 FROM payments WHERE idempotency_key = 'k' FOR UPDATE")
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() {
		_, err := batcher.Claim(ctx, newClaim("k", 2))
		done <- err
	}()
	// Wait until the statement is blocked on the row lock.
	require.Eventually(t, func() bool {
		var waiting bool
		err := b.pool.QueryRow(b.ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%paystream_claim%')`).Scan(&waiting)
		return err == nil && waiting
	}, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled, "the caller does not wait for the statement")

	require.NoError(t, tx.Rollback(b.ctx))
	// The statement went through; its result was discarded and the new
	// lease will simply expire.
	require.Eventually(t, func() bool {
		raw := b.raw(t, "k")
		return raw.Attempts == int32(first.Attempt+1)
	}, 5*time.Second, time.Millisecond)
}

func TestBatcherStop(t *testing.T) {
	t.Parallel()
	b := setup(t)
	batcher := store.NewBatcher(b.store, store.BatcherConfig{MaxWait: time.Hour})

	// Before Run, a call waits; its ctx ends the wait.
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Millisecond)
	defer cancel()
	_, err := batcher.Claim(ctx, newClaim("early", 1))
	require.ErrorIs(t, err, context.DeadlineExceeded)

	runCtx, stop := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- batcher.Run(runCtx) }()

	pending := make(chan error, 1)
	go func() {
		_, err := batcher.Claim(b.ctx, newClaim("pending", 1))
		pending <- err
	}()
	stop()
	require.NoError(t, <-runDone)
	// Taken by the batcher and failed, or refused because it stopped.
	require.ErrorIs(t, <-pending, store.ErrBatcherStopped)

	_, err = batcher.Claim(b.ctx, newClaim("late", 1))
	require.ErrorIs(t, err, store.ErrBatcherStopped)
	require.ErrorIs(t, batcher.Release(b.ctx, payment.Release{Key: "late", Attempt: 1, Owner: ownerA}), store.ErrBatcherStopped)
	require.Error(t, batcher.Run(context.Background()), "Run twice")

	for _, key := range []string{"early", "pending", "late"} {
		_, err := b.store.Get(b.ctx, key)
		require.ErrorIs(t, err, store.ErrNotFound, key)
	}
}

func TestBatcherConfigDefaults(t *testing.T) {
	t.Parallel()
	require.Equal(t, store.BatcherConfig{MaxBatch: 128, MaxWait: 500 * time.Microsecond, MaxConcurrentFlushes: 4},
		store.BatcherConfig{}.WithDefaults())
	require.Equal(t, store.BatcherConfig{MaxBatch: 5, MaxWait: -1, MaxConcurrentFlushes: 1},
		store.BatcherConfig{MaxBatch: 5, MaxWait: -1, MaxConcurrentFlushes: 1}.WithDefaults())
}
