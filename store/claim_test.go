package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

func TestClaimSemantics(t *testing.T) {
	t.Parallel()
	b := setup(t)

	// Each case works on its own key in the shared database.
	tests := []struct {
		name    string
		arrange func(t *testing.T, b *testBundle, key string)
		claim   func(key string) payment.Claim
		want    payment.ClaimKind
		check   func(t *testing.T, b *testBundle, key string, res payment.ClaimResult)
	}{
		{
			name:  "new key",
			claim: func(key string) payment.Claim { return newClaim(key, 1) },
			want:  payment.ClaimNew,
			check: func(t *testing.T, b *testBundle, key string, res payment.ClaimResult) {
				require.Equal(t, 1, res.Attempt)
				require.Equal(t, payment.StatusProcessing, res.Record.Status)
				require.Equal(t, int64(1999), res.Record.AmountMinor)
				require.True(t, res.Record.CompletedAt.IsZero())
				raw := b.raw(t, key)
				require.Equal(t, ownerA, raw.LeaseOwner)
				require.EqualValues(t, 1, *raw.LeaseSeq)
				require.WithinDuration(t, raw.UpdatedAt.Add(time.Minute), *raw.LeaseUntil, time.Second)
				require.Equal(t, "payments.requests.merchant_1", *raw.Subject)
				require.Equal(t, `{"payment_id":"pay_`+key+`"}`, string(raw.Body))
				require.Equal(t, "cus_1", *raw.CustomerID)
				require.Nil(t, raw.Gateway)
				require.Nil(t, raw.ErrorCode)
			},
		},
		{
			name: "new key without customer stores NULL",
			claim: func(key string) payment.Claim {
				return with(newClaim(key, 1), func(c *payment.Claim) { c.CustomerID = "" })
			},
			want: payment.ClaimNew,
			check: func(t *testing.T, b *testBundle, key string, _ payment.ClaimResult) {
				require.Nil(t, b.raw(t, key).CustomerID)
			},
		},
		{
			name: "take over after lease expiry",
			arrange: func(t *testing.T, b *testBundle, key string) {
				b.claimNew(t, newClaim(key, 1))
				b.expireLease(t, key, time.Second)
			},
			claim: func(key string) payment.Claim {
				return with(newClaim(key, 2), func(c *payment.Claim) { c.Owner = ownerB })
			},
			want: payment.ClaimTakeover,
			check: func(t *testing.T, b *testBundle, key string, res payment.ClaimResult) {
				require.Equal(t, 2, res.Attempt)
				require.Equal(t, 2, res.Record.Attempts)
				raw := b.raw(t, key)
				require.Equal(t, ownerB, raw.LeaseOwner)
				require.EqualValues(t, 2, *raw.LeaseSeq)
				require.True(t, raw.LeaseUntil.After(raw.UpdatedAt.Add(50*time.Second)))
			},
		},
		{
			name: "take over after release, same message",
			arrange: func(t *testing.T, b *testBundle, key string) {
				res := b.claimNew(t, newClaim(key, 1))
				require.NoError(t, b.store.Release(b.ctx, payment.Release{Key: key, Attempt: res.Attempt, Owner: ownerA}))
			},
			claim: func(key string) payment.Claim { return newClaim(key, 1) },
			want:  payment.ClaimTakeover,
			check: func(t *testing.T, _ *testBundle, _ string, res payment.ClaimResult) {
				require.Equal(t, 2, res.Attempt)
			},
		},
		{
			name: "take over a failed payment",
			arrange: func(t *testing.T, b *testBundle, key string) {
				res := b.claimNew(t, newClaim(key, 1))
				_, err := b.store.Complete(b.ctx, completion(key, res.Attempt, ownerA, payment.StatusFailed))
				require.NoError(t, err)
			},
			claim: func(key string) payment.Claim { return newClaim(key, 7) },
			want:  payment.ClaimTakeover,
			check: func(t *testing.T, b *testBundle, key string, res payment.ClaimResult) {
				require.Equal(t, 2, res.Attempt)
				require.Equal(t, payment.StatusProcessing, res.Record.Status)
				require.Empty(t, res.Record.ErrorCode)
				require.Equal(t, "fake", res.Record.Gateway, "a take-over keeps the gateway the payment was sent to")
				require.True(t, res.Record.CompletedAt.IsZero())
				raw := b.raw(t, key)
				require.EqualValues(t, 7, *raw.LeaseSeq)
				require.NotNil(t, raw.Body, "the new message's body is kept for the sweeper")
			},
		},
		{
			name: "the message that ended a payment failed finds a duplicate, not a take-over",
			arrange: func(t *testing.T, b *testBundle, key string) {
				res := b.claimNew(t, newClaim(key, 1))
				_, err := b.store.Complete(b.ctx, completion(key, res.Attempt, ownerA, payment.StatusFailed))
				require.NoError(t, err)
			},
			claim: func(key string) payment.Claim { return newClaim(key, 1) },
			want:  payment.ClaimDuplicate,
			check: func(t *testing.T, _ *testBundle, _ string, res payment.ClaimResult) {
				require.Equal(t, payment.StatusFailed, res.Record.Status)
				require.Equal(t, 1, res.Record.Attempts)
			},
		},
		{
			name: "duplicate of a succeeded payment",
			arrange: func(t *testing.T, b *testBundle, key string) {
				res := b.claimNew(t, newClaim(key, 1))
				_, err := b.store.Complete(b.ctx, completion(key, res.Attempt, ownerA, payment.StatusSucceeded))
				require.NoError(t, err)
			},
			claim: func(key string) payment.Claim { return newClaim(key, 2) },
			want:  payment.ClaimDuplicate,
			check: func(t *testing.T, _ *testBundle, key string, res payment.ClaimResult) {
				require.Zero(t, res.Attempt)
				require.Equal(t, payment.StatusSucceeded, res.Record.Status)
				require.Equal(t, "ch_"+key, res.Record.GatewayChargeID)
				require.Equal(t, "fake", res.Record.Gateway)
				require.Equal(t, 1, res.Record.Attempts)
				require.False(t, res.Record.CompletedAt.IsZero())
			},
		},
		{
			name: "duplicate of a declined payment",
			arrange: func(t *testing.T, b *testBundle, key string) {
				res := b.claimNew(t, newClaim(key, 1))
				_, err := b.store.Complete(b.ctx, completion(key, res.Attempt, ownerA, payment.StatusDeclined))
				require.NoError(t, err)
			},
			claim: func(key string) payment.Claim { return newClaim(key, 1) },
			want:  payment.ClaimDuplicate,
			check: func(t *testing.T, _ *testBundle, _ string, res payment.ClaimResult) {
				require.Equal(t, payment.StatusDeclined, res.Record.Status)
				require.Equal(t, "card_declined", res.Record.ErrorCode)
				require.Empty(t, res.Record.GatewayChargeID)
			},
		},
		{
			name: "in flight for another message",
			arrange: func(t *testing.T, b *testBundle, key string) {
				b.claimNew(t, newClaim(key, 1))
			},
			claim: func(key string) payment.Claim { return newClaim(key, 2) },
			want:  payment.ClaimInFlight,
			check: func(t *testing.T, b *testBundle, key string, res payment.ClaimResult) {
				require.Zero(t, res.Attempt)
				require.Equal(t, payment.StatusProcessing, res.Record.Status)
				require.EqualValues(t, 1, *b.raw(t, key).LeaseSeq, "the lease stays with message 1")
			},
		},
		{
			name: "busy for the same message until the lease ends",
			arrange: func(t *testing.T, b *testBundle, key string) {
				b.claimNew(t, newClaim(key, 1))
			},
			claim: func(key string) payment.Claim { return newClaim(key, 1) },
			want:  payment.ClaimBusy,
			check: func(t *testing.T, b *testBundle, key string, res payment.ClaimResult) {
				require.Zero(t, res.Attempt)
				require.Greater(t, res.RetryAfter, 50*time.Second)
				require.LessOrEqual(t, res.RetryAfter, time.Minute)
				require.Equal(t, payment.StatusProcessing, res.Record.Status)
				require.Equal(t, int32(1), b.raw(t, key).Attempts)
			},
		},
		{
			name: "conflict on a different amount",
			arrange: func(t *testing.T, b *testBundle, key string) {
				b.claimNew(t, newClaim(key, 1))
			},
			claim: func(key string) payment.Claim {
				return with(newClaim(key, 2), func(c *payment.Claim) { c.AmountMinor = 2000 })
			},
			want: payment.ClaimConflict,
			check: func(t *testing.T, _ *testBundle, _ string, res payment.ClaimResult) {
				require.Zero(t, res.Attempt)
				require.Equal(t, int64(1999), res.Record.AmountMinor, "the stored row")
			},
		},
		{
			name: "conflict on a different currency of a final payment",
			arrange: func(t *testing.T, b *testBundle, key string) {
				res := b.claimNew(t, newClaim(key, 1))
				_, err := b.store.Complete(b.ctx, completion(key, res.Attempt, ownerA, payment.StatusSucceeded))
				require.NoError(t, err)
			},
			claim: func(key string) payment.Claim {
				return with(newClaim(key, 2), func(c *payment.Claim) { c.Currency = "USD" })
			},
			want: payment.ClaimConflict,
			check: func(t *testing.T, _ *testBundle, _ string, res payment.ClaimResult) {
				require.Equal(t, "EUR", res.Record.Currency)
				require.Equal(t, payment.StatusSucceeded, res.Record.Status)
			},
		},
		{
			name: "conflict wins over an expired lease",
			arrange: func(t *testing.T, b *testBundle, key string) {
				b.claimNew(t, newClaim(key, 1))
				b.expireLease(t, key, time.Hour)
			},
			claim: func(key string) payment.Claim {
				return with(newClaim(key, 2), func(c *payment.Claim) { c.MerchantID = "merchant_2" })
			},
			want: payment.ClaimConflict,
			check: func(t *testing.T, b *testBundle, key string, _ payment.ClaimResult) {
				require.Equal(t, int32(1), b.raw(t, key).Attempts, "no take-over")
			},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "key-" + string(rune('a'+i))
			if tt.arrange != nil {
				tt.arrange(t, b, key)
			}
			res, err := b.store.Claim(b.ctx, tt.claim(key))
			require.NoError(t, err)
			require.Equal(t, tt.want, res.Kind, "got %s", res.Kind)
			if res.Kind != payment.ClaimBusy {
				require.Zero(t, res.RetryAfter)
			}
			require.Equal(t, key, res.Record.IdempotencyKey)
			if tt.check != nil {
				tt.check(t, b, key, res)
			}
		})
	}
}

func TestClaimBusyWhileAdvisoryLockHeld(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const key = "locked-key"

	// Another transaction holds the key's advisory lock.
	tx, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	defer tx.Rollback(b.ctx) //nolint:errcheck // rolled back below
	_, err = tx.Exec(b.ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
	require.NoError(t, err)

	res, err := b.store.Claim(b.ctx, newClaim(key, 1))
	require.NoError(t, err)
	require.Equal(t, payment.ClaimBusy, res.Kind)
	require.Equal(t, store.DefaultBusyRetryAfter, res.RetryAfter)
	require.Zero(t, res.Record, "nothing was read")
	_, err = b.store.Get(b.ctx, key)
	require.ErrorIs(t, err, store.ErrNotFound, "nothing was written")

	require.NoError(t, tx.Rollback(b.ctx))
	b.claimNew(t, newClaim(key, 1))
}

func TestClaimBatchDuplicateKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Input order is not key order; k1 appears three times.
	res, err := b.store.ClaimBatch(b.ctx, []payment.Claim{
		newClaim("k2", 10),
		newClaim("k1", 11),
		newClaim("k1", 12),
		newClaim("k1", 11),
		with(newClaim("k1", 13), func(c *payment.Claim) { c.AmountMinor = 5 }),
	})
	require.NoError(t, err)
	require.Len(t, res, 5)
	kinds := make([]payment.ClaimKind, len(res))
	for i, r := range res {
		kinds[i] = r.Kind
	}
	require.Equal(t, []payment.ClaimKind{
		payment.ClaimNew, payment.ClaimNew, payment.ClaimInFlight, payment.ClaimBusy, payment.ClaimConflict,
	}, kinds)
	require.Equal(t, "k2", res[0].Record.IdempotencyKey)
	require.Equal(t, "k1", res[1].Record.IdempotencyKey)
	require.Equal(t, 1, res[1].Attempt)
}

func TestClaimRejectsInvalidInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		name string
		f    func(*payment.Claim)
	}{
		{"empty key", func(c *payment.Claim) { c.Key = "" }},
		{"empty owner", func(c *payment.Claim) { c.Owner = "" }},
		{"zero lease", func(c *payment.Claim) { c.Lease = 0 }},
		{"empty fingerprint", func(c *payment.Claim) { c.Fingerprint = "" }},
		{"huge stream sequence", func(c *payment.Claim) { c.StreamSeq = 1 << 63 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClaim("k", 1)
			tt.f(&c)
			_, err := b.store.ClaimBatch(b.ctx, []payment.Claim{newClaim("other", 1), c})
			require.ErrorIs(t, err, store.ErrInvalidArgument)
		})
	}
	_, err := b.store.Get(b.ctx, "other")
	require.ErrorIs(t, err, store.ErrNotFound, "an invalid item fails the whole batch")
}

func TestClaimStatementErrorNamesKeyNotBody(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := newClaim("nul-key", 1)
	c.PaymentID = "pay\x00secret"
	c.Body = []byte("card 4242424242424242")
	_, err := b.store.Claim(b.ctx, c)
	require.Error(t, err)
	require.Contains(t, err.Error(), `"nul-key"`)
	require.NotContains(t, err.Error(), "4242")
	require.False(t, errors.Is(err, store.ErrRetryable))
}

func TestGet(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.store.Get(b.ctx, "missing")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, err, pgx.ErrNoRows)
	require.Contains(t, err.Error(), `"missing"`)

	res := b.claimNew(t, newClaim("k", 1))
	got, err := b.store.Get(b.ctx, "k")
	require.NoError(t, err)
	require.Equal(t, res.Record, got)
	require.Equal(t, payment.Record{
		IdempotencyKey: "k", PaymentID: "pay_k", MerchantID: "merchant_1", AmountMinor: 1999,
		Currency: "EUR", Status: payment.StatusProcessing, Attempts: 1,
		CreatedAt: got.CreatedAt, UpdatedAt: got.UpdatedAt,
	}, got)
}

func TestPing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, b.store.Ping(b.ctx))
}

// TestBatchRowsShareNothing checks that a batch's results do not carry one
// row's values into the next (the scan targets serve every row): rows with
// a charge, an error code and a completion time alternate with rows
// without them, in input order and in key order alike.
func TestBatchRowsShareNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i, key := range []string{"a_done", "c_done"} {
		b.claimNew(t, newClaim(key, uint64(i+1)))
		_, err := b.store.Complete(b.ctx, completion(key, 1, ownerA, payment.StatusSucceeded))
		require.NoError(t, err)
	}
	res, err := b.store.ClaimBatch(b.ctx, []payment.Claim{
		newClaim("a_done", 11), newClaim("b_new", 12), newClaim("c_done", 13), newClaim("d_new", 14),
	})
	require.NoError(t, err)
	require.Len(t, res, 4)
	for i, key := range []string{"a_done", "b_new", "c_done", "d_new"} {
		r := res[i]
		require.Equal(t, key, r.Record.IdempotencyKey)
		if i%2 == 0 {
			require.Equal(t, payment.ClaimDuplicate, r.Kind, key)
			require.Equal(t, "ch_"+key, r.Record.GatewayChargeID, key)
			require.False(t, r.Record.CompletedAt.IsZero(), key)
			continue
		}
		require.Equal(t, payment.ClaimNew, r.Kind, key)
		require.Equal(t, payment.StatusProcessing, r.Record.Status, key)
		require.Empty(t, r.Record.GatewayChargeID, key)
		require.Empty(t, r.Record.ErrorCode, key)
		require.True(t, r.Record.CompletedAt.IsZero(), key)
		require.Nil(t, r.Request, key)
	}

	// Completions: a charge, a decline (an error code, no charge), a
	// fenced one (no row), a charge again.
	cs := []payment.Completion{
		completion("b_new", 1, ownerA, payment.StatusSucceeded),
		completion("d_new", 1, ownerA, payment.StatusDeclined),
	}
	for i, key := range []string{"e_new", "f_new"} {
		b.claimNew(t, newClaim(key, uint64(20+i)))
	}
	cs = append(cs, completion("e_new", 1, ownerB, payment.StatusSucceeded),
		completion("f_new", 1, ownerA, payment.StatusSucceeded))
	out, err := b.store.CompleteBatch(b.ctx, cs)
	require.NoError(t, err)
	require.Len(t, out, 4)
	require.NoError(t, out[0].Err)
	require.Equal(t, "ch_b_new", out[0].Record.GatewayChargeID)
	require.Empty(t, out[0].Record.ErrorCode)
	require.NoError(t, out[1].Err)
	require.Equal(t, payment.StatusDeclined, out[1].Record.Status)
	require.Empty(t, out[1].Record.GatewayChargeID)
	require.Equal(t, "card_declined", out[1].Record.ErrorCode)
	require.ErrorIs(t, out[2].Err, payment.ErrFenced)
	require.NoError(t, out[3].Err)
	require.Equal(t, "ch_f_new", out[3].Record.GatewayChargeID)
	require.Empty(t, out[3].Record.ErrorCode)
}
