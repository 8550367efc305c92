-- IsoKron substrate: the per-tenant hash chain (docs/chain.md specifies the bytes hashed).
SET LOCAL ROLE isokron_owner;

CREATE TABLE IF NOT EXISTS hivex_foundation.event_log (
    tenant_id        UUID NOT NULL REFERENCES hivex_foundation.tenant (tenant_id),
    seq              BIGINT NOT NULL CHECK (seq >= 1),
    event_id         UUID NOT NULL,
    actor_id         UUID NOT NULL,
    event_type       TEXT NOT NULL CHECK (length(event_type) BETWEEN 1 AND 200),
    payload          JSONB NOT NULL,
    payload_digest   BYTEA NOT NULL CHECK (octet_length(payload_digest) = 32),
    payload_erased   BOOLEAN NOT NULL DEFAULT false,
    occurred_at      TIMESTAMPTZ NOT NULL,
    prev_event_hash  BYTEA NOT NULL CHECK (octet_length(prev_event_hash) = 32),
    this_event_hash  BYTEA NOT NULL CHECK (octet_length(this_event_hash) = 32),
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, event_id)
);
CREATE INDEX IF NOT EXISTS idx_event_log_recent_type
    ON hivex_foundation.event_log (tenant_id, occurred_at DESC);

-- One row per tenant; its row lock serializes appends of that tenant while other tenants
-- append in parallel. It also remembers the head, so a deleted tail event is detectable.
CREATE TABLE IF NOT EXISTS hivex_foundation.chain_head (
    tenant_id  UUID PRIMARY KEY REFERENCES hivex_foundation.tenant (tenant_id),
    last_seq   BIGINT NOT NULL DEFAULT 0,
    last_hash  BYTEA NOT NULL DEFAULT decode('0000000000000000000000000000000000000000000000000000000000000000', 'hex')
);

CREATE OR REPLACE FUNCTION hivex_foundation.event_hash_input(
    p_prev BYTEA, p_tenant UUID, p_seq BIGINT, p_event_id UUID, p_actor UUID,
    p_occurred_at TIMESTAMPTZ, p_event_type TEXT, p_payload_digest BYTEA
) RETURNS BYTEA
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $fn$
    SELECT convert_to('isokron-chain-v1', 'UTF8') || decode('00', 'hex')
        || p_prev
        || uuid_send(p_tenant)
        || int8send(p_seq)
        || uuid_send(p_event_id)
        || uuid_send(p_actor)
        || int8send((extract(epoch FROM p_occurred_at) * 1000000)::bigint)
        || int4send(octet_length(convert_to(p_event_type, 'UTF8')))
        || convert_to(p_event_type, 'UTF8')
        || p_payload_digest
$fn$;

-- The ONLY way an event enters the log (invariant 3).
CREATE OR REPLACE FUNCTION hivex_foundation.append_chain_event(
    p_tenant UUID, p_actor UUID, p_event_type TEXT, p_payload JSONB
) RETURNS hivex_foundation.event_log
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_head  hivex_foundation.chain_head;
    v_event hivex_foundation.event_log;
BEGIN
    IF p_tenant IS NULL OR p_actor IS NULL OR p_event_type IS NULL OR p_payload IS NULL THEN
        RAISE EXCEPTION 'append_chain_event: tenant, actor, event_type and payload are required'
            USING ERRCODE = 'IKV01';
    END IF;
    INSERT INTO hivex_foundation.chain_head (tenant_id) VALUES (p_tenant)
        ON CONFLICT (tenant_id) DO NOTHING;
    SELECT * INTO v_head FROM hivex_foundation.chain_head
        WHERE tenant_id = p_tenant FOR UPDATE;
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
    v_event.this_event_hash := sha256(hivex_foundation.event_hash_input(
        v_event.prev_event_hash, p_tenant, v_event.seq, v_event.event_id, p_actor,
        v_event.occurred_at, p_event_type, v_event.payload_digest));
    INSERT INTO hivex_foundation.event_log VALUES (v_event.*);
    UPDATE hivex_foundation.chain_head
        SET last_seq = v_event.seq, last_hash = v_event.this_event_hash
        WHERE tenant_id = p_tenant;
    RETURN v_event;
END
$fn$;
REVOKE ALL ON FUNCTION hivex_foundation.append_chain_event(UUID, UUID, TEXT, JSONB) FROM PUBLIC;

-- Append-only: UPDATE, DELETE and TRUNCATE are refused for every role (privileges are revoked
-- too; the trigger stops the owner). The one exception is erasing a payload for a lawful
-- deletion request, which keeps the digest so the chain still verifies.
CREATE OR REPLACE FUNCTION hivex_foundation.refuse_event_log_change() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF TG_OP = 'UPDATE'
       AND current_setting('isokron.erasing_payload', true) = 'on'
       AND NEW.payload_erased AND NOT OLD.payload_erased
       AND NEW.payload_digest = OLD.payload_digest
       AND (NEW.tenant_id, NEW.seq, NEW.event_id, NEW.actor_id, NEW.event_type, NEW.occurred_at,
            NEW.prev_event_hash, NEW.this_event_hash)
           = (OLD.tenant_id, OLD.seq, OLD.event_id, OLD.actor_id, OLD.event_type, OLD.occurred_at,
              OLD.prev_event_hash, OLD.this_event_hash) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING
        MESSAGE = 'hivex_foundation.event_log is append-only: ' || TG_OP || ' refused',
        ERRCODE = 'IKA01',
              HINT = 'Events enter the log only through hivex_foundation.append_chain_event().';
END
$fn$;

DROP TRIGGER IF EXISTS event_log_append_only ON hivex_foundation.event_log;
CREATE TRIGGER event_log_append_only
    BEFORE UPDATE OR DELETE ON hivex_foundation.event_log
    FOR EACH ROW EXECUTE FUNCTION hivex_foundation.refuse_event_log_change();
DROP TRIGGER IF EXISTS event_log_no_truncate ON hivex_foundation.event_log;
CREATE TRIGGER event_log_no_truncate
    BEFORE TRUNCATE ON hivex_foundation.event_log
    FOR EACH STATEMENT EXECUTE FUNCTION hivex_foundation.refuse_event_log_change();

-- Lawful erasure of one payload: the row keeps its digest and hashes, so the chain verifies.
CREATE OR REPLACE FUNCTION hivex_foundation.erase_event_payload(
    p_tenant UUID, p_seq BIGINT, p_reason TEXT
) RETURNS VOID
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM set_config('isokron.erasing_payload', 'on', true);
    UPDATE hivex_foundation.event_log
        SET payload = jsonb_build_object('erased', true, 'reason', p_reason,
                                         'erased_at', clock_timestamp()),
            payload_erased = true
        WHERE tenant_id = p_tenant AND seq = p_seq AND NOT payload_erased;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING MESSAGE = 'no unerased event at that tenant and seq', ERRCODE = 'IKN01';
    END IF;
    PERFORM set_config('isokron.erasing_payload', 'off', true);
END
$fn$;
REVOKE ALL ON FUNCTION hivex_foundation.erase_event_payload(UUID, BIGINT, TEXT) FROM PUBLIC;

REVOKE ALL ON hivex_foundation.event_log FROM PUBLIC;
REVOKE ALL ON hivex_foundation.chain_head FROM PUBLIC;

RESET ROLE;
