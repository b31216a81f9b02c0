-- +goose Up
-- operator_actions is the audit of what operators did with paystreamctl
-- (docs/contract.md §7): every dead-letter replay, dry runs included, and
-- every retention run.
CREATE TABLE operator_actions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor       text        NOT NULL CONSTRAINT operator_actions_actor_check CHECK (actor <> ''),
    at          timestamptz NOT NULL DEFAULT now(),
    -- action is what was done: dlq_replay, retention_run.
    action      text        NOT NULL,
    -- arguments are the command's selection (ids, filter, rate) as JSON.
    arguments   jsonb       NOT NULL DEFAULT '{}',
    dry_run     boolean     NOT NULL,
    published   integer     NOT NULL DEFAULT 0,
    duplicates  integer     NOT NULL DEFAULT 0,
    refused     integer     NOT NULL DEFAULT 0,
    failed      integer     NOT NULL DEFAULT 0,
    -- published_seqs are the dead-letter stream sequences a replay
    -- re-published, or found re-published already (a JetStream duplicate);
    -- a later replay of one of them is refused as already replayed.
    published_seqs bigint[] NOT NULL DEFAULT '{}',
    -- result holds the rest of the outcome as JSON (retention: rows deleted
    -- by status).
    result      jsonb       NOT NULL DEFAULT '{}'
);

CREATE INDEX operator_actions_at_idx ON operator_actions (at);
CREATE INDEX operator_actions_published_seqs_idx ON operator_actions USING gin (published_seqs);

-- paystream_job_leases lets one worker of the fleet run a long job (the
-- retention run, batch after batch) at a time without a session-level
-- advisory lock, which transaction-pooling proxies would leak.
CREATE TABLE paystream_job_leases (
    name        text        PRIMARY KEY,
    owner       text        NOT NULL,
    lease_until timestamptz NOT NULL
);

-- +goose Down
DROP TABLE paystream_job_leases;
DROP TABLE operator_actions;
