-- IsoKron substrate: the chain tables keyed by the workspace, so Citus co-locates them with
-- every other table of the workspace (docs/scaling.md). Nothing hashed changes (docs/chain.md):
-- workspace_id is a column beside the chain, not part of its byte form.
--  * event_log's primary key becomes (workspace_id, seq) and its event-id key (workspace_id,
--    event_id); chain_head's becomes (workspace_id). A composite foreign key to the tenant
--    (tenant_id, workspace_id) keeps each row's tenant and workspace the same pair, so the old
--    per-tenant uniqueness still holds.
--  * hivex_foundation.tenant gets no trigger (Citus refuses triggers on reference tables): the
--    append creates its workspace's chain head on first use, as 0009 did.
--  * The append names the workspace in every statement on the chain tables, so Citus routes
--    each one to the single shard that holds it (a tenant-only filter would touch every shard,
--    and SELECT ... FOR UPDATE across shards is refused).
--  * isokron.kind_has_capability and isokron.idem_store become PL/pgSQL: Citus cannot plan a
--    parameterized query in an SQL-language function ("could not create distributed plan").
SET LOCAL ROLE isokron_owner;

DROP TRIGGER IF EXISTS tenant_chain_head ON hivex_foundation.tenant;
DROP FUNCTION IF EXISTS hivex_foundation.create_chain_head();

-- Idempotent (the migrations may be re-applied over existing data): drop what this file makes,
-- and the tenant-keyed constraints it replaces, then make the new ones.
ALTER TABLE hivex_foundation.event_log DROP CONSTRAINT IF EXISTS event_log_tenant_workspace_fkey;
ALTER TABLE hivex_foundation.chain_head DROP CONSTRAINT IF EXISTS chain_head_tenant_workspace_fkey;
ALTER TABLE hivex_foundation.event_log DROP CONSTRAINT IF EXISTS event_log_tenant_id_fkey;
ALTER TABLE hivex_foundation.chain_head DROP CONSTRAINT IF EXISTS chain_head_tenant_id_fkey;
ALTER TABLE hivex_foundation.event_log DROP CONSTRAINT IF EXISTS event_log_pkey;
ALTER TABLE hivex_foundation.event_log DROP CONSTRAINT IF EXISTS event_log_tenant_id_event_id_key;
ALTER TABLE hivex_foundation.event_log DROP CONSTRAINT IF EXISTS event_log_workspace_id_event_id_key;
ALTER TABLE hivex_foundation.chain_head DROP CONSTRAINT IF EXISTS chain_head_pkey;
ALTER TABLE hivex_foundation.tenant DROP CONSTRAINT IF EXISTS tenant_tenant_id_workspace_key;
DROP INDEX IF EXISTS hivex_foundation.idx_event_log_workspace_seq;

ALTER TABLE hivex_foundation.tenant
    ADD CONSTRAINT tenant_tenant_id_workspace_key UNIQUE (tenant_id, clerk_org_id);
ALTER TABLE hivex_foundation.event_log
    ADD CONSTRAINT event_log_pkey PRIMARY KEY (workspace_id, seq),
    ADD CONSTRAINT event_log_workspace_id_event_id_key UNIQUE (workspace_id, event_id),
    ADD CONSTRAINT event_log_tenant_workspace_fkey FOREIGN KEY (tenant_id, workspace_id)
        REFERENCES hivex_foundation.tenant (tenant_id, clerk_org_id);
ALTER TABLE hivex_foundation.chain_head
    ADD CONSTRAINT chain_head_pkey PRIMARY KEY (workspace_id),
    ADD CONSTRAINT chain_head_tenant_workspace_fkey FOREIGN KEY (tenant_id, workspace_id)
        REFERENCES hivex_foundation.tenant (tenant_id, clerk_org_id);

-- The ONLY way an event enters the log (invariant 3); same bytes and result as 0010's.
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
    -- The tenant's workspace (a reference table: answered on this node). Every statement below
    -- names it, so each is routed to the one shard group holding the workspace.
    SELECT clerk_org_id INTO v_ws FROM hivex_foundation.tenant WHERE tenant_id = p_tenant;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'append_chain_event: tenant has no workspace in this workspace scope'
            USING ERRCODE = 'IKN01';
    END IF;
    -- The head row's lock serializes this workspace's appends; others are not blocked.
    SELECT last_seq, last_hash INTO v_seq, v_prev
        FROM hivex_foundation.chain_head
        WHERE workspace_id = v_ws AND tenant_id = p_tenant FOR UPDATE;
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

CREATE OR REPLACE FUNCTION isokron.kind_has_capability(
    p_workspace_id TEXT, p_kind TEXT, p_capability TEXT
) RETURNS BOOLEAN
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN EXISTS (SELECT 1 FROM public.kora_capability_matrix
                   WHERE workspace_id = p_workspace_id AND cap_name = p_capability
                     AND actor_kind = p_kind AND granted);
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.idem_store(
    p_workspace_id TEXT, p_actor_id UUID, p_key TEXT, p_result JSONB
) RETURNS VOID
LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE isokron.idempotency_keys SET result = p_result
        WHERE workspace_id = p_workspace_id AND actor_id = p_actor_id AND idempotency_key = p_key;
END
$fn$;

RESET ROLE;
