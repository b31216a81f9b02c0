package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paystream/paystream/payment"
)

// sweeperLockID is the transaction-scoped advisory lock that lets one
// worker of the fleet sweep at a time ("paysweep" in ASCII). Per-key claim
// locks use hashtextextended(key, 0) in the same lock space; a collision
// with this constant would only make one claim report busy once.
const sweeperLockID int64 = 0x7061797377656570

// SweepStuck returns up to limit rows in processing whose lease expired
// more than grace ago and that were not swept within the last grace, oldest
// lease first, and marks them swept (swept_at = now) in the same
// transaction, so that the caller re-publishes each of them at most once
// per grace period. Only one caller in the fleet sweeps at a time: under a
// transaction-scoped advisory lock, not waited for, so ok is false (and
// rows nil) when another worker holds it. Rows locked by a concurrent claim
// are skipped. If the caller fails to re-publish, the rows come back after
// grace.
func (s *Store) SweepStuck(ctx context.Context, grace time.Duration, limit int) (rows []payment.Stuck, ok bool, err error) {
	if grace <= 0 || limit <= 0 {
		return nil, false, fmt.Errorf("store: sweep: grace %s and limit %d must be positive: %w", grace, limit, ErrInvalidArgument)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", sweeperLockID).Scan(&ok); err != nil || !ok {
			return err
		}
		res, err := tx.Query(ctx, `
			WITH stuck AS (
				SELECT idempotency_key
				FROM payments
				WHERE status = 'processing'
				  AND lease_until < clock_timestamp() - $1 * interval '1 microsecond'
				  AND (swept_at IS NULL OR swept_at < clock_timestamp() - $1 * interval '1 microsecond')
				ORDER BY lease_until
				LIMIT $2
				FOR UPDATE SKIP LOCKED
			)
			UPDATE payments p
			SET swept_at = clock_timestamp()
			FROM stuck
			WHERE p.idempotency_key = stuck.idempotency_key
			RETURNING p.idempotency_key, p.payment_id, p.merchant_id, p.amount_minor, p.currency, p.attempts,
			          coalesce(p.request_subject, ''), coalesce(p.request_body, ''::bytea), p.lease_until,
			          coalesce(p.gateway, '')`,
			grace.Microseconds(), limit)
		if err != nil {
			return err
		}
		defer res.Close()
		type stuckAt struct {
			payment.Stuck
			until time.Time
		}
		var found []stuckAt
		for res.Next() {
			var (
				st       stuckAt
				attempts int32
			)
			if err := res.Scan(&st.Key, &st.PaymentID, &st.MerchantID, &st.AmountMinor, &st.Currency, &attempts,
				&st.Subject, &st.Body, &st.until, &st.Gateway); err != nil {
				return err
			}
			st.Attempts = int(attempts)
			found = append(found, st)
		}
		if err := res.Err(); err != nil {
			return err
		}
		// UPDATE ... RETURNING keeps no order: oldest lease first again.
		slices.SortFunc(found, func(a, b stuckAt) int { return a.until.Compare(b.until) })
		for _, st := range found {
			rows = append(rows, st.Stuck)
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("store: sweep: %w", translate(err))
	}
	return rows, ok, nil
}
