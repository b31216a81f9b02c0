-- +goose NO TRANSACTION
-- +goose Up
-- The operator console and paystreamctl find a payment by its payment id.
-- Most rows have no idempotency key of their own (the effective key is the
-- payment id, the primary key), so the index holds only the rows whose key
-- differs: it costs the write path nothing for the others. Built
-- concurrently, so that a large table keeps taking writes meanwhile.
CREATE INDEX CONCURRENTLY IF NOT EXISTS payments_payment_id_keyed_idx ON payments (payment_id)
    WHERE idempotency_key <> payment_id;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS payments_payment_id_keyed_idx;
