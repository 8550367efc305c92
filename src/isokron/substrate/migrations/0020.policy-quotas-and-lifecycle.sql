-- IsoKron substrate: every seeded policy does something (issue 10).
--  * isokron_api.admit_write: the quotas of one write (per-minute writes, per-second burst,
--    nodes and links per minute, proposals and overrides per rolling 24 h, open escalations),
--    counted in isokron.quota_windows in the transaction of the write. Which quotas apply and
--    their limits come from the gateway's governance catalogue (isokron.governance.operations).
--  * isokron_api.token_issued_at: how old a token is (policy.kora_service_token_max_age_days).
--  * Proposals and escalations can be 'expired'; isokron_api.maintain closes the overdue ones,
--    archives scratchpad entries past their retention and deletes stale idempotency keys,
--    each closing chained (governance.*.expired, governance.scratchpad.archived).
--  * isokron.op_set_actor_status: disable / enable an actor (governed, chained); a disabled
--    actor's token is refused with IKD02 (actor_disabled).
--  * isokron.op_record_denial keeps a (redacted) copy of the refused arguments.
-- Citus: every new table is keyed by workspace_id first; no row types in signatures; scoping
-- through isokron.enter_workspace.
SET LOCAL ROLE isokron_owner;

-- ---------------------------------------------------------------- statuses
ALTER TABLE kronicle.escalations DROP CONSTRAINT IF EXISTS escalations_status_check;
ALTER TABLE kronicle.escalations ADD CONSTRAINT escalations_status_check
    CHECK (status IN ('open', 'approved', 'rejected', 'expired'));
ALTER TABLE kronicle.convention_proposals DROP CONSTRAINT IF EXISTS convention_proposals_status_check;
ALTER TABLE kronicle.convention_proposals ADD CONSTRAINT convention_proposals_status_check
    CHECK (status IN ('pending', 'accepted', 'rejected', 'expired'));
ALTER TABLE kronicle.policy_change_proposals DROP CONSTRAINT IF EXISTS policy_change_proposals_status_check;
ALTER TABLE kronicle.policy_change_proposals ADD CONSTRAINT policy_change_proposals_status_check
    CHECK (status IN ('pending', 'accepted', 'rejected', 'expired'));

-- ---------------------------------------------------------------- the operation registry
INSERT INTO isokron.operation_registry (operation, capability, governance)
VALUES ('set_actor_status', NULL, true)
ON CONFLICT (operation) DO UPDATE
    SET capability = EXCLUDED.capability, governance = EXCLUDED.governance;

-- ---------------------------------------------------------------- authentication
-- As 0011's, but a disabled actor's token is refused with its own code (IKD02 actor_disabled):
-- the actor exists and its tokens stay revocable; an operator can enable it again. And a token
-- older than its workspace's policy.kora_service_token_max_age_days (a positive number) is
-- refused here too, so a write that bypasses the gateway meets the same limit.
CREATE OR REPLACE FUNCTION isokron.principal_of_token(p_token_sha256 BYTEA) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v JSONB;
    v_issued TIMESTAMPTZ;
    v_max_days NUMERIC;
BEGIN
    IF p_token_sha256 IS NULL OR octet_length(p_token_sha256) <> 32 THEN
        PERFORM isokron.fail('IKU01', 'a write needs the SHA-256 (32 bytes) of a service token');
    END IF;
    PERFORM set_config('isokron.all_workspaces', 'on', true);
    SELECT jsonb_build_object(
        'workspace_id', t.workspace_id, 'actor_id', t.actor_id, 'actor_kind', a.actor_kind,
        'token_id', t.token_id, 'token_prefix', t.token_prefix,
        'status', CASE WHEN t.revoked_at IS NOT NULL THEN 'revoked'
                       WHEN t.expires_at IS NOT NULL AND t.expires_at <= now() THEN 'expired'
                       WHEN a.status <> 'active' THEN 'actor_disabled'
                       ELSE 'active' END)
        , t.created_at,
        (SELECT CASE WHEN jsonb_typeof(p.policy_value) = 'number'
                     THEN (p.policy_value #>> '{}')::numeric END
           FROM public.kora_policy_registry p
          WHERE p.workspace_id = t.workspace_id
            AND p.policy_key = 'policy.kora_service_token_max_age_days')
        INTO v, v_issued, v_max_days
        FROM isokron.service_tokens t
        JOIN public.actor_registry a ON a.workspace_id = t.workspace_id AND a.actor_id = t.actor_id
        WHERE t.token_hash = p_token_sha256;
    PERFORM set_config('isokron.all_workspaces', 'off', true);
    IF v IS NULL THEN
        PERFORM isokron.fail('IKU01', 'the service token is not known to this substrate');
    END IF;
    IF v ->> 'status' = 'active' AND v_max_days > 0
       AND v_issued < now() - make_interval(secs => (v_max_days * 86400)::float8) THEN
        PERFORM isokron.fail('IKU01', 'the service token ' || (v ->> 'token_prefix')
            || '... is older than policy.kora_service_token_max_age_days (' || v_max_days
            || ' days); ask an operator for a new one');
    END IF;
    IF v ->> 'status' = 'actor_disabled' THEN
        PERFORM isokron.fail('IKD02', 'the actor of service token ' || (v ->> 'token_prefix')
            || '... is disabled in its workspace; an operator can enable it again');
    END IF;
    IF v ->> 'status' <> 'active' THEN
        PERFORM isokron.fail('IKU01', 'the service token ' || (v ->> 'token_prefix') || '... is '
            || (v ->> 'status') || '; ask an operator for a new one');
    END IF;
    RETURN v;
END
$fn$;

-- ---------------------------------------------------------------- quotas
-- isokron.quota_windows replaces isokron.rate_limit_windows (the per-minute budget is its
-- "writes" bucket); the rows of the old table are only the current minute's counts.
DROP FUNCTION IF EXISTS isokron_api.consume_rate_limit(TEXT, UUID, INTEGER);
DROP FUNCTION IF EXISTS isokron_api.consume_rate_limit(BYTEA, INTEGER);
DROP TABLE IF EXISTS isokron.rate_limit_windows;
CREATE TABLE IF NOT EXISTS isokron.quota_windows (
    workspace_id  TEXT NOT NULL REFERENCES public.workspaces (id),
    actor_id      UUID NOT NULL,
    bucket        TEXT NOT NULL CHECK (bucket ~ '^[a-z_]{1,40}$'),
    window_start  TIMESTAMPTZ NOT NULL,
    calls         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_id, actor_id, bucket, window_start)
);
ALTER TABLE isokron.quota_windows ENABLE ROW LEVEL SECURITY;
ALTER TABLE isokron.quota_windows FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS workspace_isolation ON isokron.quota_windows;
CREATE POLICY workspace_isolation ON isokron.quota_windows
    USING (workspace_id = current_setting('app.current_workspace_id', true))
    WITH CHECK (workspace_id = current_setting('app.current_workspace_id', true));
DROP POLICY IF EXISTS owner_all_workspaces ON isokron.quota_windows;
CREATE POLICY owner_all_workspaces ON isokron.quota_windows TO isokron_owner
    USING (current_setting('isokron.all_workspaces', true) = 'on')
    WITH CHECK (current_setting('isokron.all_workspaces', true) = 'on');
REVOKE ALL ON isokron.quota_windows FROM PUBLIC;

-- The slot a call falls in: clock-aligned windows up to an hour; hourly slots summed over a
-- longer (rolling) window.
CREATE OR REPLACE FUNCTION isokron.quota_slot(p_window_seconds INTEGER, p_at TIMESTAMPTZ)
RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE WHEN p_window_seconds > 3600 THEN date_trunc('hour', p_at)
                ELSE to_timestamp(floor(extract(epoch FROM p_at) / p_window_seconds)
                                  * p_window_seconds) END
$fn$;

-- p_quotas: [{"bucket": "writes", "limit": 60, "window_seconds": 60, "code": "rate_limited"}, ...]
-- The bucket "writes" is always counted (a refused call costs one unit, which bounds denial
-- events, see substrate/writes.py); every other bucket is counted only when the call is admitted.
-- The "writes" row stays locked until the write commits, so one actor's admissions are
-- serialized and the other buckets' counts are exact.
-- The actor is the holder of the presented token (its SHA-256), resolved here as for a write.
CREATE OR REPLACE FUNCTION isokron_api.admit_write(p_token_sha256 BYTEA, p_quotas JSONB)
RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_who JSONB := isokron.principal_of_token(p_token_sha256);
    p_workspace_id TEXT := v_who ->> 'workspace_id';
    p_actor_id UUID := (v_who ->> 'actor_id')::uuid;
    v_now TIMESTAMPTZ := now();
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
    PERFORM isokron.enter_workspace(p_workspace_id);
    IF jsonb_typeof(p_quotas) IS DISTINCT FROM 'array' THEN
        PERFORM isokron.fail('IKV01', 'quotas must be a list');
    END IF;
    FOR q IN SELECT * FROM jsonb_array_elements(p_quotas) WHERE value ->> 'bucket' = 'writes' LOOP
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
    FOR q IN SELECT * FROM jsonb_array_elements(p_quotas) WHERE value ->> 'bucket' <> 'writes' LOOP
        v_bucket := q ->> 'bucket';
        v_limit := (q ->> 'limit')::int;
        v_window := (q ->> 'window_seconds')::int;
        IF v_window = 0 THEN
            -- A quota on state: the actor's escalations still open.
            SELECT count(*) INTO v_total FROM kronicle.escalations
                WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id AND status = 'open';
            v_oldest := NULL;
        ELSE
            SELECT coalesce(sum(calls), 0), min(window_start) INTO v_total, v_oldest
                FROM isokron.quota_windows
                WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id AND bucket = v_bucket
                  AND CASE WHEN v_window > 3600
                           THEN window_start > v_now - make_interval(secs => v_window)
                           ELSE window_start = isokron.quota_slot(v_window, v_now) END;
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
    FOR q IN SELECT * FROM jsonb_array_elements(p_quotas)
             WHERE value ->> 'bucket' <> 'writes' AND (value ->> 'window_seconds')::int > 0 LOOP
        INSERT INTO isokron.quota_windows AS w (workspace_id, actor_id, bucket, window_start, calls)
            VALUES (p_workspace_id, p_actor_id, q ->> 'bucket',
                    isokron.quota_slot((q ->> 'window_seconds')::int, v_now), 1)
            ON CONFLICT (workspace_id, actor_id, bucket, window_start)
            DO UPDATE SET calls = w.calls + 1;
    END LOOP;
    RETURN jsonb_build_object('allowed', true, 'calls', v_calls, 'limit', v_writes_limit,
                              'retry_after_seconds', 0, 'chain_denial', false);
END
$fn$;

-- ---------------------------------------------------------------- token age
CREATE OR REPLACE FUNCTION isokron_api.token_issued_at(p_token_sha256 BYTEA) RETURNS TIMESTAMPTZ
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v TIMESTAMPTZ;
BEGIN
    PERFORM set_config('isokron.all_workspaces', 'on', true);
    SELECT created_at INTO v FROM isokron.service_tokens WHERE token_hash = p_token_sha256;
    PERFORM set_config('isokron.all_workspaces', 'off', true);
    RETURN v;
END
$fn$;

-- ---------------------------------------------------------------- denial events
CREATE OR REPLACE FUNCTION isokron.op_record_denial(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
BEGIN
    -- writes no state row: the event is all there is
    RETURN isokron.event_result(hivex_foundation.append_chain_event(p_tenant, p_actor_id,
        'gateway.write.denied',
        jsonb_strip_nulls(jsonb_build_object(
            'tool', isokron.arg_text(p_args, 'tool', true, 200),
            'code', isokron.arg_text(p_args, 'code', true, 64),
            'reason', isokron.arg_text(p_args, 'reason', true, 2000),
            'arguments', isokron.arg_text(p_args, 'arguments', false, 4000)))
        || jsonb_build_object('rule_id', isokron.arg_text(p_args, 'rule_id', false, 200))));
END
$fn$;

-- ---------------------------------------------------------------- actor lifecycle
CREATE OR REPLACE FUNCTION isokron.op_set_actor_status(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_target UUID := isokron.arg_uuid(p_args, 'actor_id', true);
    v_status TEXT := isokron.arg_text(p_args, 'status', true, 16);
    v_reason TEXT := coalesce(isokron.arg_text(p_args, 'reason', false, 2000), '');
    v_kind TEXT;
    v_name TEXT;
    v_old TEXT;
    v_eid UUID := gen_random_uuid();
    v_ev JSONB;
BEGIN
    IF v_status NOT IN ('active', 'disabled') THEN
        PERFORM isokron.fail('IKV01', 'status must be active or disabled');
    END IF;
    SELECT actor_kind, display_name, status INTO v_kind, v_name, v_old
        FROM public.actor_registry
        WHERE workspace_id = p_workspace_id AND actor_id = v_target FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM isokron.fail('IKN01', 'no actor ' || v_target || ' in this workspace');
    END IF;
    IF v_old = v_status THEN
        PERFORM isokron.fail('IKC01', 'actor ' || v_target || ' is already ' || v_status);
    END IF;
    IF v_status = 'disabled' AND v_kind = 'operator' AND NOT EXISTS (
            SELECT 1 FROM public.actor_registry
            WHERE workspace_id = p_workspace_id AND actor_kind = 'operator'
              AND status = 'active' AND actor_id <> v_target) THEN
        PERFORM isokron.fail('IKC01', 'actor ' || v_target || ' is the last active operator; '
            || 'enable another operator first');
    END IF;
    UPDATE public.actor_registry SET status = v_status
        WHERE workspace_id = p_workspace_id AND actor_id = v_target;
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id,
        CASE WHEN v_status = 'disabled' THEN 'governance.actor.disabled'
             ELSE 'governance.actor.enabled' END,
        isokron.with_state(
            jsonb_build_object('actor_id', v_target, 'actor_kind', v_kind, 'display_name', v_name,
                               'status', v_status, 'previous_status', v_old, 'reason', v_reason),
            'public.actor_registry', p_workspace_id, ARRAY[v_target::text]),
        v_eid);
    RETURN isokron.event_result(v_ev) || jsonb_build_object(
        'actor_id', v_target, 'actor_kind', v_kind, 'status', v_status);
END
$fn$;

-- ---------------------------------------------------------------- maintenance
-- A policy value as a number, or NULL when it is missing or not a number (then the step that
-- needs it is skipped: a malformed policy never expires anything).
CREATE OR REPLACE FUNCTION isokron.policy_number(p_workspace_id TEXT, p_key TEXT) RETURNS NUMERIC
LANGUAGE sql STABLE AS $fn$
    SELECT CASE WHEN jsonb_typeof(policy_value) = 'number' AND (policy_value #>> '{}')::numeric >= 0
                THEN (policy_value #>> '{}')::numeric END
    FROM public.kora_policy_registry
    WHERE workspace_id = p_workspace_id AND policy_key = p_key
$fn$;

-- Close what is overdue in one workspace, each closing a chained event by the workspace's
-- first active operator; at most p_batch rows of each kind per call.
CREATE OR REPLACE FUNCTION isokron.maintain_workspace(p_workspace_id TEXT, p_batch INTEGER)
RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_tenant UUID := isokron.enter_workspace(p_workspace_id);
    v_operator UUID;
    v_now TIMESTAMPTZ := now();
    v_sla NUMERIC := isokron.policy_number(p_workspace_id, 'policy.kora_escalation_sla_hours');
    v_expiry NUMERIC := isokron.policy_number(p_workspace_id, 'policy.kora_proposal_expiry_days');
    v_keep NUMERIC := isokron.policy_number(p_workspace_id, 'policy.kora_scratchpad_retention_days');
    v_ttl NUMERIC := isokron.policy_number(p_workspace_id, 'policy.kora_idempotency_ttl_hours');
    r RECORD;
    v_eid UUID;
    v_at TIMESTAMPTZ;
    v_escalations INTEGER := 0;
    v_proposals INTEGER := 0;
    v_entries INTEGER := 0;
    v_keys INTEGER := 0;
BEGIN
    SELECT actor_id INTO v_operator FROM public.actor_registry
        WHERE workspace_id = p_workspace_id AND actor_kind = 'operator' AND status = 'active'
        ORDER BY created_at, actor_id LIMIT 1;
    IF v_operator IS NULL THEN
        RETURN jsonb_build_object('workspace_id', p_workspace_id,
                                  'skipped', 'the workspace has no active operator');
    END IF;
    IF v_sla IS NOT NULL THEN
        FOR r IN SELECT escalation_id, actor_id, tool FROM kronicle.escalations
                 WHERE workspace_id = p_workspace_id AND status = 'open'
                   AND created_at <= v_now - make_interval(secs => (v_sla * 3600)::float8)
                 ORDER BY created_at LIMIT p_batch FOR UPDATE LOOP
            v_eid := gen_random_uuid();
            v_at := clock_timestamp();
            UPDATE kronicle.escalations
                SET status = 'expired', decided_by = v_operator, decided_at = v_at,
                    decision_note = 'expired: open longer than policy.kora_escalation_sla_hours ('
                        || v_sla || ' h)', decision_event_id = v_eid
                WHERE workspace_id = p_workspace_id AND escalation_id = r.escalation_id;
            PERFORM hivex_foundation.append_chain_event(v_tenant, v_operator,
                'governance.escalation.expired',
                isokron.with_state(
                    jsonb_build_object('escalation_id', r.escalation_id, 'actor_id', r.actor_id,
                                       'tool', r.tool, 'status', 'expired', 'sla_hours', v_sla),
                    'kronicle.escalations', p_workspace_id, ARRAY[r.escalation_id::text]),
                v_eid);
            v_escalations := v_escalations + 1;
        END LOOP;
    END IF;
    IF v_expiry IS NOT NULL THEN
        FOR r IN SELECT 'convention' AS kind, proposal_id, created_at FROM kronicle.convention_proposals
                     WHERE workspace_id = p_workspace_id AND status = 'pending'
                       AND created_at <= v_now - make_interval(secs => (v_expiry * 86400)::float8)
                 UNION ALL
                 SELECT 'policy_change', proposal_id, created_at FROM kronicle.policy_change_proposals
                     WHERE workspace_id = p_workspace_id AND status = 'pending'
                       AND created_at <= v_now - make_interval(secs => (v_expiry * 86400)::float8)
                 ORDER BY created_at LIMIT p_batch LOOP
            v_eid := gen_random_uuid();
            v_at := clock_timestamp();
            IF r.kind = 'convention' THEN
                UPDATE kronicle.convention_proposals
                    SET status = 'expired', decided_by = v_operator,
                        decided_at = v_at, decision_event_id = v_eid,
                        decision_note = 'expired: pending longer than policy.kora_proposal_expiry_days'
                    WHERE workspace_id = p_workspace_id AND proposal_id = r.proposal_id;
            ELSE
                UPDATE kronicle.policy_change_proposals
                    SET status = 'expired', decided_by = v_operator,
                        decided_at = v_at, decision_event_id = v_eid,
                        decision_note = 'expired: pending longer than policy.kora_proposal_expiry_days'
                    WHERE workspace_id = p_workspace_id AND proposal_id = r.proposal_id;
            END IF;
            PERFORM hivex_foundation.append_chain_event(v_tenant, v_operator,
                'governance.proposal.expired',
                isokron.with_state(
                    jsonb_build_object('proposal_kind', r.kind, 'proposal_id', r.proposal_id,
                                       'status', 'expired', 'expiry_days', v_expiry),
                    CASE WHEN r.kind = 'convention' THEN 'kronicle.convention_proposals'
                         ELSE 'kronicle.policy_change_proposals' END,
                    p_workspace_id, ARRAY[r.proposal_id::text]),
                v_eid);
            v_proposals := v_proposals + 1;
        END LOOP;
    END IF;
    IF v_keep IS NOT NULL THEN
        FOR r IN SELECT entry_id, actor_id, kind, content_hash FROM kronicle.agent_scratchpad_entries
                 WHERE workspace_id = p_workspace_id AND status = 'active'
                   AND created_at <= v_now - make_interval(secs => (v_keep * 86400)::float8)
                 ORDER BY created_at LIMIT p_batch FOR UPDATE LOOP
            UPDATE kronicle.agent_scratchpad_entries SET status = 'archived'
                WHERE workspace_id = p_workspace_id AND entry_id = r.entry_id;
            PERFORM hivex_foundation.append_chain_event(v_tenant, v_operator,
                'governance.scratchpad.archived',
                isokron.with_state(
                    jsonb_build_object('entry_id', r.entry_id, 'actor_id', r.actor_id,
                                       'kind', r.kind, 'content_hash', r.content_hash,
                                       'status', 'archived', 'retention_days', v_keep),
                    'kronicle.agent_scratchpad_entries', p_workspace_id, ARRAY[r.entry_id::text]));
            v_entries := v_entries + 1;
        END LOOP;
    END IF;
    IF v_ttl IS NOT NULL THEN
        DELETE FROM isokron.idempotency_keys
            WHERE workspace_id = p_workspace_id
              AND created_at <= v_now - make_interval(secs => (v_ttl * 3600)::float8);
        GET DIAGNOSTICS v_keys = ROW_COUNT;
    END IF;
    DELETE FROM isokron.quota_windows
        WHERE workspace_id = p_workspace_id AND window_start < v_now - interval '25 hours';
    RETURN jsonb_build_object('workspace_id', p_workspace_id,
        'escalations_expired', v_escalations, 'proposals_expired', v_proposals,
        'scratchpad_archived', v_entries, 'idempotency_keys_deleted', v_keys);
END
$fn$;

-- Maintenance of one workspace, or of every workspace (NULL). Safe for the gateway role to
-- call: it only closes what the workspace's own policies say is overdue.
CREATE OR REPLACE FUNCTION isokron_api.maintain(p_workspace_id TEXT DEFAULT NULL)
RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_ids TEXT[];
    v_id TEXT;
    v_results JSONB := '[]'::jsonb;
BEGIN
    IF p_workspace_id IS NOT NULL THEN
        v_ids := ARRAY[p_workspace_id];
    ELSE
        PERFORM set_config('isokron.all_workspaces', 'on', true);
        SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO v_ids FROM public.workspaces;
        PERFORM set_config('isokron.all_workspaces', 'off', true);
    END IF;
    FOREACH v_id IN ARRAY v_ids LOOP
        v_results := v_results || jsonb_build_array(isokron.maintain_workspace(v_id, 500));
    END LOOP;
    RETURN jsonb_build_object('workspaces', v_results);
END
$fn$;

REVOKE ALL ON FUNCTION isokron_api.admit_write(BYTEA, JSONB) FROM PUBLIC;
REVOKE ALL ON FUNCTION isokron_api.token_issued_at(BYTEA) FROM PUBLIC;
REVOKE ALL ON FUNCTION isokron_api.maintain(TEXT) FROM PUBLIC;
REVOKE ALL ON FUNCTION isokron.quota_slot(INTEGER, TIMESTAMPTZ) FROM PUBLIC;
REVOKE ALL ON FUNCTION isokron.policy_number(TEXT, TEXT) FROM PUBLIC;
REVOKE ALL ON FUNCTION isokron.maintain_workspace(TEXT, INTEGER) FROM PUBLIC;
REVOKE ALL ON FUNCTION isokron.op_set_actor_status(UUID, TEXT, UUID, JSONB) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    isokron_api.admit_write(BYTEA, JSONB),
    isokron_api.token_issued_at(BYTEA),
    isokron_api.maintain(TEXT)
    TO isokron_gateway;

RESET ROLE;
