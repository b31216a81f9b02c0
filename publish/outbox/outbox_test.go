package outbox_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish/outbox"
)

const (
	mPublished  = "paystream_outbox_published_total"
	mDuplicates = "paystream_outbox_duplicates_total"
	mFailed     = "paystream_outbox_failed_batches_total"
	mPending    = "paystream_outbox_pending_rows"
	mOldestAge  = "paystream_outbox_oldest_row_age_seconds"
)

// waitFor polls cond (a condition, not a sleep standing in for one).
func waitFor(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, cond, 30*time.Second, 5*time.Millisecond, msg)
}

func TestMigrateBesideTheWorkerSchema(t *testing.T) {
	t.Parallel()
	b := setup(t) // the database has the worker's migrations and the outbox's
	ctx := testContext(t)
	require.NoError(t, outbox.Migrate(ctx, b.dbURL), "a second Migrate is a no-op")
	for _, table := range []string{"paystream_schema_migrations", outbox.MigrationTable, outbox.Table} {
		var ok bool
		require.NoError(t, b.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok))
		require.True(t, ok, table)
	}
}

func TestRolledBackPublishesNothingCommittedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testContext(t)

	rolledBack, committed := request("p_rolled_back", "m001"), request("p_committed", "m001")
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, outbox.Enqueue(ctx, tx, rolledBack, outbox.Config{}))
	require.NoError(t, tx.Rollback(ctx))
	tx, err = b.pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, outbox.Enqueue(ctx, tx, committed, outbox.Config{}))
	require.NoError(t, tx.Commit(ctx))

	h := b.startRelay(t, outbox.RelayConfig{})
	waitFor(t, func() bool { return b.rows(t) == 0 }, "the committed row is relayed")
	h.stop()

	require.Equal(t, 1.0, h.metric(t, mPublished))
	msgs := b.stored(t)
	require.Len(t, msgs, 1)
	m := msgs[0]
	require.Equal(t, "payments.requests.m001", m.Subject())
	require.Equal(t, "p_committed", m.Headers().Get(jetstream.MsgIDHeader))
	want, err := committed.Marshal()
	require.NoError(t, err)
	require.Equal(t, want, m.Data(), "the body the publish package would send")
	got, err := payment.Decode(m.Subject(), m.Data(), payment.Limits{})
	require.NoError(t, err, "the worker accepts it")
	require.Equal(t, "p_committed", got.PaymentID)
}

func TestInvalidRequestRefusedInsideTheTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testContext(t)
	tests := []struct {
		name string
		req  *payment.Request
		cfg  outbox.Config
	}{
		{"nil", nil, outbox.Config{}},
		{"no payment id", func() *payment.Request { r := request("x", "m001"); r.PaymentID = ""; return r }(), outbox.Config{}},
		{"card number in the description", func() *payment.Request {
			r := request("p1", "m001")
			r.Description = "card 4242 4242 4242 4242"
			return r
		}(), outbox.Config{}},
		{"not money", func() *payment.Request { r := request("p1", "m001"); r.Currency = "XAU"; return r }(), outbox.Config{}},
		{"above the deployment's limit", request("p1", "m001"), outbox.Config{Limits: payment.Limits{MaxAmountMinor: 1000}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tx, err := b.pool.Begin(ctx)
			require.NoError(t, err)
			err = outbox.Enqueue(ctx, tx, tt.req, tt.cfg)
			require.ErrorIs(t, err, payment.ErrInvalid)
			// The caller's transaction is still usable: nothing ran.
			var one int
			require.NoError(t, tx.QueryRow(ctx, "SELECT 1").Scan(&one))
			require.NoError(t, tx.Commit(ctx))
		})
	}
	require.Zero(t, b.rows(t), "nothing inserted")
}

func TestRelayCrashBetweenPublishAndDeleteStoresOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 40
	b.enqueue(t, "m001", 0, n)

	var failures atomic.Int32
	h := b.startRelay(t, outbox.RelayConfig{Concurrency: 1, BatchSize: 16}, func(r *outbox.Relay) {
		outbox.SetAfterPublishFunc(r, func(int32) error {
			if failures.Add(1) <= 2 {
				return errors.New("relay dies before deleting")
			}
			return nil
		})
	})
	waitFor(t, func() bool { return b.rows(t) == 0 }, "every row relayed")
	h.stop()

	require.EqualValues(t, n, b.streamMsgs(t), "each payment stored once")
	require.Equal(t, float64(n), h.metric(t, mPublished))
	require.Equal(t, 32.0, h.metric(t, mDuplicates), "the first batch was published three times, twice dropped as duplicates")
	require.Equal(t, 2.0, h.metric(t, mFailed))
}

func TestTwoRelaysPublishEveryRowOnceInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Merchants of one partition (m001 and two more) and of others.
	merchants := []string{"m001", "m002", "m003"}
	for i := 0; len(merchants) < 5; i++ {
		m := fmt.Sprintf("x%03d", i)
		if outbox.PartitionOf(m) == outbox.PartitionOf("m001") {
			merchants = append(merchants, m)
		}
	}
	const perMerchant = 120
	h1 := b.startRelay(t, outbox.RelayConfig{Concurrency: 1, BatchSize: 7})
	h2 := b.startRelay(t, outbox.RelayConfig{Concurrency: 4, BatchSize: 5})

	// Rows are committed while both relays run, by one writer per
	// merchant: each merchant's rows commit in id order.
	var wg sync.WaitGroup
	for i, m := range merchants {
		wg.Go(func() { b.enqueue(t, m, i*perMerchant, perMerchant) })
	}
	wg.Wait()
	total := len(merchants) * perMerchant
	waitFor(t, func() bool { return b.rows(t) == 0 }, "every row relayed")
	h1.stop()
	h2.stop()

	require.Equal(t, float64(total), h1.metric(t, mPublished)+h2.metric(t, mPublished), "published once")
	require.Zero(t, h1.metric(t, mDuplicates)+h2.metric(t, mDuplicates), "never published twice")
	require.Positive(t, h1.metric(t, mPublished), "both relays took part")
	require.Positive(t, h2.metric(t, mPublished), "both relays took part")

	msgs := b.stored(t)
	require.Len(t, msgs, total)
	// Payment ids grow with each merchant's commit order, which is its id
	// order; three of the merchants share a partition.
	lastOf := map[string]string{}
	for _, m := range msgs {
		r, err := payment.Decode(m.Subject(), m.Data(), payment.Limits{})
		require.NoError(t, err)
		require.Greater(t, r.PaymentID, lastOf[r.MerchantID], "merchant %s out of order", r.MerchantID)
		lastOf[r.MerchantID] = r.PaymentID
	}
	require.Len(t, lastOf, len(merchants))
}

func TestRowsWaitWhileNATSIsDownAndTheRelayRecovers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 30
	b.srv.Shutdown()
	b.enqueue(t, "m001", 0, n)
	b.enqueue(t, "m002", n, n)

	h := b.startRelay(t, outbox.RelayConfig{})
	waitFor(t, func() bool { return h.metric(t, mFailed) >= 2 }, "the relay tries and fails")
	require.Equal(t, 2*n, b.rows(t), "rows wait")
	waitFor(t, func() bool { return h.metric(t, mPending) == 2*n && h.metric(t, mOldestAge) > 0 }, "the gauges show the backlog")

	b.srv.Start()
	waitFor(t, func() bool { return b.rows(t) == 0 }, "relayed once NATS is back")
	waitFor(t, func() bool { return h.metric(t, mPending) == 0 }, "the gauge follows")
	h.stop()
	require.EqualValues(t, 2*n, b.streamMsgs(t), "each stored once")
	require.Equal(t, float64(2*n), h.metric(t, mPublished), "nothing was sent while NATS was down")
}

func TestRelayConfig(t *testing.T) {
	t.Parallel()
	_, err := outbox.NewRelay(outbox.RelayConfig{BatchSize: -1, Concurrency: 99, RetryWait: time.Second, RetryWaitMax: time.Millisecond})
	require.Error(t, err)
	for _, want := range []string{"database", "jetstream", "batch size", "concurrency", "retry wait max"} {
		require.ErrorContains(t, err, want)
	}
}

func TestRunTwice(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := b.startRelay(t, outbox.RelayConfig{})
	waitFor(t, h.relay.Running, "running")
	require.Error(t, h.relay.Run(testContext(t)))
}
