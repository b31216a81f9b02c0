-- +goose Up
-- Several gateways (docs/contract.md §5, "Several gateways"): a payment's
-- gateway is chosen once, stored on its row at the claim (paystream_claim
-- takes the choice), kept on take-over, and changed only by a fenced
-- failover (store.Route) when the gateway surely did not charge. The row
-- lists every gateway it was routed to; every gateway call names its
-- gateway.
ALTER TABLE payments ADD COLUMN gateways_tried text[];
ALTER TABLE payment_attempts ADD COLUMN gateway text;

DROP FUNCTION paystream_claim(text[], text[], text[], text[], text[], bigint[], text[], text[], bytea[], bigint[], text[], bigint[], bigint);
DROP FUNCTION paystream_complete(text[], integer[], text[], text[], text[], text[], text[], boolean[],
    integer[], text[], timestamptz[], bigint[], integer[], text[], text[], text[], text[]);
DROP FUNCTION paystream_release(text[], integer[], text[], bigint[], boolean[],
    integer[], text[], timestamptz[], bigint[], integer[], text[], text[], text[], text[]);

-- +goose StatementBegin
CREATE FUNCTION paystream_claim(
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
CREATE FUNCTION paystream_complete(
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

-- +goose StatementBegin
CREATE FUNCTION paystream_release(
    p_keys        text[],
    p_attempts    integer[],
    p_owners      text[],
    p_hold_us     bigint[],
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
    -- The gateway each call went to (PAYSTREAM_GATEWAYS).
    a_gateways    text[]
) RETURNS TABLE (
    o_ord    integer,
    o_fenced boolean
)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    n  integer := coalesce(cardinality(p_keys), 0);
    na integer := coalesce(cardinality(a_ords), 0);
    r  record;
BEGIN
    IF coalesce(cardinality(p_attempts), 0) <> n
        OR coalesce(cardinality(p_owners), 0) <> n
        OR coalesce(cardinality(p_hold_us), 0) <> n
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
        RAISE EXCEPTION 'paystream_release: argument arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    FOR r IN
        SELECT u.*
        FROM unnest(p_keys, p_attempts, p_owners, p_hold_us, p_ambiguous)
             WITH ORDINALITY AS u(key, attempt, owner, hold_us, ambiguous, ord)
        ORDER BY u.key COLLATE "C", u.ord
    LOOP
        -- The lease is held until the retry is due (hold_us from now, 0 =
        -- at once), so that neither another delivery nor the sweeper calls
        -- the gateway earlier; lease_owner is cleared, so that a take-over
        -- knows the lease was given back rather than lost (a lost lease may
        -- have charged). attempts is kept.
        UPDATE payments SET
            lease_until = clock_timestamp() + greatest(coalesce(r.hold_us, 0), 0) * interval '1 microsecond',
            lease_owner = NULL,
            ambiguous   = ambiguous OR coalesce(r.ambiguous, false),
            updated_at  = clock_timestamp()
        WHERE idempotency_key = r.key
          AND status = 'processing'
          AND attempts = r.attempt
          AND lease_owner = r.owner;

        o_ord    := r.ord;
        o_fenced := NOT FOUND;
        IF FOUND AND na > 0 THEN
            INSERT INTO payment_attempts (idempotency_key, attempt, kind, worker_id,
                started_at, duration_us, http_status, class, result, error_code, charge_id, gateway)
            SELECT r.key, r.attempt, a.kind, r.owner,
                a.started, a.duration_us, nullif(a.http, 0), a.class,
                nullif(a.result, ''), nullif(a.code, ''), nullif(a.charge_id, ''), nullif(a.gateway, '')
            FROM unnest(a_ords, a_kinds, a_started, a_duration_us, a_http, a_classes,
                        a_results, a_codes, a_charge_ids, a_gateways)
                 WITH ORDINALITY AS a(ord, kind, started, duration_us, http, class,
                                      result, code, charge_id, gateway, n)
            WHERE a.ord = r.ord
            ORDER BY a.n;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION paystream_claim(text[], text[], text[], text[], text[], bigint[], text[], text[], bytea[], bigint[], text[], bigint[], bigint, text[]);
DROP FUNCTION paystream_complete(text[], integer[], text[], text[], text[], text[], text[], boolean[],
    integer[], text[], timestamptz[], bigint[], integer[], text[], text[], text[], text[], text[]);
DROP FUNCTION paystream_release(text[], integer[], text[], bigint[], boolean[],
    integer[], text[], timestamptz[], bigint[], integer[], text[], text[], text[], text[], text[]);
ALTER TABLE payment_attempts DROP COLUMN gateway;
ALTER TABLE payments DROP COLUMN gateways_tried;

-- The functions as 00003 and 00004 created them.
-- +goose StatementBegin
CREATE FUNCTION paystream_claim(
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
    p_busy_retry_us bigint
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
                        p_bodies, p_seqs, p_owners, p_lease_us)
                 WITH ORDINALITY AS u(key, fingerprint, payment_id, merchant_id,
                                      customer_id, amount, currency, subject,
                                      body, seq, owner, lease_us, ord)
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
                request_subject, request_body, created_at, updated_at)
            SELECT l.key, l.payment_id, l.merchant_id, nullif(l.customer_id, ''),
                l.amount, l.currency, 'processing', 1, l.fingerprint,
                l.owner, ts + l.lease_us * interval '1 microsecond', l.seq,
                l.subject, l.body, ts, ts
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
                    p_bodies, p_seqs, p_owners, p_lease_us)
             WITH ORDINALITY AS u(key, fingerprint, payment_id, merchant_id,
                                  customer_id, amount, currency, subject,
                                  body, seq, owner, lease_us, ord)
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
                    request_subject, request_body, created_at, updated_at)
                VALUES (
                    r.key, r.payment_id, r.merchant_id, nullif(r.customer_id, ''),
                    r.amount, r.currency, 'processing', 1, r.fingerprint,
                    r.owner, ts + r.lease_us * interval '1 microsecond', r.seq,
                    r.subject, r.body, ts, ts)
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
                    gateway           = NULL,
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
CREATE FUNCTION paystream_complete(
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
    a_charge_ids  text[]
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
            started_at, duration_us, http_status, class, result, error_code, charge_id)
        SELECT upd.idempotency_key, upd.attempts, a.kind, u.owner,
            a.started, a.duration_us, nullif(a.http, 0), a.class,
            nullif(a.result, ''), nullif(a.code, ''), nullif(a.charge_id, '')
        FROM unnest(a_ords, a_kinds, a_started, a_duration_us, a_http, a_classes,
                    a_results, a_codes, a_charge_ids)
             WITH ORDINALITY AS a(ord, kind, started, duration_us, http, class,
                                  result, code, charge_id, n)
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

-- +goose StatementBegin
CREATE FUNCTION paystream_release(
    p_keys        text[],
    p_attempts    integer[],
    p_owners      text[],
    p_hold_us     bigint[],
    p_ambiguous   boolean[],
    a_ords        integer[],
    a_kinds       text[],
    a_started     timestamptz[],
    a_duration_us bigint[],
    a_http        integer[],
    a_classes     text[],
    a_results     text[],
    a_codes       text[],
    a_charge_ids  text[]
) RETURNS TABLE (
    o_ord    integer,
    o_fenced boolean
)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    n  integer := coalesce(cardinality(p_keys), 0);
    na integer := coalesce(cardinality(a_ords), 0);
    r  record;
BEGIN
    IF coalesce(cardinality(p_attempts), 0) <> n
        OR coalesce(cardinality(p_owners), 0) <> n
        OR coalesce(cardinality(p_hold_us), 0) <> n
        OR coalesce(cardinality(p_ambiguous), 0) <> n
        OR coalesce(cardinality(a_kinds), 0) <> na
        OR coalesce(cardinality(a_started), 0) <> na
        OR coalesce(cardinality(a_duration_us), 0) <> na
        OR coalesce(cardinality(a_http), 0) <> na
        OR coalesce(cardinality(a_classes), 0) <> na
        OR coalesce(cardinality(a_results), 0) <> na
        OR coalesce(cardinality(a_codes), 0) <> na
        OR coalesce(cardinality(a_charge_ids), 0) <> na
    THEN
        RAISE EXCEPTION 'paystream_release: argument arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    FOR r IN
        SELECT u.*
        FROM unnest(p_keys, p_attempts, p_owners, p_hold_us, p_ambiguous)
             WITH ORDINALITY AS u(key, attempt, owner, hold_us, ambiguous, ord)
        ORDER BY u.key COLLATE "C", u.ord
    LOOP
        -- The lease is held until the retry is due (hold_us from now, 0 =
        -- at once), so that neither another delivery nor the sweeper calls
        -- the gateway earlier; lease_owner is cleared, so that a take-over
        -- knows the lease was given back rather than lost (a lost lease may
        -- have charged). attempts is kept.
        UPDATE payments SET
            lease_until = clock_timestamp() + greatest(coalesce(r.hold_us, 0), 0) * interval '1 microsecond',
            lease_owner = NULL,
            ambiguous   = ambiguous OR coalesce(r.ambiguous, false),
            updated_at  = clock_timestamp()
        WHERE idempotency_key = r.key
          AND status = 'processing'
          AND attempts = r.attempt
          AND lease_owner = r.owner;

        o_ord    := r.ord;
        o_fenced := NOT FOUND;
        IF FOUND AND na > 0 THEN
            INSERT INTO payment_attempts (idempotency_key, attempt, kind, worker_id,
                started_at, duration_us, http_status, class, result, error_code, charge_id)
            SELECT r.key, r.attempt, a.kind, r.owner,
                a.started, a.duration_us, nullif(a.http, 0), a.class,
                nullif(a.result, ''), nullif(a.code, ''), nullif(a.charge_id, '')
            FROM unnest(a_ords, a_kinds, a_started, a_duration_us, a_http, a_classes,
                        a_results, a_codes, a_charge_ids)
                 WITH ORDINALITY AS a(ord, kind, started, duration_us, http, class,
                                      result, code, charge_id, n)
            WHERE a.ord = r.ord
            ORDER BY a.n;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
-- +goose StatementEnd
