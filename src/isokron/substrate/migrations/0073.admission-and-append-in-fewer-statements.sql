-- IsoKron substrate: admission and the chain append in fewer statements (issue 12).
--  * isokron.admit counts each of a call's quotas with one statement (an upsert returning the
--    window's new count) instead of a check and then an upsert: 2 statements for the agents'
--    writes instead of 3. All-or-nothing as before: when any count passes its limit, the
--    increments just made are taken back (the rows are locked by this transaction since the
--    upsert) and 0060's admission, kept as isokron.admit_in_order, answers the call exactly as
--    it did (which window refused, retry_after_seconds, whether a denial is chained). Lists it
--    does not cover (a quota on open escalations, windows over an hour, repeated buckets,
--    anything malformed) go to admit_in_order directly.
--  * isokron_api.submit_group counts one agent's concurrent calls (one token, one list of
--    quotas) together: one upsert per quota for the group (isokron.admit_units with the group's
--    size) when all of them fit, each call then admitted as it would have been alone; a call
--    that fails gives its unit back (isokron.uncount), as its rolled-back subtransaction did.
--    When they do not all fit, nothing is counted for the group and each call is admitted on
--    its own, as in 0060.
--  * hivex_foundation.append_chain_event looks the head up under the transaction's workspace
--    scope before it reads the tenant row (see there). Nothing hashed changes (docs/chain.md §4).
--  * isokron.set_local checks the setting's name without a regular expression and sets it
--    with set_config() as an expression (the same names are refused: test_substrate_scoping).
SET LOCAL ROLE isokron_owner;

-- ---------------------------------------------------------------- admission
-- 0060's admission keeps its body under another name: it answers every call the fast path below
-- does not admit, so refusals are exactly what they were. Copied from the catalog while
-- isokron.admit is still 0060's (a re-run of every migration re-creates it first).
DO $keep$
BEGIN
    IF position('admit_in_order' IN (SELECT prosrc FROM pg_proc
                                     WHERE oid = 'isokron.admit(text, uuid, jsonb)'::regprocedure)) = 0
    THEN
        EXECUTE replace(pg_get_functiondef('isokron.admit(text, uuid, jsonb)'::regprocedure),
                        'FUNCTION isokron.admit(', 'FUNCTION isokron.admit_in_order(');
    END IF;
END
$keep$;
REVOKE ALL ON FUNCTION isokron.admit_in_order(TEXT, UUID, JSONB) FROM PUBLIC;

-- Take p_units calls back from each quota's current window (a window left at 0 is removed, as if
-- never opened). The rows are this transaction's: it counted them, so it holds their locks.
CREATE OR REPLACE FUNCTION isokron.uncount(
    p_workspace_id TEXT, p_actor_id UUID, p_quotas JSONB, p_units INTEGER
) RETURNS VOID
LANGUAGE plpgsql AS $fn$
DECLARE
    v_now TIMESTAMPTZ := now();
    q JSONB;
    v_calls INTEGER;
BEGIN
    FOR i IN 0 .. jsonb_array_length(p_quotas) - 1 LOOP
        q := p_quotas -> i;
        UPDATE isokron.quota_windows SET calls = calls - p_units
            WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id
              AND bucket = q ->> 'bucket'
              AND window_start = isokron.quota_slot((q ->> 'window_seconds')::int, v_now)
            RETURNING calls INTO v_calls;
        IF v_calls = 0 THEN
            DELETE FROM isokron.quota_windows
                WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id
                  AND bucket = q ->> 'bucket'
                  AND window_start = isokron.quota_slot((q ->> 'window_seconds')::int, v_now);
        END IF;
    END LOOP;
END
$fn$;
REVOKE ALL ON FUNCTION isokron.uncount(TEXT, UUID, JSONB, INTEGER) FROM PUBLIC;

-- Count p_units calls in each quota's current window (one upsert per quota, returning the
-- count). All within their limits: admitted, the answer admit_in_order gives an admitted call,
-- with calls = the writes budget's count after the last unit. Otherwise, or for a list this
-- does not cover, NULL, and nothing counted (the counts went back to what they were).
CREATE OR REPLACE FUNCTION isokron.admit_units(
    p_workspace_id TEXT, p_actor_id UUID, p_quotas JSONB, p_units INTEGER
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_now TIMESTAMPTZ := now();
    v_n INTEGER;
    q JSONB;
    v_buckets TEXT[] := '{}';
    v_calls INTEGER;
    v_writes_calls INTEGER := 0;
    v_writes_limit INTEGER;
    v_over BOOLEAN := false;
BEGIN
    IF jsonb_typeof(p_quotas) IS DISTINCT FROM 'array' OR p_units IS NULL OR p_units < 1 THEN
        RETURN NULL;
    END IF;
    v_n := jsonb_array_length(p_quotas);
    -- Only the lists whose every quota is counted per window of 1 s to 1 h (the writes budget
    -- per minute), once each; anything else is admit_in_order's, before anything is counted.
    FOR i IN 0 .. v_n - 1 LOOP
        q := p_quotas -> i;
        IF jsonb_typeof(q -> 'bucket') IS DISTINCT FROM 'string'
           OR (q ->> 'bucket') = ANY(v_buckets)
           OR jsonb_typeof(q -> 'window_seconds') IS DISTINCT FROM 'number'
           OR (q ->> 'window_seconds')::numeric NOT BETWEEN 1 AND 3600
           OR ((q ->> 'bucket') = 'writes' AND (q ->> 'window_seconds')::numeric <> 60)
           OR jsonb_typeof(coalesce(q -> 'limit', 'null')) NOT IN ('number', 'null') THEN
            RETURN NULL;
        END IF;
        v_buckets := v_buckets || (q ->> 'bucket');
    END LOOP;
    FOR i IN 0 .. v_n - 1 LOOP
        q := p_quotas -> i;
        INSERT INTO isokron.quota_windows AS w (workspace_id, actor_id, bucket, window_start, calls)
            VALUES (p_workspace_id, p_actor_id, q ->> 'bucket',
                    isokron.quota_slot((q ->> 'window_seconds')::int, v_now), p_units)
            ON CONFLICT (workspace_id, actor_id, bucket, window_start)
            DO UPDATE SET calls = w.calls + p_units
            RETURNING calls INTO v_calls;
        IF v_calls > (q ->> 'limit')::int THEN
            v_over := true;
        END IF;
        IF (q ->> 'bucket') = 'writes' THEN
            v_writes_calls := v_calls;
            v_writes_limit := (q ->> 'limit')::int;
        END IF;
    END LOOP;
    IF v_over THEN
        PERFORM isokron.uncount(p_workspace_id, p_actor_id, p_quotas, p_units);
        RETURN NULL;
    END IF;
    IF v_writes_calls = p_units THEN
        -- This opened the minute's window: drop the actor's windows older than a day, as
        -- admit_in_order does when it opens one.
        DELETE FROM isokron.quota_windows
            WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id
              AND window_start < v_now - interval '25 hours';
    END IF;
    RETURN jsonb_build_object('allowed', true, 'calls', v_writes_calls, 'limit', v_writes_limit,
                              'retry_after_seconds', 0, 'chain_denial', false);
END
$fn$;
REVOKE ALL ON FUNCTION isokron.admit_units(TEXT, UUID, JSONB, INTEGER) FROM PUBLIC;

-- One call: counted by admit_units when it is admitted, else decided by admit_in_order.
CREATE OR REPLACE FUNCTION isokron.admit(p_workspace_id TEXT, p_actor_id UUID, p_quotas JSONB)
RETURNS JSONB
LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN coalesce(isokron.admit_units(p_workspace_id, p_actor_id, p_quotas, 1),
                    isokron.admit_in_order(p_workspace_id, p_actor_id, p_quotas));
END
$fn$;
REVOKE ALL ON FUNCTION isokron.admit(TEXT, UUID, JSONB) FROM PUBLIC;

-- ---------------------------------------------------------------- the group (0060's)
CREATE OR REPLACE FUNCTION isokron_api.submit_group(
    p_workspace_id TEXT, p_tokens BYTEA[], p_items JSONB
) RETURNS JSONB[]
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_n INTEGER := coalesce(cardinality(p_tokens), 0);
    v_tenant UUID;
    v_principals JSONB := '{}';
    v_who JSONB;
    v_item JSONB;
    v_actor UUID;
    v_rate JSONB;
    v_result JSONB;
    v_out JSONB[] := '{}';
    v_state TEXT;
    v_message TEXT;
    v_detail TEXT;
    v_hint TEXT;
    v_counted JSONB;
    v_counted_actor UUID;
BEGIN
    IF v_n = 0 OR v_n > 256 OR jsonb_typeof(p_items) IS DISTINCT FROM 'array'
       OR jsonb_array_length(p_items) <> v_n THEN
        PERFORM isokron.fail('IKV01', 'a group is 1 to 256 tokens and as many items');
    END IF;
    v_tenant := isokron.enter_workspace(p_workspace_id);
    -- The workspace's group lock before any row lock (see above). A transaction-level advisory
    -- lock, not the head row's: a row the transaction locked and a subtransaction then updates
    -- gets a MultiXact for every update, which every later look at the row has to resolve.
    PERFORM pg_advisory_xact_lock(1264, hashtext(p_workspace_id));
    -- One agent's concurrent calls (one token, one list of quotas) are counted together: one
    -- upsert per quota for the whole group instead of one per call, when every call fits (see
    -- isokron.admit_units; otherwise nothing is counted here and each call is admitted on its
    -- own below, exactly as before). A call that then fails gives its unit back.
    IF v_n > 1 AND p_tokens[1] = ALL(p_tokens) AND (
            SELECT bool_and(e -> 'quotas' = p_items -> 0 -> 'quotas')
            FROM jsonb_array_elements(p_items) e) THEN
        BEGIN
            v_who := isokron.principal_of_token(p_tokens[1]);
        EXCEPTION WHEN OTHERS THEN
            v_who := NULL;  -- refused: each call meets the refusal on its own below
        END;
        IF v_who ->> 'workspace_id' = p_workspace_id THEN
            v_principals := jsonb_build_object(encode(p_tokens[1], 'hex'), v_who);
            v_counted_actor := (v_who ->> 'actor_id')::uuid;
            v_counted := isokron.admit_units(p_workspace_id, v_counted_actor,
                p_items -> 0 -> 'quotas', v_n);
        END IF;
    END IF;
    FOR i IN 1 .. v_n LOOP
        BEGIN
            v_item := p_items -> (i - 1);
            -- Items presenting the same token share its resolution (same statement, same
            -- token, same answer); a token that is refused is refused for each of its items.
            v_who := v_principals -> encode(p_tokens[i], 'hex');
            IF v_who IS NULL THEN
                v_who := isokron.principal_of_token(p_tokens[i]);
                v_principals := v_principals || jsonb_build_object(encode(p_tokens[i], 'hex'), v_who);
            END IF;
            IF v_who ->> 'workspace_id' <> p_workspace_id THEN
                PERFORM isokron.fail('IKW01', 'this service token belongs to another workspace than '
                    || quote_literal(p_workspace_id));
            END IF;
            v_actor := (v_who ->> 'actor_id')::uuid;
            IF v_counted IS NULL THEN
                v_rate := isokron.admit(p_workspace_id, v_actor, v_item -> 'quotas');
            ELSE
                -- The writes budget's count after this call, as admitting it alone would say.
                v_rate := v_counted || jsonb_build_object('calls', greatest(0,
                    (v_counted ->> 'calls')::int - v_n + i));
            END IF;
            v_result := CASE
                WHEN (v_rate ->> 'allowed')::boolean THEN isokron.run_op_for(v_item ->> 'op',
                    v_tenant, p_workspace_id, v_actor, v_who ->> 'actor_kind', v_item -> 'args',
                    v_item ->> 'key')
                WHEN (v_rate ->> 'chain_denial')::boolean THEN isokron.run_op_for('record_denial',
                    v_tenant, p_workspace_id, v_actor, v_who ->> 'actor_kind', v_item -> 'denial',
                    NULL)
                END;
            v_out := v_out || jsonb_build_object('rate', v_rate, 'result', v_result);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
            IF v_counted IS NOT NULL THEN
                -- Its unit was counted with the group's, outside its subtransaction.
                PERFORM isokron.uncount(p_workspace_id, v_counted_actor, p_items -> 0 -> 'quotas', 1);
            END IF;
            v_out := v_out || jsonb_build_object('error', jsonb_build_object('sqlstate', v_state,
                'message', v_message, 'detail', nullif(v_detail, ''), 'hint', nullif(v_hint, '')));
        END;
    END LOOP;
    RETURN v_out;
END
$fn$;

-- ---------------------------------------------------------------- the chain append
CREATE OR REPLACE FUNCTION hivex_foundation.append_chain_event(
    p_tenant UUID, p_actor UUID, p_event_type TEXT, p_payload JSONB, p_event_id UUID DEFAULT NULL
) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_seq       BIGINT;
    v_prev      BYTEA;
    v_ws        TEXT;
    v_id        UUID := coalesce(p_event_id, gen_random_uuid());
    v_digest    BYTEA;
    v_at        TIMESTAMPTZ;
    v_hash      BYTEA;
    v_type      BYTEA;
BEGIN
    IF p_tenant IS NULL OR p_actor IS NULL OR p_event_type IS NULL OR p_payload IS NULL THEN
        RAISE EXCEPTION 'append_chain_event: tenant, actor, event_type and payload are required'
            USING ERRCODE = 'IKV01';
    END IF;
    -- The head row's lock serializes this workspace's appends; others are not blocked. The
    -- head is first looked for under the transaction's workspace scope: a head row exists only
    -- for its tenant's own workspace, so one found there names the tenant's workspace, and the
    -- tenant row need not be read (one statement less per append). Not found (no scope, another
    -- scope, the workspace's first append): the tenant's workspace is looked up as before.
    v_ws := current_setting('app.current_workspace_id', true);
    SELECT last_seq, last_hash INTO v_seq, v_prev
        FROM hivex_foundation.chain_head
        WHERE workspace_id = v_ws AND tenant_id = p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        -- The tenant's workspace (a reference table: answered on this node). Every statement
        -- below names it, so each is routed to the one shard group holding the workspace.
        SELECT clerk_org_id INTO v_ws FROM hivex_foundation.tenant WHERE tenant_id = p_tenant;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'append_chain_event: tenant has no workspace in this workspace scope'
                USING ERRCODE = 'IKN01';
        END IF;
        SELECT last_seq, last_hash INTO v_seq, v_prev
            FROM hivex_foundation.chain_head
            WHERE workspace_id = v_ws AND tenant_id = p_tenant FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        INSERT INTO hivex_foundation.chain_head (tenant_id, workspace_id) VALUES (p_tenant, v_ws)
            ON CONFLICT (workspace_id) DO NOTHING;
        SELECT last_seq, last_hash INTO v_seq, v_prev
            FROM hivex_foundation.chain_head
            WHERE workspace_id = v_ws AND tenant_id = p_tenant FOR UPDATE;
    END IF;
    v_seq := v_seq + 1;
    v_type := convert_to(p_event_type, 'UTF8');
    v_digest := sha256(convert_to(p_payload::text, 'UTF8'));
    v_at := clock_timestamp();
    -- Same bytes as hivex_foundation.event_hash_input (docs/chain.md), written out inline.
    v_hash := sha256(
        '\x69736f6b726f6e2d636861696e2d763100'::bytea
        || v_prev
        || uuid_send(p_tenant)
        || int8send(v_seq)
        || uuid_send(v_id)
        || uuid_send(p_actor)
        || int8send((extract(epoch FROM v_at) * 1000000)::bigint)
        || int4send(octet_length(v_type))
        || v_type
        || v_digest);
    INSERT INTO hivex_foundation.event_log (tenant_id, seq, event_id, actor_id, event_type, payload,
        payload_digest, payload_erased, occurred_at, prev_event_hash, this_event_hash, workspace_id)
    VALUES (p_tenant, v_seq, v_id, p_actor, p_event_type, p_payload, v_digest, false, v_at, v_prev,
        v_hash, v_ws);
    UPDATE hivex_foundation.chain_head SET last_seq = v_seq, last_hash = v_hash
        WHERE workspace_id = v_ws AND tenant_id = p_tenant;
    RETURN jsonb_build_object('event_id', v_id, 'seq', v_seq, 'event_hash', encode(v_hash, 'hex'),
        'occurred_at', v_at, 'tenant_id', p_tenant, 'workspace_id', v_ws);
END
$fn$;
REVOKE ALL ON FUNCTION hivex_foundation.append_chain_event(UUID, UUID, TEXT, JSONB, UUID) FROM PUBLIC;

-- ---------------------------------------------------------------- scoping
CREATE OR REPLACE FUNCTION isokron.set_local(p_name TEXT, p_value TEXT, p_is_local BOOLEAN DEFAULT true)
RETURNS TEXT
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_name IS DISTINCT FROM 'app.current_workspace_id'
       AND (p_name IS NULL OR p_name NOT LIKE 'isokron._%'
            OR ltrim(substr(p_name, 9), 'abcdefghijklmnopqrstuvwxyz_') <> '') THEN
        RAISE EXCEPTION USING ERRCODE = 'IKV01',
            MESSAGE = 'isokron.set_local sets the scoping settings only (app.current_workspace_id, '
                || 'isokron.*), not ' || coalesce(quote_ident(p_name), 'NULL');
    END IF;
    IF p_is_local IS DISTINCT FROM true THEN
        RAISE EXCEPTION USING ERRCODE = 'IKV01',
            MESSAGE = 'isokron.set_local sets a setting for the current transaction only';
    END IF;
    IF current_setting('citus.propagate_set_commands', true) IS NULL THEN
        RETURN set_config(p_name, coalesce(p_value, ''), true);
    END IF;
    SET LOCAL citus.propagate_set_commands = 'local';
    EXECUTE 'SET LOCAL ' || p_name || ' = ' || quote_literal(coalesce(p_value, ''));
    RETURN coalesce(p_value, '');
END
$fn$;

RESET ROLE;
