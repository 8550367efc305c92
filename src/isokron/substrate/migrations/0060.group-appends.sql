-- IsoKron substrate: group appends and a cheaper write path (issue 12, item 1; docs/chain.md §2).
--  * isokron_api.submit_group(workspace_id, tokens[], items): several gateway writes of ONE
--    workspace in one statement, one transaction, one commit. The chain head is locked by the
--    first append and held by the whole group; each item is what writes.SUBMIT_SQL did for one
--    call (admission against its quotas, then the write or the chained denial),
--    authenticated from its own token hash and run in its own subtransaction (a PL/pgSQL
--    BEGIN ... EXCEPTION block): an item that fails rolls back alone, its budget unit included,
--    and its error (sqlstate, message, detail, hint) is its answer. Returns one JSON object per
--    item, in order: {rate, result} or {error}.
--  * The principal of a token is resolved once per call (admit_write and write each resolved it
--    again); isokron.admit and isokron.run_op_for are the bodies of admit_write and run_op after
--    that, so both entry points and the group run the same code.
--  * Fewer frames and no dynamic SQL on the hot path: the agents' operations are dispatched by a
--    static CASE (the registry's other operations still by dispatch_op), the capability check is
--    inline, the idempotency claim is skipped without a key, append_event builds its result
--    inline, and isokron.set_local is set_config() unless Citus is loaded (same effect as the
--    SET LOCAL it ran through EXECUTE); 0012's index on (workspace_id, event_id), a duplicate
--    of 0041's unique constraint, is dropped.
-- Nothing hashed changes: append_chain_event is untouched (docs/chain.md §4).
SET LOCAL ROLE isokron_owner;

-- ---------------------------------------------------------------- scoping without EXECUTE
CREATE OR REPLACE FUNCTION isokron.set_local(p_name TEXT, p_value TEXT, p_is_local BOOLEAN DEFAULT true)
RETURNS TEXT
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_name IS NULL OR p_name !~ '^(app\.current_workspace_id|isokron\.[a-z_]+)$' THEN
        RAISE EXCEPTION USING ERRCODE = 'IKV01',
            MESSAGE = 'isokron.set_local sets the scoping settings only (app.current_workspace_id, '
                || 'isokron.*), not ' || coalesce(quote_ident(p_name), 'NULL');
    END IF;
    IF p_is_local IS DISTINCT FROM true THEN
        RAISE EXCEPTION USING ERRCODE = 'IKV01',
            MESSAGE = 'isokron.set_local sets a setting for the current transaction only';
    END IF;
    IF current_setting('citus.propagate_set_commands', true) IS NULL THEN
        -- No Citus: SET LOCAL is exactly set_config(name, value, true), without the EXECUTE.
        PERFORM set_config(p_name, coalesce(p_value, ''), true);
        RETURN coalesce(p_value, '');
    END IF;
    SET LOCAL citus.propagate_set_commands = 'local';
    EXECUTE 'SET LOCAL ' || p_name || ' = ' || quote_literal(coalesce(p_value, ''));
    RETURN coalesce(p_value, '');
END
$fn$;

-- ---------------------------------------------------------------- one index less per append
-- 0012's (workspace_id, event_id) index became a duplicate of the unique constraint 0041 made on
-- the same columns; every append paid for both.
DROP INDEX IF EXISTS hivex_foundation.idx_event_log_workspace_event;

-- ---------------------------------------------------------------- inlined helpers
-- Declared IMMUTABLE around STABLE built-ins (date_trunc of a timestamptz, convert_to), these SQL
-- functions were never inlined: each call ran the SQL-function executor (about 30 µs for
-- quota_slot, three calls per admitted write). Declared STABLE, which is what their bodies are,
-- the planner inlines them; their values are unchanged.
ALTER FUNCTION isokron.quota_slot(INTEGER, TIMESTAMPTZ) STABLE;
ALTER FUNCTION hivex_foundation.row_field(TEXT, TEXT) STABLE;

-- ---------------------------------------------------------------- admission (0020's, split)
-- The body of admit_write once the actor is known and the transaction scoped to its workspace;
-- same counts and answers, fewer queries.
CREATE OR REPLACE FUNCTION isokron.admit(p_workspace_id TEXT, p_actor_id UUID, p_quotas JSONB)
RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_now TIMESTAMPTZ := now();
    v_quotas JSONB[] := '{}';
    q JSONB;
    v_bucket TEXT;
    v_limit INTEGER;
    v_window INTEGER;
    v_slot TIMESTAMPTZ;
    v_calls INTEGER := 0;
    v_writes_limit INTEGER := NULL;
    v_total INTEGER;
    v_oldest TIMESTAMPTZ;
BEGIN
    IF jsonb_typeof(p_quotas) IS DISTINCT FROM 'array' THEN
        PERFORM isokron.fail('IKV01', 'quotas must be a list');
    END IF;
    -- The list is read once, without a query; each quota's slot is computed once (0020
    -- evaluated isokron.quota_slot for every row its sum scanned).
    FOR i IN 0 .. jsonb_array_length(p_quotas) - 1 LOOP
        v_quotas := v_quotas || (p_quotas -> i);
    END LOOP;
    FOREACH q IN ARRAY v_quotas LOOP
        CONTINUE WHEN (q ->> 'bucket') IS DISTINCT FROM 'writes';
        v_writes_limit := (q ->> 'limit')::int;
        v_slot := isokron.quota_slot(60, v_now);
        INSERT INTO isokron.quota_windows AS w (workspace_id, actor_id, bucket, window_start, calls)
            VALUES (p_workspace_id, p_actor_id, 'writes', v_slot, 1)
            ON CONFLICT (workspace_id, actor_id, bucket, window_start)
            DO UPDATE SET calls = w.calls + 1
            RETURNING calls INTO v_calls;
        IF v_calls = 1 THEN
            DELETE FROM isokron.quota_windows
                WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id
                  AND window_start < v_now - interval '25 hours';
        END IF;
        IF v_calls > v_writes_limit THEN
            RETURN jsonb_build_object('allowed', false, 'bucket', 'writes',
                'code', 'rate_limited', 'limit', v_writes_limit, 'calls', v_calls,
                'chain_denial', v_calls <= v_writes_limit + 1,
                'retry_after_seconds',
                greatest(1, ceil(extract(epoch FROM (v_slot + interval '1 minute' - v_now))))::int);
        END IF;
    END LOOP;
    FOREACH q IN ARRAY v_quotas LOOP
        CONTINUE WHEN (q ->> 'bucket' <> 'writes') IS NOT TRUE;
        v_bucket := q ->> 'bucket';
        v_limit := (q ->> 'limit')::int;
        v_window := (q ->> 'window_seconds')::int;
        IF v_window = 0 THEN
            -- A quota on state: the actor's escalations still open.
            SELECT count(*) INTO v_total FROM kronicle.escalations
                WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id AND status = 'open';
            v_oldest := NULL;
        ELSIF v_window > 3600 THEN
            SELECT coalesce(sum(calls), 0), min(window_start) INTO v_total, v_oldest
                FROM isokron.quota_windows
                WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id AND bucket = v_bucket
                  AND window_start > v_now - make_interval(secs => v_window);
        ELSE
            v_slot := isokron.quota_slot(v_window, v_now);
            SELECT coalesce(sum(calls), 0), min(window_start) INTO v_total, v_oldest
                FROM isokron.quota_windows
                WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id AND bucket = v_bucket
                  AND window_start = v_slot;
        END IF;
        IF v_total + 1 > v_limit THEN
            RETURN jsonb_build_object('allowed', false, 'bucket', v_bucket,
                'code', coalesce(q ->> 'code', 'rate_limited'), 'limit', v_limit,
                'calls', v_calls, 'chain_denial', true,
                'retry_after_seconds', CASE
                    WHEN v_window = 0 THEN NULL
                    WHEN v_window > 3600 THEN greatest(1, ceil(extract(epoch FROM
                        (coalesce(v_oldest, isokron.quota_slot(v_window, v_now))
                         + make_interval(secs => v_window) - v_now))))::int
                    ELSE greatest(1, ceil(extract(epoch FROM
                        (isokron.quota_slot(v_window, v_now) + make_interval(secs => v_window)
                         - v_now))))::int END);
        END IF;
    END LOOP;
    FOREACH q IN ARRAY v_quotas LOOP
        CONTINUE WHEN (q ->> 'bucket' <> 'writes' AND (q ->> 'window_seconds')::int > 0)
            IS NOT TRUE;
        v_slot := isokron.quota_slot((q ->> 'window_seconds')::int, v_now);
        INSERT INTO isokron.quota_windows AS w (workspace_id, actor_id, bucket, window_start, calls)
            VALUES (p_workspace_id, p_actor_id, q ->> 'bucket', v_slot, 1)
            ON CONFLICT (workspace_id, actor_id, bucket, window_start)
            DO UPDATE SET calls = w.calls + 1;
    END LOOP;
    RETURN jsonb_build_object('allowed', true, 'calls', v_calls, 'limit', v_writes_limit,
                              'retry_after_seconds', 0, 'chain_denial', false);
END
$fn$;
REVOKE ALL ON FUNCTION isokron.admit(TEXT, UUID, JSONB) FROM PUBLIC;

CREATE OR REPLACE FUNCTION isokron_api.admit_write(p_token_sha256 BYTEA, p_quotas JSONB)
RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_who JSONB := isokron.principal_of_token(p_token_sha256);
BEGIN
    PERFORM isokron.enter_workspace(v_who ->> 'workspace_id');
    RETURN isokron.admit(v_who ->> 'workspace_id', (v_who ->> 'actor_id')::uuid, p_quotas);
END
$fn$;

-- ---------------------------------------------------------------- run (0011's, split)
-- Authorize, claim the idempotency key and perform p_op as an actor already known to be an
-- active actor of kind p_kind in p_workspace_id (tenant p_tenant), the transaction scoped to it.
CREATE OR REPLACE FUNCTION isokron.run_op_for(
    p_op TEXT, p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_kind TEXT, p_args JSONB,
    p_idempotency_key TEXT
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_capability TEXT;
    v_governance BOOLEAN;
    v_prior JSONB;
    v_result JSONB;
BEGIN
    SELECT capability, governance INTO v_capability, v_governance
        FROM isokron.operation_registry WHERE operation = p_op;
    IF NOT FOUND THEN
        PERFORM isokron.fail('IKV01', 'unknown write operation ' || quote_literal(p_op));
    END IF;
    IF v_governance AND p_kind <> 'operator' THEN
        PERFORM isokron.fail('IKD01', 'operation ' || p_op || ' needs an operator''s credential, not '
            || p_kind || '''s');
    END IF;
    IF v_capability IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM public.kora_capability_matrix
            WHERE workspace_id = p_workspace_id AND cap_name = v_capability
              AND actor_kind = p_kind AND granted) THEN
        PERFORM isokron.fail('IKD01', 'capability ' || v_capability || ' is not granted to actor kind '
            || p_kind || ' in this workspace');
    END IF;
    IF p_idempotency_key IS NOT NULL THEN
        v_prior := isokron.idem_claim(p_workspace_id, p_actor_id, p_idempotency_key, p_op, p_args);
        IF v_prior IS NOT NULL THEN
            RETURN v_prior;
        END IF;
    END IF;
    IF p_args IS NULL OR jsonb_typeof(p_args) <> 'object' THEN
        PERFORM isokron.fail('IKV01', 'arguments must be a JSON object');
    END IF;
    -- The agents' operations by a static call (planned once per session); the others by name.
    v_result := CASE p_op
        WHEN 'append_event' THEN isokron.op_append_event(p_tenant, p_workspace_id, p_actor_id, p_args)
        WHEN 'write_scratchpad_entry'
            THEN isokron.op_write_scratchpad_entry(p_tenant, p_workspace_id, p_actor_id, p_args)
        WHEN 'record_denial' THEN isokron.op_record_denial(p_tenant, p_workspace_id, p_actor_id, p_args)
        WHEN 'iso_node_create' THEN isokron.op_iso_node_create(p_tenant, p_workspace_id, p_actor_id, p_args)
        WHEN 'iso_link_create' THEN isokron.op_iso_link_create(p_tenant, p_workspace_id, p_actor_id, p_args)
        WHEN 'raise_escalation'
            THEN isokron.op_raise_escalation(p_tenant, p_workspace_id, p_actor_id, p_args)
        ELSE isokron.dispatch_op(p_op, p_tenant, p_workspace_id, p_actor_id, p_args) END;
    IF p_idempotency_key IS NOT NULL THEN
        PERFORM isokron.idem_store(p_workspace_id, p_actor_id, p_idempotency_key, v_result);
    END IF;
    RETURN v_result || jsonb_build_object('replayed', false);
END
$fn$;
REVOKE ALL ON FUNCTION isokron.run_op_for(TEXT, UUID, TEXT, UUID, TEXT, JSONB, TEXT) FROM PUBLIC;

CREATE OR REPLACE FUNCTION isokron.run_op(
    p_op TEXT, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB, p_idempotency_key TEXT
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_tenant UUID := isokron.enter_workspace(p_workspace_id);
    v_kind TEXT := isokron.require_actor(p_workspace_id, p_actor_id);
BEGIN
    RETURN isokron.run_op_for(p_op, v_tenant, p_workspace_id, p_actor_id, v_kind, p_args,
        p_idempotency_key);
END
$fn$;

-- The gateway's one-write entry point (0011's): the principal of the token is an active actor
-- (isokron.principal_of_token refuses anything else), so run_op's require_actor is not repeated.
CREATE OR REPLACE FUNCTION isokron_api.write(
    p_token_sha256 BYTEA, p_op TEXT, p_args JSONB, p_idempotency_key TEXT DEFAULT NULL,
    p_workspace_id TEXT DEFAULT NULL
) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_who JSONB := isokron.principal_of_token(p_token_sha256);
    v_ws TEXT := v_who ->> 'workspace_id';
BEGIN
    IF p_workspace_id IS NOT NULL AND p_workspace_id <> v_ws THEN
        PERFORM isokron.fail('IKW01', 'this service token belongs to another workspace than '
            || quote_literal(p_workspace_id));
    END IF;
    RETURN isokron.run_op_for(p_op, isokron.enter_workspace(v_ws), v_ws,
        (v_who ->> 'actor_id')::uuid, v_who ->> 'actor_kind', p_args, p_idempotency_key);
END
$fn$;

-- ---------------------------------------------------------------- append_event (0011's)
-- Same checks and result; the result is built from the append's inline (isokron.event_result
-- around a volatile call was not inlined: one more SQL-function frame per write).
CREATE OR REPLACE FUNCTION isokron.op_append_event(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_type TEXT := isokron.arg_text(p_args, 'event_type', true, 200);
    v_payload JSONB := isokron.arg_object(p_args, 'payload', false);
    v_ev JSONB;
BEGIN
    IF v_type !~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$' THEN
        PERFORM isokron.fail('IKV01', 'event_type must be dotted lower-case words such as kora.note.recorded');
    END IF;
    IF split_part(v_type, '.', 1) IN ('governance', 'gateway', 'substrate') THEN
        PERFORM isokron.fail('IKV01', 'event types governance.*, gateway.* and substrate.* are '
            || 'reserved for the substrate');
    END IF;
    IF v_payload ? 'state' THEN
        PERFORM isokron.fail('IKV01', 'the payload key state is reserved for the substrate');
    END IF;
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, v_type, v_payload);
    RETURN jsonb_build_object('event_id', v_ev -> 'event_id', 'seq', v_ev -> 'seq',
                              'event_hash', v_ev -> 'event_hash');
END
$fn$;

-- ---------------------------------------------------------------- the group
-- Items i = 1..n: p_tokens[i] (SHA-256 of the presented token) and p_items -> (i - 1) =
-- {quotas (admit_write's list), op, args, key (idempotency key or null), denial (record_denial
-- arguments, chained instead when the call is over its budget and the admission says so)}.
-- Every item's token must belong to p_workspace_id (IKW01 otherwise): a group never mixes
-- workspaces. A group takes its workspace's group lock (an advisory lock, keys 1264 and
-- hashtext(workspace id)) before any item: two groups of one workspace (from two gateway
-- processes) never hold actors' quota rows and the chain head in opposite orders. The head row
-- is then locked by the first append and held, by the whole group, until it commits.
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
            v_rate := isokron.admit(p_workspace_id, v_actor, v_item -> 'quotas');
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
            v_out := v_out || jsonb_build_object('error', jsonb_build_object('sqlstate', v_state,
                'message', v_message, 'detail', nullif(v_detail, ''), 'hint', nullif(v_hint, '')));
        END;
    END LOOP;
    RETURN v_out;
END
$fn$;
REVOKE ALL ON FUNCTION isokron_api.submit_group(TEXT, BYTEA[], JSONB)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    isokron_api.submit_group(TEXT, BYTEA[], JSONB)
    TO isokron_gateway;

RESET ROLE;
