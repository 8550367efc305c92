-- IsoKron substrate: row-level security (invariant 1) and role privileges (invariant 2).
-- Every workspace-keyed table: RLS ENABLED and FORCED. A reader sees the rows of the workspace
-- named by app.current_workspace_id (set per transaction); with it missing, zero rows.
-- The owner role gets a second, opt-in policy (isokron.all_workspaces = on) for operator-wide
-- work such as authentication by token hash and whole-database verification; no other role
-- can use it, and SECURITY DEFINER write functions otherwise scope themselves to one workspace.
SET LOCAL ROLE isokron_owner;

DO $rls$
DECLARE
    t RECORD;
BEGIN
    FOR t IN
        SELECT * FROM (VALUES
            ('public', 'workspaces', 'id'),
            ('hivex_foundation', 'tenant', 'clerk_org_id'),
            ('public', 'actor_registry', 'workspace_id'),
            ('isokron', 'service_tokens', 'workspace_id'),
            ('public', 'kora_role_charter', 'workspace_id'),
            ('public', 'kora_policy_registry', 'workspace_id'),
            ('public', 'kora_capability_matrix', 'workspace_id'),
            ('kronicle', 'workspace_constitution_revisions', 'workspace_id'),
            ('kronicle', 'agent_scratchpad_entries', 'workspace_id'),
            ('kronicle', 'iso_nodes', 'workspace_id'),
            ('kronicle', 'iso_links', 'workspace_id'),
            ('kronicle', 'convention_proposals', 'workspace_id'),
            ('kronicle', 'policy_change_proposals', 'workspace_id'),
            ('kronicle', 'escalations', 'workspace_id'),
            ('isokron', 'idempotency_keys', 'workspace_id'),
            ('isokron', 'rate_limit_windows', 'workspace_id')
        ) AS v(schema_name, table_name, key_column)
    LOOP
        EXECUTE 'ALTER TABLE ' || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name)
            || ' ENABLE ROW LEVEL SECURITY';
        EXECUTE 'ALTER TABLE ' || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name)
            || ' FORCE ROW LEVEL SECURITY';
        EXECUTE 'DROP POLICY IF EXISTS workspace_isolation ON '
            || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name);
        EXECUTE 'CREATE POLICY workspace_isolation ON '
            || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name)
            || ' USING (' || quote_ident(t.key_column)
            || ' = current_setting(''app.current_workspace_id'', true))'
            || ' WITH CHECK (' || quote_ident(t.key_column)
            || ' = current_setting(''app.current_workspace_id'', true))';
        EXECUTE 'DROP POLICY IF EXISTS owner_all_workspaces ON '
            || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name);
        EXECUTE 'CREATE POLICY owner_all_workspaces ON '
            || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name)
            || ' TO isokron_owner'
            || ' USING (current_setting(''isokron.all_workspaces'', true) = ''on'')'
            || ' WITH CHECK (current_setting(''isokron.all_workspaces'', true) = ''on'')';
    END LOOP;
END
$rls$;

-- The two tenant_id-keyed tables resolve the workspace through hivex_foundation.tenant.
DO $rls_tenant$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['event_log', 'chain_head'] LOOP
        EXECUTE 'ALTER TABLE hivex_foundation.' || quote_ident(t) || ' ENABLE ROW LEVEL SECURITY';
        EXECUTE 'ALTER TABLE hivex_foundation.' || quote_ident(t) || ' FORCE ROW LEVEL SECURITY';
        EXECUTE 'DROP POLICY IF EXISTS workspace_isolation ON hivex_foundation.' || quote_ident(t);
        EXECUTE 'CREATE POLICY workspace_isolation ON hivex_foundation.' || quote_ident(t)
            || ' USING (tenant_id = (SELECT tn.tenant_id FROM hivex_foundation.tenant tn'
            || ' WHERE tn.clerk_org_id = current_setting(''app.current_workspace_id'', true)))'
            || ' WITH CHECK (tenant_id = (SELECT tn.tenant_id FROM hivex_foundation.tenant tn'
            || ' WHERE tn.clerk_org_id = current_setting(''app.current_workspace_id'', true)))';
        EXECUTE 'DROP POLICY IF EXISTS owner_all_workspaces ON hivex_foundation.' || quote_ident(t);
        EXECUTE 'CREATE POLICY owner_all_workspaces ON hivex_foundation.' || quote_ident(t)
            || ' TO isokron_owner'
            || ' USING (current_setting(''isokron.all_workspaces'', true) = ''on'')'
            || ' WITH CHECK (current_setting(''isokron.all_workspaces'', true) = ''on'')';
    END LOOP;
END
$rls_tenant$;

RESET ROLE;
