package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// testBundle is what most tests need: a fresh database, a pool on it and a
// Store.
type testBundle struct {
	ctx   context.Context
	pool  *pgxpool.Pool
	store *store.Store
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	pool := pgtest.NewPool(t)
	return &testBundle{ctx: t.Context(), pool: pool, store: store.New(pool)}
}

const (
	ownerA = "worker-a"
	ownerB = "worker-b"
)

// fingerprint mimics the request fingerprint: a hash of the fields that
// make a payment what it is.
func fingerprint(c payment.Claim) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s|%s|%s|%d|%s|pm_card_visa", c.PaymentID, c.MerchantID, c.CustomerID, c.AmountMinor, c.Currency))
	return hex.EncodeToString(sum[:])
}

// newClaim returns a valid claim of key for stream message seq, held by
// ownerA for a minute.
func newClaim(key string, seq uint64) payment.Claim {
	c := payment.Claim{
		Key:         key,
		PaymentID:   "pay_" + key,
		MerchantID:  "merchant_1",
		CustomerID:  "cus_1",
		AmountMinor: 1999,
		Currency:    "EUR",
		Subject:     "payments.requests.merchant_1",
		Body:        []byte(`{"payment_id":"pay_` + key + `"}`),
		StreamSeq:   seq,
		Owner:       ownerA,
		Lease:       time.Minute,
	}
	c.Fingerprint = fingerprint(c)
	return c
}

// with returns c changed by f, with the fingerprint recomputed.
func with(c payment.Claim, f func(*payment.Claim)) payment.Claim {
	f(&c)
	c.Fingerprint = fingerprint(c)
	return c
}

// claimNew claims c and requires that it is new.
func (b *testBundle) claimNew(t *testing.T, c payment.Claim) payment.ClaimResult {
	t.Helper()
	res, err := b.store.Claim(b.ctx, c)
	require.NoError(t, err)
	require.Equal(t, payment.ClaimNew, res.Kind, "claim of %q", c.Key)
	return res
}

// expireLease moves the lease of key into the past by ago.
func (b *testBundle) expireLease(t *testing.T, key string, ago time.Duration) {
	t.Helper()
	tag, err := b.pool.Exec(b.ctx,
		"UPDATE payments SET lease_until = clock_timestamp() - $2 * interval '1 microsecond' WHERE idempotency_key = $1",
		key, ago.Microseconds())
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())
}

// rawRow is every column of a row, for before/after comparisons.
type rawRow struct {
	Status, LeaseOwner                 string
	Attempts                           int32
	LeaseUntil                         *time.Time
	LeaseSeq                           *int64
	Gateway, ChargeID, ErrorCode       *string
	Subject                            *string
	Body                               []byte
	UpdatedAt                          time.Time
	CompletedAt, SweptAt               *time.Time
	CustomerID                         *string
	PaymentID, MerchantID, Fingerprint string
}

func (b *testBundle) raw(t *testing.T, key string) rawRow {
	t.Helper()
	var r rawRow
	require.NoError(t, b.pool.QueryRow(b.ctx, `
		SELECT status, coalesce(lease_owner, ''), attempts, lease_until, lease_stream_seq,
		       gateway, gateway_charge_id, error_code, request_subject, request_body,
		       updated_at, completed_at, swept_at, customer_id, payment_id, merchant_id, fingerprint
		FROM payments WHERE idempotency_key = $1`, key).Scan(
		&r.Status, &r.LeaseOwner, &r.Attempts, &r.LeaseUntil, &r.LeaseSeq,
		&r.Gateway, &r.ChargeID, &r.ErrorCode, &r.Subject, &r.Body,
		&r.UpdatedAt, &r.CompletedAt, &r.SweptAt, &r.CustomerID, &r.PaymentID, &r.MerchantID, &r.Fingerprint))
	return r
}

func completion(key string, attempt int, owner string, status payment.Status) payment.Completion {
	c := payment.Completion{Key: key, Attempt: attempt, Owner: owner, Status: status, Gateway: "fake"}
	switch status {
	case payment.StatusSucceeded:
		c.GatewayChargeID = "ch_" + key
	case payment.StatusDeclined:
		c.ErrorCode = "card_declined"
	case payment.StatusFailed:
		c.ErrorCode = payment.ErrorCodeExhausted
	}
	return c
}
