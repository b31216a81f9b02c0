package store_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// BenchmarkClaimComplete measures the two statements every payment needs
// (claim, then record the outcome) one payment at a time, in batches of
// 128, and from 64 concurrent callers directly or through a Batcher (and
// from 512 through a Batcher, the worker's tuned concurrency). Each reports
// payments/s; the Batcher's also rows per batch and statements per payment.
func BenchmarkClaimComplete(b *testing.B) {
	b.Run("single", func(b *testing.B) {
		s := store.New(newBenchPool(b))
		ctx := b.Context()
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			claimComplete(b, ctx, s.Claim, s.Complete, fmt.Sprintf("single-%d", i))
		}
		reportRate(b, start)
	})

	b.Run("batch128", func(b *testing.B) {
		s := store.New(newBenchPool(b))
		ctx := b.Context()
		b.ResetTimer()
		start := time.Now()
		for done := 0; done < b.N; {
			n := min(128, b.N-done)
			claims := make([]payment.Claim, n)
			for i := range claims {
				claims[i] = newClaim(fmt.Sprintf("batch-%d", done+i), uint64(done+i+1))
			}
			res, err := s.ClaimBatch(ctx, claims)
			if err != nil {
				b.Fatal(err)
			}
			comps := make([]payment.Completion, n)
			for i, r := range res {
				if r.Kind != payment.ClaimNew {
					b.Fatalf("claim %d: %s", i, r.Kind)
				}
				comps[i] = completion(claims[i].Key, r.Attempt, ownerA, payment.StatusSucceeded)
			}
			out, err := s.CompleteBatch(ctx, comps)
			if err != nil {
				b.Fatal(err)
			}
			for i, o := range out {
				if o.Err != nil {
					b.Fatalf("complete %d: %v", i, o.Err)
				}
			}
			done += n
		}
		reportRate(b, start)
	})

	const callers = 64
	b.Run("parallel64-direct", func(b *testing.B) {
		s := store.New(newBenchPool(b))
		runParallel(b, callers, s.Claim, s.Complete)
	})
	for _, n := range []int{callers, 512} {
		b.Run(fmt.Sprintf("parallel%d-batcher", n), func(b *testing.B) {
			batcher := startBenchBatcher(b, store.New(newBenchPool(b)))
			runParallel(b, n, batcher.Claim, batcher.Complete)
			reportBatches(b, batcher)
		})
	}
	// The same with the attempt history (each completion records its
	// gateway call in payment_attempts, as the worker does), and, to see
	// what the listing index of migration 4 costs, without attempts and
	// without that index (the write path of schema version 3).
	withAttempts := func(complete completeFn) completeFn {
		return func(ctx context.Context, c payment.Completion) (payment.Record, error) {
			c.Attempts = []payment.Attempt{{Kind: payment.AttemptCharge, StartedAt: time.Now(), Duration: time.Millisecond,
				Class: payment.AttemptClassOK, Result: string(c.Status), ChargeID: c.GatewayChargeID}}
			return complete(ctx, c)
		}
	}
	for _, v := range []struct {
		name          string
		attempts      bool
		dropListIndex bool
	}{
		{"parallel64-batcher-attempts", true, false},
		{"parallel64-batcher-v3-writes", false, true},
	} {
		b.Run(v.name, func(b *testing.B) {
			pool := newBenchPool(b)
			if v.dropListIndex {
				if _, err := pool.Exec(b.Context(), `DROP INDEX payments_created_at_idx`); err != nil {
					b.Fatal(err)
				}
			}
			batcher := startBenchBatcher(b, store.New(pool))
			complete := completeFn(batcher.Complete)
			if v.attempts {
				complete = withAttempts(complete)
			}
			runParallel(b, callers, batcher.Claim, complete)
			reportBatches(b, batcher)
		})
	}
}

// startBenchBatcher runs a Batcher with the default configuration until
// the benchmark ends.
func startBenchBatcher(b *testing.B, s *store.Store) *store.Batcher {
	b.Helper()
	batcher := store.NewBatcher(s, store.BatcherConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- batcher.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	return batcher
}

// reportBatches reports the claim and completion statements the batcher
// sent: rows per statement, and statements per payment (each statement is
// one round trip and one commit; 2 per payment without batching).
func reportBatches(b *testing.B, batcher *store.Batcher) {
	statements, rows := batcher.Sent()
	if statements == 0 {
		return
	}
	b.ReportMetric(float64(rows)/float64(statements), "rows/batch")
	b.ReportMetric(float64(statements)/float64(b.N), "statements/payment")
}

func newBenchPool(b *testing.B) *pgxpool.Pool {
	b.Helper()
	return pgtest.NewPool(b)
}

type (
	claimFn    func(context.Context, payment.Claim) (payment.ClaimResult, error)
	completeFn func(context.Context, payment.Completion) (payment.Record, error)
)

func claimComplete(b *testing.B, ctx context.Context, claim claimFn, complete completeFn, key string) {
	res, err := claim(ctx, newClaim(key, 1))
	if err != nil {
		b.Fatal(err)
	}
	if res.Kind != payment.ClaimNew {
		b.Fatalf("claim %s: %s", key, res.Kind)
	}
	if _, err := complete(ctx, completion(key, res.Attempt, ownerA, payment.StatusSucceeded)); err != nil {
		b.Fatal(err)
	}
}

// runParallel processes b.N payments from callers goroutines.
func runParallel(b *testing.B, callers int, claim claimFn, complete completeFn) {
	ctx := b.Context()
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for c := range callers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				res, err := claim(ctx, newClaim(fmt.Sprintf("par-%d", i), uint64(i+1)))
				if err != nil || res.Kind != payment.ClaimNew {
					b.Errorf("caller %d: claim %d: %v %v", c, i, res.Kind, err)
					return
				}
				key := fmt.Sprintf("par-%d", i)
				if _, err := complete(ctx, completion(key, res.Attempt, ownerA, payment.StatusSucceeded)); err != nil {
					b.Errorf("caller %d: complete %d: %v", c, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	reportRate(b, start)
}

func reportRate(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "payments/s")
}
