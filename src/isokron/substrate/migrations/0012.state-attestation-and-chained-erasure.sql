-- IsoKron substrate: bring every existing row under the chain's proof, and chain erasures.
--  * substrate.state.attested: one event per workspace (actor: its operator) that records the
--    canonical form of every state row no event records yet. The upgrade appends it for each
--    workspace written by the previous release, so `isokron verify` proves those rows from
--    then on (docs/chain.md §11). Re-running the migration appends nothing new.
--  * Erasure is chained: isokron_api.erase_event_payload tombstones the payload and appends a
--    substrate.payload.erased event naming the erased event and the reason, and carrying the
--    erased event's row records so the rows it vouched for stay proven.
SET LOCAL ROLE isokron_owner;
DO $on$ BEGIN PERFORM set_config('isokron.all_workspaces', 'on', true); END $on$;

-- Reads look an approving event up by (workspace, event id); attestations by type.
CREATE INDEX IF NOT EXISTS idx_event_log_workspace_event
    ON hivex_foundation.event_log (workspace_id, event_id);
CREATE INDEX IF NOT EXISTS idx_event_log_attestations
    ON hivex_foundation.event_log (workspace_id, seq DESC)
    WHERE event_type = 'substrate.state.attested';

-- The SQL expression of a state table's key text (docs/chain.md §11), over alias r.
CREATE OR REPLACE FUNCTION isokron.state_key_sql(p_table TEXT) RETURNS TEXT
LANGUAGE sql STABLE AS $fn$
    SELECT array_to_string(ARRAY(SELECT 'r.' || quote_ident(k) || '::text'
                                 FROM unnest(key_columns) WITH ORDINALITY u(k, i) ORDER BY i),
                           ' || ''/'' || ')
    FROM isokron.state_tables WHERE table_name = p_table
$fn$;

-- Keys of p_table's rows in the workspace that no event records (state or carried_state).
CREATE OR REPLACE FUNCTION isokron.unrecorded_keys(p_table TEXT, p_workspace_id TEXT)
RETURNS TEXT[]
LANGUAGE plpgsql AS $fn$
DECLARE
    v_ws_column TEXT;
    v TEXT[];
BEGIN
    SELECT ws_column INTO v_ws_column FROM isokron.state_tables WHERE table_name = p_table;
    EXECUTE 'SELECT coalesce(array_agg(' || isokron.state_key_sql(p_table) || '), ARRAY[]::text[])'
        || ' FROM ' || p_table || ' r WHERE r.' || quote_ident(v_ws_column) || ' = $1'
        || ' AND NOT ((' || isokron.state_key_sql(p_table) || ') = ANY (ARRAY('
        || 'SELECT jsonb_object_keys(coalesce(e.payload -> ''state'' -> $2, ''{}''::jsonb)'
        || ' || coalesce(e.payload -> ''carried_state'' -> $2, ''{}''::jsonb))'
        || ' FROM hivex_foundation.event_log e WHERE e.workspace_id = $1'
        || ' AND (e.payload ? ''state'' OR e.payload ? ''carried_state''))))'
        INTO v USING p_workspace_id, p_table;
    RETURN v;
END
$fn$;

-- Append substrate.state.attested recording every state row of the workspace that no event
-- records yet. Returns the append result, or NULL when every row is already recorded.
CREATE OR REPLACE FUNCTION isokron.attest_unrecorded_state(p_workspace_id TEXT, p_reason TEXT)
RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_tenant UUID := isokron.enter_workspace(p_workspace_id);
    v_operator UUID;
    v_table TEXT;
    v_keys TEXT[];
    v_payload JSONB := jsonb_build_object('reason', p_reason, 'format', 'isokron-row-v1');
    v_any BOOLEAN := false;
BEGIN
    FOR v_table IN SELECT table_name FROM isokron.state_tables ORDER BY table_name LOOP
        v_keys := isokron.unrecorded_keys(v_table, p_workspace_id);
        IF cardinality(v_keys) > 0 THEN
            v_payload := isokron.with_state(v_payload, v_table, p_workspace_id, v_keys);
            v_any := true;
        END IF;
    END LOOP;
    IF NOT v_any THEN
        RETURN NULL;
    END IF;
    SELECT actor_id INTO v_operator FROM public.actor_registry
        WHERE workspace_id = p_workspace_id AND actor_kind = 'operator'
        ORDER BY (status = 'active') DESC, created_at LIMIT 1;
    IF v_operator IS NULL THEN
        PERFORM isokron.fail('IKN01', 'workspace ' || quote_literal(p_workspace_id)
            || ' has no operator actor to attest its state');
    END IF;
    RETURN hivex_foundation.append_chain_event(v_tenant, v_operator, 'substrate.state.attested',
        v_payload);
END
$fn$;

-- Payloads erased by the previous release (which appended no event): chain each erasure now,
-- with the reason its tombstone holds, so verify can hold every tombstone to a chained record.
CREATE OR REPLACE FUNCTION isokron.chain_unchained_erasures(p_workspace_id TEXT) RETURNS INTEGER
LANGUAGE plpgsql AS $fn$
DECLARE
    v_tenant UUID := isokron.enter_workspace(p_workspace_id);
    v_operator UUID;
    e RECORD;
    n INTEGER := 0;
BEGIN
    SELECT actor_id INTO v_operator FROM public.actor_registry
        WHERE workspace_id = p_workspace_id AND actor_kind = 'operator'
        ORDER BY (status = 'active') DESC, created_at LIMIT 1;
    FOR e IN
        SELECT x.seq, x.event_id, x.event_type, x.payload ->> 'reason' AS reason
        FROM hivex_foundation.event_log x
        WHERE x.tenant_id = v_tenant AND x.payload_erased
          AND NOT EXISTS (SELECT 1 FROM hivex_foundation.event_log r
                          WHERE r.tenant_id = v_tenant AND r.seq > x.seq
                            AND r.event_type = 'substrate.payload.erased'
                            AND r.payload -> 'erased_seq' = to_jsonb(x.seq))
        ORDER BY x.seq
    LOOP
        PERFORM hivex_foundation.append_chain_event(v_tenant, v_operator, 'substrate.payload.erased',
            jsonb_build_object('erased_seq', e.seq, 'erased_event_id', e.event_id,
                               'erased_event_type', e.event_type, 'reason', e.reason,
                               'recorded_at_upgrade', true));
        n := n + 1;
    END LOOP;
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION isokron.chain_unchained_erasures(TEXT) FROM PUBLIC;

DO $attest$
DECLARE
    w TEXT;
BEGIN
    FOR w IN SELECT id FROM public.workspaces ORDER BY id LOOP
        PERFORM isokron.chain_unchained_erasures(w);
        PERFORM isokron.attest_unrecorded_state(w,
            'upgrade: rows written before their events recorded them (migration 0012)');
    END LOOP;
    PERFORM set_config('app.current_workspace_id', '', true);
END
$attest$;

-- Chained erasure (owner only): tombstone one payload and append substrate.payload.erased.
CREATE OR REPLACE FUNCTION isokron_api.erase_event_payload(
    p_workspace_id TEXT, p_seq BIGINT, p_reason TEXT
) RETURNS VOID
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_tenant UUID := isokron.enter_workspace(p_workspace_id);
    v_event_id UUID;
    v_type TEXT;
    v_erased BOOLEAN;
    v_state JSONB;
    v_operator UUID;
BEGIN
    IF p_reason IS NULL OR length(btrim(p_reason)) = 0 OR length(p_reason) > 2000 THEN
        PERFORM isokron.fail('IKV01', 'give the reason for the erasure (1-2000 characters)');
    END IF;
    SELECT event_id, event_type, payload_erased, payload -> 'state'
        INTO v_event_id, v_type, v_erased, v_state
        FROM hivex_foundation.event_log WHERE tenant_id = v_tenant AND seq = p_seq;
    IF NOT FOUND OR v_erased THEN
        PERFORM isokron.fail('IKN01', 'no unerased event at seq ' || p_seq || ' in this workspace');
    END IF;
    IF v_type = 'substrate.payload.erased' THEN
        PERFORM isokron.fail('IKV01', 'an erasure record cannot itself be erased');
    END IF;
    SELECT actor_id INTO v_operator FROM public.actor_registry
        WHERE workspace_id = p_workspace_id AND actor_kind = 'operator' AND status = 'active'
        ORDER BY created_at LIMIT 1;
    IF v_operator IS NULL THEN
        PERFORM isokron.fail('IKN01', 'the workspace has no active operator to erase in its name');
    END IF;
    PERFORM hivex_foundation.erase_event_payload(v_tenant, p_seq, p_reason);
    PERFORM hivex_foundation.append_chain_event(v_tenant, v_operator, 'substrate.payload.erased',
        jsonb_build_object('erased_seq', p_seq, 'erased_event_id', v_event_id,
                           'erased_event_type', v_type, 'reason', p_reason)
        || CASE WHEN v_state IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('carried_state', v_state) END);
END
$fn$;
REVOKE ALL ON FUNCTION isokron_api.erase_event_payload(TEXT, BIGINT, TEXT) FROM PUBLIC;
REVOKE ALL ON FUNCTION isokron.state_key_sql(TEXT), isokron.unrecorded_keys(TEXT, TEXT),
    isokron.attest_unrecorded_state(TEXT, TEXT) FROM PUBLIC;

-- op_append_event must not let agents forge substrate.* events (0011 already refuses them).

DO $off$ BEGIN PERFORM set_config('isokron.all_workspaces', 'off', true); END $off$;
RESET ROLE;
