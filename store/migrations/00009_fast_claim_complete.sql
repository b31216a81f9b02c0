-- +goose Up
-- Cheaper claim and completion (issue 17), same signatures and semantics as
-- 00006. Measured on a durable cluster, batches of 64 new claims then
-- completions over 100k final rows (pg_stat_statements, track = all), the
-- old functions spent per payment, besides the work of the statements
-- proper: a custom plan of every inner statement on each call
-- (plan_cache_mode = force_custom_plan), the claim's fast path copied row
-- by row through PL/pgSQL (RETURN NEXT, 19 assignments, handled := handled
-- || ord), whole rows returned (RETURNING *), and the completion's separate
-- FOR UPDATE pass (a lock record in the WAL per row before the update's own).
--
-- Now:
--   * The inner statements use generic plans, planned once per connection
--     (plan_cache_mode = force_generic_plan). A generic plan is kept for
--     the connection's life, so it must not depend on how big payments was
--     when it was made: the functions also turn off the plans that could
--     scan payments (enable_seqscan; for the completion, hash and merge
--     joins too, which leaves the nested loop over the items into the
--     primary key). Checked with auto_explain on an empty table and on
--     100k rows: the same plan.
--   * The claim's fast path is one statement that takes the locks and
--     inserts, and gives back only the ords it settled (new, busy); their
--     result rows are then produced by one RETURN QUERY from the arguments
--     (a new row is exactly what was inserted: the columns not set there are
--     NULL, ambiguous is false, and there is no trigger). The per-item loop
--     runs only when some item is left (a key that has a row, a key given
--     twice).
--   * The completion writes the rows directly, without a separate FOR
--     UPDATE pass, walking the items in byte order of the key (COLLATE
--     "C") with the nested loop: the rows are locked in the order in which
--     every batch locks them, so concurrent batches still cannot deadlock.
--     Of the items of one key with the same fence only the first in input
--     order takes part (the others are fenced, as one after the other).
--     The fence's status is compared in the join, not as a constant, so
--     that the planner does not reach the rows through
--     payments_processing_lease_until_idx (statistics see few processing
--     rows; the scan would read every processing row and its dead index
--     entries for each batch). Should a deadlock ever happen anyway, Postgres
--     aborts one batch after deadlock_timeout and writes nothing of it, the
--     error (40P01) is ErrRetryable, and the Batcher retries its items one by
--     one: a stall, never a wrong result.
--   * Result rows carry only the columns the caller reads; the status check
--     is an array containment instead of a query.
--   * paystream_release is unchanged (retryable failures only; a loop).

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION paystream_claim(
    p_keys          text[],
    p_fingerprints  text[],
    p_payment_ids   text[],
    p_merchant_ids  text[],
    p_customer_ids  text[],
    p_amounts       bigint[],
    p_currencies    text[],
    p_subjects      text[],
    p_bodies        bytea[],
    p_seqs          bigint[],
    p_owners        text[],
    p_lease_us      bigint[],
    p_busy_retry_us bigint,
    p_gateways      text[]
) RETURNS TABLE (
    o_ord               integer,
    o_kind              text,
    o_retry_after_us    bigint,
    o_request_body      bytea,
    o_prior_status      text,
    o_idempotency_key   text,
    o_payment_id        text,
    o_merchant_id       text,
    o_amount_minor      bigint,
    o_currency          text,
    o_status            text,
    o_attempts          integer,
    o_gateway           text,
    o_gateway_charge_id text,
    o_error_code        text,
    o_created_at        timestamptz,
    o_updated_at        timestamptz,
    o_completed_at      timestamptz,
    o_ambiguous         boolean
)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    n         integer := coalesce(cardinality(p_keys), 0);
    r         record;
    cur       payments%ROWTYPE;
    ts        timestamptz;
    new_ords  integer[];
    busy_ords integer[];
BEGIN
    IF coalesce(cardinality(p_fingerprints), 0) <> n
        OR coalesce(cardinality(p_payment_ids), 0) <> n
        OR coalesce(cardinality(p_merchant_ids), 0) <> n
        OR coalesce(cardinality(p_customer_ids), 0) <> n
        OR coalesce(cardinality(p_amounts), 0) <> n
        OR coalesce(cardinality(p_currencies), 0) <> n
        OR coalesce(cardinality(p_subjects), 0) <> n
        OR coalesce(cardinality(p_bodies), 0) <> n
        OR coalesce(cardinality(p_seqs), 0) <> n
        OR coalesce(cardinality(p_owners), 0) <> n
        OR coalesce(cardinality(p_lease_us), 0) <> n
        OR coalesce(cardinality(p_gateways), 0) <> n
    THEN
        RAISE EXCEPTION 'paystream_claim: argument arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Fast path, one set-based statement for the common case: the first
    -- item of each key takes the advisory lock, and a key with no row yet
    -- gets its row inserted (new); a key whose lock is taken is busy. Try
    -- locks never wait and the inserted rows are new, so nothing here can
    -- deadlock.
    ts := clock_timestamp();
    WITH u AS MATERIALIZED (
        SELECT *
        FROM unnest(p_keys, p_fingerprints, p_payment_ids, p_merchant_ids,
                    p_customer_ids, p_amounts, p_currencies, p_subjects,
                    p_bodies, p_seqs, p_owners, p_lease_us, p_gateways)
             WITH ORDINALITY AS u(key, fingerprint, payment_id, merchant_id,
                                  customer_id, amount, currency, subject,
                                  body, seq, owner, lease_us, gateway, ord)
    ), firsts AS MATERIALIZED (
        SELECT DISTINCT ON (u.key) u.* FROM u ORDER BY u.key, u.ord
    ), locked AS MATERIALIZED (
        SELECT f.*, pg_try_advisory_xact_lock(hashtextextended(f.key, 0)) AS got
        FROM firsts f
    ), ins AS (
        INSERT INTO payments (
            idempotency_key, payment_id, merchant_id, customer_id,
            amount_minor, currency, status, attempts, fingerprint,
            lease_owner, lease_until, lease_stream_seq,
            request_subject, request_body, created_at, updated_at,
            gateway, gateways_tried)
        SELECT l.key, l.payment_id, l.merchant_id, nullif(l.customer_id, ''),
            l.amount, l.currency, 'processing', 1, l.fingerprint,
            l.owner, ts + l.lease_us * interval '1 microsecond', l.seq,
            l.subject, l.body, ts, ts,
            nullif(l.gateway, ''), CASE WHEN l.gateway <> '' THEN ARRAY[l.gateway] END
        FROM locked l
        WHERE l.got
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING idempotency_key
    )
    SELECT array_agg(l.ord::integer) FILTER (WHERE ins.idempotency_key IS NOT NULL),
           array_agg(l.ord::integer) FILTER (WHERE NOT l.got)
    INTO new_ords, busy_ords
    FROM locked l LEFT JOIN ins ON ins.idempotency_key = l.key;
    new_ords := coalesce(new_ords, '{}');
    busy_ords := coalesce(busy_ords, '{}');

    -- The rows inserted above, as inserted (the columns not set there are
    -- NULL, and ambiguous is false), and the busy items.
    RETURN QUERY
    SELECT u.ord::integer, 'new'::text, NULL::bigint, NULL::bytea, NULL::text,
        u.key, u.payment_id, u.merchant_id, u.amount, u.currency,
        'processing'::text, 1, nullif(u.gateway, ''), NULL::text, NULL::text,
        ts, ts, NULL::timestamptz, false
    FROM unnest(p_keys, p_payment_ids, p_merchant_ids, p_amounts, p_currencies, p_gateways)
         WITH ORDINALITY AS u(key, payment_id, merchant_id, amount, currency, gateway, ord)
    WHERE u.ord::integer = ANY (new_ords)
    UNION ALL
    SELECT b.ord, 'busy'::text, p_busy_retry_us, NULL::bytea, NULL::text,
        NULL::text, NULL::text, NULL::text, NULL::bigint, NULL::text,
        NULL::text, NULL::integer, NULL::text, NULL::text, NULL::text,
        NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::boolean
    FROM unnest(busy_ords) AS b(ord);

    IF cardinality(new_ords) + cardinality(busy_ords) = n THEN
        RETURN;
    END IF;

    -- The rest, item by item in key order: keys that have a row, and the
    -- later items of a key that appears more than once (they see what the
    -- earlier ones wrote; the advisory lock is re-entrant).
    FOR r IN
        SELECT u.*
        FROM unnest(p_keys, p_fingerprints, p_payment_ids, p_merchant_ids,
                    p_customer_ids, p_amounts, p_currencies, p_subjects,
                    p_bodies, p_seqs, p_owners, p_lease_us, p_gateways)
             WITH ORDINALITY AS u(key, fingerprint, payment_id, merchant_id,
                                  customer_id, amount, currency, subject,
                                  body, seq, owner, lease_us, gateway, ord)
        WHERE NOT (u.ord::integer = ANY (new_ords) OR u.ord::integer = ANY (busy_ords))
        ORDER BY u.key COLLATE "C", u.ord
    LOOP
        cur := NULL;
        o_ord := r.ord;
        o_retry_after_us := NULL;
        o_prior_status := NULL;

        IF NOT pg_try_advisory_xact_lock(hashtextextended(r.key, 0)) THEN
            -- Another transaction is claiming this key right now.
            o_kind := 'busy';
            o_retry_after_us := p_busy_retry_us;
        ELSE
            ts := clock_timestamp();
            SELECT * INTO cur FROM payments
            WHERE idempotency_key = r.key
            FOR UPDATE;

            IF NOT FOUND THEN
                INSERT INTO payments (
                    idempotency_key, payment_id, merchant_id, customer_id,
                    amount_minor, currency, status, attempts, fingerprint,
                    lease_owner, lease_until, lease_stream_seq,
                    request_subject, request_body, created_at, updated_at,
                    gateway, gateways_tried)
                VALUES (
                    r.key, r.payment_id, r.merchant_id, nullif(r.customer_id, ''),
                    r.amount, r.currency, 'processing', 1, r.fingerprint,
                    r.owner, ts + r.lease_us * interval '1 microsecond', r.seq,
                    r.subject, r.body, ts, ts,
                    nullif(r.gateway, ''), CASE WHEN r.gateway <> '' THEN ARRAY[r.gateway] END)
                ON CONFLICT (idempotency_key) DO NOTHING
                RETURNING * INTO cur;
                IF FOUND THEN
                    o_kind := 'new';
                ELSE
                    -- Inserted concurrently by someone not holding the
                    -- advisory lock; try again shortly.
                    o_kind := 'busy';
                    o_retry_after_us := p_busy_retry_us;
                END IF;
            ELSIF cur.fingerprint <> r.fingerprint THEN
                o_kind := 'conflict';
            ELSIF cur.status IN ('succeeded', 'declined')
                OR (cur.status = 'failed' AND cur.lease_stream_seq = r.seq) THEN
                -- A failed row is taken over by a replay (a new message),
                -- not by another delivery of the message that ended it.
                o_kind := 'duplicate';
            ELSIF cur.status = 'unknown' THEN
                -- The reconciler owns the key until a lookup settles it.
                o_kind := 'in_flight';
            ELSIF cur.status = 'processing' AND cur.lease_until > ts THEN
                IF cur.lease_stream_seq = r.seq THEN
                    o_kind := 'busy';
                    o_retry_after_us := greatest(0,
                        ceil(extract(epoch FROM cur.lease_until - ts) * 1000000))::bigint;
                ELSE
                    o_kind := 'in_flight';
                END IF;
            ELSE
                -- processing with an expired lease, or failed: take over.
                -- The stored request stays (every attempt charges the body
                -- of the first claim); a lease that expired without a
                -- release or a record (lease_owner still set) may have
                -- charged: the row becomes ambiguous.
                o_prior_status := cur.status;
                UPDATE payments SET
                    status            = 'processing',
                    attempts          = attempts + 1,
                    ambiguous         = ambiguous OR (status = 'processing' AND lease_owner IS NOT NULL),
                    lease_owner       = r.owner,
                    lease_until       = ts + r.lease_us * interval '1 microsecond',
                    lease_stream_seq  = r.seq,
                    request_subject   = coalesce(request_subject, r.subject),
                    request_body      = coalesce(request_body, r.body),
                    -- A take-over keeps the gateway the payment was
                    -- sent to: it is the one that may have charged.
                    gateways_tried    = CASE WHEN gateway IS NULL AND r.gateway <> ''
                                             THEN array_append(gateways_tried, r.gateway)
                                             ELSE gateways_tried END,
                    gateway           = coalesce(gateway, nullif(r.gateway, '')),
                    gateway_charge_id = NULL,
                    error_code        = NULL,
                    completed_at      = NULL,
                    swept_at          = NULL,
                    updated_at        = ts
                WHERE idempotency_key = r.key
                RETURNING * INTO cur;
                o_kind := 'takeover';
            END IF;
        END IF;

        o_request_body := NULL;
        IF o_kind = 'takeover' THEN
            o_request_body := cur.request_body;
        END IF;

        o_idempotency_key   := cur.idempotency_key;
        o_payment_id        := cur.payment_id;
        o_merchant_id       := cur.merchant_id;
        o_amount_minor      := cur.amount_minor;
        o_currency          := cur.currency;
        o_status            := cur.status;
        o_attempts          := cur.attempts;
        o_gateway           := cur.gateway;
        o_gateway_charge_id := cur.gateway_charge_id;
        o_error_code        := cur.error_code;
        o_created_at        := cur.created_at;
        o_updated_at        := cur.updated_at;
        o_completed_at      := cur.completed_at;
        o_ambiguous         := cur.ambiguous;
        RETURN NEXT;
    END LOOP;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION paystream_complete(
    p_keys        text[],
    p_attempts    integer[],
    p_owners      text[],
    p_statuses    text[],
    p_gateways    text[],
    p_charge_ids  text[],
    p_error_codes text[],
    p_ambiguous   boolean[],
    a_ords        integer[],
    a_kinds       text[],
    a_started     timestamptz[],
    a_duration_us bigint[],
    a_http        integer[],
    a_classes     text[],
    a_results     text[],
    a_codes       text[],
    a_charge_ids  text[],
    a_gateways    text[]
) RETURNS TABLE (
    o_ord               integer,
    o_fenced            boolean,
    o_idempotency_key   text,
    o_payment_id        text,
    o_merchant_id       text,
    o_amount_minor      bigint,
    o_currency          text,
    o_status            text,
    o_attempts          integer,
    o_gateway           text,
    o_gateway_charge_id text,
    o_error_code        text,
    o_created_at        timestamptz,
    o_updated_at        timestamptz,
    o_completed_at      timestamptz,
    o_ambiguous         boolean
)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    n   integer := coalesce(cardinality(p_keys), 0);
    na  integer := coalesce(cardinality(a_ords), 0);
    ts  timestamptz;
BEGIN
    IF coalesce(cardinality(p_attempts), 0) <> n
        OR coalesce(cardinality(p_owners), 0) <> n
        OR coalesce(cardinality(p_statuses), 0) <> n
        OR coalesce(cardinality(p_gateways), 0) <> n
        OR coalesce(cardinality(p_charge_ids), 0) <> n
        OR coalesce(cardinality(p_error_codes), 0) <> n
        OR coalesce(cardinality(p_ambiguous), 0) <> n
        OR coalesce(cardinality(a_kinds), 0) <> na
        OR coalesce(cardinality(a_started), 0) <> na
        OR coalesce(cardinality(a_duration_us), 0) <> na
        OR coalesce(cardinality(a_http), 0) <> na
        OR coalesce(cardinality(a_classes), 0) <> na
        OR coalesce(cardinality(a_results), 0) <> na
        OR coalesce(cardinality(a_codes), 0) <> na
        OR coalesce(cardinality(a_charge_ids), 0) <> na
        OR coalesce(cardinality(a_gateways), 0) <> na
    THEN
        RAISE EXCEPTION 'paystream_complete: argument arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- A NULL element is contained in no array, so it fails this too.
    IF NOT (coalesce(p_statuses, '{}') <@ ARRAY['succeeded', 'declined', 'failed', 'unknown']) THEN
        RAISE EXCEPTION 'paystream_complete: a status is neither final nor unknown'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    ts := clock_timestamp();
    RETURN QUERY
    WITH u AS MATERIALIZED (
        -- In key order: the update below locks the rows in this order
        -- (see the head of this migration). from_status is the status a
        -- row must have to be written, compared in the join rather than as
        -- a constant: a constant lets the planner reach the rows through
        -- payments_processing_lease_until_idx (statistics see few
        -- processing rows), scanning every processing row and its dead
        -- index entries for each batch, in heap order.
        SELECT u.*, 'processing'::text AS from_status
        FROM unnest(p_keys, p_attempts, p_owners, p_statuses, p_gateways,
                    p_charge_ids, p_error_codes, p_ambiguous)
             WITH ORDINALITY AS u(key, attempt, owner, status, gateway,
                                  charge_id, error_code, ambiguous, ord)
        ORDER BY u.key COLLATE "C", u.ord
    ), firsts AS MATERIALIZED (
        -- A key given twice with the same fence is written once, by its
        -- first item: the other finds nothing (fenced), as it would one
        -- after the other.
        SELECT DISTINCT ON (u.key COLLATE "C", u.attempt, u.owner) u.*
        FROM u
        ORDER BY u.key COLLATE "C", u.attempt, u.owner, u.ord
    ), upd AS (
        UPDATE payments p SET
            status            = u.status,
            gateway           = nullif(u.gateway, ''),
            gateway_charge_id = nullif(u.charge_id, ''),
            error_code        = nullif(u.error_code, ''),
            ambiguous         = p.ambiguous OR coalesce(u.ambiguous, false),
            lease_until       = NULL,
            -- A failed row may be taken over by a replay, which charges the
            -- stored request; an unknown row is re-published by nobody but
            -- keeps it for the operator.
            request_subject   = CASE WHEN u.status IN ('failed', 'unknown') THEN p.request_subject END,
            request_body      = CASE WHEN u.status IN ('failed', 'unknown') THEN p.request_body END,
            reconcile_after   = CASE WHEN u.status = 'unknown' THEN ts END,
            reconcile_tries   = 0,
            completed_at      = CASE WHEN u.status = 'unknown' THEN NULL ELSE ts END,
            updated_at        = ts
        FROM firsts u
        WHERE p.idempotency_key = u.key
          AND p.status = u.from_status
          AND p.attempts = u.attempt
          AND p.lease_owner = u.owner
        RETURNING u.ord AS u_ord, p.idempotency_key, p.payment_id,
            p.merchant_id, p.amount_minor, p.currency, p.status, p.attempts, p.gateway,
            p.gateway_charge_id, p.error_code, p.created_at, p.updated_at,
            p.completed_at, p.ambiguous
    ), calls AS (
        -- The lease's gateway calls, only for the items written.
        INSERT INTO payment_attempts (idempotency_key, attempt, kind, worker_id,
            started_at, duration_us, http_status, class, result, error_code, charge_id, gateway)
        -- (With joins limited to nested loops, the item's fence is taken
        -- from the arguments, which the written row matches, and the items
        -- written are looked up in an array, not joined.)
        SELECT p_keys[a.ord], p_attempts[a.ord], a.kind, p_owners[a.ord],
            a.started, a.duration_us, nullif(a.http, 0), a.class,
            nullif(a.result, ''), nullif(a.code, ''), nullif(a.charge_id, ''), nullif(a.gateway, '')
        FROM unnest(a_ords, a_kinds, a_started, a_duration_us, a_http, a_classes,
                    a_results, a_codes, a_charge_ids, a_gateways)
             WITH ORDINALITY AS a(ord, kind, started, duration_us, http, class,
                                  result, code, charge_id, gateway, n)
        WHERE a.ord = ANY (ARRAY(SELECT upd.u_ord::integer FROM upd))
        ORDER BY a.n
    )
    SELECT upd.u_ord::integer, false,
        upd.idempotency_key, upd.payment_id, upd.merchant_id, upd.amount_minor,
        upd.currency, upd.status, upd.attempts, upd.gateway, upd.gateway_charge_id,
        upd.error_code, upd.created_at, upd.updated_at, upd.completed_at, upd.ambiguous
    FROM upd
    UNION ALL
    -- The items not written: fenced (NOT IN stays a hashed subplan).
    SELECT u.ord::integer, true,
        NULL::text, NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::text,
        NULL::integer, NULL::text, NULL::text, NULL::text, NULL::timestamptz,
        NULL::timestamptz, NULL::timestamptz, NULL::boolean
    FROM u
    WHERE u.ord NOT IN (SELECT upd.u_ord FROM upd);
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- The functions as 00006 created them.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION paystream_claim(
    p_keys          text[],
    p_fingerprints  text[],
    p_payment_ids   text[],
    p_merchant_ids  text[],
    p_customer_ids  text[],
    p_amounts       bigint[],
    p_currencies    text[],
    p_subjects      text[],
    p_bodies        bytea[],
    p_seqs          bigint[],
    p_owners        text[],
    p_lease_us      bigint[],
    p_busy_retry_us bigint,
    -- The gateway chosen for each item (docs/contract.md §5, "Several
    -- gateways"): stored on a new row, and on a taken-over row that has none.
    p_gateways      text[]
) RETURNS TABLE (
    o_ord               integer,
    o_kind              text,
    o_retry_after_us    bigint,
    o_request_body      bytea,
    o_prior_status      text,
    o_idempotency_key   text,
    o_payment_id        text,
    o_merchant_id       text,
    o_amount_minor      bigint,
    o_currency          text,
    o_status            text,
    o_attempts          integer,
    o_gateway           text,
    o_gateway_charge_id text,
    o_error_code        text,
    o_created_at        timestamptz,
    o_updated_at        timestamptz,
    o_completed_at      timestamptz,
    o_ambiguous         boolean
)
LANGUAGE plpgsql VOLATILE
-- The set-based statements inside are planned for each call: a cached
-- generic plan for arrays of unknown size can pick a scan of the whole table.
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    n       integer := coalesce(cardinality(p_keys), 0);
    r       record;
    cur     payments%ROWTYPE;
    ts      timestamptz;
    handled integer[] := '{}';
BEGIN
    IF coalesce(cardinality(p_fingerprints), 0) <> n
        OR coalesce(cardinality(p_payment_ids), 0) <> n
        OR coalesce(cardinality(p_merchant_ids), 0) <> n
        OR coalesce(cardinality(p_customer_ids), 0) <> n
        OR coalesce(cardinality(p_amounts), 0) <> n
        OR coalesce(cardinality(p_currencies), 0) <> n
        OR coalesce(cardinality(p_subjects), 0) <> n
        OR coalesce(cardinality(p_bodies), 0) <> n
        OR coalesce(cardinality(p_seqs), 0) <> n
        OR coalesce(cardinality(p_owners), 0) <> n
        OR coalesce(cardinality(p_lease_us), 0) <> n
        OR coalesce(cardinality(p_gateways), 0) <> n
    THEN
        RAISE EXCEPTION 'paystream_claim: argument arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Fast path, one set-based statement for the common case: the first
    -- item of each key takes the advisory lock, and a key with no row yet
    -- gets its row inserted (new); a key whose lock is taken is busy. Try
    -- locks never wait and the inserted rows are new, so nothing here can
    -- deadlock. Measured: about 4x cheaper per row than the per-item loop.
    ts := clock_timestamp();
    FOR r IN
        WITH u AS MATERIALIZED (
            SELECT *
            FROM unnest(p_keys, p_fingerprints, p_payment_ids, p_merchant_ids,
                        p_customer_ids, p_amounts, p_currencies, p_subjects,
                        p_bodies, p_seqs, p_owners, p_lease_us, p_gateways)
                 WITH ORDINALITY AS u(key, fingerprint, payment_id, merchant_id,
                                      customer_id, amount, currency, subject,
                                      body, seq, owner, lease_us, gateway, ord)
        ), firsts AS MATERIALIZED (
            SELECT DISTINCT ON (u.key) u.* FROM u ORDER BY u.key, u.ord
        ), locked AS MATERIALIZED (
            SELECT f.*, pg_try_advisory_xact_lock(hashtextextended(f.key, 0)) AS got
            FROM firsts f
        ), ins AS (
            INSERT INTO payments (
                idempotency_key, payment_id, merchant_id, customer_id,
                amount_minor, currency, status, attempts, fingerprint,
                lease_owner, lease_until, lease_stream_seq,
                request_subject, request_body, created_at, updated_at,
                gateway, gateways_tried)
            SELECT l.key, l.payment_id, l.merchant_id, nullif(l.customer_id, ''),
                l.amount, l.currency, 'processing', 1, l.fingerprint,
                l.owner, ts + l.lease_us * interval '1 microsecond', l.seq,
                l.subject, l.body, ts, ts,
                nullif(l.gateway, ''), CASE WHEN l.gateway <> '' THEN ARRAY[l.gateway] END
            FROM locked l
            WHERE l.got
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING *
        )
        SELECT l.ord AS l_ord, l.got AS l_got, ins.*
        FROM locked l LEFT JOIN ins ON ins.idempotency_key = l.key
    LOOP
        IF r.l_got AND r.idempotency_key IS NULL THEN
            CONTINUE; -- the key has a row: the per-item loop below decides
        END IF;
        handled := handled || r.l_ord::integer;
        o_ord := r.l_ord;
        IF NOT r.l_got THEN
            o_kind := 'busy';
            o_retry_after_us := p_busy_retry_us;
        ELSE
            o_kind := 'new';
            o_retry_after_us := NULL;
        END IF;
        o_idempotency_key   := r.idempotency_key;
        o_payment_id        := r.payment_id;
        o_merchant_id       := r.merchant_id;
        o_amount_minor      := r.amount_minor;
        o_currency          := r.currency;
        o_status            := r.status;
        o_attempts          := r.attempts;
        o_gateway           := r.gateway;
        o_gateway_charge_id := r.gateway_charge_id;
        o_error_code        := r.error_code;
        o_created_at        := r.created_at;
        o_updated_at        := r.updated_at;
        o_completed_at      := r.completed_at;
        o_ambiguous         := r.ambiguous;
        o_request_body      := NULL; -- new: the caller's own body
        o_prior_status      := NULL;
        RETURN NEXT;
    END LOOP;

    -- The rest, item by item in key order: keys that have a row, and the
    -- later items of a key that appears more than once (they see what the
    -- earlier ones wrote; the advisory lock is re-entrant).
    FOR r IN
        SELECT u.*
        FROM unnest(p_keys, p_fingerprints, p_payment_ids, p_merchant_ids,
                    p_customer_ids, p_amounts, p_currencies, p_subjects,
                    p_bodies, p_seqs, p_owners, p_lease_us, p_gateways)
             WITH ORDINALITY AS u(key, fingerprint, payment_id, merchant_id,
                                  customer_id, amount, currency, subject,
                                  body, seq, owner, lease_us, gateway, ord)
        WHERE NOT (u.ord::integer = ANY (handled))
        ORDER BY u.key COLLATE "C", u.ord
    LOOP
        cur := NULL;
        o_ord := r.ord;
        o_retry_after_us := NULL;
        o_prior_status := NULL;

        IF NOT pg_try_advisory_xact_lock(hashtextextended(r.key, 0)) THEN
            -- Another transaction is claiming this key right now.
            o_kind := 'busy';
            o_retry_after_us := p_busy_retry_us;
        ELSE
            ts := clock_timestamp();
            SELECT * INTO cur FROM payments
            WHERE idempotency_key = r.key
            FOR UPDATE;

            IF NOT FOUND THEN
                INSERT INTO payments (
                    idempotency_key, payment_id, merchant_id, customer_id,
                    amount_minor, currency, status, attempts, fingerprint,
                    lease_owner, lease_until, lease_stream_seq,
                    request_subject, request_body, created_at, updated_at,
                gateway, gateways_tried)
                VALUES (
                    r.key, r.payment_id, r.merchant_id, nullif(r.customer_id, ''),
                    r.amount, r.currency, 'processing', 1, r.fingerprint,
                    r.owner, ts + r.lease_us * interval '1 microsecond', r.seq,
                    r.subject, r.body, ts, ts,
                    nullif(r.gateway, ''), CASE WHEN r.gateway <> '' THEN ARRAY[r.gateway] END)
                ON CONFLICT (idempotency_key) DO NOTHING
                RETURNING * INTO cur;
                IF FOUND THEN
                    o_kind := 'new';
                ELSE
                    -- Inserted concurrently by someone not holding the
                    -- advisory lock; try again shortly.
                    o_kind := 'busy';
                    o_retry_after_us := p_busy_retry_us;
                END IF;
            ELSIF cur.fingerprint <> r.fingerprint THEN
                o_kind := 'conflict';
            ELSIF cur.status IN ('succeeded', 'declined')
                OR (cur.status = 'failed' AND cur.lease_stream_seq = r.seq) THEN
                -- A failed row is taken over by a replay (a new message),
                -- not by another delivery of the message that ended it.
                o_kind := 'duplicate';
            ELSIF cur.status = 'unknown' THEN
                -- The reconciler owns the key until a lookup settles it.
                o_kind := 'in_flight';
            ELSIF cur.status = 'processing' AND cur.lease_until > ts THEN
                IF cur.lease_stream_seq = r.seq THEN
                    o_kind := 'busy';
                    o_retry_after_us := greatest(0,
                        ceil(extract(epoch FROM cur.lease_until - ts) * 1000000))::bigint;
                ELSE
                    o_kind := 'in_flight';
                END IF;
            ELSE
                -- processing with an expired lease, or failed: take over.
                -- The stored request stays (every attempt charges the body
                -- of the first claim); a lease that expired without a
                -- release or a record (lease_owner still set) may have
                -- charged: the row becomes ambiguous.
                o_prior_status := cur.status;
                UPDATE payments SET
                    status            = 'processing',
                    attempts          = attempts + 1,
                    ambiguous         = ambiguous OR (status = 'processing' AND lease_owner IS NOT NULL),
                    lease_owner       = r.owner,
                    lease_until       = ts + r.lease_us * interval '1 microsecond',
                    lease_stream_seq  = r.seq,
                    request_subject   = coalesce(request_subject, r.subject),
                    request_body      = coalesce(request_body, r.body),
                    -- A take-over keeps the gateway the payment was
                    -- sent to: it is the one that may have charged.
                    gateways_tried    = CASE WHEN gateway IS NULL AND r.gateway <> ''
                                             THEN array_append(gateways_tried, r.gateway)
                                             ELSE gateways_tried END,
                    gateway           = coalesce(gateway, nullif(r.gateway, '')),
                    gateway_charge_id = NULL,
                    error_code        = NULL,
                    completed_at      = NULL,
                    swept_at          = NULL,
                    updated_at        = ts
                WHERE idempotency_key = r.key
                RETURNING * INTO cur;
                o_kind := 'takeover';
            END IF;
        END IF;

        o_request_body := NULL;
        IF o_kind = 'takeover' THEN
            o_request_body := cur.request_body;
        END IF;

        o_idempotency_key   := cur.idempotency_key;
        o_payment_id        := cur.payment_id;
        o_merchant_id       := cur.merchant_id;
        o_amount_minor      := cur.amount_minor;
        o_currency          := cur.currency;
        o_status            := cur.status;
        o_attempts          := cur.attempts;
        o_gateway           := cur.gateway;
        o_gateway_charge_id := cur.gateway_charge_id;
        o_error_code        := cur.error_code;
        o_created_at        := cur.created_at;
        o_updated_at        := cur.updated_at;
        o_completed_at      := cur.completed_at;
        o_ambiguous         := cur.ambiguous;
        RETURN NEXT;
    END LOOP;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION paystream_complete(
    p_keys        text[],
    p_attempts    integer[],
    p_owners      text[],
    p_statuses    text[],
    p_gateways    text[],
    p_charge_ids  text[],
    p_error_codes text[],
    p_ambiguous   boolean[],
    -- The gateway calls, flattened: a_ords[i] is the 1-based item they
    -- belong to.
    a_ords        integer[],
    a_kinds       text[],
    a_started     timestamptz[],
    a_duration_us bigint[],
    a_http        integer[],
    a_classes     text[],
    a_results     text[],
    a_codes       text[],
    a_charge_ids  text[],
    -- The gateway each call went to (PAYSTREAM_GATEWAYS).
    a_gateways    text[]
) RETURNS TABLE (
    o_ord               integer,
    o_fenced            boolean,
    o_idempotency_key   text,
    o_payment_id        text,
    o_merchant_id       text,
    o_amount_minor      bigint,
    o_currency          text,
    o_status            text,
    o_attempts          integer,
    o_gateway           text,
    o_gateway_charge_id text,
    o_error_code        text,
    o_created_at        timestamptz,
    o_updated_at        timestamptz,
    o_completed_at      timestamptz,
    o_ambiguous         boolean
)
LANGUAGE plpgsql VOLATILE
-- The set-based statements inside are planned for each call: a cached
-- generic plan for arrays of unknown size can pick a scan of the whole table.
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    n   integer := coalesce(cardinality(p_keys), 0);
    na  integer := coalesce(cardinality(a_ords), 0);
    ts  timestamptz;
BEGIN
    IF coalesce(cardinality(p_attempts), 0) <> n
        OR coalesce(cardinality(p_owners), 0) <> n
        OR coalesce(cardinality(p_statuses), 0) <> n
        OR coalesce(cardinality(p_gateways), 0) <> n
        OR coalesce(cardinality(p_charge_ids), 0) <> n
        OR coalesce(cardinality(p_error_codes), 0) <> n
        OR coalesce(cardinality(p_ambiguous), 0) <> n
        OR coalesce(cardinality(a_kinds), 0) <> na
        OR coalesce(cardinality(a_started), 0) <> na
        OR coalesce(cardinality(a_duration_us), 0) <> na
        OR coalesce(cardinality(a_http), 0) <> na
        OR coalesce(cardinality(a_classes), 0) <> na
        OR coalesce(cardinality(a_results), 0) <> na
        OR coalesce(cardinality(a_codes), 0) <> na
        OR coalesce(cardinality(a_charge_ids), 0) <> na
        OR coalesce(cardinality(a_gateways), 0) <> na
    THEN
        RAISE EXCEPTION 'paystream_complete: argument arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF EXISTS (SELECT 1 FROM unnest(p_statuses) AS st(status)
               WHERE st.status IS NULL OR st.status NOT IN ('succeeded', 'declined', 'failed', 'unknown')) THEN
        RAISE EXCEPTION 'paystream_complete: a status is neither final nor unknown'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Lock the rows in key order first (LockRows runs above the sort), as
    -- every batch does, so that concurrent batches cannot deadlock; then
    -- write them all in one statement. Set-based: measured about 3.5x
    -- cheaper per row than an UPDATE per item.
    PERFORM 1 FROM payments
    WHERE idempotency_key = ANY (p_keys)
    ORDER BY idempotency_key COLLATE "C"
    FOR UPDATE;

    ts := clock_timestamp();
    RETURN QUERY
    WITH u AS (
        SELECT *
        FROM unnest(p_keys, p_attempts, p_owners, p_statuses, p_gateways,
                    p_charge_ids, p_error_codes, p_ambiguous)
             WITH ORDINALITY AS u(key, attempt, owner, status, gateway,
                                  charge_id, error_code, ambiguous, ord)
    ), upd AS (
        -- A key given twice with the same fence matches once: the other
        -- item finds nothing (fenced), as it would one after the other.
        UPDATE payments p SET
            status            = u.status,
            gateway           = nullif(u.gateway, ''),
            gateway_charge_id = nullif(u.charge_id, ''),
            error_code        = nullif(u.error_code, ''),
            ambiguous         = p.ambiguous OR coalesce(u.ambiguous, false),
            lease_until       = NULL,
            -- A failed row may be taken over by a replay, which charges the
            -- stored request; an unknown row is re-published by nobody but
            -- keeps it for the operator.
            request_subject   = CASE WHEN u.status IN ('failed', 'unknown') THEN p.request_subject END,
            request_body      = CASE WHEN u.status IN ('failed', 'unknown') THEN p.request_body END,
            reconcile_after   = CASE WHEN u.status = 'unknown' THEN ts END,
            reconcile_tries   = 0,
            completed_at      = CASE WHEN u.status = 'unknown' THEN NULL ELSE ts END,
            updated_at        = ts
        FROM u
        WHERE p.idempotency_key = u.key
          AND p.status = 'processing'
          AND p.attempts = u.attempt
          AND p.lease_owner = u.owner
        RETURNING u.ord AS u_ord, p.*
    ), calls AS (
        -- The lease's gateway calls, only for the items written.
        INSERT INTO payment_attempts (idempotency_key, attempt, kind, worker_id,
            started_at, duration_us, http_status, class, result, error_code, charge_id, gateway)
        SELECT upd.idempotency_key, upd.attempts, a.kind, u.owner,
            a.started, a.duration_us, nullif(a.http, 0), a.class,
            nullif(a.result, ''), nullif(a.code, ''), nullif(a.charge_id, ''), nullif(a.gateway, '')
        FROM unnest(a_ords, a_kinds, a_started, a_duration_us, a_http, a_classes,
                    a_results, a_codes, a_charge_ids, a_gateways)
             WITH ORDINALITY AS a(ord, kind, started, duration_us, http, class,
                                  result, code, charge_id, gateway, n)
        JOIN upd ON upd.u_ord = a.ord
        JOIN u ON u.ord = a.ord
        ORDER BY a.n
    )
    SELECT u.ord::integer, upd.u_ord IS NULL,
        upd.idempotency_key, upd.payment_id, upd.merchant_id, upd.amount_minor,
        upd.currency, upd.status, upd.attempts, upd.gateway, upd.gateway_charge_id,
        upd.error_code, upd.created_at, upd.updated_at, upd.completed_at, upd.ambiguous
    FROM u LEFT JOIN upd ON upd.u_ord = u.ord
    ORDER BY u.ord;
END;
$$;
-- +goose StatementEnd
