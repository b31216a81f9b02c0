package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// claimFunc is Store.Claim or Batcher.Claim.
type claimFunc func(context.Context, payment.Claim) (payment.ClaimResult, error)

// claimConcurrently runs claimers claims of every key at once, each with
// its own stream sequence, and returns the results per key.
func claimConcurrently(t *testing.T, claim claimFunc, keys []string, claimers int) map[string][]payment.ClaimResult {
	t.Helper()
	var (
		mu      sync.Mutex
		results = make(map[string][]payment.ClaimResult, len(keys))
		errs    []error
		wg      sync.WaitGroup
		start   = make(chan struct{})
	)
	for ki, key := range keys {
		for i := range claimers {
			wg.Go(func() {
				<-start
				res, err := claim(t.Context(), newClaim(key, uint64(ki*claimers+i+1)))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				results[key] = append(results[key], res)
			})
		}
	}
	close(start)
	wg.Wait()
	require.Empty(t, errs)
	return results
}

// requireOneWinner checks that every key was won by exactly one claimer and
// every other one saw it busy or in flight.
func requireOneWinner(t *testing.T, b *testBundle, results map[string][]payment.ClaimResult, claimers int) {
	t.Helper()
	for key, rs := range results {
		require.Len(t, rs, claimers, "key %s", key)
		counts := map[payment.ClaimKind]int{}
		for _, r := range rs {
			counts[r.Kind]++
		}
		require.Equal(t, 1, counts[payment.ClaimNew], "key %s: %v", key, counts)
		// Nobody completes here, so no claim can find a duplicate.
		require.Equal(t, claimers-1, counts[payment.ClaimBusy]+counts[payment.ClaimInFlight],
			"key %s: %v", key, counts)
		require.Equal(t, int32(1), b.raw(t, key).Attempts, "key %s", key)
	}
}

func TestConcurrentClaimsOneKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := claimConcurrently(t, b.store.Claim, []string{"hot-key"}, 64)
	requireOneWinner(t, b, res, 64)
}

func TestConcurrentClaimsManyKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	keys := make([]string, 200)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%03d", i)
	}
	res := claimConcurrently(t, b.store.Claim, keys, 4)
	require.Len(t, res, 200)
	requireOneWinner(t, b, res, 4)
}

func TestConcurrentClaimsThroughBatcher(t *testing.T) {
	t.Parallel()
	b := setup(t)
	batcher := startBatcher(t, b.store, store.BatcherConfig{})
	keys := make([]string, 200)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%03d", i)
	}
	res := claimConcurrently(t, batcher.Claim, append(keys, "hot-key"), 4)
	require.Len(t, res, 201)
	requireOneWinner(t, b, res, 4)

	hot := claimConcurrently(t, batcher.Claim, []string{"hotter-key"}, 64)
	requireOneWinner(t, b, hot, 64)
}
