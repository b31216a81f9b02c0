-- +goose Up
-- payments holds one row per effective idempotency key (docs/contract.md §7).
-- Absent optional values (customer_id, gateway, gateway_charge_id, error_code)
-- are NULL, never ''.
CREATE TABLE payments (
    idempotency_key   text        PRIMARY KEY,
    payment_id        text        NOT NULL,
    merchant_id       text        NOT NULL,
    customer_id       text,
    amount_minor      bigint      NOT NULL,
    currency          text        NOT NULL,
    status            text        NOT NULL
        CONSTRAINT payments_status_check
        CHECK (status IN ('processing', 'succeeded', 'declined', 'failed')),
    -- attempts counts the claims that led to a gateway call; it is also the
    -- fence token of the current lease.
    attempts          integer     NOT NULL CONSTRAINT payments_attempts_check CHECK (attempts >= 1),
    gateway           text,
    gateway_charge_id text,
    error_code        text,
    -- fingerprint tells duplicates (same) from conflicts (different).
    fingerprint       text        NOT NULL,
    -- The lease: who holds the key, until when (database clock), and for
    -- which stream message.
    lease_owner       text,
    lease_until       timestamptz,
    lease_stream_seq  bigint,
    -- The original request, kept while the row is processing so that the
    -- sweeper can re-publish it; cleared when the row becomes final.
    request_subject   text,
    request_body      bytea,
    -- swept_at is when the sweeper last re-published this row.
    swept_at          timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,
    CONSTRAINT payments_completed_at_check
        CHECK ((status = 'processing') = (completed_at IS NULL)),
    CONSTRAINT payments_lease_check
        CHECK (status <> 'processing' OR lease_until IS NOT NULL)
);

-- The sweeper looks for processing rows whose lease expired long ago.
CREATE INDEX payments_processing_lease_until_idx ON payments (lease_until)
    WHERE status = 'processing';

-- Retention deletes final rows by completion time.
CREATE INDEX payments_completed_at_idx ON payments (completed_at)
    WHERE completed_at IS NOT NULL;

-- +goose Down
DROP TABLE payments;
