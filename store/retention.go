package store

import (
	"context"
	"fmt"
	"time"

	"github.com/paystream/paystream/payment"
)

// DeleteExpired deletes one batch: at most limit rows of the final status
// completed before the given time, oldest first, skipping rows locked by
// others, in one short statement. It returns how many it deleted; fewer
// than limit means none is left (but for skipped rows). The payment's
// attempts go with it (ON DELETE CASCADE).
func (s *Store) DeleteExpired(ctx context.Context, status payment.Status, before time.Time, limit int) (int64, error) {
	if !status.Final() || limit <= 0 {
		return 0, fmt.Errorf("store: delete expired %q rows, limit %d: only final statuses and a positive limit: %w",
			status, limit, ErrInvalidArgument)
	}
	// The batch is a materialized CTE, evaluated once: as an IN (subquery)
	// the planner may rescan the subquery, whose FOR UPDATE SKIP LOCKED
	// then skips the rows this very statement deleted and hands out the
	// next ones, deleting more than limit rows.
	tag, err := s.pool.Exec(ctx, `
		WITH batch AS MATERIALIZED (
			SELECT idempotency_key
			FROM payments
			WHERE status = $1 AND completed_at < $2
			ORDER BY completed_at
			LIMIT $3
			FOR UPDATE SKIP LOCKED)
		DELETE FROM payments p
		USING batch
		WHERE p.idempotency_key = batch.idempotency_key`, string(status), before, limit)
	if err != nil {
		return 0, fmt.Errorf("store: delete %s rows completed before %s: %w", status, before.UTC().Format(time.RFC3339), translate(err))
	}
	return tag.RowsAffected(), nil
}

// CountExpired returns how many rows of the final status were completed
// before the given time: what DeleteExpired would delete in all.
func (s *Store) CountExpired(ctx context.Context, status payment.Status, before time.Time) (int64, error) {
	if !status.Final() {
		return 0, fmt.Errorf("store: count expired %q rows: only final statuses: %w", status, ErrInvalidArgument)
	}
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM payments WHERE status = $1 AND completed_at < $2`,
		string(status), before).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: count %s rows completed before %s: %w", status, before.UTC().Format(time.RFC3339), translate(err))
	}
	return n, nil
}

// AcquireJobLease takes or renews the lease of a fleet-wide job (one worker
// at a time) for ttl on the database clock: ok is true when owner holds it
// now — it was free, expired, or owner's already. It is one statement, so
// it works behind transaction-pooling proxies where a session-level
// advisory lock would leak.
func (s *Store) AcquireJobLease(ctx context.Context, name, owner string, ttl time.Duration) (ok bool, err error) {
	if name == "" || owner == "" || ttl <= 0 {
		return false, fmt.Errorf("store: job lease: name, owner and a positive ttl are required: %w", ErrInvalidArgument)
	}
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO paystream_job_leases AS l (name, owner, lease_until)
		VALUES ($1, $2, clock_timestamp() + $3 * interval '1 microsecond')
		ON CONFLICT (name) DO UPDATE
		SET owner = excluded.owner, lease_until = excluded.lease_until
		WHERE l.owner = excluded.owner OR l.lease_until < clock_timestamp()`, name, owner, ttl.Microseconds())
	if err != nil {
		return false, fmt.Errorf("store: job lease %s: %w", name, translate(err))
	}
	return tag.RowsAffected() == 1, nil
}

// ReleaseJobLease ends owner's lease of the job, if owner holds it.
func (s *Store) ReleaseJobLease(ctx context.Context, name, owner string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM paystream_job_leases WHERE name = $1 AND owner = $2`, name, owner)
	if err != nil {
		return fmt.Errorf("store: release job lease %s: %w", name, translate(err))
	}
	return nil
}
