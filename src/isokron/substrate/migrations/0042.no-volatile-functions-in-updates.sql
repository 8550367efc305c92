-- IsoKron substrate: no VOLATILE function in an UPDATE of a distributed table.
-- Citus refuses "functions used in UPDATE queries on distributed tables must not be VOLATILE":
-- revoking a token (revoked_at = clock_timestamp()) and erasing a payload (erased_at =
-- clock_timestamp()) failed on a cluster. statement_timestamp() is STABLE (Citus evaluates it
-- on the coordinator) and names the same moment to within the statement. Each function that
-- still has such an assignment is re-created with it replaced; the catalog test
-- (tests/substrate/test_substrate_citus_catalog.py) refuses any new one.
SET LOCAL ROLE isokron_owner;

DO $stable$
DECLARE
    f RECORD;
BEGIN
    FOR f IN
        SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('isokron', 'isokron_api', 'hivex_foundation', 'kronicle')
          AND (position('SET revoked_at = clock_timestamp()' IN p.prosrc) > 0
               OR position('''erased_at'', clock_timestamp()' IN p.prosrc) > 0)
    LOOP
        EXECUTE replace(replace(pg_get_functiondef(f.oid),
            'SET revoked_at = clock_timestamp()', 'SET revoked_at = statement_timestamp()'),
            '''erased_at'', clock_timestamp()', '''erased_at'', statement_timestamp()');
    END LOOP;
END
$stable$;

RESET ROLE;
