-- IsoKron substrate: the write operations. Each call is ONE transaction that writes its rows
-- and appends exactly one chain event (invariant 3); rows keep approved_event_id.
-- isokron.op_* hold the logic; isokron.run_op() wraps them with workspace scoping, actor check
-- and idempotency (invariant 8); isokron_api.* are the entry points granted to the gateway.
-- Error codes: IKV01 invalid argument, IKN01 not found, IKC01 conflict, IKC02 idempotency key
-- reused for another request, IKD01 capability denied, IKA01 append-only violation.
SET LOCAL ROLE isokron_owner;

-- ---------------------------------------------------------------- argument helpers
CREATE OR REPLACE FUNCTION isokron.fail(p_code TEXT, p_message TEXT) RETURNS VOID
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION USING MESSAGE = p_message, ERRCODE = p_code;
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.arg_text(
    p_args JSONB, p_key TEXT, p_required BOOLEAN, p_max_chars INTEGER DEFAULT NULL
) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    v JSONB := p_args -> p_key;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        IF p_required THEN
            PERFORM isokron.fail('IKV01', 'argument ' || p_key || ' is required');
        END IF;
        RETURN NULL;
    END IF;
    IF jsonb_typeof(v) <> 'string' THEN
        PERFORM isokron.fail('IKV01', 'argument ' || p_key || ' must be a string, not ' || jsonb_typeof(v));
    END IF;
    IF p_max_chars IS NOT NULL AND length(v #>> '{}') > p_max_chars THEN
        PERFORM isokron.fail('IKV01', 'argument ' || p_key || ' is longer than '
            || p_max_chars || ' characters');
    END IF;
    IF p_required AND length(btrim(v #>> '{}')) = 0 THEN
        PERFORM isokron.fail('IKV01', 'argument ' || p_key || ' must not be empty');
    END IF;
    RETURN v #>> '{}';
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.arg_uuid(p_args JSONB, p_key TEXT, p_required BOOLEAN)
RETURNS UUID
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    v TEXT := isokron.arg_text(p_args, p_key, p_required, 64);
BEGIN
    IF v IS NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        RETURN v::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        PERFORM isokron.fail('IKV01', 'argument ' || p_key || ' must be a UUID');
    END;
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.arg_object(p_args JSONB, p_key TEXT, p_required BOOLEAN)
RETURNS JSONB
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    v JSONB := p_args -> p_key;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        IF p_required THEN
            PERFORM isokron.fail('IKV01', 'argument ' || p_key || ' is required');
        END IF;
        RETURN '{}'::jsonb;
    END IF;
    IF jsonb_typeof(v) <> 'object' THEN
        PERFORM isokron.fail('IKV01', 'argument ' || p_key || ' must be a JSON object');
    END IF;
    RETURN v;
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.text_sha256_hex(p TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT encode(sha256(convert_to(coalesce(p, ''), 'UTF8')), 'hex')
$fn$;

CREATE OR REPLACE FUNCTION isokron.event_result(e hivex_foundation.event_log) RETURNS JSONB
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT jsonb_build_object('event_id', e.event_id, 'seq', e.seq,
                              'event_hash', encode(e.this_event_hash, 'hex'))
$fn$;

-- ---------------------------------------------------------------- scoping and idempotency
CREATE OR REPLACE FUNCTION isokron.enter_workspace(p_workspace_id TEXT) RETURNS UUID
LANGUAGE plpgsql AS $fn$
DECLARE
    v_tenant UUID;
BEGIN
    IF p_workspace_id IS NULL OR length(p_workspace_id) = 0 THEN
        PERFORM isokron.fail('IKV01', 'workspace_id is required');
    END IF;
    -- Scope this transaction to one workspace: row-level security then hides every other one,
    -- even from this SECURITY DEFINER code.
    PERFORM set_config('app.current_workspace_id', p_workspace_id, true);
    SELECT tenant_id INTO v_tenant FROM hivex_foundation.tenant WHERE clerk_org_id = p_workspace_id;
    IF NOT FOUND THEN
        PERFORM isokron.fail('IKN01', 'unknown workspace ' || quote_literal(p_workspace_id));
    END IF;
    RETURN v_tenant;
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.require_actor(p_workspace_id TEXT, p_actor_id UUID) RETURNS TEXT
LANGUAGE plpgsql AS $fn$
DECLARE
    v_kind TEXT;
BEGIN
    SELECT actor_kind INTO v_kind FROM public.actor_registry
        WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id AND status = 'active';
    IF NOT FOUND THEN
        PERFORM isokron.fail('IKN01', 'actor ' || coalesce(p_actor_id::text, 'NULL')
            || ' is not an active actor of workspace ' || quote_literal(p_workspace_id));
    END IF;
    RETURN v_kind;
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.idem_claim(
    p_workspace_id TEXT, p_actor_id UUID, p_key TEXT, p_op TEXT, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_digest BYTEA := sha256(convert_to(p_args::text, 'UTF8'));
    v_row isokron.idempotency_keys;
BEGIN
    IF p_key IS NULL THEN
        RETURN NULL;
    END IF;
    -- A concurrent call with the same key blocks here until the first commits or rolls back.
    INSERT INTO isokron.idempotency_keys (workspace_id, actor_id, idempotency_key, operation, request_digest)
        VALUES (p_workspace_id, p_actor_id, p_key, p_op, v_digest)
        ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO v_row FROM isokron.idempotency_keys
        WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id AND idempotency_key = p_key;
    IF v_row.operation <> p_op OR v_row.request_digest <> v_digest THEN
        PERFORM isokron.fail('IKC02', 'idempotency key ' || quote_literal(p_key)
            || ' was already used for a different request; use a new key for a new write');
    END IF;
    RETURN v_row.result || jsonb_build_object('replayed', true);
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.idem_store(
    p_workspace_id TEXT, p_actor_id UUID, p_key TEXT, p_result JSONB
) RETURNS VOID
LANGUAGE sql AS $fn$
    UPDATE isokron.idempotency_keys SET result = p_result
        WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id AND idempotency_key = p_key
$fn$;

-- ---------------------------------------------------------------- agent operations
CREATE OR REPLACE FUNCTION isokron.op_append_event(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_type TEXT := isokron.arg_text(p_args, 'event_type', true, 200);
    v_payload JSONB := isokron.arg_object(p_args, 'payload', false);
BEGIN
    IF v_type !~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$' THEN
        PERFORM isokron.fail('IKV01', 'event_type must be dotted lower-case words such as kora.note.recorded');
    END IF;
    IF split_part(v_type, '.', 1) IN ('governance', 'gateway') THEN
        PERFORM isokron.fail('IKV01', 'event types governance.* and gateway.* are reserved for the substrate');
    END IF;
    RETURN isokron.event_result(
        hivex_foundation.append_chain_event(p_tenant, p_actor_id, v_type, v_payload));
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_write_scratchpad_entry(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_kind TEXT := isokron.arg_text(p_args, 'kind', true, 64);
    v_scope TEXT := coalesce(isokron.arg_text(p_args, 'visibility_scope', false, 64), 'own_only');
    v_summary TEXT := isokron.arg_text(p_args, 'summary', true, 4096);
    v_content TEXT := isokron.arg_text(p_args, 'content', false);
    v_uri TEXT := isokron.arg_text(p_args, 'content_uri', false, 2048);
    v_hash TEXT := isokron.arg_text(p_args, 'content_hash', true, 64);
    v_session TEXT := isokron.arg_text(p_args, 'session_id', false, 200);
    v_entry UUID := gen_random_uuid();
    v_event hivex_foundation.event_log;
BEGIN
    IF v_kind NOT IN ('reasoning_trail', 'observation', 'plan', 'hypothesis', 'decision_draft',
                      'handoff_note', 'tool_result') THEN
        PERFORM isokron.fail('IKV01', 'kind ' || quote_literal(v_kind) || ' is not one of reasoning_trail, '
            || 'observation, plan, hypothesis, decision_draft, handoff_note, tool_result');
    END IF;
    IF v_scope NOT IN ('own_only', 'cross_agent_dereferenceable') THEN
        PERFORM isokron.fail('IKV01', 'visibility_scope must be own_only or cross_agent_dereferenceable');
    END IF;
    IF v_content IS NULL AND v_uri IS NULL THEN
        PERFORM isokron.fail('IKV01', 'give content or content_uri');
    END IF;
    IF v_hash !~ '^[0-9a-f]{64}$' THEN
        PERFORM isokron.fail('IKV01', 'content_hash must be 64 lower-case hex digits (BLAKE3)');
    END IF;
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.scratchpad.written',
        jsonb_build_object('entry_id', v_entry, 'kind', v_kind, 'visibility_scope', v_scope,
                           'summary', v_summary, 'content_hash', v_hash, 'content_uri', v_uri,
                           'session_id', v_session));
    INSERT INTO kronicle.agent_scratchpad_entries (workspace_id, entry_id, actor_id, session_id, kind,
        visibility_scope, summary, content, content_uri, content_hash, approved_event_id)
    VALUES (p_workspace_id, v_entry, p_actor_id, v_session, v_kind, v_scope, v_summary, v_content,
        v_uri, v_hash, v_event.event_id);
    RETURN isokron.event_result(v_event) || jsonb_build_object('entry_id', v_entry, 'content_hash', v_hash);
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_iso_node_create(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_type TEXT := isokron.arg_text(p_args, 'node_type', true, 64);
    v_title TEXT := isokron.arg_text(p_args, 'title', true, 500);
    v_content TEXT := coalesce(isokron.arg_text(p_args, 'content', false), '');
    v_props JSONB := isokron.arg_object(p_args, 'properties', false);
    v_node UUID := gen_random_uuid();
    v_event hivex_foundation.event_log;
BEGIN
    IF v_type !~ '^[a-z][a-z0-9_.-]{0,63}$' THEN
        PERFORM isokron.fail('IKV01', 'node_type must be lower-case letters, digits, _ . or - (e.g. decision)');
    END IF;
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.node.created',
        jsonb_build_object('node_id', v_node, 'node_type', v_type, 'title', v_title,
                           'content_sha256', isokron.text_sha256_hex(v_content)));
    INSERT INTO kronicle.iso_nodes (workspace_id, node_id, node_type, title, content, properties,
        created_by, approved_event_id)
    VALUES (p_workspace_id, v_node, v_type, v_title, v_content, v_props, p_actor_id, v_event.event_id);
    RETURN isokron.event_result(v_event) || jsonb_build_object('node_id', v_node);
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_iso_node_supersede(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_old_id UUID := isokron.arg_uuid(p_args, 'node_id', true);
    v_reason TEXT := coalesce(isokron.arg_text(p_args, 'reason', false, 2000), '');
    v_old kronicle.iso_nodes;
    v_new UUID := gen_random_uuid();
    v_title TEXT;
    v_content TEXT;
    v_props JSONB;
    v_event hivex_foundation.event_log;
BEGIN
    SELECT * INTO v_old FROM kronicle.iso_nodes
        WHERE workspace_id = p_workspace_id AND node_id = v_old_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM isokron.fail('IKN01', 'no iso node ' || v_old_id || ' in this workspace');
    END IF;
    IF v_old.status = 'superseded' THEN
        PERFORM isokron.fail('IKC01', 'iso node ' || v_old_id || ' was already superseded by '
            || v_old.superseded_by || '; supersede that one instead');
    END IF;
    v_title := coalesce(isokron.arg_text(p_args, 'title', false, 500), v_old.title);
    v_content := coalesce(isokron.arg_text(p_args, 'content', false), v_old.content);
    v_props := CASE WHEN p_args ? 'properties' THEN isokron.arg_object(p_args, 'properties', false)
                    ELSE v_old.properties END;
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.node.superseded',
        jsonb_build_object('node_id', v_old_id, 'superseded_by', v_new, 'node_type', v_old.node_type,
                           'title', v_title, 'reason', v_reason,
                           'content_sha256', isokron.text_sha256_hex(v_content)));
    INSERT INTO kronicle.iso_nodes (workspace_id, node_id, node_type, title, content, properties,
        created_by, approved_event_id)
    VALUES (p_workspace_id, v_new, v_old.node_type, v_title, v_content, v_props, p_actor_id,
        v_event.event_id);
    UPDATE kronicle.iso_nodes
        SET status = 'superseded', superseded_by = v_new, superseded_event_id = v_event.event_id
        WHERE workspace_id = p_workspace_id AND node_id = v_old_id;
    RETURN isokron.event_result(v_event)
        || jsonb_build_object('node_id', v_new, 'superseded_node_id', v_old_id);
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_iso_link_create(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_from UUID := isokron.arg_uuid(p_args, 'from_node_id', true);
    v_to UUID := isokron.arg_uuid(p_args, 'to_node_id', true);
    v_type TEXT := isokron.arg_text(p_args, 'link_type', true, 64);
    v_props JSONB := isokron.arg_object(p_args, 'properties', false);
    v_link UUID := gen_random_uuid();
    v_event hivex_foundation.event_log;
BEGIN
    IF v_type !~ '^[a-z][a-z0-9_.-]{0,63}$' THEN
        PERFORM isokron.fail('IKV01', 'link_type must be lower-case letters, digits, _ . or - (e.g. supports)');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM kronicle.iso_nodes WHERE workspace_id = p_workspace_id AND node_id = v_from) THEN
        PERFORM isokron.fail('IKN01', 'no iso node ' || v_from || ' (from_node_id) in this workspace');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM kronicle.iso_nodes WHERE workspace_id = p_workspace_id AND node_id = v_to) THEN
        PERFORM isokron.fail('IKN01', 'no iso node ' || v_to || ' (to_node_id) in this workspace');
    END IF;
    IF EXISTS (SELECT 1 FROM kronicle.iso_links WHERE workspace_id = p_workspace_id
               AND from_node_id = v_from AND to_node_id = v_to AND link_type = v_type) THEN
        PERFORM isokron.fail('IKC01', 'a ' || v_type || ' link between these nodes already exists');
    END IF;
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.link.created',
        jsonb_build_object('link_id', v_link, 'from_node_id', v_from, 'to_node_id', v_to,
                           'link_type', v_type));
    INSERT INTO kronicle.iso_links (workspace_id, link_id, from_node_id, to_node_id, link_type,
        properties, created_by, approved_event_id)
    VALUES (p_workspace_id, v_link, v_from, v_to, v_type, v_props, p_actor_id, v_event.event_id);
    RETURN isokron.event_result(v_event) || jsonb_build_object('link_id', v_link);
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_propose_convention(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_title TEXT := isokron.arg_text(p_args, 'title', true, 500);
    v_body TEXT := isokron.arg_text(p_args, 'body', true, 20000);
    v_rationale TEXT := coalesce(isokron.arg_text(p_args, 'rationale', false, 5000), '');
    v_id UUID := gen_random_uuid();
    v_event hivex_foundation.event_log;
BEGIN
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.convention.proposed',
        jsonb_build_object('proposal_id', v_id, 'title', v_title,
                           'body_sha256', isokron.text_sha256_hex(v_body)));
    INSERT INTO kronicle.convention_proposals (workspace_id, proposal_id, actor_id, title, body,
        rationale, approved_event_id)
    VALUES (p_workspace_id, v_id, p_actor_id, v_title, v_body, v_rationale, v_event.event_id);
    RETURN isokron.event_result(v_event) || jsonb_build_object('proposal_id', v_id, 'status', 'pending');
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_propose_policy_change(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_key TEXT := isokron.arg_text(p_args, 'policy_key', true, 200);
    v_value JSONB := p_args -> 'proposed_value';
    v_rationale TEXT := coalesce(isokron.arg_text(p_args, 'rationale', false, 5000), '');
    v_id UUID := gen_random_uuid();
    v_event hivex_foundation.event_log;
BEGIN
    IF v_value IS NULL THEN
        PERFORM isokron.fail('IKV01', 'argument proposed_value is required');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM public.kora_policy_registry
                   WHERE workspace_id = p_workspace_id AND policy_key = v_key) THEN
        PERFORM isokron.fail('IKN01', 'no policy ' || quote_literal(v_key) || ' in this workspace');
    END IF;
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.policy_change.proposed',
        jsonb_build_object('proposal_id', v_id, 'policy_key', v_key, 'proposed_value', v_value));
    INSERT INTO kronicle.policy_change_proposals (workspace_id, proposal_id, actor_id, policy_key,
        proposed_value, rationale, approved_event_id)
    VALUES (p_workspace_id, v_id, p_actor_id, v_key, v_value, v_rationale, v_event.event_id);
    RETURN isokron.event_result(v_event) || jsonb_build_object('proposal_id', v_id, 'status', 'pending');
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_raise_escalation(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_tool TEXT := isokron.arg_text(p_args, 'tool', true, 200);
    v_rule TEXT := isokron.arg_text(p_args, 'rule_id', false, 200);
    v_reason TEXT := isokron.arg_text(p_args, 'reason', true, 2000);
    v_request JSONB := isokron.arg_object(p_args, 'request', false);
    v_id UUID := gen_random_uuid();
    v_event hivex_foundation.event_log;
BEGIN
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.escalation.raised',
        jsonb_build_object('escalation_id', v_id, 'tool', v_tool, 'rule_id', v_rule,
                           'reason', v_reason,
                           'request_sha256', encode(sha256(convert_to(v_request::text, 'UTF8')), 'hex')));
    INSERT INTO kronicle.escalations (workspace_id, escalation_id, actor_id, tool, rule_id, reason,
        request, approved_event_id)
    VALUES (p_workspace_id, v_id, p_actor_id, v_tool, v_rule, v_reason, v_request, v_event.event_id);
    RETURN isokron.event_result(v_event) || jsonb_build_object('escalation_id', v_id, 'status', 'open');
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_record_denial(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN isokron.event_result(hivex_foundation.append_chain_event(p_tenant, p_actor_id,
        'gateway.write.denied',
        jsonb_build_object('tool', isokron.arg_text(p_args, 'tool', true, 200),
                           'code', isokron.arg_text(p_args, 'code', true, 64),
                           'reason', isokron.arg_text(p_args, 'reason', true, 2000),
                           'rule_id', isokron.arg_text(p_args, 'rule_id', false, 200))));
END
$fn$;

-- ---------------------------------------------------------------- operator decisions
CREATE OR REPLACE FUNCTION isokron.op_decide_proposal(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_kind TEXT := isokron.arg_text(p_args, 'proposal_kind', true, 32);
    v_id UUID := isokron.arg_uuid(p_args, 'proposal_id', true);
    v_decision TEXT := isokron.arg_text(p_args, 'decision', true, 16);
    v_note TEXT := coalesce(isokron.arg_text(p_args, 'note', false, 5000), '');
    v_status TEXT;
    v_key TEXT;
    v_value JSONB;
    v_event hivex_foundation.event_log;
BEGIN
    IF v_decision NOT IN ('accepted', 'rejected') THEN
        PERFORM isokron.fail('IKV01', 'decision must be accepted or rejected');
    END IF;
    IF v_kind = 'convention' THEN
        SELECT status INTO v_status FROM kronicle.convention_proposals
            WHERE workspace_id = p_workspace_id AND proposal_id = v_id FOR UPDATE;
    ELSIF v_kind = 'policy_change' THEN
        SELECT status, policy_key, proposed_value INTO v_status, v_key, v_value
            FROM kronicle.policy_change_proposals
            WHERE workspace_id = p_workspace_id AND proposal_id = v_id FOR UPDATE;
    ELSE
        PERFORM isokron.fail('IKV01', 'proposal_kind must be convention or policy_change');
    END IF;
    IF v_status IS NULL THEN
        PERFORM isokron.fail('IKN01', 'no ' || v_kind || ' proposal ' || v_id || ' in this workspace');
    END IF;
    IF v_status <> 'pending' THEN
        PERFORM isokron.fail('IKC01', 'proposal ' || v_id || ' was already ' || v_status);
    END IF;
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.proposal.decided',
        jsonb_build_object('proposal_kind', v_kind, 'proposal_id', v_id, 'decision', v_decision,
                           'note', v_note, 'policy_key', v_key,
                           'policy_value', CASE WHEN v_decision = 'accepted' THEN v_value END));
    IF v_kind = 'convention' THEN
        UPDATE kronicle.convention_proposals
            SET status = v_decision, decided_by = p_actor_id, decided_at = v_event.occurred_at,
                decision_note = v_note, decision_event_id = v_event.event_id
            WHERE workspace_id = p_workspace_id AND proposal_id = v_id;
    ELSE
        UPDATE kronicle.policy_change_proposals
            SET status = v_decision, decided_by = p_actor_id, decided_at = v_event.occurred_at,
                decision_note = v_note, decision_event_id = v_event.event_id
            WHERE workspace_id = p_workspace_id AND proposal_id = v_id;
        IF v_decision = 'accepted' THEN
            UPDATE public.kora_policy_registry
                SET policy_value = v_value, updated_at = v_event.occurred_at,
                    approved_event_id = v_event.event_id
                WHERE workspace_id = p_workspace_id AND policy_key = v_key;
        END IF;
    END IF;
    RETURN isokron.event_result(v_event)
        || jsonb_build_object('proposal_id', v_id, 'status', v_decision);
END
$fn$;

-- ---------------------------------------------------------------- governance (operator)
CREATE OR REPLACE FUNCTION isokron.op_set_charter(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_md TEXT := isokron.arg_text(p_args, 'content_md', true, 200000);
    v_sections JSONB := isokron.arg_object(p_args, 'sections', true);
    v_version INTEGER;
    v_id UUID := gen_random_uuid();
    v_hash TEXT := isokron.text_sha256_hex(v_md);
    v_event hivex_foundation.event_log;
BEGIN
    IF jsonb_typeof(v_sections -> 'identity') IS DISTINCT FROM 'string'
       OR jsonb_typeof(v_sections -> 'authority_can_do') IS DISTINCT FROM 'array'
       OR jsonb_typeof(v_sections -> 'authority_cannot_do') IS DISTINCT FROM 'array' THEN
        PERFORM isokron.fail('IKV01', 'sections needs identity (text), authority_can_do and '
            || 'authority_cannot_do (lists)');
    END IF;
    SELECT coalesce(max(version), 0) + 1 INTO v_version FROM public.kora_role_charter
        WHERE workspace_id = p_workspace_id;
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.charter.set',
        jsonb_build_object('charter_id', v_id, 'version', v_version, 'content_hash', v_hash));
    UPDATE public.kora_role_charter SET is_active = false
        WHERE workspace_id = p_workspace_id AND is_active;
    INSERT INTO public.kora_role_charter (workspace_id, charter_id, version, content_md, content_jsonb,
        content_hash, is_active, approved_event_id)
    VALUES (p_workspace_id, v_id, v_version, v_md, jsonb_build_object('sections', v_sections), v_hash,
        true, v_event.event_id);
    RETURN isokron.event_result(v_event)
        || jsonb_build_object('charter_id', v_id, 'version', v_version, 'content_hash', v_hash);
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_set_policies(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_policies JSONB := p_args -> 'policies';
    v_item JSONB;
    v_event hivex_foundation.event_log;
    v_changes JSONB := '[]'::jsonb;
    v_old JSONB;
BEGIN
    IF jsonb_typeof(v_policies) IS DISTINCT FROM 'array' OR jsonb_array_length(v_policies) = 0 THEN
        PERFORM isokron.fail('IKV01', 'policies must be a non-empty list of {policy_key, policy_value}');
    END IF;
    FOR v_item IN SELECT * FROM jsonb_array_elements(v_policies) LOOP
        PERFORM isokron.arg_text(v_item, 'policy_key', true, 200);
        IF NOT v_item ? 'policy_value' THEN
            PERFORM isokron.fail('IKV01', 'policy ' || (v_item ->> 'policy_key') || ' has no policy_value');
        END IF;
        IF (v_item ->> 'policy_key') !~ '^policy\.[a-z0-9_.]+$' THEN
            PERFORM isokron.fail('IKV01', 'policy keys look like policy.some_name, not '
                || quote_literal(v_item ->> 'policy_key'));
        END IF;
        SELECT policy_value INTO v_old FROM public.kora_policy_registry
            WHERE workspace_id = p_workspace_id AND policy_key = v_item ->> 'policy_key';
        v_changes := v_changes || jsonb_build_array(jsonb_build_object(
            'policy_key', v_item ->> 'policy_key', 'policy_value', v_item -> 'policy_value',
            'previous_value', v_old));
    END LOOP;
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.policy.set',
        jsonb_build_object('changes', v_changes));
    INSERT INTO public.kora_policy_registry AS r (workspace_id, policy_key, policy_value, description,
        updated_at, approved_event_id)
    SELECT p_workspace_id, e ->> 'policy_key', e -> 'policy_value', coalesce(e ->> 'description', ''),
        v_event.occurred_at, v_event.event_id
    FROM jsonb_array_elements(v_policies) e
    ON CONFLICT (workspace_id, policy_key) DO UPDATE
        SET policy_value = EXCLUDED.policy_value,
            description = CASE WHEN EXCLUDED.description = '' THEN r.description ELSE EXCLUDED.description END,
            updated_at = EXCLUDED.updated_at, approved_event_id = EXCLUDED.approved_event_id;
    RETURN isokron.event_result(v_event) || jsonb_build_object('count', jsonb_array_length(v_policies));
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_set_capabilities(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_rows JSONB := p_args -> 'capabilities';
    v_event hivex_foundation.event_log;
BEGIN
    IF jsonb_typeof(v_rows) IS DISTINCT FROM 'array' OR jsonb_array_length(v_rows) = 0 THEN
        PERFORM isokron.fail('IKV01', 'capabilities must be a non-empty list of '
            || '{cap_name, actor_kind, granted, cap_group}');
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(v_rows) e
               WHERE jsonb_typeof(e -> 'granted') IS DISTINCT FROM 'boolean'
                  OR jsonb_typeof(e -> 'cap_name') IS DISTINCT FROM 'string'
                  OR jsonb_typeof(e -> 'actor_kind') IS DISTINCT FROM 'string') THEN
        PERFORM isokron.fail('IKV01', 'every capability row needs cap_name, actor_kind and granted (true/false)');
    END IF;
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.capability.set',
        jsonb_build_object('changes', (SELECT jsonb_agg(jsonb_build_object(
            'cap_name', e ->> 'cap_name', 'actor_kind', e ->> 'actor_kind', 'granted', e -> 'granted'))
            FROM jsonb_array_elements(v_rows) e)));
    INSERT INTO public.kora_capability_matrix AS m (workspace_id, cap_name, actor_kind, granted,
        cap_group, description, updated_at, approved_event_id)
    SELECT p_workspace_id, e ->> 'cap_name', e ->> 'actor_kind', (e ->> 'granted')::boolean,
        coalesce(e ->> 'cap_group',
                 (SELECT m2.cap_group FROM public.kora_capability_matrix m2
                  WHERE m2.workspace_id = p_workspace_id AND m2.cap_name = e ->> 'cap_name' LIMIT 1),
                 'kora_broader'),
        coalesce(e ->> 'description', ''),
        v_event.occurred_at, v_event.event_id
    FROM jsonb_array_elements(v_rows) e
    ON CONFLICT (workspace_id, cap_name, actor_kind) DO UPDATE
        SET granted = EXCLUDED.granted,
            cap_group = EXCLUDED.cap_group,
            description = CASE WHEN EXCLUDED.description = '' THEN m.description ELSE EXCLUDED.description END,
            updated_at = EXCLUDED.updated_at, approved_event_id = EXCLUDED.approved_event_id;
    RETURN isokron.event_result(v_event) || jsonb_build_object('count', jsonb_array_length(v_rows));
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_revise_constitution(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_rules JSONB := isokron.arg_object(p_args, 'rules', true);
    v_number INTEGER;
    v_id UUID := gen_random_uuid();
    v_hash BYTEA := sha256(convert_to(v_rules::text, 'UTF8'));
    v_event hivex_foundation.event_log;
BEGIN
    SELECT coalesce(max(revision_number), 0) + 1 INTO v_number
        FROM kronicle.workspace_constitution_revisions WHERE workspace_id = p_workspace_id;
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.constitution.revised',
        jsonb_build_object('revision_id', v_id, 'revision_number', v_number,
                           'rules_hash', encode(v_hash, 'hex')));
    INSERT INTO kronicle.workspace_constitution_revisions (workspace_id, revision_id, revision_number,
        rules, rules_hash, approved_event_id)
    VALUES (p_workspace_id, v_id, v_number, v_rules, v_hash, v_event.event_id);
    RETURN isokron.event_result(v_event) || jsonb_build_object('revision_id', v_id,
        'revision_number', v_number, 'rules_hash', encode(v_hash, 'hex'));
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_issue_token(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_holder UUID := isokron.arg_uuid(p_args, 'holder_actor_id', true);
    v_hash TEXT := isokron.arg_text(p_args, 'token_sha256', true, 64);
    v_prefix TEXT := isokron.arg_text(p_args, 'token_prefix', true, 32);
    v_label TEXT := coalesce(isokron.arg_text(p_args, 'label', false, 200), '');
    v_expires TIMESTAMPTZ;
    v_id UUID := gen_random_uuid();
    v_event hivex_foundation.event_log;
BEGIN
    IF v_hash !~ '^[0-9a-f]{64}$' THEN
        PERFORM isokron.fail('IKV01', 'token_sha256 must be 64 lower-case hex digits');
    END IF;
    BEGIN
        v_expires := isokron.arg_text(p_args, 'expires_at', false, 64)::timestamptz;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
        PERFORM isokron.fail('IKV01', 'expires_at must be an ISO-8601 timestamp');
    END;
    PERFORM isokron.require_actor(p_workspace_id, v_holder);
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.token.issued',
        jsonb_build_object('token_id', v_id, 'token_prefix', v_prefix, 'holder_actor_id', v_holder,
                           'label', v_label, 'expires_at', v_expires));
    INSERT INTO isokron.service_tokens (workspace_id, token_id, actor_id, token_prefix, token_hash,
        label, expires_at, approved_event_id)
    VALUES (p_workspace_id, v_id, v_holder, v_prefix, decode(v_hash, 'hex'), v_label, v_expires,
        v_event.event_id);
    RETURN isokron.event_result(v_event) || jsonb_build_object('token_id', v_id, 'token_prefix', v_prefix);
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_revoke_token(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_id UUID := isokron.arg_uuid(p_args, 'token_id', false);
    v_prefix TEXT := isokron.arg_text(p_args, 'token_prefix', false, 32);
    v_token isokron.service_tokens;
    v_event hivex_foundation.event_log;
BEGIN
    SELECT * INTO v_token FROM isokron.service_tokens
        WHERE workspace_id = p_workspace_id
          AND (token_id = v_id OR (v_id IS NULL AND token_prefix = v_prefix))
        FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM isokron.fail('IKN01', 'no such token in this workspace (give its token_id or prefix)');
    END IF;
    IF v_token.revoked_at IS NOT NULL THEN
        PERFORM isokron.fail('IKC01', 'token ' || v_token.token_prefix || ' is already revoked');
    END IF;
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.token.revoked',
        jsonb_build_object('token_id', v_token.token_id, 'token_prefix', v_token.token_prefix));
    UPDATE isokron.service_tokens SET revoked_at = v_event.occurred_at
        WHERE workspace_id = p_workspace_id AND token_id = v_token.token_id;
    RETURN isokron.event_result(v_event)
        || jsonb_build_object('token_id', v_token.token_id, 'token_prefix', v_token.token_prefix);
END
$fn$;

-- ---------------------------------------------------------------- dispatch
CREATE OR REPLACE FUNCTION isokron.dispatch_op(
    p_op TEXT, p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_args IS NULL OR jsonb_typeof(p_args) <> 'object' THEN
        PERFORM isokron.fail('IKV01', 'arguments must be a JSON object');
    END IF;
    CASE p_op
        WHEN 'append_event' THEN RETURN isokron.op_append_event(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'write_scratchpad_entry' THEN RETURN isokron.op_write_scratchpad_entry(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'iso_node_create' THEN RETURN isokron.op_iso_node_create(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'iso_node_supersede' THEN RETURN isokron.op_iso_node_supersede(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'iso_link_create' THEN RETURN isokron.op_iso_link_create(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'propose_convention' THEN RETURN isokron.op_propose_convention(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'propose_policy_change' THEN RETURN isokron.op_propose_policy_change(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'raise_escalation' THEN RETURN isokron.op_raise_escalation(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'record_denial' THEN RETURN isokron.op_record_denial(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'decide_proposal' THEN RETURN isokron.op_decide_proposal(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'decide_escalation' THEN RETURN isokron.op_decide_escalation(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'set_charter' THEN RETURN isokron.op_set_charter(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'set_policies' THEN RETURN isokron.op_set_policies(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'set_capabilities' THEN RETURN isokron.op_set_capabilities(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'revise_constitution' THEN RETURN isokron.op_revise_constitution(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'issue_token' THEN RETURN isokron.op_issue_token(p_tenant, p_workspace_id, p_actor_id, p_args);
        WHEN 'revoke_token' THEN RETURN isokron.op_revoke_token(p_tenant, p_workspace_id, p_actor_id, p_args);
        ELSE PERFORM isokron.fail('IKV01', 'unknown write operation ' || quote_literal(p_op));
    END CASE;
    RETURN NULL;
END
$fn$;

-- Approving an escalation performs the held write as the actor who asked for it.
CREATE OR REPLACE FUNCTION isokron.op_decide_escalation(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_id UUID := isokron.arg_uuid(p_args, 'escalation_id', true);
    v_decision TEXT := isokron.arg_text(p_args, 'decision', true, 16);
    v_note TEXT := coalesce(isokron.arg_text(p_args, 'note', false, 5000), '');
    v_esc kronicle.escalations;
    v_applied JSONB;
    v_event hivex_foundation.event_log;
BEGIN
    IF v_decision NOT IN ('approved', 'rejected') THEN
        PERFORM isokron.fail('IKV01', 'decision must be approved or rejected');
    END IF;
    SELECT * INTO v_esc FROM kronicle.escalations
        WHERE workspace_id = p_workspace_id AND escalation_id = v_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM isokron.fail('IKN01', 'no escalation ' || v_id || ' in this workspace');
    END IF;
    IF v_esc.status <> 'open' THEN
        PERFORM isokron.fail('IKC01', 'escalation ' || v_id || ' was already ' || v_esc.status);
    END IF;
    v_event := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.escalation.decided',
        jsonb_build_object('escalation_id', v_id, 'decision', v_decision, 'note', v_note,
                           'tool', v_esc.tool));
    IF v_decision = 'approved' AND v_esc.request ? 'op' THEN
        IF (v_esc.request ->> 'op') IN ('decide_escalation', 'set_charter', 'set_policies',
                'set_capabilities', 'revise_constitution', 'issue_token', 'revoke_token') THEN
            PERFORM isokron.fail('IKV01', 'an escalation cannot carry a governance operation');
        END IF;
        v_applied := isokron.dispatch_op(v_esc.request ->> 'op', p_tenant, p_workspace_id,
            v_esc.actor_id, coalesce(v_esc.request -> 'args', '{}'::jsonb));
    END IF;
    UPDATE kronicle.escalations
        SET status = v_decision, decided_by = p_actor_id, decided_at = v_event.occurred_at,
            decision_note = v_note, decision_event_id = v_event.event_id, result = v_applied
        WHERE workspace_id = p_workspace_id AND escalation_id = v_id;
    RETURN isokron.event_result(v_event)
        || jsonb_build_object('escalation_id', v_id, 'status', v_decision, 'applied', v_applied);
END
$fn$;

-- Governance operations are the operator's; every other operation needs its capability
-- granted to the actor's kind in the workspace's matrix (invariant 6, enforced here as well as
-- in the gateway). An unknown operation or capability is refused.
CREATE OR REPLACE FUNCTION isokron.op_capability(p_op TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE p_op
        WHEN 'append_event' THEN 'cap_append_event'
        WHEN 'write_scratchpad_entry' THEN 'cap_write_agent_scratchpad'
        WHEN 'iso_node_create' THEN 'cap_iso_node_create'
        WHEN 'iso_node_supersede' THEN 'cap_iso_node_supersede'
        WHEN 'iso_link_create' THEN 'cap_iso_link_create'
        WHEN 'propose_convention' THEN 'cap_propose_convention'
        WHEN 'propose_policy_change' THEN 'cap_propose_policy_change'
        WHEN 'decide_proposal' THEN 'cap_decide_proposal'
        WHEN 'decide_escalation' THEN 'cap_decide_escalation'
        WHEN 'raise_escalation' THEN ''
        WHEN 'record_denial' THEN ''
    END
$fn$;

CREATE OR REPLACE FUNCTION isokron.is_governance_op(p_op TEXT) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT p_op IN ('set_charter', 'set_policies', 'set_capabilities', 'revise_constitution',
                    'issue_token', 'revoke_token')
$fn$;

CREATE OR REPLACE FUNCTION isokron.run_op(
    p_op TEXT, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB, p_idempotency_key TEXT,
    p_governance BOOLEAN
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_tenant UUID := isokron.enter_workspace(p_workspace_id);
    v_kind TEXT := isokron.require_actor(p_workspace_id, p_actor_id);
    v_cap TEXT;
    v_prior JSONB;
    v_result JSONB;
BEGIN
    IF p_governance THEN
        IF NOT isokron.is_governance_op(p_op) THEN
            PERFORM isokron.fail('IKV01', 'unknown governance operation ' || quote_literal(p_op));
        END IF;
        IF v_kind <> 'operator' THEN
            PERFORM isokron.fail('IKD01', 'governance operations are for operator actors only');
        END IF;
    ELSE
        v_cap := isokron.op_capability(p_op);
        IF v_cap IS NULL THEN
            PERFORM isokron.fail('IKV01', 'unknown write operation ' || quote_literal(p_op));
        END IF;
        IF v_cap <> '' AND NOT EXISTS (
                SELECT 1 FROM public.kora_capability_matrix
                WHERE workspace_id = p_workspace_id AND cap_name = v_cap
                  AND actor_kind = v_kind AND granted) THEN
            PERFORM isokron.fail('IKD01', 'capability ' || v_cap || ' is not granted to actor kind '
                || v_kind || ' in this workspace');
        END IF;
    END IF;
    v_prior := isokron.idem_claim(p_workspace_id, p_actor_id, p_idempotency_key, p_op, p_args);
    IF v_prior IS NOT NULL THEN
        RETURN v_prior;
    END IF;
    v_result := isokron.dispatch_op(p_op, v_tenant, p_workspace_id, p_actor_id, p_args);
    IF p_idempotency_key IS NOT NULL THEN
        PERFORM isokron.idem_store(p_workspace_id, p_actor_id, p_idempotency_key, v_result);
    END IF;
    RETURN v_result || jsonb_build_object('replayed', false);
END
$fn$;

-- ---------------------------------------------------------------- entry points
CREATE OR REPLACE FUNCTION isokron_api.write(
    p_op TEXT, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB, p_idempotency_key TEXT DEFAULT NULL
) RETURNS JSONB
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT isokron.run_op(p_op, p_workspace_id, p_actor_id, p_args, p_idempotency_key, false)
$fn$;

CREATE OR REPLACE FUNCTION isokron_api.govern(
    p_op TEXT, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB, p_idempotency_key TEXT DEFAULT NULL
) RETURNS JSONB
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT isokron.run_op(p_op, p_workspace_id, p_actor_id, p_args, p_idempotency_key, true)
$fn$;

CREATE OR REPLACE FUNCTION isokron_api.create_workspace(
    p_workspace_id TEXT, p_name TEXT, p_actors JSONB
) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_tenant UUID := gen_random_uuid();
    v_operator UUID;
    v_actors JSONB;
    v_event hivex_foundation.event_log;
BEGIN
    IF p_workspace_id IS NULL OR p_workspace_id !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' THEN
        PERFORM isokron.fail('IKV01', 'workspace id must be 1-128 letters, digits, _ . : or -, '
            || 'starting with a letter or digit');
    END IF;
    PERFORM set_config('app.current_workspace_id', p_workspace_id, true);
    IF EXISTS (SELECT 1 FROM public.workspaces WHERE id = p_workspace_id) THEN
        PERFORM isokron.fail('IKC01', 'workspace ' || quote_literal(p_workspace_id) || ' already exists');
    END IF;
    IF jsonb_typeof(p_actors) IS DISTINCT FROM 'array'
       OR NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_actors) a WHERE a ->> 'actor_kind' = 'operator') THEN
        PERFORM isokron.fail('IKV01', 'actors must be a list that includes an operator');
    END IF;
    INSERT INTO public.workspaces (id, name) VALUES (p_workspace_id, coalesce(nullif(p_name, ''), p_workspace_id));
    INSERT INTO hivex_foundation.tenant (tenant_id, clerk_org_id) VALUES (v_tenant, p_workspace_id);
    WITH ins AS (
        INSERT INTO public.actor_registry (workspace_id, actor_kind, display_name)
        SELECT p_workspace_id, a ->> 'actor_kind', coalesce(a ->> 'display_name', a ->> 'actor_kind')
        FROM jsonb_array_elements(p_actors) a
        RETURNING actor_id, actor_kind, display_name
    )
    SELECT jsonb_agg(jsonb_build_object('actor_id', actor_id, 'actor_kind', actor_kind,
                                        'display_name', display_name) ORDER BY actor_kind)
        INTO v_actors FROM ins;
    SELECT actor_id INTO v_operator FROM public.actor_registry
        WHERE workspace_id = p_workspace_id AND actor_kind = 'operator' ORDER BY created_at LIMIT 1;
    v_event := hivex_foundation.append_chain_event(v_tenant, v_operator, 'governance.workspace.created',
        jsonb_build_object('workspace_id', p_workspace_id, 'tenant_id', v_tenant, 'actors', v_actors));
    RETURN isokron.event_result(v_event) || jsonb_build_object(
        'workspace_id', p_workspace_id, 'tenant_id', v_tenant, 'operator_actor_id', v_operator,
        'actors', v_actors);
END
$fn$;

CREATE OR REPLACE FUNCTION isokron_api.authenticate_token(p_token_sha256 BYTEA) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v JSONB;
BEGIN
    -- The workspace is not known before the token is; look across workspaces, then scope back.
    PERFORM set_config('isokron.all_workspaces', 'on', true);
    SELECT jsonb_build_object(
        'workspace_id', t.workspace_id, 'actor_id', t.actor_id, 'actor_kind', a.actor_kind,
        'token_id', t.token_id, 'token_prefix', t.token_prefix,
        'status', CASE WHEN t.revoked_at IS NOT NULL THEN 'revoked'
                       WHEN t.expires_at IS NOT NULL AND t.expires_at <= now() THEN 'expired'
                       WHEN a.status <> 'active' THEN 'actor_disabled'
                       ELSE 'active' END)
        INTO v
        FROM isokron.service_tokens t
        JOIN public.actor_registry a ON a.workspace_id = t.workspace_id AND a.actor_id = t.actor_id
        WHERE t.token_hash = p_token_sha256;
    PERFORM set_config('isokron.all_workspaces', 'off', true);
    RETURN v;
END
$fn$;

CREATE OR REPLACE FUNCTION isokron_api.consume_rate_limit(
    p_workspace_id TEXT, p_actor_id UUID, p_limit INTEGER
) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_window TIMESTAMPTZ := date_trunc('minute', now());
    v_calls INTEGER;
BEGIN
    PERFORM set_config('app.current_workspace_id', p_workspace_id, true);
    INSERT INTO isokron.rate_limit_windows AS w (workspace_id, actor_id, window_start, calls)
        VALUES (p_workspace_id, p_actor_id, v_window, 1)
        ON CONFLICT (workspace_id, actor_id, window_start) DO UPDATE SET calls = w.calls + 1
        RETURNING calls INTO v_calls;
    IF v_calls = 1 THEN
        DELETE FROM isokron.rate_limit_windows
            WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id
              AND window_start < v_window - interval '1 hour';
    END IF;
    RETURN jsonb_build_object('allowed', v_calls <= p_limit, 'calls', v_calls, 'limit', p_limit,
        'retry_after_seconds',
        CASE WHEN v_calls <= p_limit THEN 0
             ELSE ceil(extract(epoch FROM (v_window + interval '1 minute' - now())))::int END);
END
$fn$;

CREATE OR REPLACE FUNCTION isokron_api.erase_event_payload(
    p_workspace_id TEXT, p_seq BIGINT, p_reason TEXT
) RETURNS VOID
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM hivex_foundation.erase_event_payload(isokron.enter_workspace(p_workspace_id), p_seq, p_reason);
END
$fn$;

RESET ROLE;
