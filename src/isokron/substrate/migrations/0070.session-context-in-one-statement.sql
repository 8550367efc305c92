-- IsoKron substrate: the session context in one statement (issue 12, "one round trip per read").
-- isokron.session_context() returns everything assemble_session_context() used to read with seven
-- statements on seven pooled connections: the active role charter, the policies, one actor
-- kind's capabilities (each row with `verified`: it equals what its approving event, or the
-- workspace's latest state attestation, records — the same expression as
-- isokron.substrate.state_sql.verified_column), the actor kind's own scratchpad entries, the
-- other actors' shared entries, the newest kora.* events and the active constitution revision.
-- It is SECURITY INVOKER: it sets app.current_workspace_id for the transaction (through
-- isokron.set_local, as every read does) and row-level security then shows that workspace
-- alone, to whichever role calls it. The caller (Python) still refuses what is not verified.
-- Every part is index-backed and bounded by its own LIMIT (docs/provider.md "Reads"):
--  * scratchpad entries are read per actor of the kind (own) or of the other kinds (shared),
--    each through (workspace_id, actor_id, created_at DESC) indexes, then merged and cut:
--    a workspace of 100k entries of one actor no longer scans every shared entry of that actor
--    to find that no other actor shared any;
--  * the approving events are looked up by (workspace_id, event_id), each one's records
--    extracted once; the attestation once, by idx_event_log_attestations;
--  * a row's record digest is written out inline: the same bytes as hivex_foundation.row_record
--    (docs/chain.md §11), whose SQL-function calls (not inlinable) cost ~0.2 ms per row.
-- It runs with plan_cache_mode = force_generic_plan: its limits and keys are PL/pgSQL variables, so
-- the plan cache kept planning a custom plan per call (most of a call's server time), while every
-- statement is index-backed whatever the values; each is now planned once per connection. A
-- generic plan costs a parameter LIMIT as 10% of the rows, which in a workspace of millions of
-- events would pass jit_above_cost and compile every call: jit = off. The row proof converts
-- each column's UTF-8 bytes once (a LATERAL subquery kept apart by OFFSET 0), builds the record's
-- prefix with the workspace_id field (and the capability rows' actor_kind field) once per call,
-- and extracts an approving event's records with one path lookup (#>).
SET LOCAL ROLE isokron_owner;

CREATE INDEX IF NOT EXISTS idx_scratchpad_actor_shared_recent
    ON kronicle.agent_scratchpad_entries (workspace_id, actor_id, created_at DESC)
    WHERE status = 'active' AND visibility_scope = 'cross_agent_dereferenceable';

-- JSONB values travel as their text (asyncpg decodes composites in binary only, and the
-- connections decode JSONB as text through json.loads): the caller parses them.
-- (Re-)running the migration keeps the types: CREATE TYPE has no IF NOT EXISTS.
DO $types$
BEGIN
    IF to_regtype('isokron.session_charter') IS NULL THEN
        CREATE TYPE isokron.session_charter AS (
            charter_id UUID, version INTEGER, content_md TEXT, content_jsonb TEXT, content_hash TEXT,
            verified BOOLEAN);
    END IF;
    IF to_regtype('isokron.session_policy') IS NULL THEN
        CREATE TYPE isokron.session_policy AS (
            policy_key TEXT, policy_value TEXT, description TEXT, verified BOOLEAN);
    END IF;
    IF to_regtype('isokron.session_capability') IS NULL THEN
        CREATE TYPE isokron.session_capability AS (cap_name TEXT, granted BOOLEAN, verified BOOLEAN);
    END IF;
    IF to_regtype('isokron.session_scratchpad_entry') IS NULL THEN
        CREATE TYPE isokron.session_scratchpad_entry AS (
            entry_id UUID, actor_id UUID, actor_kind TEXT, actor_label TEXT, kind TEXT,
            visibility_scope TEXT, summary TEXT, content TEXT, content_uri TEXT, content_hash TEXT,
            status TEXT, session_id TEXT, created_at TIMESTAMPTZ, approved_event_id UUID);
    END IF;
    IF to_regtype('isokron.session_event') IS NULL THEN
        CREATE TYPE isokron.session_event AS (
            event_id UUID, seq BIGINT, event_type TEXT, occurred_at TIMESTAMPTZ, payload_text TEXT);
    END IF;
    IF to_regtype('isokron.session_constitution') IS NULL THEN
        CREATE TYPE isokron.session_constitution AS (
            revision_id UUID, revision_number INTEGER, rules TEXT, rules_hash BYTEA);
    END IF;
END
$types$;

-- A read limit from the (verified) policies: a whole number >= 0, else NULL (the caller's).
CREATE OR REPLACE FUNCTION isokron.session_read_limit(p_policies isokron.session_policy[],
                                                      p_key TEXT)
RETURNS BIGINT
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    v JSONB := (SELECT p.policy_value::jsonb FROM unnest(p_policies) p
                WHERE p.policy_key = p_key AND p.verified LIMIT 1);
    n NUMERIC;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) <> 'number' THEN
        RETURN NULL;
    END IF;
    n := v::text::numeric;
    IF n < 0 OR n <> trunc(n) THEN
        RETURN NULL;
    END IF;
    RETURN least(n, 9223372036854775807)::bigint;
END
$fn$;

CREATE OR REPLACE FUNCTION isokron.session_context(
    p_workspace_id TEXT, p_actor_kind TEXT, p_scratchpad_limit BIGINT, p_event_limit BIGINT,
    p_limits_from_policy BOOLEAN,
    OUT charter isokron.session_charter,
    OUT policies isokron.session_policy[],
    OUT capabilities isokron.session_capability[],
    OUT own_scratchpad isokron.session_scratchpad_entry[],
    OUT cross_agent_scratchpad isokron.session_scratchpad_entry[],
    OUT recent_events isokron.session_event[],
    OUT constitution isokron.session_constitution)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $fn$
DECLARE
    v_att JSONB;
    v_scratch BIGINT := p_scratchpad_limit;
    v_events BIGINT := p_event_limit;
    -- The record prefix up to and with the workspace_id field, and the actor_kind field: the
    -- rows are filtered by exactly these values (deterministic collation: the same bytes).
    v_ws BYTEA := '\x01'::bytea || int4send(octet_length(convert_to(p_workspace_id, 'UTF8')))
        || convert_to(p_workspace_id, 'UTF8');
    v_actor BYTEA := coalesce('\x01'::bytea
        || int4send(octet_length(convert_to(p_actor_kind, 'UTF8')))
        || convert_to(p_actor_kind, 'UTF8'), '\x00'::bytea);
    v_pol_prefix BYTEA := '\x69736f6b726f6e2d726f772d7631000000001b7075626c69632e6b6f72615f706f6c6963795f72656769737472790000000c776f726b73706163655f6964'::bytea || v_ws;
    v_cap_prefix BYTEA := '\x69736f6b726f6e2d726f772d7631000000001d7075626c69632e6b6f72615f6361706162696c6974795f6d61747269780000000c776f726b73706163655f6964'::bytea || v_ws;
BEGIN
    PERFORM isokron.set_local('app.current_workspace_id', p_workspace_id, true);
    v_att := (SELECT a.payload -> 'state' FROM hivex_foundation.event_log a
              WHERE a.workspace_id = p_workspace_id AND a.event_type = 'substrate.state.attested'
              ORDER BY a.seq DESC LIMIT 1);
    charter := (
        SELECT ROW(c.charter_id, c.version, c.content_md, c.content_jsonb::text, c.content_hash,
            coalesce(coalesce(ev.payload -> 'state' -> 'public.kora_role_charter' -> (c.charter_id::text), v_att -> 'public.kora_role_charter' -> (c.charter_id::text)) ->> 'd'
                = encode(sha256('\x69736f6b726f6e2d726f772d763100000000187075626c69632e6b6f72615f726f6c655f63686172746572'::bytea
                    || '\x0000000c776f726b73706163655f6964'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(convert_to(c.workspace_id, 'UTF8'))) || convert_to(c.workspace_id, 'UTF8'), '\x00'::bytea)
                    || '\x0000000a636861727465725f6964'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(convert_to(c.charter_id::text, 'UTF8'))) || convert_to(c.charter_id::text, 'UTF8'), '\x00'::bytea)
                    || '\x0000000776657273696f6e'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(convert_to(c.version::text, 'UTF8'))) || convert_to(c.version::text, 'UTF8'), '\x00'::bytea)
                    || '\x0000000a636f6e74656e745f6d64'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(convert_to(c.content_md, 'UTF8'))) || convert_to(c.content_md, 'UTF8'), '\x00'::bytea)
                    || '\x0000000d636f6e74656e745f6a736f6e62'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(convert_to(c.content_jsonb::text, 'UTF8'))) || convert_to(c.content_jsonb::text, 'UTF8'), '\x00'::bytea)
                    || '\x0000000c636f6e74656e745f68617368'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(convert_to(c.content_hash, 'UTF8'))) || convert_to(c.content_hash, 'UTF8'), '\x00'::bytea)
                    || '\x0000000969735f616374697665'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(convert_to(c.is_active::text, 'UTF8'))) || convert_to(c.is_active::text, 'UTF8'), '\x00'::bytea)
                    || '\x0000000a637265617465645f6174'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(convert_to(((extract(epoch FROM c.created_at) * 1000000)::bigint)::text, 'UTF8'))) || convert_to(((extract(epoch FROM c.created_at) * 1000000)::bigint)::text, 'UTF8'), '\x00'::bytea)
                    || '\x00000011617070726f7665645f6576656e745f6964'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(convert_to(c.approved_event_id::text, 'UTF8'))) || convert_to(c.approved_event_id::text, 'UTF8'), '\x00'::bytea)), 'hex'), false)
            )::isokron.session_charter
        FROM public.kora_role_charter c
        LEFT JOIN hivex_foundation.event_log ev
            ON ev.workspace_id = c.workspace_id AND ev.event_id = c.approved_event_id
        WHERE c.workspace_id = p_workspace_id AND c.is_active
        LIMIT 1);
    -- Each approving event's records are extracted once (many rows share one event).
    policies := ARRAY(
        WITH ev AS MATERIALIZED (
            SELECT e.event_id, e.payload #> '{state,public.kora_policy_registry}' AS st
            FROM hivex_foundation.event_log e
            WHERE e.workspace_id = p_workspace_id AND e.event_id IN (
                SELECT r.approved_event_id FROM public.kora_policy_registry r
                WHERE r.workspace_id = p_workspace_id))
        SELECT ROW(p.policy_key, p.policy_value::text, p.description,
            coalesce(coalesce(ev.st -> p.policy_key, v_att -> 'public.kora_policy_registry' -> p.policy_key) ->> 'd'
                = encode(sha256(v_pol_prefix
                    || '\x0000000a706f6c6963795f6b6579'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(b.f1)) || b.f1, '\x00'::bytea)
                    || '\x0000000c706f6c6963795f76616c7565'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(b.f2)) || b.f2, '\x00'::bytea)
                    || '\x0000000b6465736372697074696f6e'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(b.f3)) || b.f3, '\x00'::bytea)
                    || '\x0000000a757064617465645f6174'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(b.f4)) || b.f4, '\x00'::bytea)
                    || '\x00000011617070726f7665645f6576656e745f6964'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(b.f5)) || b.f5, '\x00'::bytea)), 'hex'), false)
            )::isokron.session_policy
        FROM public.kora_policy_registry p
        CROSS JOIN LATERAL (
            SELECT convert_to(p.policy_key, 'UTF8') AS f1,
                   convert_to(p.policy_value::text, 'UTF8') AS f2,
                   convert_to(p.description, 'UTF8') AS f3,
                   convert_to(((extract(epoch FROM p.updated_at) * 1000000)::bigint)::text, 'UTF8') AS f4,
                   convert_to(p.approved_event_id::text, 'UTF8') AS f5
            OFFSET 0) b
        LEFT JOIN ev ON ev.event_id = p.approved_event_id
        WHERE p.workspace_id = p_workspace_id
        ORDER BY p.policy_key);
    capabilities := ARRAY(
        WITH ev AS MATERIALIZED (
            SELECT e.event_id, e.payload #> '{state,public.kora_capability_matrix}' AS st
            FROM hivex_foundation.event_log e
            WHERE e.workspace_id = p_workspace_id AND e.event_id IN (
                SELECT r.approved_event_id FROM public.kora_capability_matrix r
                WHERE r.workspace_id = p_workspace_id AND r.actor_kind = p_actor_kind))
        SELECT ROW(m.cap_name, m.granted,
            coalesce(coalesce(ev.st -> (m.cap_name || '/' || m.actor_kind), v_att -> 'public.kora_capability_matrix' -> (m.cap_name || '/' || m.actor_kind)) ->> 'd'
                = encode(sha256(v_cap_prefix
                    || '\x000000086361705f6e616d65'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(b.f1)) || b.f1, '\x00'::bytea)
                    || '\x0000000a6163746f725f6b696e64'::bytea || v_actor
                    || '\x000000076772616e746564'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(b.f3)) || b.f3, '\x00'::bytea)
                    || '\x000000096361705f67726f7570'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(b.f4)) || b.f4, '\x00'::bytea)
                    || '\x0000000b6465736372697074696f6e'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(b.f5)) || b.f5, '\x00'::bytea)
                    || '\x0000000a757064617465645f6174'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(b.f6)) || b.f6, '\x00'::bytea)
                    || '\x00000011617070726f7665645f6576656e745f6964'::bytea
                    || coalesce('\x01'::bytea || int4send(octet_length(b.f7)) || b.f7, '\x00'::bytea)), 'hex'), false)
            )::isokron.session_capability
        FROM public.kora_capability_matrix m
        CROSS JOIN LATERAL (
            SELECT convert_to(m.cap_name, 'UTF8') AS f1,
                   convert_to(m.granted::text, 'UTF8') AS f3,
                   convert_to(m.cap_group, 'UTF8') AS f4,
                   convert_to(m.description, 'UTF8') AS f5,
                   convert_to(((extract(epoch FROM m.updated_at) * 1000000)::bigint)::text, 'UTF8') AS f6,
                   convert_to(m.approved_event_id::text, 'UTF8') AS f7
            OFFSET 0) b
        LEFT JOIN ev ON ev.event_id = m.approved_event_id
        WHERE m.workspace_id = p_workspace_id AND m.actor_kind = p_actor_kind);
    IF p_limits_from_policy THEN
        v_scratch := coalesce(
            isokron.session_read_limit(policies, 'policy.kora_scratchpad_read_limit'), v_scratch);
        v_events := coalesce(
            isokron.session_read_limit(policies, 'policy.kora_recent_event_read_limit'), v_events);
    END IF;
    own_scratchpad := ARRAY(
        SELECT ROW(s.entry_id, s.actor_id, a.actor_kind, a.display_name, s.kind,
                   s.visibility_scope, s.summary, s.content, s.content_uri, s.content_hash,
                   s.status, s.session_id, s.created_at,
                   s.approved_event_id)::isokron.session_scratchpad_entry
        FROM public.actor_registry a
        CROSS JOIN LATERAL (
            SELECT * FROM kronicle.agent_scratchpad_entries e
            WHERE e.workspace_id = p_workspace_id AND e.actor_id = a.actor_id
              AND e.status = 'active'
            ORDER BY e.created_at DESC LIMIT v_scratch) s
        WHERE a.workspace_id = p_workspace_id AND a.actor_kind = p_actor_kind
        ORDER BY s.created_at DESC LIMIT v_scratch);
    cross_agent_scratchpad := ARRAY(
        SELECT ROW(s.entry_id, s.actor_id, a.actor_kind, a.display_name, s.kind,
                   s.visibility_scope, s.summary, s.content, s.content_uri, s.content_hash,
                   s.status, s.session_id, s.created_at,
                   s.approved_event_id)::isokron.session_scratchpad_entry
        FROM public.actor_registry a
        CROSS JOIN LATERAL (
            SELECT * FROM kronicle.agent_scratchpad_entries e
            WHERE e.workspace_id = p_workspace_id AND e.actor_id = a.actor_id
              AND e.status = 'active' AND e.visibility_scope = 'cross_agent_dereferenceable'
            ORDER BY e.created_at DESC LIMIT v_scratch) s
        WHERE a.workspace_id = p_workspace_id AND a.actor_kind <> p_actor_kind
        ORDER BY s.created_at DESC LIMIT v_scratch);
    -- The excerpt the caller shows is 300 characters: 301 tell it whether it was cut.
    recent_events := ARRAY(
        SELECT ROW(el.event_id, el.seq, el.event_type, el.occurred_at,
                   left(jsonb_pretty(el.payload), 301))::isokron.session_event
        FROM hivex_foundation.event_log el
        WHERE el.workspace_id = p_workspace_id AND starts_with(el.event_type, 'kora.')
        ORDER BY el.seq DESC LIMIT v_events);
    constitution := (
        SELECT ROW(r.revision_id, r.revision_number, r.rules::text,
                   r.rules_hash)::isokron.session_constitution
        FROM kronicle.workspace_constitution_revisions r
        WHERE r.workspace_id = p_workspace_id
        ORDER BY r.revision_number DESC LIMIT 1);
END
$fn$;

REVOKE ALL ON FUNCTION isokron.session_read_limit(isokron.session_policy[], TEXT) FROM PUBLIC;
REVOKE ALL ON FUNCTION isokron.session_context(TEXT, TEXT, BIGINT, BIGINT, BOOLEAN) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION isokron.session_read_limit(isokron.session_policy[], TEXT),
    isokron.session_context(TEXT, TEXT, BIGINT, BIGINT, BOOLEAN)
    TO isokron_reader;

RESET ROLE;
