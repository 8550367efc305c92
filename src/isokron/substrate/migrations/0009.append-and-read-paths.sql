-- IsoKron substrate: cheaper appends and indexed read paths (measured in bench/, see
-- docs/benchmarks.md). The bytes hashed are unchanged (docs/chain.md).
--  * The chain head row is created with the tenant, so an append no longer attempts an
--    INSERT ... ON CONFLICT on every call; the hash input is computed inline instead of through
--    a SQL function call that PL/pgSQL cannot inline (~75 us per append in the profile).
--  * Scratchpad reads (own and cross-agent) and recent-node reads get indexes that match them.
SET LOCAL ROLE isokron_owner;

-- Backfill across workspaces: the owner's opt-in policy, for this transaction only.
-- (inside DO: yoyo prints the result rows of a bare SELECT)
DO $on$ BEGIN PERFORM set_config('isokron.all_workspaces', 'on', true); END $on$;
INSERT INTO hivex_foundation.chain_head (tenant_id)
SELECT t.tenant_id FROM hivex_foundation.tenant t
WHERE NOT EXISTS (SELECT 1 FROM hivex_foundation.chain_head h WHERE h.tenant_id = t.tenant_id);

CREATE OR REPLACE FUNCTION hivex_foundation.create_chain_head() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO hivex_foundation.chain_head (tenant_id) VALUES (NEW.tenant_id)
        ON CONFLICT (tenant_id) DO NOTHING;
    RETURN NEW;
END
$fn$;
REVOKE ALL ON FUNCTION hivex_foundation.create_chain_head() FROM PUBLIC;
DROP TRIGGER IF EXISTS tenant_chain_head ON hivex_foundation.tenant;
CREATE TRIGGER tenant_chain_head
    AFTER INSERT ON hivex_foundation.tenant
    FOR EACH ROW EXECUTE FUNCTION hivex_foundation.create_chain_head();

CREATE OR REPLACE FUNCTION hivex_foundation.append_chain_event(
    p_tenant UUID, p_actor UUID, p_event_type TEXT, p_payload JSONB
) RETURNS hivex_foundation.event_log
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_head  hivex_foundation.chain_head;
    v_event hivex_foundation.event_log;
    v_type  BYTEA;
BEGIN
    IF p_tenant IS NULL OR p_actor IS NULL OR p_event_type IS NULL OR p_payload IS NULL THEN
        RAISE EXCEPTION 'append_chain_event: tenant, actor, event_type and payload are required'
            USING ERRCODE = 'IKV01';
    END IF;
    -- The head row's lock serializes this tenant's appends; other tenants are not blocked.
    SELECT * INTO v_head FROM hivex_foundation.chain_head
        WHERE tenant_id = p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO hivex_foundation.chain_head (tenant_id) VALUES (p_tenant)
            ON CONFLICT (tenant_id) DO NOTHING;
        SELECT * INTO v_head FROM hivex_foundation.chain_head
            WHERE tenant_id = p_tenant FOR UPDATE;
    END IF;
    v_type := convert_to(p_event_type, 'UTF8');
    v_event.tenant_id := p_tenant;
    v_event.seq := v_head.last_seq + 1;
    v_event.event_id := gen_random_uuid();
    v_event.actor_id := p_actor;
    v_event.event_type := p_event_type;
    v_event.payload := p_payload;
    v_event.payload_digest := sha256(convert_to(p_payload::text, 'UTF8'));
    v_event.payload_erased := false;
    v_event.occurred_at := clock_timestamp();
    v_event.prev_event_hash := v_head.last_hash;
    -- Same bytes as hivex_foundation.event_hash_input (docs/chain.md), written out inline.
    v_event.this_event_hash := sha256(
        '\x69736f6b726f6e2d636861696e2d763100'::bytea
        || v_event.prev_event_hash
        || uuid_send(p_tenant)
        || int8send(v_event.seq)
        || uuid_send(v_event.event_id)
        || uuid_send(p_actor)
        || int8send((extract(epoch FROM v_event.occurred_at) * 1000000)::bigint)
        || int4send(octet_length(v_type))
        || v_type
        || v_event.payload_digest);
    INSERT INTO hivex_foundation.event_log VALUES (v_event.*);
    UPDATE hivex_foundation.chain_head
        SET last_seq = v_event.seq, last_hash = v_event.this_event_hash
        WHERE tenant_id = p_tenant;
    RETURN v_event;
END
$fn$;
REVOKE ALL ON FUNCTION hivex_foundation.append_chain_event(UUID, UUID, TEXT, JSONB) FROM PUBLIC;

CREATE INDEX IF NOT EXISTS idx_scratchpad_shared_recent
    ON kronicle.agent_scratchpad_entries (workspace_id, created_at DESC)
    WHERE status = 'active' AND visibility_scope = 'cross_agent_dereferenceable';
CREATE INDEX IF NOT EXISTS idx_scratchpad_actor_recent
    ON kronicle.agent_scratchpad_entries (workspace_id, actor_id, created_at DESC)
    WHERE status = 'active';
CREATE INDEX IF NOT EXISTS idx_iso_nodes_workspace_recent
    ON kronicle.iso_nodes (workspace_id, created_at DESC);

DO $off$ BEGIN PERFORM set_config('isokron.all_workspaces', 'off', true); END $off$;
RESET ROLE;
