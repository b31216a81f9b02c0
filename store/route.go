package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/paystream/paystream/payment"
)

// Route moves the payment held under the lease (key, attempt, owner) from
// gateway from to gateway to, before any call to it (docs/contract.md §5,
// "Several gateways"): the row's gateway becomes to, to is appended to its
// gateways tried, and the row is no longer ambiguous — the caller routes
// away only from a gateway that surely did not charge (the request was
// never sent, or its lookup answered 404). The write is fenced by the lease
// and by from (empty: the row has no gateway yet): payment.ErrFenced when
// the lease is no longer the caller's or the row is on another gateway.
// Once it returns nil, a take-over of the row calls to, never from.
func (s *Store) Route(ctx context.Context, key string, attempt int, owner, from, to string) error {
	if key == "" || attempt < 1 || owner == "" || to == "" {
		return fmt.Errorf("store: route key %q attempt %d to %q: %w", key, attempt, to, ErrInvalidArgument)
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE payments SET
			gateway        = $5,
			gateways_tried = array_append(coalesce(gateways_tried, '{}'), $5),
			ambiguous      = false,
			updated_at     = clock_timestamp()
		WHERE idempotency_key = $1 AND status = 'processing' AND attempts = $2 AND lease_owner = $3
		  AND gateway IS NOT DISTINCT FROM nullif($4, '')`,
		key, int32(attempt), owner, from, to)
	if err != nil {
		return fmt.Errorf("store: route key %q to %q: %w", key, to, translate(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("store: route key %q from %q to %q: %w", key, from, to, payment.ErrFenced)
	}
	return nil
}

// GatewaysTried returns the gateways the payment of key was routed to, in
// order (nil when none was recorded, or there is no such row).
func (s *Store) GatewaysTried(ctx context.Context, key string) ([]string, error) {
	var tried []string
	err := s.pool.QueryRow(ctx, `SELECT coalesce(gateways_tried, '{}') FROM payments WHERE idempotency_key = $1`, key).Scan(&tried)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("store: gateways tried of %q: %w", key, translate(err))
	}
	return tried, nil
}
