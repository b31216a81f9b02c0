-- +goose Up
-- paystream_outbox holds payment requests written inside an upstream
-- service's own transaction, until a relay has published them to JetStream
-- (docs/upstream.md). A row is deleted once the stream acknowledged it.
CREATE TABLE paystream_outbox (
    id         bigserial   PRIMARY KEY,
    -- partition is a hash of merchant_id into outbox.Partitions buckets:
    -- one relay at a time publishes a partition, in id order.
    partition  integer     NOT NULL,
    subject    text        NOT NULL,
    -- payment_id is the Nats-Msg-Id of the published message.
    payment_id text        NOT NULL,
    body       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX paystream_outbox_partition_id ON paystream_outbox (partition, id);

-- +goose Down
DROP TABLE paystream_outbox;
