-- IsoKron substrate: one workspace's failed maintenance no longer stops every other's.
-- isokron_api.maintain(NULL) (0020) ran every workspace in one transaction, so a single error
-- rolled back the whole pass: an operator's `policy set WS policy.kora_escalation_sla_hours
-- 1e20` (a valid number) made the cut-off timestamp overflow, and no workspace was maintained
-- again, by the gateway or by `isokron maintain`. Each workspace of an all-workspaces pass now
-- runs in its own subtransaction; a failure is reported as {"workspace_id", "failed",
-- "sqlstate"} beside the others' counts. A pass over one named workspace still raises.
SET LOCAL ROLE isokron_owner;

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
        RETURN jsonb_build_object('workspaces',
            jsonb_build_array(isokron.maintain_workspace(p_workspace_id, 500)));
    END IF;
    PERFORM isokron.set_local('isokron.all_workspaces', 'on', true);
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO v_ids FROM public.workspaces;
    PERFORM isokron.set_local('isokron.all_workspaces', 'off', true);
    FOREACH v_id IN ARRAY v_ids LOOP
        BEGIN
            v_results := v_results || jsonb_build_array(isokron.maintain_workspace(v_id, 500));
        EXCEPTION WHEN OTHERS THEN
            v_results := v_results || jsonb_build_array(jsonb_build_object(
                'workspace_id', v_id, 'failed', SQLERRM, 'sqlstate', SQLSTATE));
        END;
    END LOOP;
    RETURN jsonb_build_object('workspaces', v_results);
END
$fn$;
REVOKE ALL ON FUNCTION isokron_api.maintain(TEXT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION isokron_api.maintain(TEXT) TO isokron_gateway;

RESET ROLE;
