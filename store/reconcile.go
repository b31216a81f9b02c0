package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paystream/paystream/payment"
)

// reconcilerLockID is the transaction-scoped advisory lock that lets one
// worker of the fleet reconcile at a time ("payrecon" in ASCII).
const reconcilerLockID int64 = 0x7061797265636f6e

// ExtendLease pushes the end of the lease (key, attempt, owner) to lease
// from now, while its holder's gateway call runs (docs/contract.md §11.7).
// Fenced like Complete: payment.ErrFenced when the lease is no longer the
// caller's (taken over, released, or the row is final).
func (s *Store) ExtendLease(ctx context.Context, key string, attempt int, owner string, lease time.Duration) error {
	if err := validateFence("extend", key, attempt, owner); err != nil {
		return err
	}
	if lease < time.Microsecond {
		return fmt.Errorf("store: extend key %q: lease %s is not positive: %w", key, lease, ErrInvalidArgument)
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE payments
		SET lease_until = greatest(lease_until, clock_timestamp() + $4 * interval '1 microsecond'),
		    updated_at = clock_timestamp()
		WHERE idempotency_key = $1 AND status = 'processing' AND attempts = $2 AND lease_owner = $3`,
		key, int32(attempt), owner, lease.Microseconds())
	if err != nil {
		return fmt.Errorf("store: extend key %q: %w", key, translate(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("store: extend key %q attempt %d: %w", key, attempt, payment.ErrFenced)
	}
	return nil
}

// DueUnknown returns up to limit rows in status unknown whose next lookup is
// due, oldest first, and pushes each one's next lookup to backoff(tries)
// from now in the same transaction, so that a reconciler that dies leaves
// them for a later round. Only one caller in the fleet reconciles at a time:
// under a transaction-scoped advisory lock, not waited for, so ok is false
// (and rows nil) when another worker holds it.
func (s *Store) DueUnknown(ctx context.Context, limit int, backoff func(tries int) time.Duration) (rows []payment.Record, ok bool, err error) {
	if limit <= 0 || backoff == nil {
		return nil, false, fmt.Errorf("store: due unknown: limit %d must be positive and backoff set: %w", limit, ErrInvalidArgument)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", reconcilerLockID).Scan(&ok); err != nil || !ok {
			return err
		}
		res, err := tx.Query(ctx, `
			SELECT idempotency_key, payment_id, merchant_id, amount_minor, currency,
			       status, attempts, gateway, gateway_charge_id, error_code,
			       created_at, updated_at, completed_at, ambiguous, reconcile_tries
			FROM payments
			WHERE status = 'unknown' AND reconcile_after <= clock_timestamp()
			ORDER BY reconcile_after
			LIMIT $1
			FOR UPDATE SKIP LOCKED`, limit)
		if err != nil {
			return err
		}
		var tries []int32
		for res.Next() {
			var (
				rs recordScan
				n  int32
			)
			if err := res.Scan(append(rs.dest(), &n)...); err != nil {
				res.Close()
				return err
			}
			rows = append(rows, rs.record())
			tries = append(tries, n)
		}
		res.Close()
		if err := res.Err(); err != nil {
			return err
		}
		for i, r := range rows {
			if _, err := tx.Exec(ctx, `
				UPDATE payments
				SET reconcile_after = clock_timestamp() + $2 * interval '1 microsecond',
				    reconcile_tries = reconcile_tries + 1
				WHERE idempotency_key = $1`,
				r.IdempotencyKey, backoff(int(tries[i])+1).Microseconds()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("store: due unknown: %w", translate(err))
	}
	return rows, ok, nil
}

// Settle records the final outcome of a row that no lease holds: an unknown
// row that a lookup settled, or a processing row whose lease expired (the
// sweeper settling a stored request that no longer validates). The write
// is fenced on the row's status and attempts as the caller read them
// (from, attempt): payment.ErrFenced when anything changed since. completedAt
// is stored as the completion time, so that an outcome event published
// before the write carries the same time. The request is kept on a failed
// row, like Complete does.
func (s *Store) Settle(ctx context.Context, c payment.Completion, from payment.Status, completedAt time.Time) (payment.Record, error) {
	if c.Key == "" || c.Attempt < 1 || !c.Status.Final() {
		return payment.Record{}, fmt.Errorf("store: settle key %q attempt %d status %q: %w", c.Key, c.Attempt, c.Status, ErrInvalidArgument)
	}
	if from != payment.StatusUnknown && from != payment.StatusProcessing {
		return payment.Record{}, fmt.Errorf("store: settle key %q from %q: %w", c.Key, from, ErrInvalidArgument)
	}
	if err := validateAttempts("settle", c.Key, c.Attempts); err != nil {
		return payment.Record{}, err
	}
	var calls attemptArrays
	calls.add(0, c.Attempts)
	owner := c.Owner
	if owner == "" {
		owner = "settle"
	}
	// The lookups that decided the settlement are recorded in the same
	// statement, only when the fenced update wrote the row.
	row := s.pool.QueryRow(ctx, `
		WITH upd AS (
		UPDATE payments SET
			status            = $4,
			gateway           = coalesce(nullif($5, ''), gateway),
			gateway_charge_id = nullif($6, ''),
			error_code        = nullif($7, ''),
			ambiguous         = ambiguous OR $8,
			lease_owner       = NULL,
			lease_until       = NULL,
			request_subject   = CASE WHEN $4 = 'failed' THEN request_subject END,
			request_body      = CASE WHEN $4 = 'failed' THEN request_body END,
			reconcile_after   = NULL,
			completed_at      = $9,
			updated_at        = clock_timestamp()
		WHERE idempotency_key = $1 AND status = $2 AND attempts = $3
		  AND (status <> 'processing' OR lease_until < clock_timestamp())
		RETURNING idempotency_key, payment_id, merchant_id, amount_minor, currency,
		          status, attempts, gateway, gateway_charge_id, error_code,
		          created_at, updated_at, completed_at, ambiguous
		), calls AS (
			INSERT INTO payment_attempts (idempotency_key, attempt, kind, worker_id,
				started_at, duration_us, http_status, class, result, error_code, charge_id, gateway)
			SELECT upd.idempotency_key, upd.attempts, a.kind, $10,
				a.started, a.duration_us, nullif(a.http, 0), a.class,
				nullif(a.result, ''), nullif(a.code, ''), nullif(a.charge_id, ''), nullif(a.gateway, '')
			FROM upd, unnest($11::integer[], $12::text[], $13::timestamptz[], $14::bigint[], $15::integer[],
			                 $16::text[], $17::text[], $18::text[], $19::text[], $20::text[])
			     WITH ORDINALITY AS a(ord, kind, started, duration_us, http, class, result, code, charge_id, gateway, n)
		)
		SELECT * FROM upd`,
		append([]any{c.Key, string(from), int32(c.Attempt), string(c.Status), c.Gateway, c.GatewayChargeID,
			c.ErrorCode, c.Ambiguous, completedAt.UTC(), owner}, calls.args()...)...)
	var rs recordScan
	if err := row.Scan(rs.dest()...); err != nil {
		if err == pgx.ErrNoRows {
			return payment.Record{}, fmt.Errorf("store: settle key %q attempt %d: %w", c.Key, c.Attempt, payment.ErrFenced)
		}
		return payment.Record{}, fmt.Errorf("store: settle key %q: %w", c.Key, translate(err))
	}
	return rs.record(), nil
}

// unknownQuery counts the rows in unknown, and the age in microseconds of
// the oldest one since its last update (NULL when none).
const unknownQuery = `
	SELECT count(*), (extract(epoch FROM clock_timestamp() - min(updated_at)) * 1000000)::bigint
	FROM payments WHERE status = 'unknown'`

// UnknownStats returns the number of rows in unknown and the age of the
// oldest one (0 when there is none), for metrics and status.
func (s *Store) UnknownStats(ctx context.Context) (count int64, oldest time.Duration, err error) {
	var ageUs *int64
	err = s.pool.QueryRow(ctx, unknownQuery).Scan(&count, &ageUs)
	if err != nil {
		return 0, 0, fmt.Errorf("store: unknown stats: %w", translate(err))
	}
	return count, time.Duration(deref(ageUs)) * time.Microsecond, nil
}
