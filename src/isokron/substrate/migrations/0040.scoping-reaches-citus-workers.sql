-- IsoKron substrate: the scoping settings reach every node that evaluates row-level security.
-- On Citus a query on a distributed table runs on a worker, and the worker evaluates the
-- table's FORCEd policies against ITS value of app.current_workspace_id. set_config() on the
-- coordinator never reaches the worker; SET LOCAL with citus.propagate_set_commands = 'local'
-- does (Citus sends it to every worker connection of the transaction, open or opened later).
-- isokron.set_local() is that SET LOCAL, callable with bind parameters; on plain PostgreSQL it
-- is exactly set_config(name, value, true). Every function that set a scoping setting with
-- set_config() is re-created calling isokron.set_local() instead (same arguments), and the
-- catalog test (tests/substrate/test_substrate_citus_catalog.py) refuses any new one.
SET LOCAL ROLE isokron_owner;

CREATE OR REPLACE FUNCTION isokron.set_local(p_name TEXT, p_value TEXT, p_is_local BOOLEAN DEFAULT true)
RETURNS TEXT
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_name IS NULL OR p_name !~ '^(app\.current_workspace_id|isokron\.[a-z_]+)$' THEN
        RAISE EXCEPTION USING ERRCODE = 'IKV01',
            MESSAGE = 'isokron.set_local sets the scoping settings only (app.current_workspace_id, '
                || 'isokron.*), not ' || coalesce(quote_ident(p_name), 'NULL');
    END IF;
    IF p_is_local IS DISTINCT FROM true THEN
        RAISE EXCEPTION USING ERRCODE = 'IKV01',
            MESSAGE = 'isokron.set_local sets a setting for the current transaction only';
    END IF;
    IF current_setting('citus.propagate_set_commands', true) IS NOT NULL THEN
        SET LOCAL citus.propagate_set_commands = 'local';
    END IF;
    EXECUTE 'SET LOCAL ' || p_name || ' = ' || quote_literal(coalesce(p_value, ''));
    RETURN coalesce(p_value, '');
END
$fn$;
REVOKE ALL ON FUNCTION isokron.set_local(TEXT, TEXT, BOOLEAN) FROM PUBLIC;
GRANT USAGE ON SCHEMA isokron TO isokron_reader;
GRANT EXECUTE ON FUNCTION isokron.set_local(TEXT, TEXT, BOOLEAN) TO isokron_reader;

DO $rewrite$
DECLARE
    f RECORD;
BEGIN
    FOR f IN
        SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('isokron', 'isokron_api', 'hivex_foundation', 'kronicle')
          AND p.prosrc ~ 'set_config\(\s*''(app\.current_workspace_id|isokron\.[a-z_]+)'''
          AND p.proname <> 'set_local'
    LOOP
        EXECUTE regexp_replace(pg_get_functiondef(f.oid),
            '(pg_catalog\.)?set_config\((\s*''(app\.current_workspace_id|isokron\.[a-z_]+)'')',
            'isokron.set_local(\2', 'g');
    END LOOP;
END
$rewrite$;

RESET ROLE;
