-- IsoKron substrate: the write path of issue 9 (docs/security.md, docs/chain.md).
--  * Credential-authenticated writes: the gateway role's entry point takes the presented
--    token's SHA-256; the database resolves actor, actor kind and workspace from it in the same
--    transaction. The owner keeps isokron_api.write_as (names the actor; never granted).
--  * Dispatch by name: isokron.dispatch_op calls isokron.op_<name>; capability and governance
--    come from the table isokron.operation_registry.
--  * State bound to the chain: every op that writes a state row records the row's canonical
--    form (docs/chain.md, "Rows") in its event's payload under "state".
--  * event_log and chain_head carry workspace_id (not hashed: chain byte form v1 unchanged);
--    their RLS policies compare it with the GUC (no subquery).
--  * No function signature uses a table's row type (Citus drops such functions).
-- New error codes: IKU01 unauthenticated, IKW01 workspace mismatch.
SET LOCAL ROLE isokron_owner;
DO $on$ BEGIN PERFORM set_config('isokron.all_workspaces', 'on', true); END $on$;

-- ---------------------------------------------------------------- workspace_id on the chain
ALTER TABLE hivex_foundation.event_log ADD COLUMN IF NOT EXISTS workspace_id TEXT;
ALTER TABLE hivex_foundation.chain_head ADD COLUMN IF NOT EXISTS workspace_id TEXT;
-- The append-only trigger refuses every UPDATE; this one-off backfill of a new, unhashed column
-- runs with it disabled inside the migration's transaction.
ALTER TABLE hivex_foundation.event_log DISABLE TRIGGER event_log_append_only;
UPDATE hivex_foundation.event_log e SET workspace_id = t.clerk_org_id
    FROM hivex_foundation.tenant t
    WHERE t.tenant_id = e.tenant_id AND e.workspace_id IS NULL;
ALTER TABLE hivex_foundation.event_log ENABLE TRIGGER event_log_append_only;
UPDATE hivex_foundation.chain_head h SET workspace_id = t.clerk_org_id
    FROM hivex_foundation.tenant t
    WHERE t.tenant_id = h.tenant_id AND h.workspace_id IS NULL;
ALTER TABLE hivex_foundation.event_log ALTER COLUMN workspace_id SET NOT NULL;
ALTER TABLE hivex_foundation.chain_head ALTER COLUMN workspace_id SET NOT NULL;
CREATE INDEX IF NOT EXISTS idx_event_log_workspace_seq
    ON hivex_foundation.event_log (workspace_id, seq);

DO $rls_chain$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['event_log', 'chain_head'] LOOP
        EXECUTE 'DROP POLICY IF EXISTS workspace_isolation ON hivex_foundation.' || quote_ident(t);
        EXECUTE 'CREATE POLICY workspace_isolation ON hivex_foundation.' || quote_ident(t)
            || ' USING (workspace_id = current_setting(''app.current_workspace_id'', true))'
            || ' WITH CHECK (workspace_id = current_setting(''app.current_workspace_id'', true))';
    END LOOP;
END
$rls_chain$;

CREATE OR REPLACE FUNCTION hivex_foundation.create_chain_head() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO hivex_foundation.chain_head (tenant_id, workspace_id)
        VALUES (NEW.tenant_id, NEW.clerk_org_id)
        ON CONFLICT (tenant_id) DO NOTHING;
    RETURN NEW;
END
$fn$;

-- Erasure may change nothing but the payload (now including workspace_id in what must stay).
CREATE OR REPLACE FUNCTION hivex_foundation.refuse_event_log_change() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF TG_OP = 'UPDATE'
       AND current_setting('isokron.erasing_payload', true) = 'on'
       AND NEW.payload_erased AND NOT OLD.payload_erased
       AND NEW.payload_digest = OLD.payload_digest
       AND jsonb_typeof(NEW.payload) = 'object'
       AND NEW.payload -> 'erased' = 'true'::jsonb
       AND jsonb_typeof(NEW.payload -> 'reason') = 'string'
       AND jsonb_typeof(NEW.payload -> 'erased_at') = 'string'
       AND (SELECT count(*) FROM jsonb_object_keys(NEW.payload)) = 3
       AND (NEW.tenant_id, NEW.seq, NEW.event_id, NEW.actor_id, NEW.event_type, NEW.occurred_at,
            NEW.prev_event_hash, NEW.this_event_hash, NEW.workspace_id)
           = (OLD.tenant_id, OLD.seq, OLD.event_id, OLD.actor_id, OLD.event_type, OLD.occurred_at,
              OLD.prev_event_hash, OLD.this_event_hash, OLD.workspace_id) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING
        MESSAGE = 'hivex_foundation.event_log is append-only: ' || TG_OP || ' refused',
        ERRCODE = 'IKA01',
        HINT = 'Events enter the log only through hivex_foundation.append_chain_event().';
END
$fn$;

-- ---------------------------------------------------------------- the append (JSONB result)
DROP FUNCTION IF EXISTS isokron.event_result(hivex_foundation.event_log);
DROP FUNCTION IF EXISTS hivex_foundation.append_chain_event(UUID, UUID, TEXT, JSONB);

-- The ONLY way an event enters the log (invariant 3). p_event_id lets an operation name the
-- event in the rows it writes (approved_event_id) before the event, which records those rows,
-- is appended. Returns {event_id, seq, event_hash, occurred_at, tenant_id, workspace_id}.
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
    -- The head row's lock serializes this tenant's appends; other tenants are not blocked.
    SELECT last_seq, last_hash, workspace_id INTO v_seq, v_prev, v_ws
        FROM hivex_foundation.chain_head WHERE tenant_id = p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'append_chain_event: tenant has no chain head in this workspace scope'
            USING ERRCODE = 'IKN01';
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
        WHERE tenant_id = p_tenant;
    RETURN jsonb_build_object('event_id', v_id, 'seq', v_seq, 'event_hash', encode(v_hash, 'hex'),
        'occurred_at', v_at, 'tenant_id', p_tenant, 'workspace_id', v_ws);
END
$fn$;
REVOKE ALL ON FUNCTION hivex_foundation.append_chain_event(UUID, UUID, TEXT, JSONB, UUID) FROM PUBLIC;

CREATE OR REPLACE FUNCTION isokron.event_result(p_event JSONB) RETURNS JSONB
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT jsonb_build_object('event_id', p_event -> 'event_id', 'seq', p_event -> 'seq',
                              'event_hash', p_event -> 'event_hash')
$fn$;

-- ---------------------------------------------------------------- canonical rows (docs/chain.md)
-- field(s) = uint32be(len(utf8 s)) || utf8 s; a column is field(name) || 0x00 (NULL) or
-- field(name) || 0x01 || field(canonical text of the value).
CREATE OR REPLACE FUNCTION hivex_foundation.row_field(p_name TEXT, p_value TEXT) RETURNS BYTEA
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT int4send(octet_length(convert_to(p_name, 'UTF8'))) || convert_to(p_name, 'UTF8')
        || CASE WHEN p_value IS NULL THEN '\x00'::bytea
                ELSE '\x01'::bytea || int4send(octet_length(convert_to(p_value, 'UTF8')))
                     || convert_to(p_value, 'UTF8') END
$fn$;

-- A row's record: d = hex SHA-256 of "isokron-row-v1" 0x00 || field(table) || columns;
-- c = the first 8 hex digits of SHA-256 of each column, in the table's column order.
CREATE OR REPLACE FUNCTION hivex_foundation.row_record(p_table TEXT, p_fields BYTEA[]) RETURNS JSONB
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT jsonb_build_object(
        'd', encode(sha256('\x69736f6b726f6e2d726f772d763100'::bytea
                           || int4send(octet_length(convert_to(p_table, 'UTF8')))
                           || convert_to(p_table, 'UTF8')
                           || coalesce((SELECT string_agg(f, ''::bytea ORDER BY i)
                                        FROM unnest(p_fields) WITH ORDINALITY u(f, i)), ''::bytea)),
                    'hex'),
        'c', coalesce((SELECT string_agg(substr(encode(sha256(f), 'hex'), 1, 8), '' ORDER BY i)
                       FROM unnest(p_fields) WITH ORDINALITY u(f, i)), ''))
$fn$;

-- The state tables, their workspace column, key and canonical column order. Python holds the
-- same list (isokron.chain.state.STATE_TABLES); a test checks they agree. record_sql is built
-- below from the catalog: $1 = workspace id, $2 = keys (text[]; NULL = every row).
CREATE TABLE IF NOT EXISTS isokron.state_tables (
    table_name   TEXT PRIMARY KEY,
    ws_column    TEXT NOT NULL,
    key_columns  TEXT[] NOT NULL,
    columns      TEXT[] NOT NULL,
    record_sql   TEXT NOT NULL DEFAULT ''
);
REVOKE ALL ON isokron.state_tables FROM PUBLIC;

INSERT INTO isokron.state_tables (table_name, ws_column, key_columns, columns) VALUES
    ('public.workspaces', 'id', ARRAY['id'], ARRAY['id', 'name', 'created_at']),
    ('hivex_foundation.tenant', 'clerk_org_id', ARRAY['clerk_org_id'],
        ARRAY['tenant_id', 'clerk_org_id', 'created_at']),
    ('public.actor_registry', 'workspace_id', ARRAY['actor_id'],
        ARRAY['workspace_id', 'actor_id', 'actor_kind', 'display_name', 'status', 'created_at']),
    ('isokron.service_tokens', 'workspace_id', ARRAY['token_id'],
        ARRAY['workspace_id', 'token_id', 'actor_id', 'token_prefix', 'token_hash', 'label',
              'created_at', 'expires_at', 'revoked_at', 'approved_event_id']),
    ('public.kora_role_charter', 'workspace_id', ARRAY['charter_id'],
        ARRAY['workspace_id', 'charter_id', 'version', 'content_md', 'content_jsonb',
              'content_hash', 'is_active', 'created_at', 'approved_event_id']),
    ('public.kora_policy_registry', 'workspace_id', ARRAY['policy_key'],
        ARRAY['workspace_id', 'policy_key', 'policy_value', 'description', 'updated_at',
              'approved_event_id']),
    ('public.kora_capability_matrix', 'workspace_id', ARRAY['cap_name', 'actor_kind'],
        ARRAY['workspace_id', 'cap_name', 'actor_kind', 'granted', 'cap_group', 'description',
              'updated_at', 'approved_event_id']),
    ('kronicle.workspace_constitution_revisions', 'workspace_id', ARRAY['revision_id'],
        ARRAY['workspace_id', 'revision_id', 'revision_number', 'rules', 'rules_hash',
              'created_at', 'approved_event_id']),
    ('kronicle.agent_scratchpad_entries', 'workspace_id', ARRAY['entry_id'],
        ARRAY['workspace_id', 'entry_id', 'actor_id', 'session_id', 'kind', 'visibility_scope',
              'summary', 'content', 'content_uri', 'content_hash', 'status', 'created_at',
              'approved_event_id']),
    ('kronicle.iso_nodes', 'workspace_id', ARRAY['node_id'],
        ARRAY['workspace_id', 'node_id', 'node_type', 'title', 'content', 'properties', 'status',
              'superseded_by', 'created_by', 'created_at', 'approved_event_id',
              'superseded_event_id']),
    ('kronicle.iso_links', 'workspace_id', ARRAY['link_id'],
        ARRAY['workspace_id', 'link_id', 'from_node_id', 'to_node_id', 'link_type', 'properties',
              'created_by', 'created_at', 'approved_event_id']),
    ('kronicle.convention_proposals', 'workspace_id', ARRAY['proposal_id'],
        ARRAY['workspace_id', 'proposal_id', 'actor_id', 'title', 'body', 'rationale', 'status',
              'decided_by', 'decided_at', 'decision_note', 'created_at', 'approved_event_id',
              'decision_event_id']),
    ('kronicle.policy_change_proposals', 'workspace_id', ARRAY['proposal_id'],
        ARRAY['workspace_id', 'proposal_id', 'actor_id', 'policy_key', 'proposed_value',
              'rationale', 'status', 'decided_by', 'decided_at', 'decision_note', 'created_at',
              'approved_event_id', 'decision_event_id']),
    ('kronicle.escalations', 'workspace_id', ARRAY['escalation_id'],
        ARRAY['workspace_id', 'escalation_id', 'actor_id', 'tool', 'rule_id', 'reason', 'request',
              'status', 'decided_by', 'decided_at', 'decision_note', 'result', 'created_at',
              'approved_event_id', 'decision_event_id'])
ON CONFLICT (table_name) DO UPDATE
    SET ws_column = EXCLUDED.ws_column, key_columns = EXCLUDED.key_columns,
        columns = EXCLUDED.columns;

-- The canonical text of a column of a given type (docs/chain.md): text as is; uuid, integers
-- and booleans as PostgreSQL prints them; timestamptz as microseconds since 1970 (decimal);
-- bytea as lower-case hex; jsonb as PostgreSQL's jsonb text.
CREATE OR REPLACE FUNCTION isokron.canonical_text_sql(p_expr TEXT, p_type TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    RETURN CASE p_type
        WHEN 'text' THEN p_expr
        WHEN 'timestamp with time zone'
            THEN '((extract(epoch FROM ' || p_expr || ') * 1000000)::bigint)::text'
        WHEN 'bytea' THEN 'encode(' || p_expr || ', ''hex'')'
        WHEN 'uuid' THEN p_expr || '::text'
        WHEN 'integer' THEN p_expr || '::text'
        WHEN 'bigint' THEN p_expr || '::text'
        WHEN 'boolean' THEN p_expr || '::text'
        WHEN 'jsonb' THEN p_expr || '::text'
    END;
END
$fn$;

DO $record_sql$
DECLARE
    t RECORD;
    v_cols TEXT;
    v_key TEXT;
    v_filter TEXT;
    v_type TEXT;
    c TEXT;
BEGIN
    FOR t IN SELECT * FROM isokron.state_tables LOOP
        v_cols := '';
        FOREACH c IN ARRAY t.columns LOOP
            SELECT format_type(a.atttypid, a.atttypmod) INTO v_type FROM pg_attribute a
                WHERE a.attrelid = t.table_name::regclass AND a.attname = c AND NOT a.attisdropped;
            IF isokron.canonical_text_sql('r.' || quote_ident(c), v_type) IS NULL THEN
                RAISE EXCEPTION 'state table % column % has no canonical form (type %)',
                    t.table_name, c, v_type;
            END IF;
            v_cols := v_cols || CASE WHEN v_cols = '' THEN '' ELSE ', ' END
                || 'hivex_foundation.row_field(' || quote_literal(c) || ', '
                || isokron.canonical_text_sql('r.' || quote_ident(c), v_type) || ')';
        END LOOP;
        IF array_length(t.key_columns, 1) = 1 THEN
            SELECT format_type(a.atttypid, a.atttypmod) INTO v_type FROM pg_attribute a
                WHERE a.attrelid = t.table_name::regclass AND a.attname = t.key_columns[1];
            v_key := 'r.' || quote_ident(t.key_columns[1]) || '::text';
            v_filter := 'r.' || quote_ident(t.key_columns[1]) || ' = ANY(CAST($2 AS ' || v_type || '[]))';
        ELSE
            v_key := array_to_string(ARRAY(SELECT 'r.' || quote_ident(k) || '::text'
                                           FROM unnest(t.key_columns) k), ' || ''/'' || ');
            v_filter := '(' || v_key || ') = ANY($2)';
        END IF;
        UPDATE isokron.state_tables SET record_sql =
            'SELECT coalesce(jsonb_object_agg(' || v_key || ', hivex_foundation.row_record('
            || quote_literal(t.table_name) || ', ARRAY[' || v_cols || '])), ''{}''::jsonb)'
            || ' FROM ' || t.table_name || ' r WHERE r.' || quote_ident(t.ws_column) || ' = $1'
            || ' AND ($2 IS NULL OR ' || v_filter || ')'
            WHERE table_name = t.table_name;
    END LOOP;
END
$record_sql$;

-- Records of one table's rows in a workspace: {key: record}; a key asked for whose row does not
-- exist maps to null (the row was removed). p_keys NULL: every row of the workspace.
CREATE OR REPLACE FUNCTION isokron.state_of(p_table TEXT, p_workspace_id TEXT, p_keys TEXT[])
RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_sql TEXT;
    v JSONB;
BEGIN
    SELECT record_sql INTO v_sql FROM isokron.state_tables WHERE table_name = p_table;
    IF NOT FOUND THEN
        PERFORM isokron.fail('IKV01', 'not a state table: ' || p_table);
    END IF;
    EXECUTE v_sql INTO v USING p_workspace_id, p_keys;
    IF p_keys IS NULL THEN
        RETURN v;
    END IF;
    RETURN coalesce((SELECT jsonb_object_agg(k, v -> k) FROM unnest(p_keys) k), '{}'::jsonb);
END
$fn$;

-- Add the records of p_keys of p_table to a payload's "state" object.
CREATE OR REPLACE FUNCTION isokron.with_state(
    p_payload JSONB, p_table TEXT, p_workspace_id TEXT, p_keys TEXT[]
) RETURNS JSONB
LANGUAGE sql AS $fn$
    SELECT p_payload || jsonb_build_object('state',
        coalesce(p_payload -> 'state', '{}'::jsonb) || jsonb_build_object(p_table,
            coalesce(p_payload -> 'state' -> p_table, '{}'::jsonb)
            || isokron.state_of(p_table, p_workspace_id, p_keys)))
$fn$;

-- ---------------------------------------------------------------- operation registry
CREATE TABLE IF NOT EXISTS isokron.operation_registry (
    operation   TEXT PRIMARY KEY CHECK (operation ~ '^[a-z][a-z0-9_]{0,62}$'),
    capability  TEXT NULL,
    governance  BOOLEAN NOT NULL
);
REVOKE ALL ON isokron.operation_registry FROM PUBLIC;
INSERT INTO isokron.operation_registry (operation, capability, governance) VALUES
    ('append_event', 'cap_append_event', false),
    ('write_scratchpad_entry', 'cap_write_agent_scratchpad', false),
    ('iso_node_create', 'cap_iso_node_create', false),
    ('iso_node_supersede', 'cap_iso_node_supersede', false),
    ('iso_link_create', 'cap_iso_link_create', false),
    ('propose_convention', 'cap_propose_convention', false),
    ('propose_policy_change', 'cap_propose_policy_change', false),
    ('raise_escalation', NULL, false),
    ('record_denial', NULL, false),
    ('decide_proposal', 'cap_decide_proposal', true),
    ('decide_escalation', 'cap_decide_escalation', true),
    ('set_charter', NULL, true),
    ('set_policies', NULL, true),
    ('set_capabilities', NULL, true),
    ('revise_constitution', NULL, true),
    ('issue_token', NULL, true),
    ('revoke_token', NULL, true)
ON CONFLICT (operation) DO UPDATE
    SET capability = EXCLUDED.capability, governance = EXCLUDED.governance;

DROP FUNCTION IF EXISTS isokron.op_capability(TEXT);
DROP FUNCTION IF EXISTS isokron.is_governance_op(TEXT);

-- ---------------------------------------------------------------- authentication
-- The principal of a presented token (its SHA-256): refuses unknown, revoked or expired tokens
-- and disabled actors with IKU01. Returns {workspace_id, actor_id, actor_kind, token_id}.
CREATE OR REPLACE FUNCTION isokron.principal_of_token(p_token_sha256 BYTEA) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v JSONB;
BEGIN
    IF p_token_sha256 IS NULL OR octet_length(p_token_sha256) <> 32 THEN
        PERFORM isokron.fail('IKU01', 'a write needs the SHA-256 (32 bytes) of a service token');
    END IF;
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
    IF v IS NULL THEN
        PERFORM isokron.fail('IKU01', 'the service token is not known to this substrate');
    END IF;
    IF v ->> 'status' <> 'active' THEN
        PERFORM isokron.fail('IKU01', 'the service token ' || (v ->> 'token_prefix') || '... is '
            || replace(v ->> 'status', '_', ' ') || '; ask an operator for a new one');
    END IF;
    RETURN v;
END
$fn$;

-- ---------------------------------------------------------------- run and dispatch
DROP FUNCTION IF EXISTS isokron.run_op(TEXT, TEXT, UUID, JSONB, TEXT, BOOLEAN);

-- Authorize (registry: governance needs an operator, a capability must be granted to the
-- actor's kind), claim the idempotency key, dispatch. An unknown operation is refused.
CREATE OR REPLACE FUNCTION isokron.run_op(
    p_op TEXT, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB, p_idempotency_key TEXT
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_tenant UUID := isokron.enter_workspace(p_workspace_id);
    v_kind TEXT := isokron.require_actor(p_workspace_id, p_actor_id);
    v_op isokron.operation_registry;
    v_prior JSONB;
    v_result JSONB;
BEGIN
    SELECT * INTO v_op FROM isokron.operation_registry WHERE operation = p_op;
    IF NOT FOUND THEN
        PERFORM isokron.fail('IKV01', 'unknown write operation ' || quote_literal(p_op));
    END IF;
    IF v_op.governance AND v_kind <> 'operator' THEN
        PERFORM isokron.fail('IKD01', 'operation ' || p_op || ' needs an operator''s credential, not '
            || v_kind || '''s');
    END IF;
    IF v_op.capability IS NOT NULL AND NOT isokron.kind_has_capability(
            p_workspace_id, v_kind, v_op.capability) THEN
        PERFORM isokron.fail('IKD01', 'capability ' || v_op.capability || ' is not granted to actor kind '
            || v_kind || ' in this workspace');
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

CREATE OR REPLACE FUNCTION isokron.kind_has_capability(
    p_workspace_id TEXT, p_kind TEXT, p_capability TEXT
) RETURNS BOOLEAN
LANGUAGE sql STABLE AS $fn$
    SELECT EXISTS (SELECT 1 FROM public.kora_capability_matrix
                   WHERE workspace_id = p_workspace_id AND cap_name = p_capability
                     AND actor_kind = p_kind AND granted)
$fn$;

-- isokron.op_<name>(tenant, workspace, actor, args) for every registered operation.
CREATE OR REPLACE FUNCTION isokron.dispatch_op(
    p_op TEXT, p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_result JSONB;
BEGIN
    IF p_args IS NULL OR jsonb_typeof(p_args) <> 'object' THEN
        PERFORM isokron.fail('IKV01', 'arguments must be a JSON object');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM isokron.operation_registry WHERE operation = p_op) THEN
        PERFORM isokron.fail('IKV01', 'unknown write operation ' || quote_literal(p_op));
    END IF;
    IF to_regprocedure('isokron.' || quote_ident('op_' || p_op) || '(uuid, text, uuid, jsonb)') IS NULL THEN
        PERFORM isokron.fail('IKV01', 'operation ' || p_op || ' is registered but isokron.op_'
            || p_op || ' does not exist');
    END IF;
    EXECUTE 'SELECT isokron.' || quote_ident('op_' || p_op) || '($1, $2, $3, $4)'
        INTO v_result USING p_tenant, p_workspace_id, p_actor_id, p_args;
    RETURN v_result;
END
$fn$;

-- ---------------------------------------------------------------- agent operations
-- Each writes its rows first (approved_event_id = the event id it then appends), and the event
-- records those rows' canonical forms, so verify can prove the rows are what the chain says.
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
    IF split_part(v_type, '.', 1) IN ('governance', 'gateway', 'substrate') THEN
        PERFORM isokron.fail('IKV01', 'event types governance.*, gateway.* and substrate.* are '
            || 'reserved for the substrate');
    END IF;
    IF v_payload ? 'state' THEN
        PERFORM isokron.fail('IKV01', 'the payload key state is reserved for the substrate');
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
    v_eid UUID := gen_random_uuid();
    v_ev JSONB;
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
    INSERT INTO kronicle.agent_scratchpad_entries (workspace_id, entry_id, actor_id, session_id, kind,
        visibility_scope, summary, content, content_uri, content_hash, approved_event_id)
    VALUES (p_workspace_id, v_entry, p_actor_id, v_session, v_kind, v_scope, v_summary, v_content,
        v_uri, v_hash, v_eid);
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.scratchpad.written',
        isokron.with_state(
            jsonb_build_object('entry_id', v_entry, 'kind', v_kind, 'visibility_scope', v_scope,
                               'summary', v_summary, 'content_hash', v_hash, 'content_uri', v_uri,
                               'session_id', v_session),
            'kronicle.agent_scratchpad_entries', p_workspace_id, ARRAY[v_entry::text]),
        v_eid);
    RETURN isokron.event_result(v_ev) || jsonb_build_object('entry_id', v_entry, 'content_hash', v_hash);
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
    v_eid UUID := gen_random_uuid();
    v_ev JSONB;
BEGIN
    IF v_type !~ '^[a-z][a-z0-9_.-]{0,63}$' THEN
        PERFORM isokron.fail('IKV01', 'node_type must be lower-case letters, digits, _ . or - (e.g. decision)');
    END IF;
    INSERT INTO kronicle.iso_nodes (workspace_id, node_id, node_type, title, content, properties,
        created_by, approved_event_id)
    VALUES (p_workspace_id, v_node, v_type, v_title, v_content, v_props, p_actor_id, v_eid);
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.node.created',
        isokron.with_state(
            jsonb_build_object('node_id', v_node, 'node_type', v_type, 'title', v_title,
                               'content_sha256', isokron.text_sha256_hex(v_content)),
            'kronicle.iso_nodes', p_workspace_id, ARRAY[v_node::text]),
        v_eid);
    RETURN isokron.event_result(v_ev) || jsonb_build_object('node_id', v_node);
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
    v_eid UUID := gen_random_uuid();
    v_ev JSONB;
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
    INSERT INTO kronicle.iso_nodes (workspace_id, node_id, node_type, title, content, properties,
        created_by, approved_event_id)
    VALUES (p_workspace_id, v_new, v_old.node_type, v_title, v_content, v_props, p_actor_id, v_eid);
    UPDATE kronicle.iso_nodes
        SET status = 'superseded', superseded_by = v_new, superseded_event_id = v_eid
        WHERE workspace_id = p_workspace_id AND node_id = v_old_id;
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.node.superseded',
        isokron.with_state(
            jsonb_build_object('node_id', v_old_id, 'superseded_by', v_new,
                               'node_type', v_old.node_type, 'title', v_title, 'reason', v_reason,
                               'content_sha256', isokron.text_sha256_hex(v_content)),
            'kronicle.iso_nodes', p_workspace_id, ARRAY[v_old_id::text, v_new::text]),
        v_eid);
    RETURN isokron.event_result(v_ev)
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
    v_eid UUID := gen_random_uuid();
    v_ev JSONB;
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
    INSERT INTO kronicle.iso_links (workspace_id, link_id, from_node_id, to_node_id, link_type,
        properties, created_by, approved_event_id)
    VALUES (p_workspace_id, v_link, v_from, v_to, v_type, v_props, p_actor_id, v_eid);
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.link.created',
        isokron.with_state(
            jsonb_build_object('link_id', v_link, 'from_node_id', v_from, 'to_node_id', v_to,
                               'link_type', v_type),
            'kronicle.iso_links', p_workspace_id, ARRAY[v_link::text]),
        v_eid);
    RETURN isokron.event_result(v_ev) || jsonb_build_object('link_id', v_link);
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
    v_eid UUID := gen_random_uuid();
    v_ev JSONB;
BEGIN
    INSERT INTO kronicle.convention_proposals (workspace_id, proposal_id, actor_id, title, body,
        rationale, approved_event_id)
    VALUES (p_workspace_id, v_id, p_actor_id, v_title, v_body, v_rationale, v_eid);
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.convention.proposed',
        isokron.with_state(
            jsonb_build_object('proposal_id', v_id, 'title', v_title,
                               'body_sha256', isokron.text_sha256_hex(v_body)),
            'kronicle.convention_proposals', p_workspace_id, ARRAY[v_id::text]),
        v_eid);
    RETURN isokron.event_result(v_ev) || jsonb_build_object('proposal_id', v_id, 'status', 'pending');
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
    v_eid UUID := gen_random_uuid();
    v_ev JSONB;
BEGIN
    IF v_value IS NULL THEN
        PERFORM isokron.fail('IKV01', 'argument proposed_value is required');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM public.kora_policy_registry
                   WHERE workspace_id = p_workspace_id AND policy_key = v_key) THEN
        PERFORM isokron.fail('IKN01', 'no policy ' || quote_literal(v_key) || ' in this workspace');
    END IF;
    INSERT INTO kronicle.policy_change_proposals (workspace_id, proposal_id, actor_id, policy_key,
        proposed_value, rationale, approved_event_id)
    VALUES (p_workspace_id, v_id, p_actor_id, v_key, v_value, v_rationale, v_eid);
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.policy_change.proposed',
        isokron.with_state(
            jsonb_build_object('proposal_id', v_id, 'policy_key', v_key, 'proposed_value', v_value),
            'kronicle.policy_change_proposals', p_workspace_id, ARRAY[v_id::text]),
        v_eid);
    RETURN isokron.event_result(v_ev) || jsonb_build_object('proposal_id', v_id, 'status', 'pending');
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
    v_eid UUID := gen_random_uuid();
    v_ev JSONB;
BEGIN
    INSERT INTO kronicle.escalations (workspace_id, escalation_id, actor_id, tool, rule_id, reason,
        request, approved_event_id)
    VALUES (p_workspace_id, v_id, p_actor_id, v_tool, v_rule, v_reason, v_request, v_eid);
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'kora.escalation.raised',
        isokron.with_state(
            jsonb_build_object('escalation_id', v_id, 'tool', v_tool, 'rule_id', v_rule,
                               'reason', v_reason,
                               'request_sha256', encode(sha256(convert_to(v_request::text, 'UTF8')), 'hex')),
            'kronicle.escalations', p_workspace_id, ARRAY[v_id::text]),
        v_eid);
    RETURN isokron.event_result(v_ev) || jsonb_build_object('escalation_id', v_id, 'status', 'open');
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
    v_eid UUID := gen_random_uuid();
    v_now TIMESTAMPTZ := clock_timestamp();
    v_payload JSONB;
    v_ev JSONB;
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
    v_payload := jsonb_build_object('proposal_kind', v_kind, 'proposal_id', v_id,
        'decision', v_decision, 'note', v_note, 'policy_key', v_key,
        'policy_value', CASE WHEN v_decision = 'accepted' THEN v_value END);
    IF v_kind = 'convention' THEN
        UPDATE kronicle.convention_proposals
            SET status = v_decision, decided_by = p_actor_id, decided_at = v_now,
                decision_note = v_note, decision_event_id = v_eid
            WHERE workspace_id = p_workspace_id AND proposal_id = v_id;
        v_payload := isokron.with_state(v_payload, 'kronicle.convention_proposals',
            p_workspace_id, ARRAY[v_id::text]);
    ELSE
        UPDATE kronicle.policy_change_proposals
            SET status = v_decision, decided_by = p_actor_id, decided_at = v_now,
                decision_note = v_note, decision_event_id = v_eid
            WHERE workspace_id = p_workspace_id AND proposal_id = v_id;
        v_payload := isokron.with_state(v_payload, 'kronicle.policy_change_proposals',
            p_workspace_id, ARRAY[v_id::text]);
        IF v_decision = 'accepted' THEN
            UPDATE public.kora_policy_registry
                SET policy_value = v_value, updated_at = v_now, approved_event_id = v_eid
                WHERE workspace_id = p_workspace_id AND policy_key = v_key;
            v_payload := isokron.with_state(v_payload, 'public.kora_policy_registry',
                p_workspace_id, ARRAY[v_key]);
        END IF;
    END IF;
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.proposal.decided',
        v_payload, v_eid);
    RETURN isokron.event_result(v_ev)
        || jsonb_build_object('proposal_id', v_id, 'status', v_decision);
END
$fn$;

-- Approving an escalation performs the held write. It runs as the actor who asked for it only if
-- that actor is still active and its kind holds the operation's capability now; otherwise the
-- operator must pass override = true, and the held write then runs as the operator, the
-- decision event recording "override": true (issue 9, item 5).
CREATE OR REPLACE FUNCTION isokron.op_decide_escalation(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_id UUID := isokron.arg_uuid(p_args, 'escalation_id', true);
    v_decision TEXT := isokron.arg_text(p_args, 'decision', true, 16);
    v_note TEXT := coalesce(isokron.arg_text(p_args, 'note', false, 5000), '');
    v_override BOOLEAN := coalesce((p_args -> 'override') = 'true'::jsonb, false);
    v_esc kronicle.escalations;
    v_op isokron.operation_registry;
    v_runner UUID;
    v_kind TEXT;
    v_applied JSONB;
    v_eid UUID := gen_random_uuid();
    v_now TIMESTAMPTZ := clock_timestamp();
    v_ev JSONB;
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
    IF v_decision = 'approved' AND v_esc.request ? 'op' THEN
        SELECT * INTO v_op FROM isokron.operation_registry WHERE operation = v_esc.request ->> 'op';
        IF NOT FOUND OR v_op.governance THEN
            PERFORM isokron.fail('IKV01', 'an escalation cannot carry a governance or unknown operation');
        END IF;
        SELECT actor_kind INTO v_kind FROM public.actor_registry
            WHERE workspace_id = p_workspace_id AND actor_id = v_esc.actor_id AND status = 'active';
        IF v_kind IS NOT NULL AND (v_op.capability IS NULL
                OR isokron.kind_has_capability(p_workspace_id, v_kind, v_op.capability)) THEN
            v_runner := v_esc.actor_id;
            v_override := false;
        ELSIF v_override THEN
            v_runner := p_actor_id;
        ELSE
            PERFORM isokron.fail('IKD01', 'the actor who raised escalation ' || v_id || ' ('
                || coalesce(v_kind, 'no longer active') || ') does not hold '
                || coalesce(v_op.capability, 'the authority') || ' now; approve it with override '
                || 'to run it as the operator, or reject it');
        END IF;
        v_applied := isokron.dispatch_op(v_esc.request ->> 'op', p_tenant, p_workspace_id,
            v_runner, coalesce(v_esc.request -> 'args', '{}'::jsonb));
    ELSE
        v_override := false;
    END IF;
    UPDATE kronicle.escalations
        SET status = v_decision, decided_by = p_actor_id, decided_at = v_now,
            decision_note = v_note, decision_event_id = v_eid, result = v_applied
        WHERE workspace_id = p_workspace_id AND escalation_id = v_id;
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.escalation.decided',
        isokron.with_state(
            jsonb_build_object('escalation_id', v_id, 'decision', v_decision, 'note', v_note,
                               'tool', v_esc.tool, 'override', v_override,
                               'ran_as', v_runner, 'applied_event_id', v_applied -> 'event_id'),
            'kronicle.escalations', p_workspace_id, ARRAY[v_id::text]),
        v_eid);
    RETURN isokron.event_result(v_ev)
        || jsonb_build_object('escalation_id', v_id, 'status', v_decision, 'applied', v_applied,
                              'override', v_override);
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
    v_previous TEXT[];
    v_eid UUID := gen_random_uuid();
    v_ev JSONB;
BEGIN
    IF jsonb_typeof(v_sections -> 'identity') IS DISTINCT FROM 'string'
       OR jsonb_typeof(v_sections -> 'authority_can_do') IS DISTINCT FROM 'array'
       OR jsonb_typeof(v_sections -> 'authority_cannot_do') IS DISTINCT FROM 'array' THEN
        PERFORM isokron.fail('IKV01', 'sections needs identity (text), authority_can_do and '
            || 'authority_cannot_do (lists)');
    END IF;
    SELECT coalesce(max(version), 0) + 1 INTO v_version FROM public.kora_role_charter
        WHERE workspace_id = p_workspace_id;
    SELECT coalesce(array_agg(charter_id::text), ARRAY[]::text[]) INTO v_previous
        FROM public.kora_role_charter WHERE workspace_id = p_workspace_id AND is_active;
    UPDATE public.kora_role_charter SET is_active = false
        WHERE workspace_id = p_workspace_id AND is_active;
    INSERT INTO public.kora_role_charter (workspace_id, charter_id, version, content_md, content_jsonb,
        content_hash, is_active, approved_event_id)
    VALUES (p_workspace_id, v_id, v_version, v_md, jsonb_build_object('sections', v_sections), v_hash,
        true, v_eid);
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.charter.set',
        isokron.with_state(
            jsonb_build_object('charter_id', v_id, 'version', v_version, 'content_hash', v_hash),
            'public.kora_role_charter', p_workspace_id, v_previous || v_id::text),
        v_eid);
    RETURN isokron.event_result(v_ev)
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
    v_changes JSONB := '[]'::jsonb;
    v_old JSONB;
    v_eid UUID := gen_random_uuid();
    v_now TIMESTAMPTZ := clock_timestamp();
    v_ev JSONB;
BEGIN
    IF jsonb_typeof(v_policies) IS DISTINCT FROM 'array' OR jsonb_array_length(v_policies) = 0 THEN
        PERFORM isokron.fail('IKV01', 'policies must be a non-empty list of {policy_key, policy_value}');
    END IF;
    FOR v_item IN SELECT * FROM jsonb_array_elements(v_policies) LOOP
        IF jsonb_typeof(v_item) IS DISTINCT FROM 'object' THEN
            PERFORM isokron.fail('IKV01', 'every policy must be an object {policy_key, policy_value}');
        END IF;
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
    INSERT INTO public.kora_policy_registry AS r (workspace_id, policy_key, policy_value, description,
        updated_at, approved_event_id)
    SELECT p_workspace_id, e ->> 'policy_key', e -> 'policy_value', coalesce(e ->> 'description', ''),
        v_now, v_eid
    FROM jsonb_array_elements(v_policies) e
    ON CONFLICT (workspace_id, policy_key) DO UPDATE
        SET policy_value = EXCLUDED.policy_value,
            description = CASE WHEN EXCLUDED.description = '' THEN r.description ELSE EXCLUDED.description END,
            updated_at = EXCLUDED.updated_at, approved_event_id = EXCLUDED.approved_event_id;
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.policy.set',
        isokron.with_state(jsonb_build_object('changes', v_changes),
            'public.kora_policy_registry', p_workspace_id,
            ARRAY(SELECT e ->> 'policy_key' FROM jsonb_array_elements(v_policies) e)),
        v_eid);
    RETURN isokron.event_result(v_ev) || jsonb_build_object('count', jsonb_array_length(v_policies));
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.op_set_capabilities(
    p_tenant UUID, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB
) RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_rows JSONB := p_args -> 'capabilities';
    v_eid UUID := gen_random_uuid();
    v_now TIMESTAMPTZ := clock_timestamp();
    v_ev JSONB;
BEGIN
    IF jsonb_typeof(v_rows) IS DISTINCT FROM 'array' OR jsonb_array_length(v_rows) = 0 THEN
        PERFORM isokron.fail('IKV01', 'capabilities must be a non-empty list of '
            || '{cap_name, actor_kind, granted, cap_group}');
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(v_rows) e
               WHERE jsonb_typeof(e) IS DISTINCT FROM 'object'
                  OR jsonb_typeof(e -> 'granted') IS DISTINCT FROM 'boolean'
                  OR jsonb_typeof(e -> 'cap_name') IS DISTINCT FROM 'string'
                  OR jsonb_typeof(e -> 'actor_kind') IS DISTINCT FROM 'string') THEN
        PERFORM isokron.fail('IKV01', 'every capability row needs cap_name, actor_kind and granted (true/false)');
    END IF;
    INSERT INTO public.kora_capability_matrix AS m (workspace_id, cap_name, actor_kind, granted,
        cap_group, description, updated_at, approved_event_id)
    SELECT p_workspace_id, e ->> 'cap_name', e ->> 'actor_kind', (e ->> 'granted')::boolean,
        coalesce(e ->> 'cap_group',
                 (SELECT m2.cap_group FROM public.kora_capability_matrix m2
                  WHERE m2.workspace_id = p_workspace_id AND m2.cap_name = e ->> 'cap_name' LIMIT 1),
                 'kora_broader'),
        coalesce(e ->> 'description', ''),
        v_now, v_eid
    FROM jsonb_array_elements(v_rows) e
    ON CONFLICT (workspace_id, cap_name, actor_kind) DO UPDATE
        SET granted = EXCLUDED.granted,
            cap_group = EXCLUDED.cap_group,
            description = CASE WHEN EXCLUDED.description = '' THEN m.description ELSE EXCLUDED.description END,
            updated_at = EXCLUDED.updated_at, approved_event_id = EXCLUDED.approved_event_id;
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.capability.set',
        isokron.with_state(
            jsonb_build_object('changes', (SELECT jsonb_agg(jsonb_build_object(
                'cap_name', e ->> 'cap_name', 'actor_kind', e ->> 'actor_kind', 'granted', e -> 'granted'))
                FROM jsonb_array_elements(v_rows) e)),
            'public.kora_capability_matrix', p_workspace_id,
            ARRAY(SELECT (e ->> 'cap_name') || '/' || (e ->> 'actor_kind')
                  FROM jsonb_array_elements(v_rows) e)),
        v_eid);
    RETURN isokron.event_result(v_ev) || jsonb_build_object('count', jsonb_array_length(v_rows));
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
    v_eid UUID := gen_random_uuid();
    v_ev JSONB;
BEGIN
    SELECT coalesce(max(revision_number), 0) + 1 INTO v_number
        FROM kronicle.workspace_constitution_revisions WHERE workspace_id = p_workspace_id;
    INSERT INTO kronicle.workspace_constitution_revisions (workspace_id, revision_id, revision_number,
        rules, rules_hash, approved_event_id)
    VALUES (p_workspace_id, v_id, v_number, v_rules, v_hash, v_eid);
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.constitution.revised',
        isokron.with_state(
            jsonb_build_object('revision_id', v_id, 'revision_number', v_number,
                               'rules_hash', encode(v_hash, 'hex')),
            'kronicle.workspace_constitution_revisions', p_workspace_id, ARRAY[v_id::text]),
        v_eid);
    RETURN isokron.event_result(v_ev) || jsonb_build_object('revision_id', v_id,
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
    v_eid UUID := gen_random_uuid();
    v_ev JSONB;
BEGIN
    IF v_hash !~ '^[0-9a-f]{64}$' THEN
        PERFORM isokron.fail('IKV01', 'token_sha256 must be 64 lower-case hex digits');
    END IF;
    BEGIN
        v_expires := isokron.arg_text(p_args, 'expires_at', false, 64)::timestamptz;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
        PERFORM isokron.fail('IKV01', 'expires_at must be an ISO-8601 timestamp');
    END;
    IF v_expires IS NOT NULL AND (v_expires = 'infinity'::timestamptz OR v_expires = '-infinity'::timestamptz) THEN
        PERFORM isokron.fail('IKV01', 'expires_at must be a finite timestamp (omit it for no expiry)');
    END IF;
    PERFORM isokron.require_actor(p_workspace_id, v_holder);
    INSERT INTO isokron.service_tokens (workspace_id, token_id, actor_id, token_prefix, token_hash,
        label, expires_at, approved_event_id)
    VALUES (p_workspace_id, v_id, v_holder, v_prefix, decode(v_hash, 'hex'), v_label, v_expires, v_eid);
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.token.issued',
        isokron.with_state(
            jsonb_build_object('token_id', v_id, 'token_prefix', v_prefix, 'holder_actor_id', v_holder,
                               'label', v_label, 'expires_at', v_expires),
            'isokron.service_tokens', p_workspace_id, ARRAY[v_id::text]),
        v_eid);
    RETURN isokron.event_result(v_ev) || jsonb_build_object('token_id', v_id, 'token_prefix', v_prefix);
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
    v_eid UUID := gen_random_uuid();
    v_ev JSONB;
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
    UPDATE isokron.service_tokens SET revoked_at = clock_timestamp()
        WHERE workspace_id = p_workspace_id AND token_id = v_token.token_id;
    v_ev := hivex_foundation.append_chain_event(p_tenant, p_actor_id, 'governance.token.revoked',
        isokron.with_state(
            jsonb_build_object('token_id', v_token.token_id, 'token_prefix', v_token.token_prefix),
            'isokron.service_tokens', p_workspace_id, ARRAY[v_token.token_id::text]),
        v_eid);
    RETURN isokron.event_result(v_ev)
        || jsonb_build_object('token_id', v_token.token_id, 'token_prefix', v_token.token_prefix);
END
$fn$;

-- ---------------------------------------------------------------- entry points
DROP FUNCTION IF EXISTS isokron_api.write(TEXT, TEXT, UUID, JSONB, TEXT);
DROP FUNCTION IF EXISTS isokron_api.govern(TEXT, TEXT, UUID, JSONB, TEXT);
DROP FUNCTION IF EXISTS isokron_api.consume_rate_limit(TEXT, UUID, INTEGER);

-- The gateway's one write entry point: the caller presents the SHA-256 of its service token;
-- the database resolves actor, kind and workspace from it. p_workspace_id, when given, must be
-- the token's workspace (IKW01 otherwise).
CREATE OR REPLACE FUNCTION isokron_api.write(
    p_token_sha256 BYTEA, p_op TEXT, p_args JSONB, p_idempotency_key TEXT DEFAULT NULL,
    p_workspace_id TEXT DEFAULT NULL
) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_who JSONB := isokron.principal_of_token(p_token_sha256);
BEGIN
    IF p_workspace_id IS NOT NULL AND p_workspace_id <> (v_who ->> 'workspace_id') THEN
        PERFORM isokron.fail('IKW01', 'this service token belongs to another workspace than '
            || quote_literal(p_workspace_id));
    END IF;
    RETURN isokron.run_op(p_op, v_who ->> 'workspace_id', (v_who ->> 'actor_id')::uuid, p_args,
        p_idempotency_key);
END
$fn$;

-- The owner's entry point (admin DSN, the operator CLI): names the acting actor. Never granted
-- to the gateway or the reader; the owner owns every table anyway, so this adds no power.
CREATE OR REPLACE FUNCTION isokron_api.write_as(
    p_op TEXT, p_workspace_id TEXT, p_actor_id UUID, p_args JSONB, p_idempotency_key TEXT DEFAULT NULL
) RETURNS JSONB
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT isokron.run_op(p_op, p_workspace_id, p_actor_id, p_args, p_idempotency_key)
$fn$;

-- One unit of the presenting token's actor's per-minute budget.
CREATE OR REPLACE FUNCTION isokron_api.consume_rate_limit(p_token_sha256 BYTEA, p_limit INTEGER)
RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_who JSONB := isokron.principal_of_token(p_token_sha256);
    v_ws TEXT := v_who ->> 'workspace_id';
    v_actor UUID := (v_who ->> 'actor_id')::uuid;
    v_window TIMESTAMPTZ := date_trunc('minute', now());
    v_calls INTEGER;
BEGIN
    PERFORM isokron.enter_workspace(v_ws);
    INSERT INTO isokron.rate_limit_windows AS w (workspace_id, actor_id, window_start, calls)
        VALUES (v_ws, v_actor, v_window, 1)
        ON CONFLICT (workspace_id, actor_id, window_start) DO UPDATE SET calls = w.calls + 1
        RETURNING calls INTO v_calls;
    IF v_calls = 1 THEN
        DELETE FROM isokron.rate_limit_windows
            WHERE workspace_id = v_ws AND actor_id = v_actor
              AND window_start < v_window - interval '1 hour';
    END IF;
    RETURN jsonb_build_object('allowed', v_calls <= p_limit, 'calls', v_calls, 'limit', p_limit,
        'retry_after_seconds',
        CASE WHEN v_calls <= p_limit THEN 0
             ELSE ceil(extract(epoch FROM (v_window + interval '1 minute' - now())))::int END);
END
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
    v_payload JSONB;
    v_ev JSONB;
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
    v_payload := jsonb_build_object('workspace_id', p_workspace_id, 'tenant_id', v_tenant,
        'actors', v_actors);
    v_payload := isokron.with_state(v_payload, 'public.workspaces', p_workspace_id, ARRAY[p_workspace_id]);
    v_payload := isokron.with_state(v_payload, 'hivex_foundation.tenant', p_workspace_id,
        ARRAY[p_workspace_id]);
    v_payload := isokron.with_state(v_payload, 'public.actor_registry', p_workspace_id,
        ARRAY(SELECT a ->> 'actor_id' FROM jsonb_array_elements(v_actors) a));
    v_ev := hivex_foundation.append_chain_event(v_tenant, v_operator, 'governance.workspace.created',
        v_payload);
    RETURN isokron.event_result(v_ev) || jsonb_build_object(
        'workspace_id', p_workspace_id, 'tenant_id', v_tenant, 'operator_actor_id', v_operator,
        'actors', v_actors);
END
$fn$;

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA isokron, isokron_api, hivex_foundation FROM PUBLIC;
REVOKE ALL ON isokron.operation_registry, isokron.state_tables FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    isokron_api.write(BYTEA, TEXT, JSONB, TEXT, TEXT),
    isokron_api.authenticate_token(BYTEA),
    isokron_api.consume_rate_limit(BYTEA, INTEGER)
    TO isokron_gateway;
-- The reader recomputes row records to check what it presents (invariant 4); pure functions.
GRANT EXECUTE ON FUNCTION
    hivex_foundation.row_field(TEXT, TEXT),
    hivex_foundation.row_record(TEXT, BYTEA[])
    TO isokron_reader;

DO $off$ BEGIN PERFORM set_config('isokron.all_workspaces', 'off', true); END $off$;
RESET ROLE;
