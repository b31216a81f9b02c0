package store_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// startBatcher runs a Batcher of s until the test ends (runBatcher).
func startBatcher(t *testing.T, s *store.Store, cfg store.BatcherConfig) *store.Batcher {
	t.Helper()
	return runBatcher(t, store.NewBatcher(s, cfg))
}

// runBatcher runs batcher until the test ends and checks that Run
// returns nil.
func runBatcher(t *testing.T, batcher *store.Batcher) *store.Batcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- batcher.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return batcher
}

// claimGate is a batcher's claim hook: it records the size of each claim
// statement, and can hold the first one in flight until released.
type claimGate struct {
	holdFirst bool
	held      chan int      // the first statement's size, once it is held
	release   chan struct{} // closed to let the first statement go

	mu    sync.Mutex
	sizes []int
}

func newClaimGate(holdFirst bool) *claimGate {
	return &claimGate{holdFirst: holdFirst, held: make(chan int, 1), release: make(chan struct{})}
}

func (g *claimGate) hook(ctx context.Context, n int) error {
	g.mu.Lock()
	first := len(g.sizes) == 0
	g.sizes = append(g.sizes, n)
	g.mu.Unlock()
	if !first || !g.holdFirst {
		return nil
	}
	g.held <- n
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// statements returns the sizes of the claim statements sent so far.
func (g *claimGate) statements() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sizes)
}

// startGated runs a Batcher with a claim gate until the test ends.
func startGated(t *testing.T, s *store.Store, cfg store.BatcherConfig, g *claimGate) *store.Batcher {
	t.Helper()
	batcher := store.NewBatcher(s, cfg)
	batcher.SetClaimHook(g.hook)
	return runBatcher(t, batcher)
}

// holdFirstClaim sends a claim of key and waits until the gate holds its
// statement in flight. The returned channel gets the claim's error once
// the gate released it.
func holdFirstClaim(t *testing.T, b *testBundle, batcher *store.Batcher, g *claimGate, key string) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := batcher.Claim(b.ctx, newClaim(key, 1000))
		done <- err
	}()
	require.Equal(t, 1, <-g.held)
	return done
}

func TestBatcherIdleLaneSendsAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	g := newClaimGate(false)
	// Were a batch to wait for MaxWait or to fill up, the claim would not
	// return before the test times out.
	batcher := startGated(t, b.store, store.BatcherConfig{MaxWait: time.Hour}, g)

	res, err := batcher.Claim(b.ctx, newClaim("alone", 1))
	require.NoError(t, err)
	require.Equal(t, payment.ClaimNew, res.Kind)
	res, err = batcher.Claim(b.ctx, newClaim("alone-again", 2))
	require.NoError(t, err)
	require.Equal(t, payment.ClaimNew, res.Kind)
	require.Equal(t, []int{1, 1}, g.statements())
}

// claimEach claims the keys k0 … k<n-1> through batcher, each from its own
// goroutine; the function it returns waits for them and checks that each
// succeeded.
func claimEach(t *testing.T, ctx context.Context, batcher *store.Batcher, n int) (wait func()) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = batcher.Claim(ctx, newClaim(fmt.Sprintf("k%d", i), uint64(i+1))) })
	}
	return func() {
		t.Helper()
		wg.Wait()
		for i, err := range errs {
			require.NoError(t, err, "claim %d", i)
		}
	}
}

func TestBatcherGathersWhileInFlight(t *testing.T) {
	t.Parallel()
	b := setup(t)
	g := newClaimGate(true)
	batcher := startGated(t, b.store, store.BatcherConfig{MaxWait: time.Hour}, g)
	first := holdFirstClaim(t, b, batcher, g, "first")

	// Ten claims arrive while the first statement is in flight.
	const n = 10
	wait := claimEach(t, b.ctx, batcher, n)
	require.Eventually(t, func() bool { return batcher.ClaimsReceived() == n+1 }, 5*time.Second, time.Millisecond)
	require.Equal(t, []int{1}, g.statements(), "held back while the first is in flight")

	close(g.release)
	require.NoError(t, <-first)
	wait()
	require.Equal(t, []int{1, n}, g.statements(), "sent as one batch when the first is back")
}

func TestBatcherFullBatchDoesNotWait(t *testing.T) {
	t.Parallel()
	b := setup(t)
	g := newClaimGate(true)
	const n = 4
	batcher := startGated(t, b.store, store.BatcherConfig{MaxBatch: n, MaxWait: time.Hour}, g)
	first := holdFirstClaim(t, b, batcher, g, "first")

	// A full batch takes a free slot beside the statement in flight.
	claimEach(t, b.ctx, batcher, n)()
	require.Equal(t, []int{1, n}, g.statements())

	close(g.release)
	require.NoError(t, <-first)
}

func TestBatcherStalledFlushDoesNotBlock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	g := newClaimGate(true)
	// The first statement stalls (it is held until the end): once it has
	// run longer than MaxWait, the next batch goes beside it.
	batcher := startGated(t, b.store, store.BatcherConfig{MaxWait: time.Millisecond}, g)
	first := holdFirstClaim(t, b, batcher, g, "stalled")

	res, err := batcher.Claim(b.ctx, newClaim("next", 1))
	require.NoError(t, err)
	require.Equal(t, payment.ClaimNew, res.Kind)
	require.Equal(t, []int{1, 1}, g.statements())

	close(g.release)
	require.NoError(t, <-first)
}

func TestBatcherBadItemDoesNotFailOthers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 8
	// The n claims arrive while a first statement is held in flight: they
	// go in one statement when it is back.
	g := newClaimGate(true)
	batcher := startGated(t, b.store, store.BatcherConfig{MaxWait: time.Hour}, g)
	first := holdFirstClaim(t, b, batcher, g, "first")

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
	require.Eventually(t, func() bool { return batcher.ClaimsReceived() == n+1 }, 5*time.Second, time.Millisecond)
	close(g.release)
	require.NoError(t, <-first)
	wg.Wait()
	// One statement of n fails; then each claim alone.
	require.Equal(t, []int{1, n, 1, 1, 1, 1, 1, 1, 1, 1}, g.statements())
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
	// Batches of two; a first statement is held in flight, so that a
	// batch that is not full waits.
	g := newClaimGate(true)
	batcher := startGated(t, b.store, store.BatcherConfig{MaxBatch: 2, MaxWait: time.Hour}, g)
	first := holdFirstClaim(t, b, batcher, g, "first")

	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() {
		_, err := batcher.Claim(ctx, newClaim("abandoned", 1))
		done <- err
	}()
	// The batcher holds the claim in a batch that is not full yet.
	require.Eventually(t, func() bool { return batcher.ClaimsReceived() == 2 }, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)

	// This claim fills the batch, which goes beside the first: the
	// abandoned claim is dropped, not sent.
	res, err := batcher.Claim(b.ctx, newClaim("k", 10))
	require.NoError(t, err)
	require.Equal(t, payment.ClaimNew, res.Kind)
	_, err = b.store.Get(b.ctx, "abandoned")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Equal(t, []int{1, 1}, g.statements())
	close(g.release)
	require.NoError(t, <-first)
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
	// Every claim statement is held until the batcher stops, so that
	// "pending" cannot be written however early it is sent.
	batcher.SetClaimHook(func(ctx context.Context, _ int) error {
		<-ctx.Done()
		return ctx.Err()
	})

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

// TestBatcherBoundsEachCall: the statements of calls whose ctx has no
// deadline run under the Batcher's own bounds (a claim's half its lease,
// a completion's CompleteTimeout), and an earlier ctx deadline wins.
func TestBatcherBoundsEachCall(t *testing.T) {
	t.Parallel()
	b := setup(t)
	batcher := store.NewBatcher(b.store, store.BatcherConfig{})
	var mu sync.Mutex
	var deadlines []time.Time
	hook := func(ctx context.Context, _ int) error {
		d, _ := ctx.Deadline() // zero without one: fails the checks below
		mu.Lock()
		deadlines = append(deadlines, d)
		mu.Unlock()
		return nil
	}
	batcher.SetClaimHook(hook)
	batcher.SetCompleteHook(hook)
	runBatcher(t, batcher)
	last := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return deadlines[len(deadlines)-1]
	}
	// within checks that the statement's deadline is bound after a time
	// between before and after.
	within := func(before, after time.Time, bound time.Duration) {
		t.Helper()
		d := last()
		require.False(t, d.Before(before.Add(bound)) || d.After(after.Add(bound)),
			"deadline %s is not %s after [%s, %s]", d, bound, before, after)
	}
	ctx := context.WithoutCancel(b.ctx) // no deadline

	c := newClaim("bounded", 1)
	c.Lease = 10 * time.Second
	before := time.Now()
	_, err := batcher.Claim(ctx, c)
	require.NoError(t, err)
	within(before, time.Now(), 5*time.Second)

	before = time.Now()
	_, err = batcher.Complete(ctx, completion("bounded", 1, ownerA, payment.StatusSucceeded))
	require.NoError(t, err)
	within(before, time.Now(), store.CompleteTimeout)

	short := newClaim("short", 2)
	short.Lease = 10 * time.Millisecond
	before = time.Now()
	_, err = batcher.Claim(ctx, short)
	require.NoError(t, err)
	within(before, time.Now(), store.MinClaimTimeout)

	tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	want, _ := tctx.Deadline()
	_, err = batcher.Claim(tctx, newClaim("timed", 3))
	require.NoError(t, err)
	require.Equal(t, want, last())
}
