package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

func TestDeleteExpired(t *testing.T) {
	t.Parallel()
	b := setup(t)
	final := map[string]payment.Status{
		"old-s1": payment.StatusSucceeded, "old-s2": payment.StatusSucceeded, "old-s3": payment.StatusSucceeded,
		"old-declined": payment.StatusDeclined, "old-failed": payment.StatusFailed, "recent": payment.StatusSucceeded,
		"old-unknown": payment.StatusUnknown,
	}
	for k, st := range final {
		res := b.claimNew(t, newClaim(k, 1))
		_, err := b.store.Complete(b.ctx, completion(k, res.Attempt, ownerA, st))
		require.NoError(t, err)
	}
	for k := range final {
		if k != "recent" && k != "old-unknown" {
			b.setAgo(t, k, "completed_at", 10*24*time.Hour)
		}
	}
	b.setAgo(t, "old-unknown", "created_at", 30*24*time.Hour)
	b.setAgo(t, "recent", "completed_at", time.Hour)
	b.claimNew(t, newClaim("processing", 1))
	b.setAgo(t, "processing", "created_at", 30*24*time.Hour)

	var now time.Time
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT clock_timestamp()").Scan(&now))
	cut := now.Add(-24 * time.Hour)

	n, err := b.store.CountExpired(b.ctx, payment.StatusSucceeded, cut)
	require.NoError(t, err)
	require.EqualValues(t, 3, n)

	// Batches of two: the first is full, the second short.
	n, err = b.store.DeleteExpired(b.ctx, payment.StatusSucceeded, cut, 2)
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	n, err = b.store.DeleteExpired(b.ctx, payment.StatusSucceeded, cut, 2)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	n, err = b.store.DeleteExpired(b.ctx, payment.StatusSucceeded, cut, 2)
	require.NoError(t, err)
	require.Zero(t, n)
	for _, k := range []string{"old-s1", "old-s2", "old-s3"} {
		_, err := b.store.Get(b.ctx, k)
		require.ErrorIs(t, err, store.ErrNotFound, k)
	}
	for _, k := range []string{"recent", "processing", "old-declined", "old-failed", "old-unknown"} {
		_, err := b.store.Get(b.ctx, k)
		require.NoError(t, err, "%s is another status or recent", k)
	}

	n, err = b.store.DeleteExpired(b.ctx, payment.StatusFailed, cut, 10)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	for _, st := range []payment.Status{payment.StatusProcessing, payment.StatusUnknown, ""} {
		_, err = b.store.DeleteExpired(b.ctx, st, now, 10)
		require.ErrorIs(t, err, store.ErrInvalidArgument, "never %q rows", st)
		_, err = b.store.CountExpired(b.ctx, st, now)
		require.ErrorIs(t, err, store.ErrInvalidArgument)
	}
	_, err = b.store.DeleteExpired(b.ctx, payment.StatusDeclined, now, 0)
	require.ErrorIs(t, err, store.ErrInvalidArgument)
}

func TestJobLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ok, err := b.store.AcquireJobLease(b.ctx, "job", ownerA, time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = b.store.AcquireJobLease(b.ctx, "job", ownerB, time.Minute)
	require.NoError(t, err)
	require.False(t, ok, "held by A")
	ok, err = b.store.AcquireJobLease(b.ctx, "job", ownerA, time.Minute)
	require.NoError(t, err)
	require.True(t, ok, "A renews")
	ok, err = b.store.AcquireJobLease(b.ctx, "other", ownerB, time.Minute)
	require.NoError(t, err)
	require.True(t, ok, "another job")

	require.NoError(t, b.store.ReleaseJobLease(b.ctx, "job", ownerB), "B holds nothing: no-op")
	ok, err = b.store.AcquireJobLease(b.ctx, "job", ownerB, time.Minute)
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, b.store.ReleaseJobLease(b.ctx, "job", ownerA))
	ok, err = b.store.AcquireJobLease(b.ctx, "job", ownerB, time.Millisecond)
	require.NoError(t, err)
	require.True(t, ok, "free after release")

	// An expired lease is free.
	_, err = b.pool.Exec(b.ctx, "UPDATE paystream_job_leases SET lease_until = clock_timestamp() - interval '1 second' WHERE name = 'job'")
	require.NoError(t, err)
	ok, err = b.store.AcquireJobLease(b.ctx, "job", ownerA, time.Minute)
	require.NoError(t, err)
	require.True(t, ok)

	_, err = b.store.AcquireJobLease(b.ctx, "", ownerA, time.Minute)
	require.ErrorIs(t, err, store.ErrInvalidArgument)
}

func TestOperatorActions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a, err := b.store.RecordAction(b.ctx, store.OperatorAction{Actor: "alice", Action: "dlq_replay", DryRun: true,
		Arguments: []byte(`{"reasons":["exhausted"]}`), PublishedSeqs: []int64{1, 2}})
	require.NoError(t, err)
	require.NotZero(t, a.ID)
	require.False(t, a.At.IsZero())
	_, err = b.store.RecordAction(b.ctx, store.OperatorAction{Actor: "bob", Action: "dlq_replay", Published: 2,
		PublishedSeqs: []int64{2, 3}})
	require.NoError(t, err)
	_, err = b.store.RecordAction(b.ctx, store.OperatorAction{Actor: "", Action: "dlq_replay"})
	require.ErrorIs(t, err, store.ErrInvalidArgument)

	got, err := b.store.ReplayedSeqs(b.ctx, "dlq_replay", []int64{1, 2, 3, 4})
	require.NoError(t, err)
	require.Equal(t, map[int64]int64{2: a.ID + 1, 3: a.ID + 1}, got, "dry runs do not count")

	list, err := b.store.Actions(b.ctx, "", 10)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "bob", list[0].Actor)
	require.Equal(t, 2, list[0].Published)
	require.JSONEq(t, `{"reasons":["exhausted"]}`, string(list[1].Arguments))
	require.JSONEq(t, `{}`, string(list[0].Result))
}
