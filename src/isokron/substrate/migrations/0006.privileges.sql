-- IsoKron substrate: who may do what (invariant 2).
--   isokron_reader  : SELECT on workspace data (never tokens, idempotency or rate-limit rows),
--                     under row-level security; no INSERT, UPDATE, DELETE, TRUNCATE anywhere.
--   isokron_gateway : no table privileges at all; EXECUTE on the isokron_api entry points only.
SET LOCAL ROLE isokron_owner;

REVOKE ALL ON ALL TABLES IN SCHEMA hivex_foundation, kronicle, isokron FROM PUBLIC;
REVOKE ALL ON public.workspaces, public.actor_registry, public.kora_role_charter,
    public.kora_policy_registry, public.kora_capability_matrix FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA isokron, isokron_api, hivex_foundation FROM PUBLIC;
REVOKE ALL ON SCHEMA isokron, isokron_api, hivex_foundation, kronicle FROM PUBLIC;

GRANT USAGE ON SCHEMA hivex_foundation, kronicle TO isokron_reader;
GRANT SELECT ON
    public.workspaces, public.actor_registry, public.kora_role_charter, public.kora_policy_registry,
    public.kora_capability_matrix, hivex_foundation.tenant, hivex_foundation.event_log,
    hivex_foundation.chain_head, kronicle.workspace_constitution_revisions,
    kronicle.agent_scratchpad_entries, kronicle.iso_nodes, kronicle.iso_links,
    kronicle.convention_proposals, kronicle.policy_change_proposals, kronicle.escalations
    TO isokron_reader;

GRANT USAGE ON SCHEMA isokron_api TO isokron_gateway;
GRANT EXECUTE ON FUNCTION
    isokron_api.write(TEXT, TEXT, UUID, JSONB, TEXT),
    isokron_api.authenticate_token(BYTEA),
    isokron_api.consume_rate_limit(TEXT, UUID, INTEGER)
    TO isokron_gateway;

RESET ROLE;
