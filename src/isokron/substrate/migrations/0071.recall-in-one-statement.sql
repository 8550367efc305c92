-- IsoKron substrate: the provider's per-turn recall in one statement (issue 12, "one round trip
-- per read"). isokron.recall_nodes() is reads.SEARCH_NODES_SQL (active nodes whose title or
-- content match a full-text query, newest first, LIMITed) behind the workspace scoping it needs:
-- it sets app.current_workspace_id for the transaction through isokron.set_local and runs with
-- the caller's rights (row-level security applies). Before, the read was four round trips
-- (BEGIN, set the workspace, SELECT, COMMIT) on every turn. The query is planned per call
-- (EXECUTE), as the single read's is: a generic plan cannot know whether the words are rare
-- (GIN) or common (the newest-first index, idx_iso_nodes_workspace_recent).
SET LOCAL ROLE isokron_owner;

CREATE OR REPLACE FUNCTION isokron.recall_nodes(p_workspace_id TEXT, p_query TEXT, p_limit INTEGER)
RETURNS TABLE (node_id UUID, node_type TEXT, title TEXT, content TEXT, properties JSONB,
               status TEXT, superseded_by UUID, created_by UUID, created_at TIMESTAMPTZ,
               approved_event_id UUID)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM isokron.set_local('app.current_workspace_id', p_workspace_id, true);
    RETURN QUERY EXECUTE
        'SELECT n.node_id, n.node_type, n.title, n.content, n.properties, n.status,
                n.superseded_by, n.created_by, n.created_at, n.approved_event_id
         FROM kronicle.iso_nodes n
         WHERE n.workspace_id = $1 AND n.status = ''active''
           AND n.search_tsv @@ websearch_to_tsquery(''simple'', $2)
         ORDER BY n.created_at DESC
         LIMIT $3'
        USING p_workspace_id, p_query, p_limit;
END
$fn$;
REVOKE ALL ON FUNCTION isokron.recall_nodes(TEXT, TEXT, INTEGER) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION isokron.recall_nodes(TEXT, TEXT, INTEGER) TO isokron_reader;

RESET ROLE;
